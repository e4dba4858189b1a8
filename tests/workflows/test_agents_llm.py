"""LangChain runnables and pydantic-ai agents run as nodes as they are, offline."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.agent import WrapperAgent
from pydantic_ai.models.test import TestModel

from heddle import WorkflowExecutor, WorkflowGraph
from heddle.agents import AgentReply, describe_agent


def shout(text: str) -> str:
    return text.upper()


async def exclaim(text: str) -> str:
    return f"{text}!"


# --- LangChain ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runnable", "name"),
    [
        (RunnableLambda(shout), "shout"),
        (RunnableLambda(exclaim), "exclaim"),
        (RunnableLambda(shout, name="loud"), "loud"),
        (RunnableLambda(shout) | RunnableLambda(exclaim), "RunnableSequence"),
        (FakeListChatModel(responses=["hi"]), "FakeListChatModel"),
    ],
)
def test_runnables_are_awaited_through_ainvoke_and_named(runnable: Any, name: str) -> None:
    """Every Runnable is called through ainvoke; its breaker is keyed by its name or class."""
    spec = describe_agent(runnable, node="n")
    assert spec.call == runnable.ainvoke
    assert spec.is_async is True
    assert spec.name == name


async def test_runnables_run_as_nodes_of_a_workflow() -> None:
    """Sync and async RunnableLambda, a chain and a chat model run in one real execution."""
    graph = (
        WorkflowGraph("langchain")
        .add_node("shout", RunnableLambda(shout))
        .add_node("exclaim", RunnableLambda(exclaim))
        .add_node("chain", RunnableLambda(shout) | RunnableLambda(exclaim))
        .add_node("chat", FakeListChatModel(responses=["Paris."]))
        .add_edge("shout", "exclaim")
        .add_edge("exclaim", "chat")
    )
    result = await WorkflowExecutor().execute(graph, input="capital of france")
    assert result.ok
    assert result.content("exclaim") == "CAPITAL OF FRANCE!"
    assert result.content("chain") == "CAPITAL OF FRANCE!"
    reply = result.content("chat")
    assert isinstance(reply, AIMessage)
    assert reply.content == "Paris."


# --- pydantic-ai ------------------------------------------------------------------------


class City(BaseModel):
    name: str
    population: int


async def test_pydantic_ai_agent_replies_with_its_output_and_usage() -> None:
    """A pydantic-ai Agent's call returns AgentReply(output, usage counts), not the run result."""
    agent = Agent(TestModel(custom_output_text="Paris"), name="geographer")
    spec = describe_agent(agent, node="n")
    assert (spec.is_async, spec.name) == (True, "geographer")
    reply = await spec.call("capital of France?")
    assert isinstance(reply, AgentReply)
    assert reply.content == "Paris"
    assert reply.usage is not None
    assert reply.usage["requests"] == 1
    assert reply.usage["total_tokens"] == reply.usage["input_tokens"] + reply.usage["output_tokens"]
    assert reply.usage["output_tokens"] > 0


async def test_pydantic_ai_structured_output_is_the_content() -> None:
    """With an output_type the content is the validated model instance."""
    model = TestModel(custom_output_args={"name": "Paris", "population": 2_100_000})
    agent = Agent(model, output_type=City)
    reply = await describe_agent(agent, node="n").call("the capital of France")
    assert reply.content == City(name="Paris", population=2_100_000)


async def test_an_unnamed_pydantic_ai_agent_keeps_no_name() -> None:
    """heddle keys it by class and does not let pydantic-ai name it after heddle's variables."""
    agent = Agent(TestModel())
    spec = describe_agent(agent, node="n")
    await spec.call("hello")
    assert spec.name == "Agent"
    assert agent.name is None


async def test_wrapped_pydantic_ai_agents_are_recognised() -> None:
    """Subclasses of AbstractAgent (WrapperAgent, the durable agents) are called the same way."""
    agent = WrapperAgent(Agent(TestModel(custom_output_text="Paris"), name="inner"))
    spec = describe_agent(agent, node="n")
    assert spec.name == "inner"
    assert (await spec.call("capital of France?")).content == "Paris"


class ArunAgent(WrapperAgent[None, str]):
    async def arun(self, task: Any, **kwargs: Any) -> Any:
        return f"arun: {task}"


async def test_arun_still_wins_over_pydantic_ai() -> None:
    """An object with arun is called through arun, even when it is a pydantic-ai agent."""
    agent = ArunAgent(Agent(TestModel()))
    assert await describe_agent(agent, node="n").call("x") == "arun: x"


async def test_pydantic_ai_agent_runs_as_a_node_of_a_workflow() -> None:
    """Through a real execution the node's content is the output and its usage is recorded."""
    agent = Agent(TestModel(custom_output_text="Paris"), name="geographer")
    graph = WorkflowGraph("pydantic-ai").add_node("answer", agent, task="Capital of {input}?")
    result = await WorkflowExecutor().execute(graph, input="France")
    assert result.content("answer") == "Paris"
    assert result.results["answer"]["usage"]["requests"] == 1


def test_importing_heddle_imports_neither_library() -> None:
    """Recognising these agents costs nothing to users who have not installed them."""
    code = "import sys, heddle; print(sorted({'pydantic_ai', 'langchain_core'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
