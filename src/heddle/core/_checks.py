"""Checks for numeric settings, so that every module accepts, refuses and words them alike.

A bool is refused where a number is wanted (``True`` is an int to Python, but
never a count or a duration anyone meant), and so is NaN (it compares false
with every bound, so it would slip past one). A refusal is a
:class:`~heddle.core.errors.ConfigurationError` naming the argument:

>>> check_int(8, "max_threads", minimum=1)
8
>>> check_int(0, "max_threads", minimum=1)
Traceback (most recent call last):
...
heddle.core.errors.ConfigurationError: max_threads must be an int >= 1, got 0
>>> check_seconds(2, "lease", exclusive=True)
2.0
>>> check_seconds(None, "timeout", exclusive=True, none_ok=True, where="node 'a'")
>>> check_seconds(-1, "timeout", exclusive=True, none_ok=True, where="node 'a'")
Traceback (most recent call last):
...
heddle.core.errors.ConfigurationError: node 'a': timeout must be seconds > 0 or None, got -1
"""

from __future__ import annotations

import math
from typing import Literal, NoReturn, overload

from heddle.core.errors import ConfigurationError

__all__ = ["check_int", "check_seconds"]


def _refuse(
    value: object, parameter: str, wanted: str, *, none_ok: bool, where: str = ""
) -> NoReturn:
    prefix = f"{where}: " if where else ""
    or_none = " or None" if none_ok else ""
    raise ConfigurationError(
        f"{prefix}{parameter} must be {wanted}{or_none}, got {value!r}", parameter=parameter
    )


@overload
def check_int(
    value: object, parameter: str, *, minimum: int, none_ok: Literal[False] = False
) -> int: ...
@overload
def check_int(value: object, parameter: str, *, minimum: int, none_ok: bool) -> int | None: ...
def check_int(value: object, parameter: str, *, minimum: int, none_ok: bool = False) -> int | None:
    """``value`` if it is an int (not a bool) >= ``minimum``, or None when ``none_ok``."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _refuse(value, parameter, f"an int >= {minimum}", none_ok=none_ok)
    return value


@overload
def check_seconds(
    value: object,
    parameter: str,
    *,
    minimum: float = 0.0,
    exclusive: bool = False,
    finite: bool = False,
    none_ok: Literal[False] = False,
    what: str = "seconds",
    where: str = "",
) -> float: ...
@overload
def check_seconds(
    value: object,
    parameter: str,
    *,
    minimum: float = 0.0,
    exclusive: bool = False,
    finite: bool = False,
    none_ok: bool,
    what: str = "seconds",
    where: str = "",
) -> float | None: ...
def check_seconds(
    value: object,
    parameter: str,
    *,
    minimum: float = 0.0,
    exclusive: bool = False,
    finite: bool = False,
    none_ok: bool = False,
    what: str = "seconds",
    where: str = "",
) -> float | None:
    """``value`` as a float if it is a real number >= ``minimum`` (> with ``exclusive``).

    ``finite`` refuses infinity (allowed otherwise: no limit); ``none_ok``
    lets None through. ``what`` names the kind of number in the message
    (``"a number"`` for a ratio) and ``where`` says whose argument it is
    (``"node 'a'"``).
    """
    if value is None and none_ok:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or value < minimum
        or (exclusive and value == minimum)
        or (finite and math.isinf(value))
    ):
        wanted = f"{what} {'>' if exclusive else '>='} {minimum:g}{' and finite' if finite else ''}"
        _refuse(value, parameter, wanted, none_ok=none_ok, where=where)
    return float(value)
