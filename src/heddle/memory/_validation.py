"""Checks shared by AgentMemory and every store: agent ids, keys, JSON values."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from heddle.core.errors import ConfigurationError
from heddle.memory.errors import InvalidAgentId

__all__ = [
    "AGENT_ID_PATTERN",
    "check_key",
    "encode_metadata",
    "encode_value",
    "path_inside",
    "validate_agent_id",
]

AGENT_ID_PATTERN = r"[A-Za-z0-9_-]{1,128}"
# fullmatch, not match(r"^...$"): "$" also matches before a trailing newline,
# so the document's pattern accepts "agent\n".
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


def path_inside(base: Path, path: Path, agent_id: str) -> Path:
    """Return ``path`` resolved, or raise :class:`InvalidAgentId` if it is not inside ``base``.

    ``Path.is_relative_to`` compares whole path components; the document's
    ``str.startswith`` accepts ``/data/memory-evil/x`` for the base ``/data/memory``.
    """
    resolved_base = base.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(resolved_base):
        raise InvalidAgentId(
            f"the file of agent {agent_id!r} resolves to {resolved}, outside {resolved_base}",
            agent_id=agent_id,
        )
    return resolved


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


# One encoder for every call: json.dumps() with non-default options builds a new one each time.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def _check_str_keys(value: Any, what: str) -> None:
    # json.dumps turns {1: "a"} into {"1": "a"} and {1: "a", "1": "b"} into two
    # "1" members, one of which is lost on load: refuse rather than change data.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise TypeError(
                        f"{what} is not JSON round-trippable: dict key {k!r} is not a str"
                    )
                if isinstance(v, dict | list | tuple):
                    stack.append(v)
        elif isinstance(item, list | tuple):
            stack.extend(v for v in item if isinstance(v, dict | list | tuple))


def encode_value(value: Any, what: str = "value") -> str:
    """The JSON text of ``value``; TypeError if it is not JSON (NaN and infinities included)."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-serialisable: {exc}") from exc
    _check_str_keys(value, what)
    return text


def encode_metadata(metadata: Any) -> str | None:
    """The JSON text of a metadata dict (None stays None); TypeError otherwise."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    return encode_value(metadata, "metadata")
