"""The heddle command line, driven as a user drives it.

The end-to-end paths run ``python -m heddle`` in real subprocesses (stdout a
pipe, so the progress display is in its plain, non-TTY form); the many cheap
cases (each bad input, each option) run in-process through click's CliRunner,
which goes through the same entry point and error handling.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from heddle.cli import cli, main
from heddle.workflows.checkpoint import RunRecord, SQLiteCheckpointer

SRC = Path(__file__).resolve().parents[1] / "src"

OK = """\
from heddle import WorkflowGraph

async def fetch(topic):
    return f"3 sources on {topic}"

async def summarise(sources):
    return f"summary of {sources}"

graph = WorkflowGraph("brief")
graph.add_node("fetch", fetch).add_node("summarise", summarise)
graph.add_edge("fetch", "summarise")
"""

# 'enrich' fails until a file named 'marker' exists next to the workflow file.
PIPELINE = """\
from pathlib import Path
from heddle import RetryPolicy, WorkflowGraph

MARKER = Path(__file__).with_name("marker")

async def load(task):
    return {"rows": 3, "task": task}

async def enrich(data):
    if not MARKER.exists():
        raise RuntimeError("enrichment service is down")
    return "enriched [bold]rows[/bold]"

async def report(text):
    return f"report on {text}"

async def audit(data):
    return "audited"

pipeline = WorkflowGraph("pipeline")
pipeline.add_node("load", load)
pipeline.add_node("enrich", enrich, retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
pipeline.add_node("report", report).add_node("audit", audit)
pipeline.add_edge("load", "enrich").add_edge("enrich", "report").add_edge("load", "audit")
"""

# 'slow' touches 'slow-started' next to the file, then sleeps until it is cancelled.
SLOW = """\
import asyncio
from pathlib import Path
from heddle import WorkflowGraph

async def first(task):
    return "first"

async def slow(task):
    Path(__file__).with_name("slow-started").touch()
    await asyncio.sleep(30)

graph = WorkflowGraph("slow").add_node("first", first).add_node("slow", slow)
graph.add_edge("first", "slow")
"""

SEVERAL = """\
from heddle import WorkflowGraph

async def echo(task):
    return task

alpha = WorkflowGraph("alpha").add_node("echo", echo)
beta = WorkflowGraph("beta").add_node("echo", echo)
same_as_alpha = alpha

def build():
    return WorkflowGraph("built").add_node("a", echo).add_node("b", echo).add_edge("a", "b")

def needs_args(name):
    return WorkflowGraph(name)

def explodes():
    raise ValueError("no graph today")

def not_a_graph():
    return 42

NUMBER = 3
"""

# Terminal escapes in the graph's name, a node's name, a result and an error.
EVIL = r"""
from heddle import RetryPolicy, WorkflowGraph

async def shout(task):
    return "\x1b[2J\x1b]0;pwned\x07"

async def explode(task):
    raise ValueError("bad \x1b[31mred\x07")

graph = WorkflowGraph("evil\x1b[5m")
graph.add_node("n\x1b]0;x\x07", shout)
graph.add_node("boom\x9b", explode, retry=RetryPolicy(max_attempts=1))
"""

# Two sinks: a long text of several lines, and a dict.
OUTPUTS = """\
from heddle import WorkflowGraph

async def start(task):
    return task

async def text(task):
    return "line one\\n" + "x" * 200

async def data(task):
    return {"rows": [1, 2], "topic": task}

graph = WorkflowGraph("outputs").add_node("start", start)
graph.add_node("text", text).add_node("data", data)
graph.add_edge("start", "text").add_edge("start", "data")
"""

BAD_FILES = {
    "none.py": "X = 1\n",
    "boom.py": "import os\n\nraise RuntimeError('OPENAI_API_KEY is not set')\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "syntax.py": "def broken(:\n    pass\n",
    "notes.md": "# Notes\n\n- [a link](http://example.com\n",
    "binary.py": "x = 1\n\x00\n",
    "cycle.py": (
        "from heddle import WorkflowGraph\n"
        "async def f(x): return x\n"
        "g = WorkflowGraph('loop').add_node('a', f).add_node('b', f)\n"
        "g.add_edge('a', 'b').add_edge('b', 'a')\n"
    ),
    "duplicate.py": (
        "from heddle import WorkflowGraph\n"
        "async def f(x): return x\n"
        "g = WorkflowGraph('dup').add_node('a', f).add_node('a', f)\n"
    ),
}


@pytest.fixture(autouse=True)
def _restore_import_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process runs load workflow files as modules: undo that after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("_heddle_workflow_"):
            del sys.modules[name]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory holding every workflow file of these tests."""
    for name, text in {
        "ok.py": OK,
        "pipeline.py": PIPELINE,
        "slow.py": SLOW,
        "several.py": SEVERAL,
        "evil.py": EVIL,
        "outputs.py": OUTPUTS,
        **BAD_FILES,
    }.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def heddle(
    *args: str, cwd: Path, timeout: float = 30, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m heddle ARGS`` in a child process, stdout and stderr piped."""
    return subprocess.run(
        [sys.executable, "-m", "heddle", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(SRC), **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_heddle(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """Start ``python -m heddle ARGS`` in a child process, stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "heddle", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_file(marker: Path, child: subprocess.Popen[str], timeout: float = 20) -> None:
    """Block until ``marker`` exists (an agent in ``child`` wrote it); fail if the child exits."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        try:
            child.wait(timeout=0.05)  # the wait itself is the tick: it ends if the child does
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                child.kill()
                pytest.fail(f"{marker.name} did not appear within {timeout} s")
            continue
        out, err = child.communicate()
        pytest.fail(f"heddle exited ({child.returncode}) first: stdout={out!r} stderr={err!r}")


def invoke(*args: str, cwd: Path) -> Result:
    """Run the CLI in this process (same entry point and error handling)."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)


def assert_one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("heddle: error: ")
    assert "Traceback" not in stderr
    return lines[0]


# -- end to end, in real processes -----------------------------------------------------


def test_run_in_a_pipe_prints_plain_lines_without_control_codes(files: Path) -> None:
    """Non-TTY progress is one plain line per node event, even with FORCE_COLOR set."""
    done = heddle(
        "run", "ok.py", "--input", "tidal power", cwd=files, FORCE_COLOR="1", TERM="xterm-256color"
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Running graph 'brief' (2 nodes) as workflow_")
    events = [line.split()[1:3] for line in lines[1:5]]
    assert events == [
        ["fetch", "started"],
        ["fetch", "done"],
        ["summarise", "started"],
        ["summarise", "done"],
    ]
    assert "finished: succeeded (2 done)" in done.stdout
    assert "summary of 3 sources on tidal power" in done.stdout
    assert "workflow workflow_" in done.stdout
    assert "inspect it:  heddle show workflow_" in done.stdout


@pytest.mark.slow
def test_failed_run_is_listed_shown_and_resumed(files: Path) -> None:
    """run (fails, exit 1) -> runs -> show --json -> resume once fixed (exit 0) -> show."""
    first = heddle("run", "pipeline.py", "--input", "q3", "--workflow-id", "job-1", cwd=files)
    assert first.returncode == 1, first.stderr
    assert "\x1b" not in first.stdout
    assert "enrich  attempt 1 failed: RuntimeError: enrichment service is down" in first.stdout
    assert "report  skipped: upstream node 'enrich' failed" in first.stdout
    assert "workflow job-1 failed" in first.stdout
    assert "resume it:   heddle resume job-1 pipeline.py:pipeline" in first.stdout

    listed = invoke("runs", cwd=files)
    assert listed.exit_code == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith("job-1"))
    assert row.split()[1:3] == ["pipeline", "failed"]
    assert row.split()[-1] == "2/4"

    shown = heddle("show", "job-1", "--json", cwd=files)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["run"]["status"] == "failed"
    assert doc["run"]["input"] == "q3"
    assert [n["node"] for n in doc["nodes"]] == ["load", "enrich", "report", "audit"]
    assert [n["status"] for n in doc["nodes"]] == ["succeeded", "failed", "skipped", "succeeded"]
    assert doc["nodes"][1]["attempts"] == 2
    assert doc["nodes"][1]["error"] == "RuntimeError: enrichment service is down"
    assert doc["events"][0]["event_type"] == "workflow.started"
    assert doc["events"][-1]["event_type"] == "workflow.finished"

    (files / "marker").touch()
    resumed = heddle("resume", "job-1", "pipeline.py:pipeline", cwd=files)
    assert resumed.returncode == 0, resumed.stderr
    assert "\x1b" not in resumed.stdout
    assert "Resuming job-1 (graph 'pipeline', failed): 2 of 4 nodes recorded done" in (
        resumed.stdout
    )
    assert "load" not in [line.split()[1] for line in resumed.stdout.splitlines()[1:4]]
    assert "succeeded (resumed)" in resumed.stdout
    assert "enriched [bold]rows[/bold]" in resumed.stdout  # printed as text, not markup
    assert "workflow job-1 succeeded" in resumed.stdout

    after = invoke("show", "job-1", cwd=files)
    assert after.exit_code == 0
    assert "job-1  graph 'pipeline'  succeeded" in after.stdout
    assert "resume it" not in after.stdout


TYPED = """
import dataclasses
from datetime import date
from pathlib import Path
from heddle import RetryPolicy, WorkflowGraph

@dataclasses.dataclass(frozen=True)
class Note:
    text: str
    day: date
    span: tuple[int, int]

async def fetch(task) -> Note:
    return Note(f"notes on {task}", date(2026, 12, 1), (1, 2))

async def publish(note: Note) -> str:
    if not Path("marker").exists():
        raise RuntimeError("publisher down")
    return f"{type(note).__name__} {note.day.isoformat()} {type(note.span).__name__}"

typed = WorkflowGraph("typed").add_node("fetch", fetch)
typed.add_node("publish", publish, retry=RetryPolicy(max_attempts=1)).add_edge("fetch", "publish")
"""


def test_a_run_whose_results_are_objects_is_resumed_by_another_process(tmp_path: Path) -> None:
    """heddle resume in a new process gives agents back the dataclass, date and tuple."""
    (tmp_path / "typed.py").write_text(TYPED, encoding="utf-8")
    first = heddle("run", "typed.py", "--input", "tides", "--workflow-id", "t-1", cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    (tmp_path / "marker").touch()
    resumed = heddle("resume", "t-1", "typed.py", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming t-1 (graph 'typed', failed): 1 of 2 nodes recorded done" in resumed.stdout
    assert "Note 2026-12-01 tuple" in resumed.stdout
    shown = heddle("show", "t-1", "--json", cwd=tmp_path)  # no class needed to inspect
    assert shown.returncode == 0, shown.stderr
    fetch = json.loads(shown.stdout)["nodes"][0]
    assert fetch["content"]["__heddle__"] == "dataclass"


@pytest.mark.slow
def test_demo_finishes_in_a_pipe_and_remembers_between_runs(files: Path) -> None:
    """heddle demo succeeds with a retry; a second run recalls from memory."""
    first = heddle("demo", cwd=files)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    assert "\x1b" not in first.stdout
    assert "market     attempt 1 failed: ConnectionError" in first.stdout
    assert "succeeded" in first.stdout and "6 done, 1 retry" in first.stdout
    assert "run the demo again and they answer from memory" in " ".join(first.stdout.split())
    assert (Path(os.environ["HEDDLE_HOME"]) / "memory.db").exists()

    second = invoke("demo", cwd=files)
    assert second.exit_code == 0
    said = " ".join(second.stdout.split())
    assert "2 of 2 findings were recalled from" in said
    assert "this is brief #2 on the topic" in said
    listed = invoke("runs", "--json", cwd=files)
    assert [run["status"] for run in json.loads(listed.stdout)] == ["succeeded", "succeeded"]


def test_bad_input_in_a_real_process_is_one_line_and_debug_shows_the_traceback(
    files: Path,
) -> None:
    """A file raising on import: one line, exit 1; with --debug the traceback comes first."""
    plain = heddle("run", "boom.py", cwd=files)
    assert plain.returncode == 1
    assert plain.stdout == ""
    line = assert_one_error_line(plain.stderr)
    assert "boom.py raised RuntimeError while loading (line 3): OPENAI_API_KEY is not set" in line

    debug = heddle("--debug", "run", "boom.py", cwd=files)
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert 'boom.py", line 3, in <module>' in debug.stderr
    assert debug.stderr.splitlines()[-1] == line


@pytest.mark.slow
def test_ctrl_c_records_the_run_as_cancelled_and_says_how_to_resume(files: Path) -> None:
    """SIGINT mid-run: exit 130, one line naming the run; the run is recorded as cancelled."""
    child = subprocess.Popen(
        [sys.executable, "-m", "heddle", "run", "slow.py", "--workflow-id", "slow-1"],
        cwd=files,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    for line in child.stdout:  # wait until the slow node is running
        if "slow" in line and "started" in line:
            break
    child.send_signal(signal.SIGINT)
    try:
        _, err = child.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"Ctrl-C did not stop the run; stdout={out!r} stderr={err!r}")
    assert child.returncode == 130
    line = assert_one_error_line(err)
    assert "interrupted; workflow slow-1 is recorded as cancelled" in line
    assert "heddle resume slow-1 slow.py:graph" in line
    doc = json.loads(invoke("show", "slow-1", "--json", cwd=files).stdout)
    assert doc["run"]["status"] == "cancelled"
    assert doc["nodes"][0]["status"] == "succeeded"


# -- every bad input: one line on stderr, no traceback, the documented exit code ---------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "missing.py"], 2, "no such file: missing.py"),
        (["run", "ok.py:nope"], 2, "ok.py has no variable 'nope' (graphs in it: graph)"),
        (["run", "ok.py:"], 2, "nothing after ':'"),
        (["run", "none.py"], 2, "none.py defines no WorkflowGraph at module level"),
        (["run", "several.py"], 2, "several graphs (alpha, beta); choose one: several.py:alpha"),
        (["run", "several.py:NUMBER"], 2, "is not a WorkflowGraph"),
        (["run", "several.py:needs_args"], 2, "needs arguments (name)"),
        (["run", "several.py:not_a_graph"], 2, "returned a value of type int"),
        (["run", "several.py:explodes"], 1, "explodes() raised ValueError (line 17): no graph"),
        (["run", "boom.py"], 1, "boom.py raised RuntimeError while loading (line 3)"),
        (["run", "exits.py"], 1, "exits.py called sys.exit(3) while loading (line 2)"),
        (["run", "syntax.py"], 2, "syntax.py is not valid Python: invalid syntax at line 1"),
        (["run", "notes.md"], 2, "notes.md is not a Python file"),
        (["run", "binary.py"], 2, "binary.py is not valid Python"),
        (["run", "."], 2, ". is a directory, not a Python file"),
        (
            ["run", "cycle.py"],
            1,
            "invalid graph in cycle.py: graph 'loop' has a cycle: a -> b -> a",
        ),
        (["run", "duplicate.py"], 1, "duplicate.py (line 3): graph 'dup': node 'a' already exists"),
        (["graph", "cycle.py"], 1, "has a cycle"),
        (["show", "nope"], 2, "no run with workflow id 'nope'"),
        (["resume", "nope", "ok.py"], 2, "no run with workflow id 'nope'"),
        (["run", "ok.py", "--workflow-id", "bad id"], 2, "workflow_id must match"),
        (["run"], 2, "Missing argument 'FILE.py[:VAR]'. (see 'heddle run --help')"),
        (["run", "ok.py", "--bogus"], 2, "No such option '--bogus'"),
        (["run", "ok.py", "--max-concurrent", "0"], 2, "Invalid value for '--max-concurrent'"),
        (["graph", "ok.py", "--format", "png"], 2, "Invalid value for '--format'"),
        (["bogus"], 2, "No such command 'bogus'"),
    ],
)
def test_bad_input_is_one_line_on_stderr(
    files: Path, args: list[str], code: int, message: str
) -> None:
    """Each bad input gives one 'heddle: error:' line, no traceback, the documented code."""
    result = invoke(*args, cwd=files)
    assert result.exit_code == code, result.stderr
    assert message in assert_one_error_line(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["run", "boom.py"], ["run", "several.py:explodes"]])
def test_debug_prints_the_traceback_of_the_users_code(files: Path, args: list[str]) -> None:
    """--debug: the traceback (reaching into the user's file), then the same one line."""
    plain = invoke(*args, cwd=files)
    debug = invoke("--debug", *args, cwd=files)
    assert debug.exit_code == plain.exit_code == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert str(files / args[1].split(":")[0]) in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.strip()


def test_command_line_mistakes_stay_one_line_with_debug(files: Path) -> None:
    """A mistyped command line has no traceback worth showing, even with --debug."""
    result = invoke("--debug", "run", "ok.py", "--bogus", cwd=files)
    assert result.exit_code == 2
    assert "No such option '--bogus'" in assert_one_error_line(result.stderr)


# -- the commands, in process ----------------------------------------------------------


def test_run_chooses_the_variable_or_calls_a_graph_function(files: Path) -> None:
    """FILE:VAR picks a graph among several; a zero-argument function is called for its graph."""
    chosen = invoke("run", "several.py:beta", "--input", "hi", "--max-concurrent", "1", cwd=files)
    assert chosen.exit_code == 0, chosen.stderr
    assert "Running graph 'beta' (1 nodes)" in chosen.stdout
    built = invoke("run", "several.py:build", cwd=files)
    assert built.exit_code == 0
    assert "Running graph 'built' (2 nodes)" in built.stdout


def test_run_with_a_db_option_writes_there_and_hints_with_it(files: Path) -> None:
    """--db puts the run in that file; the printed hints repeat --db."""
    result = invoke("run", "pipeline.py", "--db", "runs.db", "--workflow-id", "p1", cwd=files)
    assert result.exit_code == 1
    assert (files / "runs.db").exists()
    assert not (Path(os.environ["HEDDLE_HOME"]) / "heddle.db").exists()
    assert "heddle resume p1 pipeline.py:pipeline --db runs.db" in result.stdout
    assert "heddle show p1 --db runs.db" in result.stdout
    assert "p1" in invoke("runs", "--db", "runs.db", cwd=files).stdout


def test_a_taken_workflow_id_is_refused_before_anything_runs(files: Path) -> None:
    """--workflow-id of an existing run: exit 2, pointing at resume; the run is untouched."""
    assert invoke("run", "ok.py", "--workflow-id", "w1", cwd=files).exit_code == 0
    again = invoke("run", "ok.py", "--workflow-id", "w1", cwd=files)
    assert again.exit_code == 2
    assert "workflow id 'w1' is taken" in assert_one_error_line(again.stderr)
    assert again.stdout == ""


def test_resume_refuses_a_changed_graph_unless_forced(files: Path) -> None:
    """A graph whose structure changed: exit 2 naming --force; --force reuses what still fits."""
    assert invoke("run", "pipeline.py", "--workflow-id", "r1", cwd=files).exit_code == 1
    changed = files / "changed.py"
    changed.write_text(PIPELINE.replace('.add_edge("load", "audit")', ""), encoding="utf-8")
    (files / "marker").touch()
    refused = invoke("resume", "r1", "changed.py", cwd=files)
    assert refused.exit_code == 2
    assert "pass --force to resume anyway" in assert_one_error_line(refused.stderr)
    forced = invoke("resume", "r1", "changed.py", "--force", cwd=files)
    assert forced.exit_code == 0, forced.stderr
    assert "workflow r1 succeeded" in forced.stdout


def test_resuming_a_succeeded_run_runs_nothing(files: Path) -> None:
    """A finished run is reported as recorded, exit 0."""
    assert invoke("run", "ok.py", "--workflow-id", "done-1", cwd=files).exit_code == 0
    again = invoke("resume", "done-1", "ok.py", cwd=files)
    assert again.exit_code == 0
    assert "it succeeded; nothing to run" in again.stdout
    assert "started" not in again.stdout
    assert again.stdout.count("succeeded (resumed)") == 2


def test_resume_of_an_unknown_run_in_an_existing_database(files: Path) -> None:
    """An id the database does not hold: exit 2, naming the database."""
    assert invoke("run", "ok.py", cwd=files).exit_code == 0
    result = invoke("resume", "ghost", "ok.py", cwd=files)
    assert result.exit_code == 2
    assert "no run with workflow id 'ghost' in " in assert_one_error_line(result.stderr)


def test_show_lists_nodes_without_a_result_as_pending(files: Path) -> None:
    """A run whose process died: show and show --json list every node, unfinished ones pending."""
    import asyncio
    from datetime import UTC, datetime

    async def record() -> None:
        async with SQLiteCheckpointer() as checkpointer:
            await checkpointer.create_run(
                RunRecord("died", "brief", "f" * 16, "x", ("fetch", "summarise"), "running", now)
            )
            await checkpointer.save_node(
                "died",
                "fetch",
                {
                    "content": "ok",
                    "status": "succeeded",
                    "error": None,
                    "attempts": 1,
                    "duration": 1,
                },
            )

    now = datetime.now(UTC)
    asyncio.run(record())
    text = invoke("show", "died", cwd=files)
    assert text.exit_code == 0
    assert "died  graph 'brief'  interrupted" in text.stdout
    assert [line.split()[:2] for line in text.stdout.splitlines() if line.startswith("summ")] == [
        ["summarise", "pending"]
    ]
    assert "resume it: heddle resume died FILE.py[:VAR]" in text.stdout
    doc = json.loads(invoke("show", "died", "--json", cwd=files).stdout)
    assert doc["run"]["finished_at"] is None and doc["run"]["duration"] is None
    assert doc["nodes"][1] == {
        "node": "summarise",
        "status": "pending",
        "attempts": 0,
        "duration": None,
        "error": None,
        "error_type": None,
        "traceback": None,
        "content": None,
    }
    listed = invoke("runs", cwd=files).stdout
    assert "1/2" in listed


def test_runs_without_a_database_says_so_and_creates_nothing(files: Path) -> None:
    """'heddle runs' on a fresh machine: a friendly line, exit 0, no database file created."""
    result = invoke("runs", cwd=files)
    assert result.exit_code == 0
    assert result.stdout.startswith("no runs recorded in ")
    assert not (Path(os.environ["HEDDLE_HOME"]) / "heddle.db").exists()
    assert invoke("runs", "--json", cwd=files).stdout.strip() == "[]"


def test_runs_lists_newest_first_and_honours_limit(files: Path) -> None:
    """--limit bounds the list; JSON rows carry nodes_done."""
    for wid in ("a1", "a2", "a3"):
        assert invoke("run", "ok.py", "--workflow-id", wid, cwd=files).exit_code == 0
    rows = json.loads(invoke("runs", "--json", "--limit", "2", cwd=files).stdout)
    assert [r["workflow_id"] for r in rows] == ["a3", "a2"]
    assert rows[0]["nodes_done"] == 2 and rows[0]["graph"] == "brief"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("mermaid", 'flowchart TD\n    n0["a"]\n    n1["b"]\n    n0 --> n1\n'),
        ("dot", 'digraph "built" {\n    rankdir=TB;\n    "a";\n    "b";\n    "a" -> "b";\n}\n'),
    ],
)
def test_graph_prints_mermaid_or_dot(files: Path, fmt: str, expected: str) -> None:
    """heddle graph prints exactly what to_mermaid()/to_dot() return."""
    result = invoke("graph", "several.py:build", "--format", fmt, cwd=files)
    assert result.exit_code == 0
    assert result.stdout == expected


def test_a_big_run_lists_only_the_nodes_that_did_not_succeed(files: Path) -> None:
    """Past 50 nodes the result table keeps to failures and says how to see the rest."""
    (files / "big.py").write_text(
        "from heddle import RetryPolicy, WorkflowGraph\n"
        "async def ok(x): return 'ok'\n"
        "async def bad(x): raise ValueError('bad')\n"
        "g = WorkflowGraph('big')\n"
        "for i in range(60): g.add_node(f'n{i}', ok)\n"
        "g.add_node('bad', bad, retry=RetryPolicy(max_attempts=1))\n",
        encoding="utf-8",
    )
    result = invoke("run", "big.py", "--workflow-id", "big", cwd=files)
    assert result.exit_code == 1
    table = result.stdout.split("finished: failed")[1]
    assert [line.split()[:2] for line in table.splitlines() if line.startswith("bad")] == [
        ["bad", "failed"]
    ]
    assert "n59" not in table
    assert "(60 more nodes not listed: heddle show big)" in table


def test_no_arguments_prints_help_and_version_works(files: Path) -> None:
    """'heddle' alone shows the commands; --version names the package version."""
    from heddle import __version__

    helped = invoke(cwd=files)
    assert helped.exit_code == 0
    for command in ("run", "runs", "show", "resume", "graph", "demo"):
        assert f"  {command} " in helped.stdout
    assert __version__ in invoke("--version", cwd=files).stdout


def test_main_returns_the_exit_code_for_the_console_script(files: Path) -> None:
    """heddle.cli.main (the console script) returns the code instead of exiting."""
    old = Path.cwd()
    os.chdir(files)
    try:
        assert main(["graph", "ok.py"]) == 0
        assert main(["run", "missing.py"]) == 2
    finally:
        os.chdir(old)


def test_a_run_held_by_a_live_process_is_listed_running_and_not_resumed(files: Path) -> None:
    """runs/show say running (and who); resume exits 2 naming the owner; once gone: interrupted."""
    import asyncio
    import socket
    from datetime import UTC, datetime, timedelta

    from heddle.workflows.checkpoint import RunLease, _this_site

    assert invoke("run", "ok.py", "--workflow-id", "held", cwd=files).exit_code == 0
    live = RunLease.take(30)  # this test's own process: alive

    async def claim(lease: RunLease) -> None:
        async with SQLiteCheckpointer() as checkpointer:
            await checkpointer.claim_run("held", lease)

    asyncio.run(claim(live))
    listed = invoke("runs", cwd=files).stdout
    assert "held" in listed and " running " in listed
    shown = invoke("show", "held", cwd=files).stdout
    assert f"running by {live.owner}" in shown and "resume it" not in shown
    doc = json.loads(invoke("runs", "--json", cwd=files).stdout)[0]
    assert (doc["status"], doc["owner"]) == ("running", live.owner)
    refused = invoke("resume", "held", "ok.py", cwd=files)
    assert refused.exit_code == 2
    line = assert_one_error_line(refused.stderr)
    assert f"run 'held' is being run by {live.owner}" in line

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = RunLease(
        f"{socket.gethostname()}/{child.pid}/deadbeef",
        _this_site(),
        datetime.now(UTC) + timedelta(hours=1),
    )
    with sqlite3.connect(Path(os.environ["HEDDLE_HOME"]) / "heddle.db") as conn:
        conn.execute(
            "UPDATE heddle_runs SET owner = ?, owner_site = ? WHERE workflow_id = 'held'",
            (gone.owner, gone.site),
        )
    assert " interrupted " in invoke("runs", cwd=files).stdout
    assert invoke("resume", "held", "ok.py", cwd=files).exit_code == 0


# -- what a workflow prints cannot drive the terminal (issue 10) ---------------------------

CONTROL_BYTES = ("\x1b", "\x07", "\x9b")


@pytest.mark.slow
def test_control_characters_from_a_workflow_never_reach_the_terminal(files: Path) -> None:
    """Escapes in a result, names, an error and the input: run, show and runs print them as text."""
    ran = heddle(
        "run", "evil.py", "--input-text", "\x1b[2Jinput", "--workflow-id", "evil-1", cwd=files
    )
    assert ran.returncode == 1, ran.stderr
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in ran.stdout  # the output, shown as text
    assert "bad \\x1b[31mred\\x07" in ran.stdout
    printed = {"run": ran.stdout + ran.stderr}
    as_json = heddle("run", "evil.py", "--output", "json", cwd=files)
    printed["run --output json"] = as_json.stdout + as_json.stderr
    for args in (
        ["show", "evil-1"],
        ["show", "evil-1", "--json"],
        ["show", "evil-1", "--trace", "boom\x9b"],
        ["runs"],
        ["runs", "--json"],
        ["graph", "evil.py"],
    ):
        result = invoke(*args, cwd=files)
        assert result.exit_code == 0, result.stderr
        printed[" ".join(args)] = result.stdout + result.stderr
    for command, text in printed.items():
        assert not any(byte in text for byte in CONTROL_BYTES), command
    assert "input: \\x1b[2Jinput" in printed["show evil-1"]
    doc = json.loads(printed["show evil-1 --json"])
    assert doc["nodes"][0]["content"] == "\x1b[2J\x1b]0;pwned\x07"  # JSON escapes, same value


def test_an_error_quoting_a_users_escapes_is_printed_as_text(files: Path) -> None:
    """A workflow file's exception message reaches stderr with its control characters visible."""
    (files / "loud.py").write_text("raise RuntimeError('\\x1b]0;pwned\\x07')\n", encoding="utf-8")
    result = invoke("run", "loud.py", cwd=files)
    assert result.exit_code == 1
    line = assert_one_error_line(result.stderr)
    assert line.endswith("RuntimeError while loading (line 1): \\x1b]0;pwned\\x07")


# -- the workflow input (issue 11) --------------------------------------------------------


@pytest.mark.slow
def test_a_large_input_travels_in_a_file_or_on_stdin(files: Path) -> None:
    """200 KB, over the 128 KiB of one argument, reaches the run whole via @FILE and via -."""
    text = "tidal " * 35_000
    (files / "big.txt").write_text(text, encoding="utf-8")
    by_file = heddle("run", "ok.py", "--input", "@big.txt", "--workflow-id", "f1", cwd=files)
    assert by_file.returncode == 0, by_file.stderr
    by_stdin = heddle("run", "ok.py", "--input", "-", "--workflow-id", "s1", cwd=files, stdin=text)
    assert by_stdin.returncode == 0, by_stdin.stderr
    for wid in ("f1", "s1"):
        assert json.loads(invoke("show", wid, "--json", cwd=files).stdout)["run"]["input"] == text


def test_input_is_json_when_it_parses_else_text(files: Path) -> None:
    """--input '{...}' gives the agents a dict, --input 42 an int, --input-text 42 a string."""
    for wid, args in {
        "j": ["--input", '{"topic": "tides"}'],
        "n": ["--input", "42"],
        "t": ["--input-text", "42"],
    }.items():
        assert invoke("run", "ok.py", *args, "--workflow-id", wid, cwd=files).exit_code == 0
    inputs = {
        wid: json.loads(invoke("show", wid, "--json", cwd=files).stdout)["run"]["input"]
        for wid in "jnt"
    }
    assert inputs == {"j": {"topic": "tides"}, "n": 42, "t": "42"}


def test_an_input_over_the_limit_is_one_error_before_anything_runs(files: Path) -> None:
    """A 17 MiB input file: exit 2, one line naming the limit, no run recorded."""
    with (files / "huge.txt").open("wb") as f:
        f.truncate(17 * 1024 * 1024)
    result = invoke("run", "ok.py", "--input", "@huge.txt", cwd=files)
    assert result.exit_code == 2
    assert "over the 16 MiB limit" in assert_one_error_line(result.stderr)
    assert not (Path(os.environ["HEDDLE_HOME"]) / "heddle.db").exists()


# -- the run's output -----------------------------------------------------------------------


def test_run_prints_the_output_of_its_one_sink_after_the_table(files: Path) -> None:
    """One node nothing waits for: its content, under 'output:', after the table and hints."""
    result = invoke("run", "ok.py", "--input", "tidal power", cwd=files)
    assert result.exit_code == 0
    head, _, output = result.stdout.partition("\noutput:\n")
    assert "inspect it:  heddle show" in head
    assert output == "summary of 3 sources on tidal power\n"


def test_run_prints_each_sinks_output_in_full_under_its_name(files: Path) -> None:
    """Several sinks: each under its name; a long text whole with its newlines, a dict as JSON."""
    result = invoke("run", "outputs.py", "--input", "tides", cwd=files)
    assert result.exit_code == 0
    output = result.stdout.split("\noutput of text:\n", 1)[1]
    assert output == (
        "line one\n" + "x" * 200 + "\n\noutput of data:\n"
        '{\n  "rows": [\n    1,\n    2\n  ],\n  "topic": "tides"\n}\n'
    )


def test_output_json_prints_only_the_result_for_scripts(files: Path) -> None:
    """--output json: stdout is one JSON document (nodes, output); progress goes to stderr."""
    result = invoke("run", "pipeline.py", "--output", "json", "--workflow-id", "j1", cwd=files)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert set(doc) == {
        "workflow_id",
        "graph",
        "status",
        "started_at",
        "finished_at",
        "duration",
        "nodes",
        "output",
    }
    assert (doc["workflow_id"], doc["graph"], doc["status"]) == ("j1", "pipeline", "failed")
    enrich = doc["nodes"][1]
    assert enrich["node"] == "enrich" and enrich["status"] == "failed"
    assert enrich["attempts"] == 2
    assert enrich["error"] == "RuntimeError: enrichment service is down"
    assert {"duration", "content", "error_type", "traceback"} <= set(enrich)
    assert doc["output"] == {"report": None, "audit": "audited"}
    assert "enrich  attempt 1 failed" in result.stderr
    assert "finished: failed" in result.stderr


# -- listing runs ---------------------------------------------------------------------------


def test_runs_filters_by_status_and_graph(files: Path) -> None:
    """--status (any state, interrupted included) and --graph keep the matching runs only."""
    assert invoke("run", "ok.py", "--workflow-id", "ok-1", cwd=files).exit_code == 0
    assert invoke("run", "pipeline.py", "--workflow-id", "bad-1", cwd=files).exit_code == 1
    assert invoke("run", "several.py:beta", "--workflow-id", "beta-1", cwd=files).exit_code == 0
    with sqlite3.connect(Path(os.environ["HEDDLE_HOME"]) / "heddle.db") as conn:
        conn.execute("UPDATE heddle_runs SET status = 'running' WHERE workflow_id = 'ok-1'")

    def listed(*args: str) -> list[str]:
        result = invoke("runs", "--json", *args, cwd=files)
        assert result.exit_code == 0, result.stderr
        return [run["workflow_id"] for run in json.loads(result.stdout)]

    assert listed("--status", "failed") == ["bad-1"]
    assert listed("--status", "interrupted") == ["ok-1"]  # running, and its owner is gone
    assert listed("--graph", "beta") == ["beta-1"]
    assert listed("--status", "succeeded", "--graph", "pipeline") == []
    none = invoke("runs", "--status", "cancelled", "--graph", "brief", cwd=files)
    assert none.stdout.startswith("no runs with status cancelled of graph 'brief' recorded in ")
    assert "Invalid value for '--status'" in invoke("runs", "--status", "ok", cwd=files).stderr


def _column(text: str, head: str) -> list[str]:
    """The cells of column ``head``, a folded cell's lines joined (rows start with 'workflow_')."""
    header, _, *rows = text.splitlines()
    start = header.index(head)
    after = header[start + len(head) :]
    end = start + len(head) + len(after) - len(after.lstrip())  # where the next head starts
    cells: list[str] = []
    for line in rows:
        piece = line[start:end].strip()
        if line.startswith("workflow_"):
            cells.append(piece)
        elif cells:
            cells[-1] += piece
    return cells


def test_runs_at_80_columns_shows_a_long_graph_name_whole(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 80 columns a long graph name folds onto a second line instead of losing its end."""
    name = "customer-support-triage-pipeline-v2"
    (files / "long.py").write_text(OK.replace('"brief"', repr(name)), encoding="utf-8")
    assert invoke("run", "long.py", cwd=files).exit_code == 0
    monkeypatch.setenv("COLUMNS", "80")
    text = invoke("runs", cwd=files).stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    assert _column(text, "graph") == [name]
    assert _column(text, "workflow id")[0].startswith("workflow_")
    assert len(_column(text, "workflow id")[0]) == len("workflow_") + 12  # the id, whole
    assert text.splitlines()[2].split()[-1] == "2/2"  # and the last column is still there


# -- workflow files ------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["run"], ["graph"], ["resume", "some-run"]])
def test_a_workflow_file_that_is_not_python_is_refused_not_run(
    files: Path, command: list[str]
) -> None:
    """wf.yaml, even one that is valid Python, is refused with exit 2 and never executed."""
    (files / "wf.yaml").write_text("open('ran', 'w').close()\n", encoding="utf-8")
    result = invoke(*command, "wf.yaml", cwd=files)
    assert result.exit_code == 2
    assert "wf.yaml is not a Python file" in assert_one_error_line(result.stderr)
    assert not (files / "ran").exists()


# -- stopping a run ------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_cancels_the_run_cleanly_like_ctrl_c(files: Path) -> None:
    """SIGTERM mid-run: exit 143, one line saying how to resume, the run recorded as cancelled."""
    child = start_heddle("run", "slow.py", "--workflow-id", "term-1", cwd=files)
    try:
        wait_for_file(files / "slow-started", child)
        child.terminate()
        _, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 143
    line = assert_one_error_line(err)
    assert "SIGTERM received; workflow term-1 is recorded as cancelled" in line
    assert "heddle resume term-1 slow.py:graph" in line
    doc = json.loads(invoke("show", "term-1", "--json", cwd=files).stdout)
    assert doc["run"]["status"] == "cancelled"
    assert [n["status"] for n in doc["nodes"]] == ["succeeded", "pending"]


def test_resuming_an_interrupted_run_says_so_without_a_stale_warning(files: Path) -> None:
    """The resume header shows the run's state (interrupted) and no 'both would run' note."""
    assert invoke("run", "pipeline.py", "--workflow-id", "died", cwd=files).exit_code == 1
    with sqlite3.connect(Path(os.environ["HEDDLE_HOME"]) / "heddle.db") as conn:
        conn.execute("UPDATE heddle_runs SET status = 'running' WHERE workflow_id = 'died'")
    (files / "marker").touch()
    resumed = invoke("resume", "died", "pipeline.py", cwd=files)
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.stdout.startswith(
        "Resuming died (graph 'pipeline', interrupted): 2 of 4 nodes recorded done, 2 to run\n"
    )
    assert "elsewhere" not in resumed.stdout


# -- the database ---------------------------------------------------------------------------


def test_checkpoint_warnings_reach_stderr_as_one_line_without_debug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A locked database's warning is shown: one 'heddle: warning:' line, no traceback."""
    from heddle.cli._running import heddle_logging

    log = logging.getLogger("heddle.checkpoint")
    with heddle_logging(debug=False):
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError:
            log.warning("%s is locked by another process;\nwaiting", "/x.db", exc_info=True)
        log.info("progress the display shows anyway")
        logging.getLogger("heddle.executor").warning("retrying: on the display already")
    log.warning("after the command: not shown")
    assert capsys.readouterr().err == (
        "heddle: warning: /x.db is locked by another process; waiting\n"
    )


def test_runs_and_show_leave_an_empty_database_file_empty(files: Path) -> None:
    """A zero-byte file is no database: runs says so, show finds no run, the file stays empty."""
    home = Path(os.environ["HEDDLE_HOME"])
    home.mkdir()
    (home / "heddle.db").touch()
    listed = invoke("runs", cwd=files)
    assert listed.exit_code == 0
    assert listed.stdout.startswith("no runs recorded in ")
    shown = invoke("show", "some-run", cwd=files)
    assert shown.exit_code == 2
    assert "no run with workflow id 'some-run'" in assert_one_error_line(shown.stderr)
    assert sorted(p.name for p in home.iterdir()) == ["heddle.db"]
    assert (home / "heddle.db").stat().st_size == 0


@pytest.mark.slow
def test_a_locked_database_is_waited_for_and_the_user_told(files: Path) -> None:
    """Another process holds the write lock: heddle says it waits, and on what, then runs."""
    assert invoke("run", "ok.py", cwd=files).exit_code == 0
    holder = sqlite3.connect(Path(os.environ["HEDDLE_HOME"]) / "heddle.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    child = start_heddle("run", "ok.py", "--workflow-id", "late", cwd=files)
    try:
        assert child.stderr is not None
        said = child.stderr.readline()  # blocks until heddle says something on stderr
    finally:
        holder.execute("COMMIT")
        holder.close()
    out, err = child.communicate(timeout=30)
    assert said.startswith("heddle: warning: checkpoint database ")
    assert "heddle.db is locked by another process" in said
    assert "Traceback" not in said + err
    assert child.returncode == 0, err
    assert "workflow late succeeded" in out


def test_a_corrupt_database_is_reported_with_what_to_do_and_left_untouched(files: Path) -> None:
    """A file that is not a database: one line saying to move it aside; not a byte changes."""
    home = Path(os.environ["HEDDLE_HOME"])
    home.mkdir()
    garbage = b"this is not an SQLite database\n" * 200
    (home / "heddle.db").write_bytes(garbage)
    for args in (["runs"], ["show", "some-run"], ["run", "ok.py"], ["resume", "r", "ok.py"]):
        result = invoke(*args, cwd=files)
        assert result.exit_code == 1, args
        assert "move it aside" in assert_one_error_line(result.stderr)
    assert (home / "heddle.db").read_bytes() == garbage
    assert [p.name for p in home.iterdir()] == ["heddle.db"]


# -- failures you can debug -----------------------------------------------------------------


def _record_failed_run(workflow_id: str) -> None:
    """A failed run: 'fetch' succeeded, 'parse' raised (traceback recorded), 'save' never ran."""
    import asyncio
    from datetime import UTC, datetime

    async def record() -> None:
        async with SQLiteCheckpointer() as checkpointer:
            await checkpointer.create_run(
                RunRecord(
                    workflow_id,
                    "brief",
                    "f" * 16,
                    "x",
                    ("fetch", "parse", "save"),
                    "failed",
                    datetime.now(UTC),
                )
            )
            await checkpointer.save_node(
                workflow_id,
                "fetch",
                {
                    "content": "ok",
                    "status": "succeeded",
                    "error": None,
                    "attempts": 1,
                    "duration": 1,
                },
            )
            await checkpointer.save_node(
                workflow_id,
                "parse",
                {
                    "content": None,
                    "status": "failed",
                    "error": "ValueError: no rows",
                    "error_type": "ValueError",
                    "traceback": TRACEBACK,
                    "attempts": 2,
                    "duration": 1,
                },
            )

    asyncio.run(record())


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/brief.py", line 12, in parse\n'
    "    raise ValueError('no rows')\n"
    "ValueError: no rows\n"
)


def test_show_trace_prints_a_nodes_recorded_traceback(files: Path) -> None:
    """show --trace NODE: the error type and the traceback the failed node recorded."""
    _record_failed_run("t1")
    result = invoke("show", "t1", "--trace", "parse", cwd=files)
    assert result.exit_code == 0
    assert result.stdout == (
        "node 'parse' of run t1 failed after 2 attempts, raising ValueError; its traceback:\n"
        + TRACEBACK
    )
    doc = json.loads(invoke("show", "t1", "--json", cwd=files).stdout)
    assert (doc["nodes"][1]["error_type"], doc["nodes"][1]["traceback"]) == (
        "ValueError",
        TRACEBACK,
    )


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["--trace", "fetch"], 0, "node 'fetch' of run t1 succeeded; no traceback recorded"),
        (["--trace", "save"], 0, "node 'save' of run t1 has no result yet (pending)"),
        (["--trace", "pars"], 2, "run 't1' has no node 'pars'; did you mean 'parse'?"),
        (["--trace", "zzz"], 2, "run 't1' has no node 'zzz' (its nodes: fetch, parse, save)"),
        (["--trace", "parse", "--json"], 2, "--json and --trace do not go together"),
    ],
)
def test_show_trace_says_clearly_when_there_is_no_traceback(
    files: Path, args: list[str], code: int, said: str
) -> None:
    """A node that raised nothing, one without a result, an unknown node: each says so."""
    _record_failed_run("t1")
    result = invoke("show", "t1", *args, cwd=files)
    assert result.exit_code == code
    assert said in (result.stdout if code == 0 else assert_one_error_line(result.stderr))


def test_run_with_debug_prints_each_failed_nodes_traceback_after_the_table(files: Path) -> None:
    """--debug: after the table, the traceback the failed node recorded, into the user's file."""
    result = invoke("run", "pipeline.py", "--debug", cwd=files)
    assert result.exit_code == 1
    after_table = result.stdout.split("inspect it:", 1)[1]
    assert "\ntraceback of enrich (RuntimeError):\nTraceback (most recent call last):\n" in (
        after_table
    )
    assert 'raise RuntimeError("enrichment service is down")' in after_table
    assert after_table.count("traceback of") == 1  # only the failed node
    plain = invoke("run", "pipeline.py", cwd=files)
    assert "Traceback" not in plain.stdout


def test_debug_works_after_the_command_too(files: Path) -> None:
    """'heddle run FILE --debug' is 'heddle --debug run FILE'."""
    result = invoke("run", "boom.py", "--debug", cwd=files)
    assert result.exit_code == 1
    assert result.stderr.startswith("Traceback (most recent call last)")
