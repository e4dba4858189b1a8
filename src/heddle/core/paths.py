"""Where heddle keeps its files by default."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["heddle_home"]


def heddle_home() -> Path:
    """``$HEDDLE_HOME`` when set and not empty, else ``./.heddle`` (read when called).

    Nothing is created here; stores create their directory on first write.
    """
    home = os.environ.get("HEDDLE_HOME")
    base = Path(home).expanduser() if home else Path.cwd() / ".heddle"
    return base.absolute()
