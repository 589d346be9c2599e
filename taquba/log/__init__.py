"""The log layer: manifest versions, segments and checkpoints over opaque bytes."""

from .log import Log
from .manifest import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR

__all__ = ["CHECKPOINT_DIR", "MANIFEST_DIR", "SEGMENT_DIR", "Log"]
