"""``python -m heddle``: the heddle command line."""

from __future__ import annotations

import sys

from heddle.cli import main

if __name__ == "__main__":
    sys.exit(main())
