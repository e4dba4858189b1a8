"""The bundled demo workflow (heddle.examples.demo), run through the library API."""

from __future__ import annotations

import pytest

from heddle import RetryPolicy, WorkflowExecutor
from heddle.examples import demo


@pytest.fixture(autouse=True)
def _no_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulated latencies are for people watching; tests do not wait for them."""
    for name in dir(demo):
        if name.endswith("_LATENCY"):
            monkeypatch.setattr(demo, name, 0.0)


async def test_demo_retries_the_feed_and_recalls_findings_on_the_second_run() -> None:
    """First run: one retry, findings saved; second run: findings recalled, brief #2."""
    first = await WorkflowExecutor().execute(demo.build_graph(), demo.TOPIC)
    assert first.ok
    assert first.results["market"]["attempts"] == 2
    assert not first.content("history").endswith(demo.RECALLED)
    assert "run the demo again" in " ".join(demo.epilogue(first))

    second = await WorkflowExecutor().execute(demo.build_graph(), demo.TOPIC)
    assert second.results["market"]["attempts"] == 2  # live data: flaky every run
    assert second.content("history").endswith(demo.RECALLED)
    assert second.content("plan").startswith("brief #2 on")
    said = " ".join(" ".join(demo.epilogue(second)).split())
    assert "2 of 2 findings were recalled" in said
    assert second.content("review") == first.content("review")  # deterministic output


async def test_demo_on_another_topic_says_it_has_no_offline_sources() -> None:
    """The demo knows one topic; any other gets an honest answer, not invented facts."""
    result = await WorkflowExecutor().execute(demo.build_graph(), "fusion")
    assert result.ok
    assert result.content("history") == "no offline sources on the history of fusion"
    assert result.content("market") == "no market data on fusion"


def test_epilogue_of_a_failed_run_points_at_the_table() -> None:
    """If the demo ever fails, its epilogue says so instead of printing a brief."""
    result = WorkflowExecutor().run(
        demo.build_graph().add_node("x", _boom, retry=RetryPolicy(max_attempts=1)), demo.TOPIC
    )
    assert not result.ok
    assert demo.epilogue(result) == ["The brief was not finished; the table above says why."]


async def _boom(task: object) -> None:
    raise RuntimeError("boom")
