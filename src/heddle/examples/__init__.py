"""Examples bundled with heddle, so they run from an installed wheel.

:mod:`heddle.examples.demo` is the workflow behind ``heddle demo``.
"""

__all__: list[str] = []
