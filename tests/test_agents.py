"""What counts as an agent, how it is called, and what its breaker is named."""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from heddle import AgentProtocol, WorkflowGraph
from heddle.agents import AgentReply, describe_agent
from heddle.core.errors import InvalidAgentError


class Arun:
    name = "researcher"

    async def arun(self, task: Any, **kwargs: Any) -> Any:
        return task


class Run:
    def run(self, task: Any, **kwargs: Any) -> Any:
        return task


class AsyncCallable:
    async def __call__(self, task: Any) -> Any:
        return task


class SyncCallable:
    def __call__(self, task: Any) -> Any:
        return task


async def coro_fn(task: Any) -> Any:
    return task


def plain_fn(task: Any) -> Any:
    return task


class Invoke:
    """A Runnable-like object that only has the sync half."""

    def invoke(self, task: Any) -> Any:
        return task


class Runnable:
    """What heddle sees of a LangChain Runnable: both halves, and a name from get_name()."""

    name = None

    def get_name(self) -> str:
        return "summarise"

    def invoke(self, task: Any, config: Any = None, **kwargs: Any) -> Any:
        return task

    async def ainvoke(self, task: Any, config: Any = None, **kwargs: Any) -> Any:
        return task


@pytest.mark.parametrize(
    ("agent", "is_async", "name"),
    [
        (Arun(), True, "researcher"),
        (Run(), False, "Run"),
        (AsyncCallable(), True, "AsyncCallable"),
        (SyncCallable(), False, "SyncCallable"),
        (coro_fn, True, "coro_fn"),
        (plain_fn, False, "plain_fn"),
        (functools.partial(coro_fn), True, "partial"),
        (Invoke(), False, "Invoke"),
        (Runnable(), True, "summarise"),
    ],
)
def test_agent_kinds_are_recognised(agent: object, is_async: bool, name: str) -> None:
    """Each accepted shape is called the right way and named for its breaker."""
    spec = describe_agent(agent, node="n")
    assert spec.is_async is is_async
    assert spec.name == name


def test_nested_function_uses_its_qualified_name() -> None:
    """Functions are keyed by __qualname__, so same-named local functions differ."""

    def local(task: Any) -> Any:
        return task

    assert describe_agent(local, node="n").name.endswith("<locals>.local")


def test_empty_name_attribute_falls_back_to_the_class_name() -> None:
    """A blank ``name`` is ignored rather than keying every such agent together."""
    agent = Arun()
    agent.name = ""
    assert describe_agent(agent, node="n").name == "Arun"


@pytest.mark.parametrize("bad", [object(), 42, "a string", None])
def test_non_agents_are_rejected_naming_the_node(bad: object) -> None:
    """Objects that cannot be called are an InvalidAgentError (a TypeError) naming the node."""
    with pytest.raises(InvalidAgentError, match="node 'writer'") as info:
        describe_agent(bad, node="writer")
    assert isinstance(info.value, TypeError)


def test_a_class_instead_of_an_instance_is_explained() -> None:
    """Passing the class is a common slip; the error says to instantiate it."""
    with pytest.raises(InvalidAgentError, match=r"pass Arun\(\.\.\.\) instead"):
        describe_agent(Arun, node="n")


def test_agent_protocol_is_runtime_checkable() -> None:
    """AgentProtocol matches objects with a name and arun."""
    assert isinstance(Arun(), AgentProtocol)
    assert not isinstance(Run(), AgentProtocol)


def test_runnables_are_called_through_ainvoke_else_invoke() -> None:
    """ainvoke is awaited when present; an invoke-only object runs invoke in a thread."""
    runnable, invoke_only = Runnable(), Invoke()
    assert describe_agent(runnable, node="n").call == runnable.ainvoke
    assert describe_agent(invoke_only, node="n").call == invoke_only.invoke


class Everything(Runnable):
    name = "everything"

    async def arun(self, task: Any, **kwargs: Any) -> Any:
        return task

    def run(self, task: Any, **kwargs: Any) -> Any:
        return task


class LegacyChain(Runnable):
    def run(self, task: Any, **kwargs: Any) -> Any:
        return task


def test_arun_wins_over_ainvoke_and_run() -> None:
    """An object with arun is called through arun, whatever else it has."""
    agent = Everything()
    assert describe_agent(agent, node="n").call == agent.arun


def test_invoke_wins_over_run() -> None:
    """A LangChain legacy chain or tool (run beside invoke) is called through the current API."""
    agent = LegacyChain()
    assert describe_agent(agent, node="n").call == agent.ainvoke


def test_agent_reply_is_a_frozen_value_with_optional_usage() -> None:
    """AgentReply holds the content and, when known, the usage; it cannot be changed."""
    reply = AgentReply("done")
    assert reply.usage is None
    assert AgentReply("done", {"input_tokens": 3}) == AgentReply("done", {"input_tokens": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.content = "changed"  # type: ignore[misc]


# --- the callable must take the task ---------------------------------------------------


def required_args(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like the OpenAI SDK's decorator of the same name: a sync wrapper, functools.wraps."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            missing = [name for name in names if name not in kwargs]
            if missing:
                raise TypeError(f"missing required arguments: {missing}")
            return fn(*args, **kwargs)

        return wrapper

    return decorate


class AsyncCompletions:
    """The shape of ``AsyncOpenAI().chat.completions``: ``create`` takes keywords only."""

    @required_args("messages", "model")
    async def create(
        self, *, messages: list[dict[str, str]], model: str, temperature: float | None = None
    ) -> Any:
        return messages


def test_keyword_only_sdk_method_is_refused_with_a_wrapper_to_write() -> None:
    """client.chat.completions.create fails at add_node, naming the node and how to wrap it."""
    graph = WorkflowGraph("chat")
    with pytest.raises(InvalidAgentError, match="node 'ask'") as info:
        graph.add_node("ask", AsyncCompletions().create)
    assert info.value.node == "ask"
    assert "ask" not in graph
    message = str(info.value)
    assert "AsyncCompletions.create cannot take that (too many positional arguments)" in message
    assert (
        "`async def ask(task): return await <AsyncCompletions>.create("
        'messages=[{"role": "user", "content": task}], model=...)`' in message
    )


def lookup(table: str, key: str) -> str:
    return table + key


async def generate(*, prompt: str, size: str) -> str:
    return prompt


@pytest.mark.parametrize(
    ("agent", "reason", "wrapper"),
    [
        (lookup, "missing a required argument: 'key'", "def agent(task): return lookup(task, ...)"),
        (
            generate,
            "too many positional arguments",
            "async def agent(task): return await generate(prompt=task, size=...)",
        ),
    ],
)
def test_functions_that_cannot_take_the_task_alone_are_refused(
    agent: Callable[..., Any], reason: str, wrapper: str
) -> None:
    """A function needing more than the task, or only keywords, is refused with a wrapper."""
    with pytest.raises(InvalidAgentError, match="node 'look-up'") as info:
        describe_agent(agent, node="look-up")
    assert f"({reason})" in str(info.value)
    assert f"`{wrapper}`" in str(info.value)


async def with_options(task: Any, style: str = "plain", *more: Any, **options: Any) -> Any:
    return task


@pytest.mark.parametrize(
    "agent", [Arun(), Run(), with_options, functools.partial(lookup, "table:"), str.upper]
)
def test_callables_taking_the_task_and_optional_extras_are_accepted(agent: object) -> None:
    """arun(task, **kwargs), defaults, *args and partials that leave one argument all pass."""
    assert describe_agent(agent, node="n").agent is agent


@pytest.mark.parametrize("agent", [operator.methodcaller("upper"), next])
def test_callables_without_a_readable_signature_are_trusted(agent: object) -> None:
    """Some C callables hide their signature; heddle accepts them rather than guess."""
    assert describe_agent(agent, node="n").is_async is False


# --- generators: streaming is not supported yet ------------------------------------------


async def stream_words(task: str) -> AsyncIterator[str]:
    for word in task.split():
        yield word


def words(task: str) -> Iterator[str]:
    yield from task.split()


class StreamingArun:
    name = "streamer"

    async def arun(self, task: Any, **kwargs: Any) -> AsyncIterator[Any]:
        yield task


class StreamingRun:
    def run(self, task: Any, **kwargs: Any) -> Iterator[Any]:
        yield task


class StreamingCall:
    async def __call__(self, task: Any) -> AsyncIterator[Any]:
        yield task


@pytest.mark.parametrize(
    ("agent", "shown", "wrapper"),
    [
        (
            stream_words,
            "stream_words is an async generator function",
            "async def speak(task): return [item async for item in stream_words(task)]",
        ),
        (
            words,
            "words is a generator function",
            "def speak(task): return [item for item in words(task)]",
        ),
        (
            StreamingArun(),
            "StreamingArun.arun is an async generator function",
            "<StreamingArun>.arun(task)",
        ),
        (StreamingRun(), "StreamingRun.run is a generator function", "<StreamingRun>.run(task)"),
        (StreamingCall(), "StreamingCall is an async generator function", "<StreamingCall>(task)"),
    ],
)
def test_generators_are_refused_until_streaming_lands(
    agent: object, shown: str, wrapper: str
) -> None:
    """A yielding agent would 'succeed' with an unconsumed generator; add_node refuses it."""
    with pytest.raises(InvalidAgentError, match="node 'speak'") as info:
        describe_agent(agent, node="speak")
    message = str(info.value)
    assert shown in message
    assert "streaming agents are not supported yet; collect the items in a list" in message
    assert wrapper in message


# --- pydantic-ai before 1.0, by a stand-in of its shapes -----------------------------


@dataclasses.dataclass
class OldUsage:
    """pydantic-ai 0.x's Usage: request/response tokens, None when the model did not say."""

    requests: int = 1
    request_tokens: int | None = 12
    response_tokens: int | None = 5
    total_tokens: int | None = None


@dataclasses.dataclass
class OldRunResult:
    data: Any
    old_usage: OldUsage

    def usage(self) -> OldUsage:
        return self.old_usage


class OldAgent:
    """pydantic-ai 0.x's Agent as heddle sees it: its module, name and async run."""

    name = "old"

    def __init__(self, usage: OldUsage) -> None:
        self.old_usage = usage

    async def run(self, user_prompt: str, *, infer_name: bool = True) -> OldRunResult:
        return OldRunResult(f"re: {user_prompt}", self.old_usage)


OldAgent.__name__ = OldAgent.__qualname__ = "Agent"
OldAgent.__module__ = "pydantic_ai.agent"


@pytest.mark.parametrize(
    ("usage", "counts"),
    [
        (OldUsage(), {"requests": 1, "input_tokens": 12, "output_tokens": 5}),
        (OldUsage(0, None, None, None), {"requests": 0}),
    ],
)
async def test_older_pydantic_ai_results_are_read_too(
    usage: OldUsage, counts: dict[str, int]
) -> None:
    """Before 1.0 the output was .data, usage() a method, and tokens request/response (or None)."""
    spec = describe_agent(OldAgent(usage), node="n")
    assert spec.name == "old"
    assert await spec.call("hi") == AgentReply("re: hi", counts)
