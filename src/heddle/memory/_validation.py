"""Checks shared by AgentMemory and every store: agent ids, keys, JSON values."""

from __future__ import annotations

import json
import re
from typing import Any, Final

from heddle.core.errors import ConfigurationError
from heddle.memory.errors import InvalidAgentId

__all__ = [
    "AGENT_ID_PATTERN",
    "MAX_NESTING",
    "check_key",
    "decode_json",
    "encode_metadata",
    "encode_value",
    "validate_agent_id",
]

AGENT_ID_PATTERN = r"[A-Za-z0-9_-]{1,128}"
# fullmatch, not match(r"^...$"): "$" also matches before a trailing newline,
# so a "^...$" pattern would accept "agent\n".
_AGENT_ID = re.compile(AGENT_ID_PATTERN)


def validate_agent_id(agent_id: object) -> str:
    """Return ``agent_id`` if it is a valid agent id, else raise :class:`InvalidAgentId`.

    Valid ids are 1 to 128 ASCII letters, digits, ``_`` and ``-``: safe as a
    file name on every platform, and never ``.``/``..`` or a path.

    >>> validate_agent_id("researcher-1")
    'researcher-1'
    >>> validate_agent_id("../etc/passwd")
    Traceback (most recent call last):
    ...
    heddle.core.errors.InvalidAgentId: invalid agent id '../etc/passwd': ...
    """
    if not isinstance(agent_id, str) or _AGENT_ID.fullmatch(agent_id) is None:
        raise InvalidAgentId(
            f"invalid agent id {agent_id!r}: use 1 to 128 characters from A-Z a-z 0-9 _ -",
            agent_id=agent_id,
        )
    return agent_id


def check_key(key: object) -> str:
    """Return ``key`` if it can be stored, else raise TypeError or ConfigurationError."""
    if not isinstance(key, str):
        raise TypeError(f"memory keys are str, got {type(key).__name__}: {key!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigurationError(
            f"memory key {key!r} is not valid Unicode (lone surrogate)", parameter="key"
        ) from exc
    return key


#: The deepest nesting of lists and dicts a value or metadata may have (``[[1]]`` is 2).
#: Python's json module recurses once per level and fails near the interpreter's
#: recursion limit (1000 by default, minus the caller's own stack); a fixed limit
#: well below it makes the refusal the same whatever the stack, and leaves room
#: to load back, from a deeper stack, anything that was saved.
MAX_NESTING: Final = 500

# One encoder for every call: json.dumps() with non-default options builds a new one each time.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_CONTAINERS = (dict, list, tuple)


def _too_deep(what: str) -> TypeError:
    return TypeError(
        f"{what} is not JSON-serialisable: nested too deeply (more than {MAX_NESTING} levels "
        "of lists and dicts)"
    )


def _check_tree(value: Any, what: str) -> None:
    # json.dumps turns {1: "a"} into {"1": "a"} and {1: "a", "1": "b"} into two
    # "1" members, one of which is lost on load: refuse rather than change data.
    # A loop, not recursion, so that any depth is walked safely; it runs after
    # the encoder, which has already refused circular values.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise _too_deep(what)
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise TypeError(
                        f"{what} is not JSON round-trippable: dict key {k!r} is not a str"
                    )
                if isinstance(v, _CONTAINERS):
                    stack.append((v, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item if isinstance(v, _CONTAINERS))


def encode_value(value: Any, what: str = "value") -> str:
    """The JSON text of ``value``; TypeError if it is not JSON.

    Refused: what JSON has no form for, NaN and infinities, dict keys that are
    not str, circular values and values nested more than :data:`MAX_NESTING`
    levels deep.
    """
    try:
        text = _ENCODER.encode(value)
    except RecursionError as exc:
        raise _too_deep(what) from exc
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-serialisable: {exc}") from exc
    _check_tree(value, what)
    return text


def decode_json(text: str | bytes) -> Any:
    """The value of JSON ``text`` read back from a store; ValueError if it cannot be decoded.

    Text written by other programs may nest deeper than Python's parser can
    follow: that is a ValueError saying so, not a RecursionError.
    """
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise ValueError("the JSON is nested too deeply for Python's json module") from exc


def encode_metadata(metadata: Any) -> str | None:
    """The JSON text of a metadata dict (None stays None); TypeError otherwise."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    return encode_value(metadata, "metadata")
