"""The workflow behind ``heddle demo``: five agents write a research brief.

::

    plan --+--> history ----+
           +--> chemistry --+--> write --> review
           +--> market -----+

Offline and deterministic: the agents are plain Python standing in for LLM
and API calls, with short sleeps for their latency. What it shows:

* a fan-out and a join: the three researchers start together as soon as the
  plan is done, and ``write`` waits for all three (it gets ``{name: finding}``);
* a flaky agent and retries: the market-data feed answers the first call of
  every run with a 503, and the ``market`` node's :class:`RetryPolicy` calls it
  again 0.4 s later;
* agent memory: the history and chemistry researchers keep what they found in
  :class:`~heddle.memory.AgentMemory` (SQLite at ``$HEDDLE_HOME/memory.db``,
  else ``./.heddle/memory.db``); the next run recalls it instead of searching
  again, and the planner counts the briefs written on the topic. Market data
  is live, so it is never cached.

Run it from the command line (``heddle demo``, durable, with live progress),
or from Python::

    from heddle import WorkflowExecutor
    from heddle.examples.demo import TOPIC, build_graph

    result = WorkflowExecutor(max_concurrent=4).run(build_graph(), input=TOPIC)
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Mapping

from heddle.memory import AgentMemory, default_store_path
from heddle.workflows.executor import WorkflowResult
from heddle.workflows.graph import WorkflowGraph
from heddle.workflows.resilience import RetryPolicy

__all__ = ["INTRO", "TOPIC", "build_graph", "epilogue"]

TOPIC = "solid-state batteries"

INTRO = (
    f"heddle demo: five agents write a brief on {TOPIC!r}, offline and deterministic.\n"
    "Three researchers fan out and join, the market feed fails once and is retried,\n"
    "and findings are kept in agent memory for the next run."
)

#: What the researchers "find" about TOPIC (any other topic gets a polite shrug).
FINDINGS = {
    "history": (
        "Sony shipped the first lithium-ion cell in 1991; solid electrolytes have been "
        "studied since the 1830s (Faraday's silver sulfide), but only sulfide and oxide "
        "ceramics found in the 2010s conduct lithium as well as liquids do"
    ),
    "chemistry": (
        "a solid electrolyte replaces the flammable liquid between the electrodes, which "
        "makes a lithium-metal anode possible: roughly 50% more energy per litre, if "
        "dendrites and interface cracking can be kept in check"
    ),
}
MARKET_QUOTE = (
    "four carmakers have announced pilot lines for 2027-2028; cell cost is still about "
    "three times that of liquid lithium-ion at pilot scale"
)
RECALLED = " (recalled from memory)"

# Simulated latencies, in seconds: long enough to watch, short enough for a demo.
PLAN_LATENCY = 0.25
SEARCH_LATENCY = 0.8
RECALL_LATENCY = 0.05
FEED_LATENCY = 0.25
WRITE_LATENCY = 0.35
REVIEW_LATENCY = 0.25


class Planner:
    """Splits the topic into questions; remembers how many briefs it has planned on it."""

    name = "planner"

    async def arun(self, topic: str) -> str:
        async with AgentMemory(self.name) as memory:
            edition = int(await memory.load(f"briefs/{topic}", 0)) + 1
            await memory.save(f"briefs/{topic}", edition)
        await asyncio.sleep(PLAN_LATENCY)
        return (
            f"brief #{edition} on {topic}: how did we get here, what changes in the cell, "
            "who is building it"
        )


class Researcher:
    """Answers one question about the topic, from memory when it has answered it before."""

    def __init__(self, angle: str) -> None:
        self.angle = angle
        self.name = f"researcher-{angle}"

    async def arun(self, topic: str) -> str:
        key = f"{topic}/{self.angle}"
        async with AgentMemory("researcher") as memory:
            known = await memory.load(key)
            if known is not None:
                await asyncio.sleep(RECALL_LATENCY)
                return str(known) + RECALLED
            await asyncio.sleep(SEARCH_LATENCY)  # the "search and summarise" calls
            finding = FINDINGS.get(self.angle) if topic == TOPIC else None
            if finding is None:
                return f"no offline sources on the {self.angle} of {topic}"
            await memory.save(key, finding, metadata={"source": "demo corpus"})
            return finding


class MarketFeed:
    """Live market data (never cached) behind an API that answers its first call with a 503."""

    name = "market-feed"

    def __init__(self) -> None:
        self.calls = 0

    async def arun(self, topic: str) -> str:
        self.calls += 1
        await asyncio.sleep(FEED_LATENCY)
        if self.calls == 1:
            raise ConnectionError("market-data API: 503 Service Unavailable")
        if topic != TOPIC:
            return f"no market data on {topic}"
        return MARKET_QUOTE


async def write(findings: Mapping[str, str]) -> str:
    """The join: one draft from the three findings (a stand-in for an LLM call)."""
    await asyncio.sleep(WRITE_LATENCY)
    parts = [
        f"{angle.capitalize()}: {findings[angle].removesuffix(RECALLED)}." for angle in findings
    ]
    return " ".join(parts)


async def review(draft: str) -> str:
    """The editor: a headline and a verdict around the draft."""
    await asyncio.sleep(REVIEW_LATENCY)
    return (
        f"{TOPIC.capitalize()}, in brief. {draft} Verdict: the chemistry works in the lab; "
        "cost and manufacturing decide whether it reaches a car before 2030."
    )


def build_graph() -> WorkflowGraph:
    """The demo graph, with fresh agents (so the market feed fails once per graph)."""
    graph = WorkflowGraph("research-brief")
    graph.add_node("plan", Planner())
    graph.add_node("history", Researcher("history"), task="{input}")
    graph.add_node("chemistry", Researcher("chemistry"), task="{input}")
    graph.add_node(
        "market",
        MarketFeed(),
        task="{input}",
        retry=RetryPolicy(max_attempts=3, initial_delay=0.4, jitter=False),
    )
    graph.add_node("write", write)
    graph.add_node("review", review)
    for angle in ("history", "chemistry", "market"):
        graph.add_edge("plan", angle).add_edge(angle, "write")
    graph.add_edge("write", "review")
    return graph


def epilogue(result: WorkflowResult) -> list[str]:
    """What ``heddle demo`` prints after the result table: the brief and what memory did."""
    if not result.ok:
        return ["The brief was not finished; the table above says why."]
    lines = textwrap.wrap(str(result.content("review")), 88)
    recalled = [
        name for name in ("history", "chemistry") if str(result.content(name)).endswith(RECALLED)
    ]
    edition = str(result.content("plan")).split(" ", 2)[1]
    if recalled:
        memory = (
            f"Memory: {len(recalled)} of 2 findings were recalled from {default_store_path()} "
            f"(saved by an earlier run); this is brief {edition} on the topic."
        )
    else:
        memory = (
            f"Memory: the researchers saved their findings in {default_store_path()}; "
            "run the demo again and they answer from memory."
        )
    return [*lines, "", *textwrap.wrap(memory, 88, break_on_hyphens=False, break_long_words=False)]
