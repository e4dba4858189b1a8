"""What heddle accepts as an agent, and how it calls one.

An agent is any of, recognised in this order:

* an object with ``async arun(task, **kwargs)`` (:class:`AgentProtocol`);
* a pydantic-ai ``Agent``: heddle awaits ``agent.run(task)``; the node's
  content is the run's output, and the run's token usage comes back with it
  (see :class:`AgentReply`);
* a LangChain ``Runnable`` (a chat model, a chain, a ``RunnableLambda``), or
  any object with ``ainvoke(task)`` or ``invoke(task)``: heddle awaits
  ``ainvoke``, else runs ``invoke`` in a worker thread;
* an object with a synchronous ``run(task, **kwargs)``: run in a worker
  thread, never on the event loop;
* a coroutine function ``async def f(task)``, or a callable object whose
  ``__call__`` is one;
* a plain function ``def f(task)``: run in a worker thread.

The callable heddle ends up calling must accept the task as its one
positional argument, and must return its result rather than yield it. Anything
else is rejected by :meth:`WorkflowGraph.add_node` with an
:class:`~heddle.core.errors.InvalidAgentError` that names the node, instead of
failing half-way through a run. An SDK method with keyword-only parameters
(``client.chat.completions.create``) and a generator (streaming agents are not
supported yet) are refused that way too, with the wrapper to write instead.

An agent call may return an :class:`AgentReply` to report its usage (token
counts) besides its content.

An agent's *name* keys its circuit breaker: the ``name`` attribute when it is a
non-empty string, else a Runnable's ``get_name()``, else a function's qualified
name, else the class's qualified name. Nodes that share an agent therefore
share its breaker.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from heddle.core.errors import InvalidAgentError

__all__ = ["AgentProtocol", "AgentReply", "AgentSpec", "SyncAgentProtocol", "describe_agent"]


@runtime_checkable
class AgentProtocol(Protocol):
    """An asynchronous agent: the shape heddle calls natively."""

    @property
    def name(self) -> str: ...

    async def arun(self, task: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class SyncAgentProtocol(Protocol):
    """A synchronous agent; heddle runs ``run`` in a worker thread."""

    def run(self, task: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class AgentReply:
    """An agent's answer with more than its content: the node's content and what the call used.

    Any agent may return one; heddle returns one for a pydantic-ai agent.
    ``content`` becomes the node's content, ``usage`` its result's ``usage``
    (heddle's keys are ``requests``, ``input_tokens``, ``output_tokens`` and
    ``total_tokens``; an agent may report others).

    >>> AgentReply("a haiku", usage={"input_tokens": 12, "output_tokens": 17})
    AgentReply(content='a haiku', usage={'input_tokens': 12, 'output_tokens': 17})
    """

    content: Any
    usage: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """How to call one agent: the callable, whether it is a coroutine function, its name."""

    agent: object
    call: Callable[..., Any]
    is_async: bool
    name: str


def describe_agent(agent: object, *, node: str) -> AgentSpec:
    """Work out how to call ``agent``; raise :class:`InvalidAgentError` naming ``node``."""
    if isinstance(agent, type):
        raise InvalidAgentError(
            f"node {node!r}: got the class {agent.__qualname__}, not an instance; "
            f"pass {agent.__qualname__}(...) instead",
            node=node,
        )
    spec = _choose_call(agent, node)
    _refuse_generator(spec, node)
    _check_takes_task(spec, node)
    return spec


def _choose_call(agent: object, node: str) -> AgentSpec:
    arun = getattr(agent, "arun", None)
    if arun is not None and callable(arun):
        # arun is async by contract: call it on the loop and await what it returns.
        return AgentSpec(agent, arun, True, _agent_name(agent, arun))
    # Before ``run``: a pydantic-ai agent's ``run`` returns a run result, not the content.
    if _is_pydantic_ai_agent(agent):
        call = _PydanticAIRun(agent)
        return AgentSpec(agent, call, True, _agent_name(agent, call))
    # Before ``run`` too: LangChain's legacy chains and tools have a ``run`` beside
    # ``invoke``, and ``invoke`` is the one that is current (``Chain.run`` is deprecated).
    ainvoke = getattr(agent, "ainvoke", None)
    if ainvoke is not None and callable(ainvoke):
        return AgentSpec(agent, ainvoke, True, _runnable_name(agent))
    invoke = getattr(agent, "invoke", None)
    if invoke is not None and callable(invoke):
        return AgentSpec(agent, invoke, _is_async_callable(invoke), _runnable_name(agent))
    run = getattr(agent, "run", None)
    if run is not None and callable(run):
        return AgentSpec(agent, run, _is_async_callable(run), _agent_name(agent, run))
    if callable(agent):
        return AgentSpec(agent, agent, _is_async_callable(agent), _agent_name(agent, agent))
    raise InvalidAgentError(
        f"node {node!r}: {type(agent).__qualname__} object is not an agent; expected an object "
        "with async arun(task) or run(task), a LangChain Runnable, a pydantic-ai Agent, "
        "or a function taking the task",
        node=node,
    )


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _agent_name(agent: object, call: Callable[..., Any]) -> str:
    name = getattr(agent, "name", None)
    if isinstance(name, str) and name:
        return name
    if inspect.isfunction(agent) or inspect.ismethod(agent) or inspect.isbuiltin(agent):
        return str(getattr(agent, "__qualname__", None) or getattr(call, "__name__", "agent"))
    return type(agent).__qualname__


def _runnable_name(agent: object) -> str:
    name = getattr(agent, "name", None)
    if not (isinstance(name, str) and name):
        # get_name() gives a RunnableLambda its function's name and a chat model its class's.
        get_name = getattr(agent, "get_name", None)
        name = get_name() if callable(get_name) else None
    return name if isinstance(name, str) and name else type(agent).__qualname__


# pydantic-ai -----------------------------------------------------------------


def _is_pydantic_ai_agent(agent: object) -> bool:
    # By the classes' names, so that importing heddle never imports pydantic_ai.
    # AbstractAgent covers Agent, WrapperAgent and the durable (Temporal, DBOS) agents.
    return any(
        cls.__name__ in ("AbstractAgent", "Agent") and cls.__module__.split(".")[0] == "pydantic_ai"
        for cls in type(agent).__mro__
    )


#: heddle's usage keys, each with the attribute names pydantic-ai has used for it, newest first.
_USAGE_FIELDS = {
    "requests": ("requests",),
    "input_tokens": ("input_tokens", "request_tokens"),
    "output_tokens": ("output_tokens", "response_tokens"),
    "total_tokens": ("total_tokens",),
}


def _usage_counts(usage: object) -> dict[str, int] | None:
    counts: dict[str, int] = {}
    for key, attributes in _USAGE_FIELDS.items():
        for attribute in attributes:
            value = getattr(usage, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool):
                counts[key] = value
                break
    return counts or None


@dataclass(frozen=True, slots=True)
class _PydanticAIRun:
    """Calls a pydantic-ai agent: its output is the content, its usage comes along."""

    agent: Any

    async def __call__(self, task: Any) -> AgentReply:
        # infer_name=False: else pydantic-ai names an unnamed agent after a variable of ours.
        result = await self.agent.run(task, infer_name=False)
        content = result.output if hasattr(result, "output") else result.data  # .data before 0.4
        usage = result.usage  # a property since pydantic-ai 2, a method before
        if inspect.ismethod(usage):
            usage = usage()
        return AgentReply(content, _usage_counts(usage))


# Build-time checks on the chosen callable ------------------------------------------


def _refuse_generator(spec: AgentSpec, node: str) -> None:
    fn = spec.call
    candidates = (fn, getattr(fn, "__call__", None))  # noqa: B004 - a callable object's __call__
    if any(inspect.isasyncgenfunction(c) for c in candidates):
        kind, loop, wrapper = "an async generator", "async for", "async def"
    elif any(inspect.isgeneratorfunction(c) for c in candidates):
        kind, loop, wrapper = "a generator", "for", "def"
    else:
        return
    raise InvalidAgentError(
        f"node {node!r}: {_label(fn)} is {kind} function (it yields), and streaming agents "
        "are not supported yet; collect the items in a list and return it, e.g. "
        f"`{wrapper} {_identifier(node)}(task): return [item {loop} item in {_expr(fn)}(task)]`",
        node=node,
    )


_TASK = object()  # stands for the task when checking that a callable takes one


def _check_takes_task(spec: AgentSpec, node: str) -> None:
    try:
        signature = inspect.signature(spec.call)
    except (TypeError, ValueError):
        return  # some builtins and C extensions have no readable signature: trust them
    try:
        signature.bind(_TASK)
    except TypeError as exc:
        call = f"{_expr(spec.call)}({_arguments(signature)})"
        # unwrap: a decorated SDK method (the OpenAI SDK's) is a sync wrapper returning a coroutine.
        if spec.is_async or inspect.iscoroutinefunction(inspect.unwrap(spec.call)):
            wrapper = f"async def {_identifier(node)}(task): return await {call}"
        else:
            wrapper = f"def {_identifier(node)}(task): return {call}"
        raise InvalidAgentError(
            f"node {node!r}: heddle calls an agent with the task as its one positional "
            f"argument, and {_label(spec.call)} cannot take that ({exc}); wrap it "
            f"in a function of the task, e.g. `{wrapper}`",
            node=node,
        ) from None


#: Keyword parameters that take the prompt in the LLM SDKs (OpenAI, Anthropic), by preference.
_PROMPT_KEYWORDS = ("messages", "input", "prompt")


def _arguments(signature: inspect.Signature) -> str:
    """Arguments for a call of ``signature``, with the task where it most likely goes."""
    params = [
        p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    positional = [p.name for p in params if p.kind is not p.KEYWORD_ONLY and p.default is p.empty]
    keywords = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    required = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    prompt = [name for name in _PROMPT_KEYWORDS if name in keywords]
    target = (positional or prompt or required or [""])[0]
    args = ["task" if name == target else "..." for name in positional]
    for name in keywords:
        if name == target == "messages":
            args.append('messages=[{"role": "user", "content": task}]')
        elif name == target:
            args.append(f"{name}=task")
        elif name in required:
            args.append(f"{name}=...")
    return ", ".join(args) or "..."


def _label(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def _expr(fn: object) -> str:
    """How user code would spell a call of ``fn``: ``<Client>.create`` for a bound method."""
    if inspect.ismethod(fn):
        return f"<{type(fn.__self__).__name__}>.{fn.__name__}"
    if inspect.isfunction(fn) or inspect.isbuiltin(fn):
        return fn.__name__
    return f"<{type(fn).__name__}>"


def _identifier(node: str) -> str:
    return node if node.isidentifier() and not keyword.iskeyword(node) else "agent"


async def await_if_needed(value: Awaitable[Any] | Any) -> Any:
    """Await ``value`` when a sync-looking callable returned an awaitable anyway."""
    if inspect.isawaitable(value):
        return await value
    return value
