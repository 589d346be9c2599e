"""``python -m taquba``: the ``taquba`` command (see :mod:`taquba.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
