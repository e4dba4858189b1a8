"""heddle's benchmarks (``make bench``; not part of ``make test``).

Each ``bench/bench_<topic>.py`` module defines ``main(quick: bool = False) -> str``
which runs its comparisons (at tiny sizes when ``quick``) and returns a
Markdown table of medians and ratios. ``python -m bench [topic ...]`` runs them
and prints the tables; ``tests/test_bench_smoke.py`` runs each with quick=True.
"""
