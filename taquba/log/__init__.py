"""The log layer: manifest chain, segments and checkpoints over opaque bytes."""

from .log import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR, Log

__all__ = ["CHECKPOINT_DIR", "MANIFEST_DIR", "SEGMENT_DIR", "Log"]
