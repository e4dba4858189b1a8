"""The checkpoint codec: what it stores, what comes back, and what it refuses."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import enum
import functools
import inspect
import json
import math
import socket
import sys
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Annotated, Any, ForwardRef, Literal, NamedTuple, NewType
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, computed_field

import heddle.workflows.codec as codec_module
from heddle.core.errors import ResultNotRestorable, ResultNotSerializable, ResultTooLarge
from heddle.workflows.codec import annotation_types, decode, encode

# -- user classes, at module level as an agent's would be --------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    READ = 1
    WRITE = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Box:
    label: str
    payload: Any
    cached: int = dataclasses.field(default=0, init=False)


class Pair(NamedTuple):
    left: Any
    right: Any


class Reading(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: datetime
    tags: tuple[str, ...] = ()
    level: Level = Level.LOW
    label: str = Field(default="", alias="Label")
    where: Point | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tag_count(self) -> int:
        return len(self.tags)


class Page(BaseModel):
    readings: list[Reading]
    colors: dict[str, Color] = {}


class Tree(BaseModel):
    child: Tree | int


@dataclasses.dataclass
class Report:
    page: Page
    flags: Perm
    parent: Report | None = None


@dataclasses.dataclass
class SpecialReport(Report):
    urgent: bool = True


CLASSES = (Color, Level, Perm, Point, Box, Pair, Reading, Page, Tree, Report, SpecialReport)


def roundtrip(value: Any, types: tuple[type, ...] = CLASSES) -> Any:
    """decode(encode(value)) for node 'n' of run 'wf'."""
    return decode(encode(value, node="n"), types=types, node="n", workflow_id="wf")


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (nan equals nan, 1 is not True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, enum.Enum):
        return a is b
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, datetime | time):
        return (a.isoformat(), a.tzinfo, a.fold) == (b.isoformat(), b.tzinfo, b.fold)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if dataclasses.is_dataclass(a):
        return all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a) if f.init
        )
    return bool(a == b)


# -- plain JSON: stored and read exactly as before --------------------------------

# Finite floats, and never the tag key as a dict key: Hypothesis tries the code's constants.
json_keys = st.text().filter(lambda key: key != "__heddle__")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_plain_json_is_stored_as_json_dumps_writes_it(value: Any) -> None:
    """A plain JSON value is stored as the very text json.dumps gives, and read back equal."""
    text = encode(value, node="n")
    assert text == json.dumps(value)
    assert same(decode(text, node="n", workflow_id="wf"), value)


@given(json_values.map(json.dumps))
def test_plain_json_text_decodes_as_json_loads_does(text: str) -> None:
    """Text without the tag key, as older databases hold, decodes exactly as json.loads reads it."""
    assert same(decode(text, node="n", workflow_id="wf"), json.loads(text))


def test_text_of_older_databases_with_nan_still_reads() -> None:
    """NaN and Infinity tokens, which json.dumps used to write, still decode."""
    value = decode('{"a": NaN, "b": [Infinity, -Infinity]}', node="n", workflow_id="wf")
    assert math.isnan(value["a"])
    assert value["b"] == [math.inf, -math.inf]


# -- every supported type round-trips -----------------------------------------------

EXAMPLES = [
    (1, 2, (3, "x")),
    [(1,), ((),)],
    {1, 2, 3},
    frozenset({"a", (1, 2)}),
    b"\x00\xffbytes",
    float("nan"),
    -math.inf,
    {"n": math.inf},
    datetime(2024, 5, 1, 9, 30, 15, 123456),
    datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    datetime(2024, 10, 27, 2, 30, tzinfo=ZoneInfo("Europe/Paris"), fold=1),
    date(1, 1, 1),
    time(23, 59, 59, 999999),
    time(8, 0, tzinfo=timezone(timedelta(hours=5))),
    time(8, 0, tzinfo=ZoneInfo("America/New_York")),
    timedelta(days=-3, seconds=5, microseconds=7),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("1.50"),
    Decimal("-0E-7"),
    Decimal("sNaN"),
    Color.RED,
    Level.HIGH,
    Perm.READ | Perm.WRITE,
    {Level.LOW: "a", Color.GREEN: "b"},
    {1: "int key", None: "none", False: "bool", 2.5: "float", (1, "a"): "tuple", "s": "str"},
    {frozenset({1}): [b"x", {2}]},
    Point(1, 2),
    Box("outer", Box("inner", (Point(3, 4), {5}))),
    Pair(Point(0, 0), (1, [2])),
    Reading(at=datetime(2024, 1, 1, tzinfo=UTC), tags=("a", "b"), Label="x", where=Point(1, 1)),
    Page(readings=[Reading(at=datetime(2024, 1, 1))], colors={"c": Color.GREEN}),
    Report(Page(readings=[]), Perm.WRITE, parent=Report(Page(readings=[]), Perm.READ)),
    [SpecialReport(Page(readings=[]), Perm.READ, urgent=False)],
]


@pytest.mark.parametrize("value", EXAMPLES, ids=repr)
def test_each_supported_type_comes_back_as_the_same_type_and_value(value: Any) -> None:
    """Tuples stay tuples (nested too), dict keys keep their types, classes are rebuilt."""
    assert same(roundtrip(value), value)


def test_a_pydantic_model_comes_back_by_its_fields_and_aliases() -> None:
    """A model with an alias, a computed field and extra='forbid' validates again."""
    reading = Reading(at=datetime(2024, 1, 1, tzinfo=UTC), tags=("a",), Label="x")
    back = roundtrip(reading)
    assert type(back) is Reading
    assert back == reading
    assert back.tags == ("a",)


def test_a_datetime_in_another_tzinfo_comes_back_at_the_same_instant() -> None:
    """A tzinfo other than timezone and ZoneInfo comes back as a fixed offset, same instant."""

    class Plus2(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta:
            return timedelta(hours=2)

        def dst(self, dt: datetime | None) -> timedelta:
            return timedelta(0)

    moment = datetime(2024, 5, 1, 12, 0, tzinfo=Plus2())
    back = roundtrip(moment)
    assert back == moment
    assert back.utcoffset() == timedelta(hours=2)


def test_a_dict_holding_the_tag_key_round_trips_as_a_dict() -> None:
    """A user dict that looks like a tagged value comes back as that dict, not a tuple."""
    value = {"__heddle__": "tuple", "v": [1, 2]}
    text = encode(value, node="n")
    assert text != json.dumps(value)
    assert same(decode(text, node="n", workflow_id="wf"), value)
    nested = [{"x": {"__heddle__": "model", "cls": "os.system", "v": "ls"}}]
    assert same(roundtrip(nested, types=()), nested)


def test_a_dataclass_field_named_like_the_tag_round_trips() -> None:
    """Fields are escaped like any dict key, so a field named __heddle__ is safe."""
    cls = dataclasses.make_dataclass("Odd", [("__heddle__", str)])
    assert same(roundtrip(cls("tuple"), types=(cls,)), cls("tuple"))


# -- the round-trip invariant over nested values ----------------------------------

offsets = st.timedeltas(-timedelta(hours=23), timedelta(hours=23)).filter(
    lambda offset: not timedelta(0) < abs(offset) < timedelta(seconds=1)  # refused, see below
)
zones = st.none() | st.timezones() | offsets.map(timezone)
hashables = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.sampled_from(Color)
    | st.sampled_from(Level)
    | st.uuids()
    | st.dates()
    | st.tuples(st.integers(), st.text(max_size=3))
    | st.builds(Point, st.integers(), st.integers())
)
leaves = (
    hashables
    | st.floats()
    | st.binary(max_size=8)
    | st.datetimes(timezones=zones)
    | st.times(timezones=zones)
    | st.timedeltas()
    | st.decimals()
    | st.sampled_from(list(Perm))
    | st.builds(
        Reading,
        at=st.datetimes(timezones=st.none() | st.just(UTC)),
        tags=st.lists(st.text(max_size=3), max_size=3).map(tuple),
        level=st.sampled_from(Level),
        Label=st.text(max_size=3),
    )
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Every container the codec supports, holding ``children``."""
    keys = st.text(max_size=3) | st.sampled_from(["__heddle__", "v", "cls"])
    return (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(keys, children, max_size=4)
        | st.dictionaries(hashables, children, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
        | st.builds(Box, st.text(max_size=3), children)
        | st.builds(Pair, children, children)
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(leaves, containers, max_leaves=25))
def test_every_supported_value_round_trips(value: Any) -> None:
    """decode(encode(v)) is v: same types at every level, equal values."""
    assert same(roundtrip(value), value)


# -- user classes come only from the code ---------------------------------------------


def test_an_unknown_user_class_is_not_restorable_and_the_error_says_why() -> None:
    """A class not among the candidates fails, naming the run, node, path and class."""
    text = encode({"items": [Point(1, 2)]}, node="fetch")
    with pytest.raises(ResultNotRestorable) as info:
        decode(text, types=(Color,), node="fetch", workflow_id="wf-1")
    err = info.value
    assert (err.node, err.workflow_id) == ("fetch", "wf-1")
    message = str(err)
    assert "run 'wf-1'" in message
    assert "node 'fetch'" in message
    assert "result['items'][0]" in message
    assert f"{__name__}.Point" in message
    assert "return annotation" in message


def test_the_input_of_a_run_names_the_input_when_a_class_is_unknown() -> None:
    """For a run's input (node None) the error says so."""
    text = encode(Color.RED, node=None)
    with pytest.raises(ResultNotRestorable, match="the input of run 'wf'") as info:
        decode(text, node=None, workflow_id="wf")
    assert info.value.node is None


@pytest.mark.parametrize("kind", ["enum", "dataclass", "namedtuple", "model"])
def test_a_class_named_by_the_database_is_never_imported(kind: str) -> None:
    """A tag naming os.system or an unimported module is an error, and imports nothing."""
    assert "this" not in sys.modules  # `import this` would print the Zen of Python
    for name in ("os.system", "this.Zen", "builtins.eval"):
        text = json.dumps({"__heddle__": kind, "cls": name, "v": {"a": "ls"}})
        with pytest.raises(ResultNotRestorable, match=name):
            decode(text, node="n", workflow_id="wf")
    assert "this" not in sys.modules


def test_a_candidate_of_another_kind_is_not_used() -> None:
    """A tag naming a candidate class as a dataclass when it is an Enum fails."""
    text = json.dumps({"__heddle__": "dataclass", "cls": f"{__name__}.Color", "v": {}})
    with pytest.raises(ResultNotRestorable, match="is not one now"):
        decode(text, types=CLASSES, node="n", workflow_id="wf")


def test_the_codec_module_cannot_pickle_import_or_eval() -> None:
    """The module imports neither pickle, importlib nor pydantic, and calls no eval or exec."""
    tree = ast.parse(inspect.getsource(codec_module))
    imported = {
        alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
    }
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"pickle", "importlib", "pydantic", "marshal", "shelve", "dill"}
    called = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert not called & {"eval", "exec", "__import__", "compile"}


@pytest.mark.parametrize(
    ("stored", "cls"),
    [
        ({"x": 1}, Point),  # a field was added to the class
        ({"x": 1, "y": 2, "z": 3}, Point),  # a field was removed
        ("purple", Color),  # a member was removed
        ({"at": "not a date"}, Reading),  # pydantic validation fails
    ],
)
def test_data_that_no_longer_fits_its_class_is_not_restorable(stored: Any, cls: type) -> None:
    """A recorded value the class rejects now fails clearly, naming the class."""
    kind = {Point: "dataclass", Color: "enum", Reading: "model"}[cls]
    name = f"{cls.__module__}.{cls.__qualname__}"
    text = json.dumps({"__heddle__": kind, "cls": name, "v": stored})
    with pytest.raises(ResultNotRestorable, match="no longer validates"):
        decode(text, types=CLASSES, node="n", workflow_id="wf")


# -- malformed text --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{not json",
        "[" * 100_000,
        '{"__heddle__": "pickle", "v": "gASV..."}',
        '{"__heddle__": 7, "v": 1}',
        '{"__heddle__": "tuple", "v": "abc"}',
        '{"__heddle__": "tuple", "v": [], "extra": 1}',
        '{"__heddle__": "set", "v": [[1, 2]]}',
        '{"__heddle__": "dict", "v": [[1]]}',
        '{"__heddle__": "dict", "v": [[[1], 2]]}',
        '{"__heddle__": "bytes", "v": "not base64!"}',
        '{"__heddle__": "float", "v": "1.5"}',
        '{"__heddle__": "datetime", "v": "yesterday"}',
        '{"__heddle__": "datetime", "v": "2024-01-01T00:00:00", "tz": "../../etc/passwd"}',
        '{"__heddle__": "datetime", "v": "2024-01-01T00:00:00", "tz": "No/Such_Zone"}',
        '{"__heddle__": "datetime", "v": "2024-01-01T00:00:00", "fold": 2}',
        '{"__heddle__": "timedelta", "v": [1, 2]}',
        '{"__heddle__": "uuid", "v": "x"}',
        '{"__heddle__": "decimal", "v": "one"}',
        '{"__heddle__": "enum", "v": "red"}',
        f'{{"__heddle__": "dataclass", "cls": "{__name__}.Point", "v": [1, 2]}}',
        '{"__heddle__": "tuple", "v": ' * 2_000 + "[]" + "}" * 2_000,
    ],
    ids=lambda text: text[:60],
)
def test_malformed_text_is_not_restorable(text: str) -> None:
    """Bad JSON, unknown tags and bad payloads raise ResultNotRestorable, nothing else."""
    with pytest.raises(ResultNotRestorable) as info:
        decode(text, types=CLASSES, node="n", workflow_id="wf")
    assert (info.value.node, info.value.workflow_id) == ("n", "wf")


tag_words = st.sampled_from(
    ["__heddle__", "v", "cls", "tz", "fold", "tuple", "set", "dict", "bytes", "float", "datetime"]
    + ["time", "date", "timedelta", "uuid", "decimal", "enum", "dataclass", "namedtuple", "model"]
    + [f"{__name__}.{cls.__qualname__}" for cls in CLASSES]
)
tampered = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | tag_words,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(tag_words | st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(tampered.map(json.dumps))
def test_decode_of_any_json_returns_a_value_or_raises_not_restorable(text: str) -> None:
    """Whatever a database holds, decode raises nothing but ResultNotRestorable."""
    with contextlib.suppress(ResultNotRestorable):
        decode(text, types=CLASSES, node="n", workflow_id="wf")


BAD = {"__heddle__": "nope"}


@pytest.mark.parametrize(
    ("stored", "where"),
    [
        ({"a": [{"__heddle__": "tuple", "v": [1, BAD]}]}, "result['a'][0][1]: "),
        ({"__heddle__": "dict", "v": [[1, BAD]]}, "result[1]: "),
        ({"__heddle__": "set", "v": [BAD]}, "result{...}: "),
        (
            {
                "__heddle__": "dataclass",
                "cls": f"{__name__}.Box",
                "v": {"label": "b", "payload": {"k": BAD}},
            },
            "result.payload['k']: ",
        ),
    ],
    ids=["containers", "int-keyed dict", "set", "dataclass field"],
)
def test_decode_errors_name_the_path_to_the_bad_value(stored: Any, where: str) -> None:
    """The path is spelled with the value's own subscripts and attributes."""
    with pytest.raises(ResultNotRestorable) as info:
        decode(json.dumps(stored), types=CLASSES, node="n", workflow_id="wf")
    assert f"{where}it has the unknown tag 'nope'" in str(info.value)


def test_near_the_recursion_limit_both_ways_raise_their_own_errors() -> None:
    """Called from deep down a stack, encode and decode still raise heddle's errors."""
    value = nested(90, lambda v: (v,))  # 180 levels as JSON: under the limit
    text = encode(value, node="n")

    def at_depth(frames: int, call: Callable[[], Any]) -> Any:
        if frames:
            return at_depth(frames - 1, call)
        return call()

    frames = sys.getrecursionlimit() - len(inspect.stack()) - 60
    with pytest.raises(ResultNotSerializable, match="nested too deeply"):
        at_depth(frames, lambda: encode(value, node="n"))
    with pytest.raises(ResultNotRestorable, match="nested too deeply"):
        at_depth(frames, lambda: decode(text, node="n", workflow_id="wf"))


# -- what encode refuses ---------------------------------------------------------------


def test_a_socket_deep_in_a_result_is_refused_with_its_path() -> None:
    """The error names the node and the path to the value, and its type."""
    with socket.socket() as sock, pytest.raises(ResultNotSerializable) as info:
        encode({"items": [1, 2, 3, sock]}, node="fetch")
    assert info.value.node == "fetch"
    assert "node 'fetch'" in str(info.value)
    assert "result['items'][3]: socket.socket cannot be stored" in str(info.value)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (lambda: 1, "input: function"),
        (object(), "input: object"),
        ((1, [2, object()]), "input[1][1]: object"),
        (Box("b", {"k": object()}), "input.payload['k']: object"),
        (Pair(1, object()), "input.right: object"),
        ({object(): 1}, "input: a key of this dict: object"),
        ({3: {4: object()}}, "input[3][4]: object"),
        ({object()}, "input{...}: object"),
        (OrderedDict(a=1), "input: collections.OrderedDict is a subclass of dict"),
        (defaultdict(list), "input: collections.defaultdict is a subclass of dict"),
        (10**5000, "Exceeds the limit"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_values_it_cannot_store_are_refused_naming_where(value: Any, where: str) -> None:
    """Functions, objects, builtin subclasses and huge ints raise ResultNotSerializable."""
    with pytest.raises(ResultNotSerializable, match=r"the run's input") as info:
        encode(value, node=None)
    assert where in str(info.value)
    assert info.value.node is None


def test_a_time_whose_tzinfo_has_no_offset_is_refused() -> None:
    """Such a time would come back naive, so it is refused instead."""

    class Vague(tzinfo):
        def utcoffset(self, dt: datetime | None) -> None:
            return None

    with pytest.raises(ResultNotSerializable, match="no UTC offset"):
        encode(time(1, tzinfo=Vague()), node="n")


def test_a_utc_offset_under_a_second_is_refused() -> None:
    """Python 3.11 parses such an offset back as UTC, so it is refused instead."""
    moment = datetime(2024, 1, 1, tzinfo=timezone(timedelta(microseconds=500)))
    with pytest.raises(ResultNotSerializable, match="UTC offset under a second"):
        encode(moment, node="n")


def nested(depth: int, wrap: Callable[[Any], Any]) -> Any:
    """``wrap`` applied ``depth`` times around 0."""
    value: Any = 0
    for _ in range(depth):
        value = wrap(value)
    return value


WRAPS = {
    "list": lambda v: [v],
    "dict": lambda v: {"k": v},
    "tuple": lambda v: (v,),
    "int-keyed dict": lambda v: {1: v},
    "dataclass": lambda v: Box("b", v),
    "model": lambda v: Tree(child=v),
}


@pytest.mark.parametrize("wrap", WRAPS.values(), ids=WRAPS)
def test_values_nested_1000_deep_are_refused(wrap: Callable[[Any], Any]) -> None:
    """Deep nesting gives ResultNotSerializable, not a RecursionError (pydantic has its own)."""
    with pytest.raises(ResultNotSerializable, match=r"nested more than 200 levels|depth exceeded"):
        encode(nested(1_000, wrap), node="n")


def test_a_list_that_contains_itself_is_refused() -> None:
    """A cycle is refused like deep nesting."""
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ResultNotSerializable, match="contains itself"):
        encode(loop, node="n")


@pytest.mark.parametrize("wrap", WRAPS.values(), ids=WRAPS)
def test_the_deepest_value_stored_reads_back_from_a_deep_stack(wrap: Callable[[Any], Any]) -> None:
    """Whatever encode accepts, decode reads, even 300 frames down a call stack."""
    depth = 1
    while True:
        try:
            text = encode(nested(depth + 1, wrap), node="n")
        except ResultNotSerializable:
            break
        depth += 1
    text = encode(nested(depth, wrap), node="n")

    def decode_at(frames: int) -> Any:
        if frames:
            return decode_at(frames - 1)
        return decode(text, types=CLASSES, node="n", workflow_id="wf")

    assert same(decode_at(300), nested(depth, wrap))


def test_a_value_over_max_bytes_is_too_large_and_the_error_says_how_to_change_it() -> None:
    """ResultTooLarge carries the node, size and limit; the limit itself is allowed."""
    text = encode("x" * 98, node="n")
    assert len(text) == 100
    assert encode("x" * 98, node="n", max_bytes=100) == text
    with pytest.raises(ResultTooLarge) as info:
        encode("x" * 99, node="big", max_bytes=100)
    err = info.value
    assert (err.node, err.size, err.limit) == ("big", 101, 100)
    assert "node 'big'" in str(err)
    assert "101 bytes" in str(err)
    assert "100 bytes" in str(err)
    assert "max_value_bytes" in str(err)


def test_size_counts_bytes_not_characters() -> None:
    """Non-ASCII text is escaped, so the size is the bytes stored."""
    text = encode("é", node="n")
    assert len(text.encode()) == len(text)


# -- the classes a value holds, and the classes an agent names ---------------------------


def test_encode_records_the_user_classes_it_meets() -> None:
    """seen gets every Enum, dataclass, NamedTuple and model inside the value, nothing else."""
    seen: set[type] = set()
    value = {"r": [Report(Page(readings=[]), Perm.READ)], "p": Pair(Color.RED, (Point(1, 2),))}
    encode(value, node="n", seen=seen)
    assert seen == {Report, Page, Perm, Pair, Color, Point}
    assert same(decode(encode(value, node="n"), types=seen, node="n", workflow_id="wf"), value)


async def returns_optional_list(task: str) -> list[Point] | None:
    """A coroutine agent whose annotation is a string (this module uses future annotations)."""
    return None


Summary = NewType("Summary", Report)


def returns_everything(
    task: str,
) -> Annotated[dict[Color, tuple[Pair, ...]], "meta"] | Literal[Level.LOW] | Summary:
    """An agent whose annotation nests every wrapper annotation_types unwraps."""
    raise NotImplementedError


class CallableAgent:
    """An agent object whose __call__ says what it returns."""

    def __call__(self, task: str) -> Reading:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (returns_optional_list, {Point}),
        (
            returns_everything,
            {Color, Pair, Level, Report, Page, Reading, Point, Perm, SpecialReport},
        ),
        (CallableAgent(), {Reading, Level, Point}),
        (functools.partial(returns_optional_list), {Point}),
        (CallableAgent().__call__, {Reading, Level, Point}),
        (lambda task: task, set()),
    ],
    ids=["optional list", "every wrapper", "callable object", "partial", "method", "none"],
)
def test_annotation_types_finds_the_classes_an_agent_names(fn: Any, expected: set[type]) -> None:
    """Classes in the return annotation, their fields' classes and subclasses, recursively."""
    assert set(annotation_types(fn)) == expected


def test_annotation_types_returns_what_it_can_when_a_name_does_not_resolve() -> None:
    """An unknown name in the annotation does not hide the names that resolve."""

    def agent(task: str) -> dict[str, Point] | uuid.SafeUUID | NoSuchClass:  # noqa: F821
        raise NotImplementedError

    assert set(annotation_types(agent)) == {Point, uuid.SafeUUID}


def test_annotation_types_resolves_forward_references_one_by_one() -> None:
    """In an annotation object, each string that resolves is used."""

    def agent(task: str) -> Any:
        raise NotImplementedError

    agent.__annotations__["return"] = dict[ForwardRef("Point"), "NoSuchClass"]  # noqa: F821
    assert set(annotation_types(agent)) == {Point}


def test_annotation_types_reads_the_fields_of_a_class_it_cannot_fully_resolve() -> None:
    """A class whose field names an unknown class still yields its other fields' classes."""

    @dataclasses.dataclass
    class Partial:
        color: Color
        other: NoSuchClass  # type: ignore[name-defined]  # noqa: F821

    def agent(task: str) -> Any:
        raise NotImplementedError

    agent.__annotations__["return"] = Partial
    assert set(annotation_types(agent)) == {Partial, Color}


def test_annotation_types_of_a_local_class_resolved_at_definition() -> None:
    """A class defined in a function is found when the annotation is not a string."""

    @dataclasses.dataclass
    class Local:
        color: Color

    def agent(task: str) -> Any:
        raise NotImplementedError

    agent.__annotations__["return"] = list[Local]
    assert set(annotation_types(agent)) == {Local, Color}
