"""Run the benchmarks: ``python -m bench [--quick] [topic ...]``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import sys
from pathlib import Path


def topics() -> list[str]:
    """The benchmark modules present, without their ``bench_`` prefix."""
    here = Path(__file__).parent
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("topic", nargs="*", help=f"any of {', '.join(topics())} (default: all)")
    args = parser.parse_args(argv)
    chosen = args.topic or topics()
    unknown = sorted(set(chosen) - set(topics()))
    if unknown:
        parser.error(f"unknown topic(s): {', '.join(unknown)}")
    print(f"# heddle benchmarks: Python {platform.python_version()} on {platform.machine()}")
    for topic in chosen:
        module = importlib.import_module(f"bench.bench_{topic}")
        print(f"\n## {topic}\n")
        print(module.main(quick=args.quick), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
