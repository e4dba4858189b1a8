"""The ``heddle`` command line (also ``python -m heddle``); see docs/cli.md.

::

    heddle run workflow.py:graph --input "tidal power"   # durable, with live progress
    heddle runs [--status failed] [--graph NAME]         # recent runs
    heddle show RUN_ID [--json | --trace NODE]           # one run, node by node
    heddle resume RUN_ID workflow.py:graph               # finish a failed or killed run
    heddle graph workflow.py:graph [--format dot]        # Mermaid (or DOT) text
    heddle demo                                          # the bundled example

``run``, ``resume`` and ``graph`` execute the workflow file. Errors are one
line on stderr (``heddle: error: ...``), never a traceback unless ``--debug``
is given. Exit codes: 0 success; 1 the run (or the work) failed; 2 a bad
command line, or a file, variable or run that does not exist or does not
fit; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""

from heddle.cli._app import cli, main

__all__ = ["cli", "main"]
