"""Chaos trials: random workflows of misbehaving agents keep the executor's invariants.

In-process trials. Each draws from its seed a random DAG of 5-40 nodes whose
agents succeed, are slow, fail (retryably), fail their first attempts, hang
past their node's timeout, raise CancelledError themselves (they awaited a task
someone cancelled, or cancelled their own worker), return what a checkpoint
cannot store, or raise an error that cannot be printed; async, or sync in
threads where that makes sense. The executor gets a random ``max_concurrent``,
``fail_fast`` and RetryPolicy (tiny delays), sometimes a checkpointer, and
sometimes a cancel of ``execute()`` from outside after a short random delay; a
durable run that did not succeed is then resumed. :func:`check_run` says what
must hold whatever happened.

SIGKILL trials. A random durable workflow (chaos_workflow.py) runs in a child
process killed at a random moment (after a random number of side effects),
then is resumed in another process, killed too sometimes, until a resume
finishes. :func:`check_kill_trial` says what must hold.

Sizes: ``HEDDLE_CHAOS_TRIALS=n`` in-process trials (default 60),
``HEDDLE_CHAOS_KILL_TRIALS=n`` kill trials (default 4); ``HEDDLE_CHAOS_SEED=s``
runs only the in-process trial of seed ``s``. A failure names its seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import heddle
from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph, WorkflowResult
from heddle.workflows import SQLiteCheckpointer

TRIALS = int(os.environ.get("HEDDLE_CHAOS_TRIALS", "60"))
KILL_TRIALS = int(os.environ.get("HEDDLE_CHAOS_KILL_TRIALS", "4"))
ONLY_SEED = os.environ.get("HEDDLE_CHAOS_SEED")
SEEDS = [int(ONLY_SEED)] if ONLY_SEED else list(range(TRIALS))
BLOCKS = min(6, len(SEEDS))  # the trials are split into this many tests

#: Seconds a run (execute or resume) may take before it counts as hung. Trials take
#: well under a second; this only has to tell a hang from a busy machine.
DEADLINE = 20.0

ENDS = ("succeeded", "failed", "skipped")


# --- what a trial is ----------------------------------------------------------------------

#: Kinds of agents, with their weights: most nodes are calm, a trial's "trouble"
#: level decides how many are not.
CALM = {"ok": 5, "slow": 3, "flaky": 2}
TROUBLE = {
    "raises": 4,
    "hangs": 3,
    "cancels": 2,  # awaits a task that it cancelled: CancelledError not meant for the run
    "cancels_itself": 2,  # cancels the task it runs in, like a third party would
    "unstorable": 1,  # returns a lock: fine in memory, nothing a checkpoint can store
    "deep": 1,  # returns a list nested past the recursion limit
    "unprintable": 1,  # raises an error whose str() raises
}
#: The kinds that also come as plain functions run in threads. A sync agent
#: cannot be interrupted, so a hanging one would hold its thread forever, and
#: cancelling a thread's own task means nothing.
SYNC_KINDS = {"ok", "slow", "flaky", "raises", "cancels", "unstorable", "unprintable"}
#: The kinds whose node fails whenever it runs (a checkpoint makes two more fail).
ALWAYS_FAIL = {"raises", "hangs", "cancels", "cancels_itself", "unprintable"}
UNSTORABLE = {"unstorable", "deep"}


@dataclass(frozen=True, slots=True)
class NodePlan:
    kind: str
    sync: bool
    failures: int  # flaky: how many attempts fail before one succeeds
    seconds: float  # slow: how long it works
    timeout: float | None
    retry: RetryPolicy | None


@dataclass(frozen=True, slots=True)
class Trial:
    """Everything one seed decides: the graph, its agents, the executor, the outside cancel."""

    seed: int
    nodes: Mapping[str, NodePlan]  # in the order they are added to the graph
    edges: tuple[tuple[str, str], ...]
    max_concurrent: int
    fail_fast: bool
    retry: RetryPolicy
    durable: bool
    shared_breakers: bool  # agents of one kind share a name, hence a circuit breaker
    cancel_after: float | None

    def __str__(self) -> str:
        kinds = Counter(("sync " if p.sync else "") + p.kind for p in self.nodes.values())
        return (
            f"seed={self.seed} nodes={len(self.nodes)} edges={len(self.edges)} "
            f"max_concurrent={self.max_concurrent} fail_fast={self.fail_fast} "
            f"max_attempts={self.retry.max_attempts} durable={self.durable} "
            f"shared_breakers={self.shared_breakers} cancel_after={self.cancel_after} "
            f"kinds={dict(sorted(kinds.items()))}"
        )


def random_policy(rng: random.Random) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=rng.randint(1, 4),
        initial_delay=0.001,
        max_delay=0.005,
        jitter=rng.random() < 0.7,
    )


def draw(seed: int) -> Trial:
    """The trial of ``seed``: the same seed always gives the same trial."""
    rng = random.Random(seed)
    order = [f"n{i}" for i in range(rng.randint(5, 40))]  # a topological order
    density = rng.choice([0.0, 0.05, 0.1, 0.2, 0.4])
    edges = tuple(
        (order[i], order[j]) for j in range(len(order)) for i in range(j) if rng.random() < density
    )
    trouble = rng.choice([0.0, 0.1, 0.25, 0.5])
    added = rng.sample(order, len(order))  # graph order differs from the topological one
    nodes = {}
    for name in added:
        kinds = TROUBLE if rng.random() < trouble else CALM
        kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
        generous = 10.0 if rng.random() < 0.2 else None  # a timeout that never fires
        nodes[name] = NodePlan(
            kind=kind,
            sync=kind in SYNC_KINDS and rng.random() < 0.3,
            failures=rng.randint(1, 3),
            seconds=rng.uniform(0.001, 0.01),
            timeout=rng.uniform(0.005, 0.03) if kind == "hangs" else generous,
            retry=random_policy(rng) if rng.random() < 0.1 else None,
        )
    return Trial(
        seed=seed,
        nodes=nodes,
        edges=edges,
        max_concurrent=rng.choice([1, 1, 2, 3, 4, 8, 64]),
        fail_fast=rng.random() < 0.25,
        retry=random_policy(rng),
        durable=rng.random() < 0.5,
        shared_breakers=rng.random() < 0.3,
        cancel_after=rng.choice([0.0, 0.001, 0.005, 0.02]) if rng.random() < 0.2 else None,
    )


# --- the agents and what they saw ---------------------------------------------------------


@dataclass
class Lab:
    """What the agents of one trial did, per phase ("execute", then "resume")."""

    phase: str = "execute"
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    inside: Counter[tuple[str, str]] = field(default_factory=Counter)  # calls not returned yet
    running: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)  # sync agents run in threads
    never: asyncio.Event = field(default_factory=asyncio.Event)  # what hanging agents wait for

    def enter(self, node: str) -> str:
        with self.lock:
            phase = self.phase
            self.calls[phase, node] += 1
            self.inside[phase, node] += 1
            self.running[phase] += 1
            self.peak[phase] = max(self.peak[phase], self.running[phase])
        return phase

    def leave(self, phase: str, node: str) -> None:
        with self.lock:
            self.inside[phase, node] -= 1
            self.running[phase] -= 1

    def hang_report(self) -> str:
        """Which agents a hung run is inside (none: the run waits for nothing)."""
        with self.lock:
            inside = sorted(
                node for (phase, node), n in self.inside.items() if n and phase == self.phase
            )
            called = sum(1 for phase, _ in self.calls if phase == self.phase)
        return f"{called} node(s) called, agents of {inside or 'none'} still inside a call"


class UnprintableError(Exception):
    """An agent error whose message cannot be produced."""

    def __str__(self) -> str:
        raise ValueError("no message for you")


def content(node: str, task: Any) -> dict[str, Any]:
    """What a calm agent returns: its name and the shape of its task (JSON)."""
    return {"node": node, "got": sorted(task) if isinstance(task, dict) else type(task).__name__}


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


class ChaosAgent:
    """One node's agent: counts its calls in the lab, then behaves as its kind says."""

    def __init__(self, lab: Lab, node: str, plan: NodePlan, name: str) -> None:
        self.lab = lab
        self.node = node
        self.plan = plan
        self.name = name  # the circuit breaker's key
        self.failed = 0  # flaky: failed attempts so far, over both phases

    def outcome(self, task: Any) -> Any:
        """The end of a call, once any waiting is done: return or raise."""
        kind = self.plan.kind
        if kind == "raises" or (kind == "flaky" and self.failed < self.plan.failures):
            self.failed += 1
            raise ConnectionError(f"{self.node} is down")
        if kind == "unprintable":
            raise UnprintableError
        if kind == "unstorable":
            return {"node": self.node, "handle": threading.Lock()}
        if kind == "deep":
            return nested(2_000)
        return content(self.node, task)


class AsyncChaosAgent(ChaosAgent):
    async def arun(self, task: Any, **kwargs: Any) -> Any:
        phase = self.lab.enter(self.node)
        try:
            kind = self.plan.kind
            if kind == "slow":
                await asyncio.sleep(self.plan.seconds)
            elif kind == "hangs":
                await self.lab.never.wait()
            elif kind == "cancels":
                inner = asyncio.create_task(asyncio.sleep(3600))
                inner.cancel()
                await inner
            elif kind == "cancels_itself":
                current = asyncio.current_task()
                assert current is not None
                current.cancel()
                await asyncio.sleep(0)  # the cancel is delivered here
            return self.outcome(task)
        finally:
            self.lab.leave(phase, self.node)


class SyncChaosAgent(ChaosAgent):
    def run(self, task: Any, **kwargs: Any) -> Any:
        phase = self.lab.enter(self.node)
        try:
            if self.plan.kind == "slow":
                time.sleep(self.plan.seconds)
            elif self.plan.kind == "cancels":
                raise asyncio.CancelledError
            return self.outcome(task)
        finally:
            self.lab.leave(phase, self.node)


def build(trial: Trial, lab: Lab) -> WorkflowGraph:
    graph = WorkflowGraph(f"chaos-{trial.seed}")
    for node, plan in trial.nodes.items():
        agent_type = SyncChaosAgent if plan.sync else AsyncChaosAgent
        name = f"{plan.kind}-{agent_type.__name__}" if trial.shared_breakers else node
        agent = agent_type(lab, node, plan, name)
        graph.add_node(node, agent, timeout=plan.timeout, retry=plan.retry)
    for source, target in trial.edges:
        graph.add_edge(source, target)
    return graph


# --- running a trial ----------------------------------------------------------------------


async def drive(
    work: Coroutine[Any, Any, WorkflowResult], lab: Lab, cancel_after: float | None = None
) -> WorkflowResult | None:
    """Run ``work`` as a task, cancelled after ``cancel_after`` s; None if that cancel landed.

    Fails when it does not end within DEADLINE, raises anything, or raises
    CancelledError that the trial did not ask for.
    """
    task = asyncio.create_task(work)
    cancelled = False
    if cancel_after is not None:
        done, _ = await asyncio.wait({task}, timeout=cancel_after)
        cancelled = not done and task.cancel()
    done, _ = await asyncio.wait({task}, timeout=DEADLINE)
    if not done:
        task.cancel()
        _, still = await asyncio.wait({task}, timeout=5)
        raise AssertionError(
            f"{lab.phase} hung: no end within {DEADLINE} s; {lab.hang_report()}"
            + (" (and it ignored the cancel that followed)" if still else "")
        )
    try:
        result = task.result()
    except asyncio.CancelledError:
        assert cancelled, "CancelledError escaped although nobody cancelled the run"
        return None
    except BaseException as exc:  # ExceptionGroup, KeyError, RecursionError, ...
        raise AssertionError(f"{type(exc).__name__} escaped: {exc!r}") from exc
    assert not cancelled, "the run was cancelled but returned a result: the cancel was lost"
    return result


async def successes(checkpointer: SQLiteCheckpointer, wid: str) -> set[str]:
    results = await checkpointer.node_results(wid)
    return {node for node, r in results.items() if r["status"] == "succeeded"}


async def run_trial(trial: Trial, tmp_path: Path) -> None:
    """Execute the trial's workflow, resume it if durable and unfinished; check every run."""
    lab = Lab()
    graph = build(trial, lab)
    wid = f"chaos-{trial.seed}"
    before = asyncio.all_tasks()
    async with contextlib.AsyncExitStack() as stack:
        checkpointer = None
        if trial.durable:
            store = SQLiteCheckpointer(tmp_path / f"{wid}.db")
            checkpointer = await stack.enter_async_context(store)
        ex = WorkflowExecutor(
            max_concurrent=trial.max_concurrent,
            retry=trial.retry,
            fail_fast=trial.fail_fast,
            checkpointer=checkpointer,
            rng=random.Random(trial.seed).random,
        )
        work = ex.execute(graph, input="chaos", workflow_id=wid)
        result = await drive(work, lab, trial.cancel_after)
        if result is not None:
            await check_run(trial, lab, graph, result, checkpointer, replayed=set())
        assert lab.peak["execute"] <= trial.max_concurrent, f"{lab.peak} agents at once"
        if checkpointer is not None and (result is None or not result.ok):
            await resume_and_check(trial, lab, graph, ex, checkpointer, wid)
    leftover = asyncio.all_tasks() - before
    assert not leftover, f"tasks still running after the run: {leftover}"


async def resume_and_check(
    trial: Trial,
    lab: Lab,
    graph: WorkflowGraph,
    ex: WorkflowExecutor,
    checkpointer: SQLiteCheckpointer,
    wid: str,
) -> None:
    """A durable run that failed or was cancelled resumes, re-running nothing recorded."""
    record = await checkpointer.get_run(wid)
    if record is None:
        return  # cancelled before anything was recorded
    assert record.state != "running", (
        f"the run ended {record.status!r} but still holds a live lease: resume() is refused"
    )
    recorded = await successes(checkpointer, wid)
    lab.phase = "resume"
    resumed = await drive(ex.resume(wid, graph), lab)
    assert resumed is not None
    await check_run(trial, lab, graph, resumed, checkpointer, replayed=recorded)


async def check_run(
    trial: Trial,
    lab: Lab,
    graph: WorkflowGraph,
    result: WorkflowResult,
    checkpointer: SQLiteCheckpointer | None,
    replayed: set[str],
) -> None:
    """What must hold for any run that returned, whatever its agents did.

    ``replayed`` are the nodes recorded as succeeded before a resume.
    """
    phase, results = lab.phase, result.results
    statuses = {node: r["status"] for node, r in results.items()}
    assert list(results) == list(graph), f"{phase}: results do not cover the graph"
    odd = {node: s for node, s in statuses.items() if s not in ENDS}
    assert not odd, f"{phase}: statuses outside {ENDS}: {odd}"
    assert result.ok == all(s == "succeeded" for s in statuses.values()), (
        f"{phase}: run status {result.status!r} with node statuses {Counter(statuses.values())}"
    )

    ended: Counter[tuple[str, str]] = Counter(
        (m["node"], m["status"]) for m in result.context.messages
    )
    expected: Counter[tuple[str, str]] = Counter(
        (node, s) for node, s in statuses.items() if s != "skipped"
    )
    assert ended == expected, (
        f"{phase}: messages that no result has: {ended - expected}, "
        f"ended nodes without their message: {expected - ended}"
    )

    failed = {node for node, s in statuses.items() if s == "failed"}
    for node, r in results.items():
        status, plan, calls = r["status"], trial.nodes[node], lab.calls[phase, node]
        preds = graph.predecessors(node)
        where = (  # not the content: it may be nested too deep to print
            f"{phase}: node {node!r} ({'sync ' if plan.sync else ''}{plan.kind}) ended {status} "
            f"after {r['attempts']} attempt(s) and {calls} call(s), error {r['error']!r}"
        )
        if status != "skipped":
            assert all(statuses[p] == "succeeded" for p in preds), (
                f"{where} ran, a predecessor had not succeeded"
            )
        if node in replayed:
            assert status == "succeeded" and r.get("resumed"), f"{where}: recorded, not replayed"
            assert calls == 0, f"{where}: recorded as succeeded, yet run again"
            continue
        if status == "skipped":
            reason = r["error"] or ""
            assert any(repr(f) in reason for f in failed), f"{where}: skipped, no failure named"
            if trial.fail_fast:
                assert calls <= r["attempts"], f"{where}: skipped after calls it does not count"
            else:
                assert calls == 0, f"{where}: skipped, yet its agent was called"
                assert any(statuses[p] != "succeeded" for p in preds), (
                    f"{where}: skipped for nothing"
                )
            continue
        assert calls <= r["attempts"], f"{where}: {calls} calls"
        if not trial.fail_fast:
            assert calls == r["attempts"], f"{where}: {calls} calls"
        check_outcome(trial, node, r, where)

    assert lab.peak[phase] <= trial.max_concurrent, f"{phase}: {lab.peak[phase]} agents at once"

    if checkpointer is not None:
        recorded = await successes(checkpointer, result.workflow_id)
        reported = {node for node, s in statuses.items() if s == "succeeded"}
        assert reported <= recorded, f"{phase}: successes not recorded: {reported - recorded}"
        assert recorded <= reported, f"{phase}: recorded, reported otherwise: {recorded - reported}"
        record = await checkpointer.get_run(result.workflow_id)
        assert record is not None and record.status == result.status, f"{phase}: {record}"


def check_outcome(trial: Trial, node: str, r: Any, where: str) -> None:
    """A node that ran ended as its kind must.

    A kind that fails may also meet its circuit breaker open: opened by nodes
    sharing its agent's name, or by its own failures in the execute before a resume.
    """
    plan = trial.nodes[node]
    error = r["error"] or ""
    breaker = "CircuitBreakerOpen" in error
    fails = plan.kind in ALWAYS_FAIL or (trial.durable and plan.kind in UNSTORABLE)
    if plan.kind != "flaky":
        assert r["status"] == ("failed" if fails else "succeeded"), where
    if r["status"] == "succeeded" and plan.kind in CALM:
        assert r["content"]["node"] == node, where
    if r["status"] != "failed" or breaker:
        return
    if plan.kind in ("cancels", "cancels_itself"):
        assert "CancelledError" in error, where
        assert r["attempts"] == 1, f"{where}: a CancelledError was retried"
    elif plan.kind == "hangs":
        assert "NodeTimeoutError" in error, where
    elif plan.kind in ("raises", "flaky"):
        assert "ConnectionError" in error, where
    elif plan.kind == "unprintable":
        assert "UnprintableError" in error, where


@pytest.mark.timeout(120 + 2 * len(SEEDS) // max(BLOCKS, 1))
@pytest.mark.parametrize("block", range(BLOCKS))
async def test_random_workflows_keep_the_executor_invariants(block: int, tmp_path: Path) -> None:
    """Every trial of this block ends within its deadline with every invariant holding."""
    for seed in SEEDS[block::BLOCKS]:
        trial = draw(seed)
        print(trial)
        try:
            await run_trial(trial, tmp_path)
        except AssertionError as exc:
            raise AssertionError(
                f"chaos trial {trial}\n  {exc}\n  rerun it alone: HEDDLE_CHAOS_SEED={seed} "
                "pytest tests/workflows/test_chaos.py -k invariants"
            ) from exc


def test_trials_are_deterministic_per_seed() -> None:
    """A seed always draws the same trial, and different seeds draw different ones."""
    assert [draw(seed) for seed in range(20)] == [draw(seed) for seed in range(20)]
    assert len({str(draw(seed)) for seed in range(20)}) == 20


# --- SIGKILL and resume, in child processes --------------------------------------------------

SCRIPT = Path(__file__).with_name("chaos_workflow.py")
_spec = importlib.util.spec_from_file_location("chaos_workflow", SCRIPT)
assert _spec is not None and _spec.loader is not None
chaos_workflow = sys.modules["chaos_workflow"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chaos_workflow)  # the same module the child processes run

MAX_ROUNDS = 6  # processes per kill trial: the last one is never killed


@dataclass(frozen=True, slots=True)
class Round:
    """One process of a kill trial, and what the database held once it was gone."""

    pid: int
    killed: bool
    recorded: Mapping[str, int]  # succeeded node -> pid in its recorded result


def start(mode: str, db: Path, seed: int, side: Path) -> subprocess.Popen[str]:
    # The child imports the same heddle as this process.
    env = {**os.environ, "PYTHONPATH": str(Path(heddle.__file__).parents[1])}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(db), str(seed), str(side)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def side_effects(side: Path) -> list[tuple[str, int]]:
    if not side.exists():
        return []
    lines = (line.split() for line in side.read_text().splitlines() if line)
    return [(node, int(pid)) for node, pid in lines]


def wait_for_side_effects(process: subprocess.Popen[str], side: Path, count: int) -> None:
    """Until ``side`` has ``count`` lines, or the process ended."""
    deadline = time.monotonic() + 60
    while len(side_effects(side)) < count and process.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)


def recorded(db: Path) -> dict[str, int]:
    async def read() -> dict[str, int]:
        async with SQLiteCheckpointer(db) as store:
            results = await store.node_results(chaos_workflow.WORKFLOW_ID)
        return {n: r["content"]["pid"] for n, r in results.items() if r["status"] == "succeeded"}

    return asyncio.run(read())


def run_status(db: Path) -> str | None:
    async def read() -> str | None:
        async with SQLiteCheckpointer(db) as store:
            record = await store.get_run(chaos_workflow.WORKFLOW_ID)
        return None if record is None else record.status

    return asyncio.run(read())


def assert_intact(db: Path) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def check_kill_trial(shape: Any, rounds: list[Round], lines: list[tuple[str, int]]) -> int:
    """The invariants of a finished kill trial; returns how many nodes ran twice.

    A success is committed before its dependents start, and its side effect
    happens before the commit. So a node may run again only if a kill landed
    between its side effect and its commit (at most ``max_concurrent`` nodes
    per kill: each holds a worker until committed); once recorded, a node never
    runs again and its record never changes, and the recorded result is the one
    of the process that committed it.
    """
    pids = [r.pid for r in rounds]
    assert {pid for _, pid in lines} <= set(pids), "a side effect from an unknown process"
    assert len(set(lines)) == len(lines), f"a node ran twice in one process: {lines}"
    for earlier, later in itertools.pairwise(rounds):
        changed = {n for n, pid in earlier.recorded.items() if later.recorded.get(n) != pid}
        assert not changed, f"recorded results lost or rewritten: {changed}"
    assert set(rounds[-1].recorded) == set(shape.nodes), "the finished run misses nodes"
    ran_twice = 0
    for node in shape.nodes:
        committed_in = next(i for i, seen in enumerate(rounds) if node in seen.recorded)
        committer = rounds[committed_in].pid
        runs = [pid for n, pid in lines if n == node]
        assert rounds[committed_in].recorded[node] == committer, f"{node}: recorded by another"
        assert committer in runs, f"{node}: recorded without its side effect"
        again = set(pids[committed_in + 1 :]) & set(runs)
        assert not again, f"{node}: run again by {again} after it was recorded"
        ran_twice += len(runs) - 1
    for r in rounds:
        lost = {n for n, pid in lines if pid == r.pid and r.recorded.get(n) != pid}
        assert r.killed or not lost, f"process {r.pid} finished, yet {lost} were not recorded"
        assert len(lost) <= shape.max_concurrent, f"process {r.pid}: {lost} lost in one kill"
    return ran_twice


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(KILL_TRIALS))
def test_sigkilled_random_workflows_never_rerun_a_recorded_node(seed: int, tmp_path: Path) -> None:
    """Killed at random moments and resumed until done, a run re-runs no recorded node."""
    shape = chaos_workflow.shape(seed)
    rng = random.Random(f"kill-{seed}")
    db, side = tmp_path / "runs.db", tmp_path / "side-effects.txt"
    print(
        f"kill trial seed={seed}: {len(shape.nodes)} nodes, {len(shape.edges)} edges, "
        f"max_concurrent={shape.max_concurrent}"
    )
    rounds: list[Round] = []
    while not rounds or rounds[-1].killed:
        assert len(rounds) < MAX_ROUNDS, "killed more often than planned"
        process = start("resume" if rounds else "execute", db, seed, side)
        left = len(shape.nodes) - len(rounds[-1].recorded if rounds else ())
        last = len(rounds) == MAX_ROUNDS - 1
        if left > 1 and not last and (not rounds or rng.random() < 0.5):
            wait_for_side_effects(process, side, len(side_effects(side)) + rng.randint(1, left - 1))
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0, 0.02))
            process.kill()  # does nothing if it has ended
        out, err = process.communicate(timeout=120)
        killed = process.returncode == -signal.SIGKILL
        assert killed or (process.returncode, out.strip()) == (0, "succeeded"), err
        assert_intact(db)
        rounds.append(Round(process.pid, killed, recorded(db)))
        print(
            f"  {'killed' if killed else 'finished'} {process.pid}: "
            f"{len(rounds[-1].recorded)}/{len(shape.nodes)} recorded"
        )
    ran_twice = check_kill_trial(shape, rounds, side_effects(side))
    print(f"  {ran_twice} node(s) ran twice (killed between their side effect and their commit)")
    assert run_status(db) == "succeeded"
