"""How durable runs store node results and a run's input: JSON, never pickle.

A value that is plain JSON (str, int, float, bool, None, and lists and dicts
with str keys of those) is stored as exactly that JSON, so older databases and
``heddle show --json`` read the same. Any other value heddle supports is
stored in a tagged form, a JSON object whose ``"__heddle__"`` key names what
it was, so it comes back as the same type with an equal value::

    {"__heddle__": "tuple", "v": [1, 2]}                           tuple, set, frozenset
    {"__heddle__": "dict", "v": [[1, "a"], [[2, 3], "b"]]}          a dict with non-str keys
                                                                    (or with a "__heddle__" key)
    {"__heddle__": "bytes", "v": "aGk="}                            base64
    {"__heddle__": "float", "v": "nan"}                             nan, inf, -inf
    {"__heddle__": "datetime", "v": "2024-05-01T09:30:00+00:00"}    also date, time: ISO 8601;
    {"__heddle__": "datetime", "v": "2024-05-01T09:30:00",          a ZoneInfo zone by its key;
     "tz": "Europe/Paris", "fold": 1}                               "fold" only when it is 1
    {"__heddle__": "timedelta", "v": [1, 30, 0]}                    days, seconds, microseconds
    {"__heddle__": "uuid", "v": "..."}   {"__heddle__": "decimal", "v": "1.50"}
    {"__heddle__": "enum", "cls": "app.Color", "v": "red"}          the member's value
    {"__heddle__": "dataclass", "cls": "app.Report", "v": {...}}    its init fields
    {"__heddle__": "namedtuple", "cls": "app.Point", "v": {"x": 1, "y": 2}}
    {"__heddle__": "model", "cls": "app.Page", "v": {...}}          a pydantic (v2) model

Tagged values nest: a tuple of dataclasses holding datetimes round-trips.

Why no pickle, and no import: a database can be edited by anyone who can
write the file, and loading it must not run their code. Built-in and stdlib
types are rebuilt by this module itself. A user class (an Enum, a dataclass, a
NamedTuple, a pydantic model) is rebuilt only with a class the caller passes
in ``types=``, found by the ``module.qualname`` its tag records; the executor
gathers those from each agent's return annotation (:func:`annotation_types`)
and from the classes it has seen a node return. A name it was not given is an
error, never an import, never a silently plain dict.

What does not come back exactly, by design:

* A datetime or time whose zone is neither ``datetime.timezone`` nor a
  ``ZoneInfo`` (pytz, dateutil) comes back with a fixed-offset
  ``datetime.timezone``: an equal instant, another tzinfo.
* A dataclass is rebuilt by calling the class with its init fields: fields
  declared ``init=False`` are whatever ``__init__`` makes them.
* A pydantic model is stored as ``model_dump(mode="json", by_alias=True,
  round_trip=True)`` and rebuilt by ``model_validate``: the model's own JSON
  rules apply (a field typed ``Any`` holding a tuple comes back a list),
  private attributes are not stored and every field counts as set.
* Subclasses of str, int, float, list, dict, tuple, set (``defaultdict``,
  ``OrderedDict``, ``Counter``) and of datetime and the other stdlib types are
  refused rather than turned into their base type; Enums and NamedTuples are
  the subclasses that round-trip.
* Values nested more than 200 levels deep (as stored) are refused, so what is
  stored can always be read back.

>>> from datetime import date
>>> encode({"n": 1, "tags": ("a", "b")}, node="fetch")
'{"n": 1, "tags": {"__heddle__": "tuple", "v": ["a", "b"]}}'
>>> text = encode([date(2024, 5, 1)], node="fetch")
>>> text
'[{"__heddle__": "date", "v": "2024-05-01"}]'
>>> decode(text, node="fetch", workflow_id="wf-1")
[datetime.date(2024, 5, 1)]
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import inspect
import json
import math
import re
import sys
import typing
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from heddle.workflows.graph import WorkflowGraph

from heddle.core.errors import ResultNotRestorable, ResultNotSerializable, ResultTooLarge

__all__ = ["RecordedTypes", "annotation_types", "decode", "encode", "recorded_types", "task_types"]

_TAG = "__heddle__"
_TAG_IN_TEXT = f'"{_TAG}"'  # how the tag key appears in the text we write (ensure_ascii)
_MAX_DEPTH = 200
"""Deepest JSON nesting stored: decoding walks ~2 frames a level, well inside Python's 1000."""

_dumps = json.JSONEncoder().encode  # ensure_ascii: len(text) is its size in bytes
_SECOND = timedelta(seconds=1)
_ZONE_KEY = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
_SUPPORTED = (
    "durable runs store JSON values (str, int, float, bool, None, list, dict), tuple, set, "
    "frozenset, bytes, datetime, date, time, timedelta, UUID, Decimal, Enum members, "
    "dataclasses, NamedTuples and pydantic models, and never pickle"
)


class _Refused(Exception):
    """Why a value cannot be encoded or decoded, and where: path segments, innermost first."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _where(root: str, exc: _Refused) -> str:
    path = exc.path[::-1]
    if len(path) > 12:  # too deep to read whole: its head and its tail
        path = [*path[:6], "...", *path[-4:]]
    return root + "".join(path)


def _type_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _user_kind(cls: type) -> str | None:
    """The tag of a user class heddle can rebuild from its data, or None."""
    if issubclass(cls, enum.Enum):
        return "enum"
    if hasattr(cls, "model_validate") and hasattr(cls, "model_dump"):  # pydantic v2
        return "model"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return "namedtuple"
    return None


# -- encoding ----------------------------------------------------------------------


def encode(
    value: Any,
    *,
    node: str | None,
    max_bytes: int | None = None,
    seen: set[type] | None = None,
) -> str:
    """The JSON text that stores ``value``, the result of ``node`` (None: a run's input).

    User classes met on the way (Enums, dataclasses, NamedTuples, pydantic
    models) are added to ``seen`` when it is given, so the caller can pass them
    to :func:`decode` later in this process.

    Plain JSON is written exactly as ``json.dumps`` writes it. Raises
    :class:`ResultNotSerializable` for a value it cannot store, naming its path
    (``result['items'][3]: socket.socket cannot be stored ...``), and
    :class:`ResultTooLarge` when the text is over ``max_bytes``.
    """
    try:
        data = value if _is_plain(value, 0) else _to_json(value, 0, seen)
        text = _dumps(data)
    except _Refused as exc:
        root = "input" if node is None else "result"
        raise ResultNotSerializable(
            f"cannot store {_subject(node)}: {_where(root, exc)}: {exc.reason}", node=node
        ) from exc.__cause__
    except RecursionError:
        raise ResultNotSerializable(
            f"cannot store {_subject(node)}: it is nested too deeply", node=node
        ) from None
    except ValueError as exc:  # an int of more digits than int -> str allows
        raise ResultNotSerializable(f"cannot store {_subject(node)}: {exc}", node=node) from exc
    if max_bytes is not None and len(text) > max_bytes:
        raise ResultTooLarge(
            f"{_subject(node)} is {len(text):,} bytes as JSON, over the limit of "
            f"{max_bytes:,} bytes; return less (keep large data elsewhere and return a "
            "reference to it), or raise the checkpointer's max_value_bytes",
            node=node,
            size=len(text),
            limit=max_bytes,
        )
    return text


def _subject(node: str | None) -> str:
    return "the run's input" if node is None else f"the result of node {node!r}"


def _is_plain(v: Any, depth: int) -> bool:
    """Whether json.dumps alone stores ``v`` faithfully (no walk, no copy needed)."""
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return True
    if t is float:
        return math.isfinite(v)
    if depth >= _MAX_DEPTH:
        return False
    # This runs on every value stored: leaves are checked inline, without a call.
    if t is list:
        for x in v:
            t = type(x)
            if not (t is str or t is int or t is bool or x is None or _is_plain(x, depth + 1)):
                return False
        return True
    if t is dict:
        if _TAG in v:
            return False
        for k, x in v.items():
            t = type(x)
            if type(k) is not str or not (
                t is str or t is int or t is bool or x is None or _is_plain(x, depth + 1)
            ):
                return False
        return True
    return False


def _to_json(v: Any, depth: int, seen: set[type] | None) -> Any:
    """``v`` as JSON data, tagged where plain JSON would lose its type.

    ``depth`` counts the JSON containers around ``v``'s output. Containers are
    walked in this one frame, so the walk's recursion stays near that depth.
    """
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return v
    if t is float:
        return v if math.isfinite(v) else {_TAG: "float", "v": repr(v)}
    if depth >= _MAX_DEPTH:
        raise _Refused(f"it is nested more than {_MAX_DEPTH} levels deep (or contains itself)")
    depth += 1
    if t is dict:
        if _TAG in v or not all(type(k) is str for k in v):
            return {_TAG: "dict", "v": _pairs_to_json(v, depth + 2, seen)}
        out = {}
        key = None
        try:
            for key, x in v.items():
                out[key] = _to_json(x, depth, seen)
        except _Refused as exc:
            exc.path.append(f"[{key!r}]")
            raise
        return out
    if t is list or t is tuple or t is set or t is frozenset:
        inner = depth if t is list else depth + 1  # the others: {tag, "v": [...]}
        items = []
        i = 0
        try:
            for i, x in enumerate(v):  # noqa: B007 - i names the failing item below
                items.append(_to_json(x, inner, seen))
        except _Refused as exc:
            exc.path.append(f"[{i}]" if t is list or t is tuple else "{...}")
            raise
        return items if t is list else {_TAG: t.__name__, "v": items}
    stdlib = _STDLIB.get(t)
    if stdlib is not None:
        return stdlib(v)
    kind = _user_kind(t)
    if kind is None:
        raise _Refused(_refusal(t))
    if seen is not None:
        seen.add(t)
    try:
        data = _to_json(_USER[kind](v), depth, seen)
    except _Refused as exc:
        if exc.path and exc.path[-1].startswith("['"):  # a field: name it as an attribute
            exc.path[-1] = "." + exc.path[-1][2:-2]
        raise
    return {_TAG: kind, "cls": f"{t.__module__}.{t.__qualname__}", "v": data}


def _pairs_to_json(d: dict[Any, Any], depth: int, seen: set[type] | None) -> list[Any]:
    out = []
    for k, x in d.items():
        try:
            key = _to_json(k, depth, seen)
        except _Refused as exc:
            exc.reason = f"a key of this dict: {exc.reason}"
            raise
        try:
            out.append([key, _to_json(x, depth, seen)])
        except _Refused as exc:
            exc.path.append(f"[{k!r}]")
            raise
    return out


def _refusal(t: type) -> str:
    name = _type_name(t)
    for base in (str, int, float, bytes, list, dict, tuple, set, frozenset, datetime, date):
        if issubclass(t, base):
            return (
                f"{name} is a subclass of {base.__name__} and would come back a plain "
                f"{base.__name__}: convert it first ({_SUPPORTED})"
            )
    return f"{name} cannot be stored ({_SUPPORTED})"


def _zone(v: datetime | time, out: dict[str, Any]) -> dict[str, Any]:
    """``out`` with the zone of ``v``: a ZoneInfo by its key, any other as its offset."""
    tz = v.tzinfo
    if type(tz) is ZoneInfo and tz.key is not None:
        out["v"] = v.replace(tzinfo=None).isoformat()
        out["tz"] = tz.key
    elif tz is not None:
        offset = v.utcoffset()
        if offset is None:
            raise _Refused(f"{_type_name(type(v))} has a tzinfo with no UTC offset ({tz!r})")
        if timedelta(0) < abs(offset) < _SECOND:  # Python 3.11 reads those back as UTC
            raise _Refused(f"{_type_name(type(v))} has a UTC offset under a second ({offset!r})")
    if v.fold:
        out["fold"] = 1
    return out


_STDLIB: dict[type, Callable[[Any], dict[str, Any]]] = {
    datetime: lambda v: _zone(v, {_TAG: "datetime", "v": v.isoformat()}),
    time: lambda v: _zone(v, {_TAG: "time", "v": v.isoformat()}),
    date: lambda v: {_TAG: "date", "v": v.isoformat()},
    timedelta: lambda v: {_TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    uuid.UUID: lambda v: {_TAG: "uuid", "v": str(v)},
    Decimal: lambda v: {_TAG: "decimal", "v": str(v)},
    bytes: lambda v: {_TAG: "bytes", "v": base64.b64encode(v).decode("ascii")},
}


def _model_fields(v: Any) -> Any:
    try:
        return v.model_dump(mode="json", by_alias=True, round_trip=True)
    except Exception as exc:  # pydantic's serialisation error, or a custom serializer's
        raise _Refused(f"pydantic could not dump this {_type_name(type(v))} ({exc})") from exc


#: What a user class is stored as, by kind: its data, walked like any value.
_USER: dict[str, Callable[[Any], Any]] = {
    "enum": lambda v: v.value,
    "dataclass": lambda v: {f.name: getattr(v, f.name) for f in dataclasses.fields(v) if f.init},
    "namedtuple": lambda v: v._asdict(),
    "model": _model_fields,
}


# -- decoding ----------------------------------------------------------------------


def decode(
    text: str,
    *,
    types: Iterable[type] = (),
    node: str | None,
    workflow_id: str | None,
) -> Any:
    """The value :func:`encode` stored as ``text``, for ``node`` (None: the input) of a run.

    ``types`` are the user classes it may rebuild (see :func:`annotation_types`).
    Text without the tag key is read by ``json.loads`` alone. Raises
    :class:`ResultNotRestorable` when the text is not JSON, holds an unknown
    tag, names a class not among ``types``, or holds data that no longer
    validates against its class.
    """
    cause: BaseException | None = None
    try:
        data = json.loads(text)
        if _TAG_IN_TEXT not in text:  # plain JSON, as every value without a tag is stored
            return data
        return _Restorer(types, node).restore(data)
    except _Refused as exc:
        message = f"{_where('input' if node is None else 'result', exc)}: {exc.reason}"
        cause = exc.__cause__
    except RecursionError:
        message = "it is nested too deeply"
    except (ValueError, TypeError) as exc:  # from json.loads: the walk raises only _Refused
        message = f"it is not valid JSON ({exc})"
        cause = exc
    raise ResultNotRestorable(
        f"cannot read back {_recorded(node, workflow_id)}: {message}",
        workflow_id=workflow_id,
        node=node,
    ) from cause


def _recorded(node: str | None, workflow_id: str | None) -> str:
    run = "" if workflow_id is None else f" of run {workflow_id!r}"
    return f"the input{run}" if node is None else f"the result of node {node!r}{run}"


_KINDS = {
    "enum": "an Enum",
    "dataclass": "a dataclass",
    "namedtuple": "a NamedTuple",
    "model": "a pydantic model",
}
_BUILTIN_KEYS = frozenset({_TAG, "v"})
_ZONED_KEYS = frozenset({_TAG, "v", "tz", "fold"})
_USER_KEYS = frozenset({_TAG, "cls", "v"})
#: Python exceptions a stdlib constructor raises for data it cannot take.
_BAD_DATA = (TypeError, ValueError, ArithmeticError, KeyError)


class _Restorer:
    """Rebuilds tagged values; user classes only from ``types``, looked up by name.

    Like the encoding walk, lists and plain dicts are walked in one frame, so
    the recursion stays near twice the JSON depth, which encode() bounds.
    """

    def __init__(self, types: Iterable[type], node: str | None) -> None:
        self.classes = {
            f"{cls.__module__}.{cls.__qualname__}": cls for cls in types if isinstance(cls, type)
        }
        self.node = node

    def restore(self, v: Any, unordered: bool = False) -> Any:
        t = type(v)
        if t is list:
            out = []
            i = 0
            try:
                for i, x in enumerate(v):  # noqa: B007 - i names the failing item below
                    out.append(self.restore(x))
            except _Refused as exc:
                exc.path.append("{...}" if unordered else f"[{i}]")
                raise
            return out
        if t is dict:
            if _TAG in v:
                return self.untag(v)
            restored = {}
            key = None
            try:
                for key, x in v.items():
                    restored[key] = self.restore(x)
            except _Refused as exc:
                exc.path.append(f"[{key!r}]")
                raise
            return restored
        return v

    def untag(self, v: dict[str, Any]) -> Any:
        tag = v[_TAG]
        if type(tag) is not str or (tag not in _KINDS and tag not in _REBUILD):
            raise _Refused(
                f"it has the unknown tag {tag!r} (written by a newer heddle, or the database "
                "was edited)"
            )
        if tag in _KINDS:
            return self.user(tag, v)
        payload_type, rebuild = _REBUILD[tag]
        payload = v.get("v")
        allowed = _ZONED_KEYS if tag in ("datetime", "time") else _BUILTIN_KEYS
        if not (v.keys() <= allowed and type(payload) is payload_type):
            raise _Refused(f"it is a malformed {tag!r} value: {_dumps(v)[:200]}")
        if tag == "dict":
            payload = self.pairs(v["v"])
        elif payload_type is list:
            payload = self.restore(payload, unordered=tag in ("set", "frozenset"))
        try:
            return rebuild(payload, v)
        except _BAD_DATA as exc:
            raise _Refused(f"it is a malformed {tag!r} value ({exc})") from exc

    def pairs(self, payload: list[Any]) -> list[tuple[Any, Any]]:
        out = []
        for pair in payload:
            if type(pair) is not list or len(pair) != 2:
                raise _Refused(
                    f"it is a malformed 'dict' value: {_dumps(pair)[:200]} is not a pair"
                )
            key = self.restore(pair[0])
            try:
                out.append((key, self.restore(pair[1])))
            except _Refused as exc:
                exc.path.append(f"[{key!r}]")
                raise
        return out

    def user(self, kind: str, v: dict[str, Any]) -> Any:
        name = v.get("cls")
        if not (v.keys() == _USER_KEYS and type(name) is str):
            raise _Refused(f"it is a malformed {kind!r} value: {_dumps(v)[:200]}")
        cls = self.classes.get(name)
        if cls is None:
            raise _Refused(
                f"it is a {name} ({_KINDS[kind]}), a class this process was not given; "
                f"{self.hint(name)}. heddle never imports a class because a database names it"
            )
        if _user_kind(cls) != kind:
            raise _Refused(f"it was recorded as {_KINDS[kind]} {name}, and {name} is not one now")
        try:
            data = self.restore(v["v"])
        except _Refused as exc:
            if exc.path and exc.path[-1].startswith("['"):  # a field: name it as an attribute
                exc.path[-1] = "." + exc.path[-1][2:-2]
            raise
        try:
            if kind == "enum":
                return cls(data)
            if kind == "model":
                return cls.model_validate(data)  # type: ignore[attr-defined]
            if type(data) is not dict:
                raise TypeError(f"its fields are not a JSON object: {_dumps(v['v'])[:200]}")
            return cls(**data)
        except Exception as exc:  # whatever the class's own validation raises
            raise _Refused(
                f"the recorded {name} no longer validates against the class ({exc})"
            ) from exc

    def hint(self, name: str) -> str:
        short = name.rsplit(".", 1)[-1]
        if self.node is None:
            return "heddle rebuilds the classes of a run's input only from classes its code names"
        return (
            f"name it in the return annotation of the agent of node {self.node!r} "
            f"(e.g. `-> {short}` or `-> list[{short}]`) so heddle finds it in the code"
        )


def _rebuild_float(payload: str, _: object) -> float:
    if payload not in ("nan", "inf", "-inf"):
        raise ValueError(f"{payload!r} is not nan, inf or -inf")
    return float(payload)


def _rebuild_zoned(moment: datetime | time, tagged: dict[str, Any]) -> Any:
    zone = tagged.get("tz")
    if zone is not None:
        if type(zone) is not str or not _ZONE_KEY.fullmatch(zone) or moment.tzinfo is not None:
            raise ValueError(f"{zone!r} is not a time zone key, or the time has an offset too")
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    fold = tagged.get("fold", 0)
    if type(fold) is not int or fold not in (0, 1):
        raise ValueError(f"fold must be 0 or 1, not {fold!r}")
    return moment.replace(fold=fold)


def _rebuild_timedelta(payload: list[Any], _: object) -> timedelta:
    if len(payload) != 3 or any(type(n) is not int for n in payload):
        raise ValueError(f"{payload!r} is not [days, seconds, microseconds]")
    return timedelta(*payload)


#: Each stdlib tag: the JSON type of its "v", and how to rebuild it (lists arrive restored).
_REBUILD: dict[str, tuple[type, Callable[[Any, dict[str, Any]], Any]]] = {
    "tuple": (list, lambda p, _: tuple(p)),
    "set": (list, lambda p, _: set(p)),
    "frozenset": (list, lambda p, _: frozenset(p)),
    "dict": (list, lambda p, _: dict(p)),  # a key that came back unhashable: bad data
    "bytes": (str, lambda p, _: base64.b64decode(p, validate=True)),
    "float": (str, _rebuild_float),
    "datetime": (str, lambda p, t: _rebuild_zoned(datetime.fromisoformat(p), t)),
    "time": (str, lambda p, t: _rebuild_zoned(time.fromisoformat(p), t)),
    "date": (str, lambda p, _: date.fromisoformat(p)),
    "timedelta": (list, _rebuild_timedelta),
    "uuid": (str, lambda p, _: uuid.UUID(p)),
    "decimal": (str, lambda p, _: Decimal(p)),
}


# -- the classes an agent returns --------------------------------------------------


def annotation_types(fn: Callable[..., Any]) -> tuple[type, ...]:
    """The user classes :func:`decode` may need for what ``fn`` returns.

    They are the Enums, dataclasses, NamedTuples and pydantic models named in
    ``fn``'s return annotation (through ``Optional``, unions, ``list[...]``,
    ``dict[..., ...]``, ``tuple[...]``, ``Annotated``, ``Literal`` of Enum
    members), their subclasses, and, recursively, those named by their fields.
    An annotation that cannot be resolved yields what can be.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Line:
    ...     text: str
    >>> async def agent(task: str) -> list[Line] | None: ...
    >>> [cls.__name__ for cls in annotation_types(agent)]
    ['Line']
    """
    _, hints, namespace = _hints(fn)
    found: dict[type, None] = {}
    _collect(hints.get("return"), namespace, found)
    return tuple(found)


def task_types(fn: Callable[..., Any]) -> tuple[type, ...]:
    """The user classes named by the annotation of ``fn``'s first parameter (its task).

    What :func:`decode` may need to read back a run's input that went, as the
    task, to an agent ``fn``; found as :func:`annotation_types` finds them.

    >>> from enum import Enum
    >>> class Mode(Enum):
    ...     FAST = "fast"
    >>> def agent(task: Mode, **kwargs: object) -> str: ...
    >>> [cls.__name__ for cls in task_types(agent)]
    ['Mode']
    """
    target, hints, namespace = _hints(fn)
    found: dict[type, None] = {}
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return ()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    first = next((p for p in parameters if p.kind in positional and p.name != "self"), None)
    if first is not None:
        _collect(hints.get(first.name), namespace, found)
    return tuple(found)


def _hints(fn: Callable[..., Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The function behind ``fn``, its resolved annotations and its globals."""
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isroutine(target) or isinstance(target, type)) and callable(target):
        target = type(target).__call__  # a callable object: its __call__ is what runs
    namespace = getattr(inspect.unwrap(target), "__globals__", {})
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # an unresolvable name: fall back on the raw annotation
        hints = dict(getattr(target, "__annotations__", None) or {})
    return target, hints, namespace


def _collect(tp: Any, namespace: dict[str, Any], found: dict[type, None]) -> None:
    if isinstance(tp, typing.ForwardRef):
        tp = tp.__forward_arg__
    if isinstance(tp, str):  # unresolved: every name in it that the namespace knows
        for name in re.findall(r"[A-Za-z_][\w.]*", tp):
            obj = _lookup(name, namespace)
            if obj is not None and not isinstance(obj, str):
                _collect(obj, namespace, found)
        return
    supertype = getattr(tp, "__supertype__", None)  # a NewType
    if supertype is not None:
        _collect(supertype, namespace, found)
        return
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        for arg in typing.get_args(tp):
            if isinstance(arg, enum.Enum):
                _add_class(type(arg), found)
        return
    if origin is typing.Annotated:
        _collect(typing.get_args(tp)[0], namespace, found)
        return
    if origin is not None:
        if isinstance(origin, type):
            _add_class(origin, found)  # a generic dataclass or NamedTuple: Box[int]
        for arg in typing.get_args(tp):
            _collect(arg, namespace, found)
        return
    if isinstance(tp, type):
        _add_class(tp, found)


def _lookup(dotted: str, namespace: dict[str, Any]) -> Any:
    head, *rest = dotted.split(".")
    obj = namespace.get(head)
    for attribute in rest:
        obj = getattr(obj, attribute, None)
    return obj


def _add_class(cls: type, found: dict[type, None]) -> None:
    kind = _user_kind(cls)
    if cls in found or kind is None:
        return
    found[cls] = None
    sub: type
    for sub in cls.__subclasses__():  # what an agent annotated `-> Base` may return
        _add_class(sub, found)
    module = sys.modules.get(cls.__module__)
    namespace = vars(module) if module is not None else {}
    for field_type in _field_types(cls, kind):
        _collect(field_type, namespace, found)


def _field_types(cls: type, kind: str) -> list[Any]:
    if kind == "enum":
        return []
    if kind == "model":
        fields = getattr(cls, "model_fields", None) or {}
        return [getattr(field, "annotation", None) for field in fields.values()]
    try:
        return list(typing.get_type_hints(cls, include_extras=True).values())
    except Exception:  # an unresolvable name: the raw annotations, names resolved one by one
        return [
            annotation
            for klass in reversed(cls.__mro__)
            for annotation in getattr(klass, "__annotations__", {}).values()
        ]


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedTypes:
    """The user classes a graph's recorded values may hold, as its code names them.

    ``nodes`` maps each node to the classes of its agent's return annotation;
    ``input`` holds those of the task annotations of the agents that receive
    the run's input (the nodes without predecessors).
    """

    nodes: dict[str, tuple[type, ...]]
    input: tuple[type, ...]


def recorded_types(graph: WorkflowGraph) -> RecordedTypes:
    """What :func:`decode` may need to read back ``graph``'s recorded results and input."""
    plan = graph.plan()
    nodes = {node.name: annotation_types(node.spec.call) for node in plan.nodes}
    found: dict[type, None] = {}
    for i, node in enumerate(plan.nodes):
        if not plan.predecessors[i]:
            found.update(dict.fromkeys(task_types(node.spec.call)))
    return RecordedTypes(nodes, tuple(found))
