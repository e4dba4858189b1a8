"""WorkflowGraph: building, validation, ordering and export."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heddle import GraphValidationError, RetryPolicy, WorkflowGraph
from heddle.core.errors import ConfigurationError, InvalidAgentError


async def agent(task: object) -> object:
    return task


def chain(*names: str) -> WorkflowGraph:
    g = WorkflowGraph("chain")
    for name in names:
        g.add_node(name, agent)
    for a, b in itertools.pairwise(names):
        g.add_edge(a, b)
    return g


def test_add_node_rejects_duplicate_name_at_once() -> None:
    """A second node with the same name fails at add_node, naming it."""
    g = WorkflowGraph("g").add_node("a", agent)
    with pytest.raises(GraphValidationError, match="node 'a' already exists") as info:
        g.add_node("a", agent)
    assert info.value.nodes == ("a",)
    assert info.value.graph == "g"


def test_add_edge_rejects_self_loop_at_once() -> None:
    """An edge from a node to itself fails at add_edge."""
    g = WorkflowGraph("g").add_node("a", agent)
    with pytest.raises(GraphValidationError, match="self-loop on node 'a'"):
        g.add_edge("a", "a")


def test_add_edge_rejects_duplicate_edge() -> None:
    """The same edge twice is an error, not a silent no-op."""
    g = chain("a", "b")
    with pytest.raises(GraphValidationError, match="duplicate edge 'a' -> 'b'"):
        g.add_edge("a", "b")


def test_unknown_edge_endpoint_is_named_with_a_suggestion() -> None:
    """validate() names the unknown node and suggests the closest real one."""
    g = chain("fetch", "summarise").add_edge("fetch", "sumarise")
    with pytest.raises(
        GraphValidationError, match="unknown node 'sumarise'; did you mean 'summarise'"
    ):
        g.validate()


def test_cycle_error_names_the_nodes_of_the_cycle() -> None:
    """A cycle is reported as the path around it."""
    g = chain("a", "b", "c", "d").add_edge("d", "b")
    with pytest.raises(GraphValidationError) as info:
        g.validate()
    assert "b -> c -> d -> b" in str(info.value)
    assert info.value.nodes == ("b", "c", "d")


def test_two_node_cycle_is_found_next_to_acyclic_parts() -> None:
    """A cycle hidden behind acyclic nodes is still found and named."""
    g = chain("root", "x", "y").add_edge("y", "x")
    g.add_node("z", agent).add_edge("root", "z")
    with pytest.raises(GraphValidationError, match="x -> y -> x"):
        g.validate()


def test_empty_graph_is_invalid() -> None:
    """A graph without nodes cannot run."""
    with pytest.raises(GraphValidationError, match="has no nodes"):
        WorkflowGraph("empty").validate()


@pytest.mark.parametrize("bad", ["", "   ", 3, None])
def test_node_name_must_be_non_empty_string(bad: object) -> None:
    """Empty or non-string node names are rejected."""
    with pytest.raises(ConfigurationError, match="node name"):
        WorkflowGraph("g").add_node(bad, agent)  # type: ignore[arg-type]


def test_input_is_a_reserved_node_name() -> None:
    """'input' would shadow the workflow input in templates, so it is refused."""
    with pytest.raises(GraphValidationError, match="reserved"):
        WorkflowGraph("g").add_node("input", agent)


@pytest.mark.parametrize("bad", ["", 5])
def test_graph_name_must_be_non_empty_string(bad: object) -> None:
    """A graph needs a name to be reported and checkpointed under."""
    with pytest.raises(ConfigurationError, match="graph name"):
        WorkflowGraph(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "5", True])
def test_timeout_must_be_positive_number(bad: object) -> None:
    """A zero, negative, NaN or non-numeric timeout is rejected at add_node."""
    with pytest.raises(ConfigurationError, match="node 'a': timeout"):
        WorkflowGraph("g").add_node("a", agent, timeout=bad)  # type: ignore[arg-type]


def test_retry_must_be_a_retry_policy() -> None:
    """A retry count instead of a RetryPolicy is rejected with the node's name."""
    with pytest.raises(ConfigurationError, match="node 'a': retry must be a RetryPolicy"):
        WorkflowGraph("g").add_node("a", agent, retry=3)  # type: ignore[arg-type]


def test_non_agent_is_rejected_at_add_node_naming_the_node() -> None:
    """An object without run/arun that is not callable is a TypeError at add_node."""
    with pytest.raises(InvalidAgentError, match="node 'writer'") as info:
        WorkflowGraph("g").add_node("writer", object())
    assert isinstance(info.value, TypeError)
    assert info.value.node == "writer"


def test_unknown_template_field_is_rejected_before_running() -> None:
    """A template naming a node that is not a predecessor fails validation."""
    g = chain("a", "b").add_node("c", agent, task="use {a} and {b}").add_edge("b", "c")
    with pytest.raises(GraphValidationError, match=r"node 'c' uses \{a\}"):
        g.validate()


def test_malformed_template_is_rejected() -> None:
    """An unbalanced brace in a template is reported with the node's name."""
    g = WorkflowGraph("g").add_node("a", agent, task="json: {bad")
    with pytest.raises(GraphValidationError, match="node 'a' is malformed"):
        g.validate()


def test_positional_template_field_is_rejected() -> None:
    """'{}' has no value to take, so it is refused."""
    g = WorkflowGraph("g").add_node("a", agent, task="x {} y")
    with pytest.raises(GraphValidationError, match=r"uses \{\}"):
        g.validate()


def test_template_fields_may_index_into_content() -> None:
    """'{fetch[title]}' and '{input.real}' are fine: the first part is a known name."""
    g = chain("fetch").add_node("b", agent, task="{fetch[title]} {input.real} {{literal}}")
    g.add_edge("fetch", "b").validate()


def test_graph_is_revalidated_after_change() -> None:
    """The cached plan is rebuilt when a node or edge is added."""
    g = chain("a", "b")
    g.validate()
    g.add_edge("b", "c")
    with pytest.raises(GraphValidationError, match="unknown node 'c'"):
        g.validate()
    g.add_node("c", agent)
    assert g.topological_order() == ["a", "b", "c"]


def test_predecessors_and_successors_follow_edge_order() -> None:
    """Neighbours are listed in the order their edges were added."""
    g = WorkflowGraph("g")
    for n in "abcd":
        g.add_node(n, agent)
    g.add_edge("c", "d").add_edge("a", "d").add_edge("b", "d").add_edge("a", "b")
    assert g.predecessors("d") == ["c", "a", "b"]
    assert g.successors("a") == ["d", "b"]
    assert "a" in g and len(g) == 4 and list(g) == ["a", "b", "c", "d"]
    assert g.edges[0] == ("c", "d")
    assert set(g.nodes) == set("abcd")


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    n = draw(st.integers(1, 25))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    return n, edges


@given(dags(), st.randoms())
def test_topological_order_respects_every_edge(dag: tuple[int, list[tuple[int, int]]], rnd) -> None:  # type: ignore[no-untyped-def]
    """For any DAG, each node comes after all of its predecessors."""
    n, edges = dag
    names = [f"n{i}" for i in range(n)]
    rnd.shuffle(names)  # node insertion order independent of the topological order
    g = WorkflowGraph("dag")
    for name in names:
        g.add_node(name, agent)
    for i, j in edges:
        g.add_edge(f"n{i}", f"n{j}")
    order = g.topological_order()
    assert sorted(order) == sorted(names)
    position = {name: k for k, name in enumerate(order)}
    assert all(position[f"n{i}"] < position[f"n{j}"] for i, j in edges)


@given(dags(), st.data())
def test_any_back_edge_is_reported_as_a_cycle(
    dag: tuple[int, list[tuple[int, int]]], data: st.DataObject
) -> None:
    """Adding an edge from a node back to one of its ancestors always fails validation."""
    n, edges = dag
    if not edges:
        return
    i, j = data.draw(st.sampled_from(edges))
    g = WorkflowGraph("dag")
    for k in range(n):
        g.add_node(f"n{k}", agent)
    for a, b in edges:
        g.add_edge(f"n{a}", f"n{b}")
    g.add_edge(f"n{j}", f"n{i}")
    with pytest.raises(GraphValidationError, match="cycle") as info:
        g.validate()
    cycle = info.value.nodes
    assert len(cycle) >= 2
    # consecutive names in the report are real edges, and it closes on itself
    real = {(f"n{a}", f"n{b}") for a, b in [*edges, (j, i)]}
    for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        assert (a, b) in real


def test_deep_cycle_does_not_hit_the_recursion_limit() -> None:
    """Cycle search is iterative: a 5,000-node ring is reported, not a RecursionError."""
    names = [f"n{i}" for i in range(5000)]
    g = chain(*names).add_edge(names[-1], names[0])
    with pytest.raises(GraphValidationError, match="cycle"):
        g.validate()


def test_mermaid_export_lists_nodes_and_edges_with_escaped_labels() -> None:
    """to_mermaid() gives a flowchart with one line per node and edge."""
    g = chain("fetch", 'say "hi"')
    assert g.to_mermaid() == (
        'flowchart TD\n    n0["fetch"]\n    n1["say #quot;hi#quot;"]\n    n0 --> n1\n'
    )
    assert g.to_mermaid("LR").startswith("flowchart LR")
    with pytest.raises(ConfigurationError):
        g.to_mermaid("sideways")


def test_dot_export() -> None:
    """to_dot() quotes names so any node name is a valid DOT id."""
    dot = chain("a", 'b"c').to_dot()
    assert '"a" -> "b\\"c";' in dot
    assert dot.startswith('digraph "chain" {')


def test_fingerprint_tracks_structure_not_options() -> None:
    """Same nodes and edges give the same fingerprint; an extra edge changes it."""
    a = chain("x", "y", "z")
    b = WorkflowGraph("other name")
    b.add_node("x", agent, retry=RetryPolicy(max_attempts=9), timeout=3).add_node("y", agent)
    b.add_node("z", agent, task="{y}").add_edge("x", "y").add_edge("y", "z")
    assert a.fingerprint() == b.fingerprint()
    b.add_edge("x", "z")
    assert a.fingerprint() != b.fingerprint()


def test_fingerprint_changes_with_the_agent() -> None:
    """Swapping a node's agent for another agent changes the fingerprint."""

    async def other(task: object) -> object:
        return task

    a = WorkflowGraph("g").add_node("x", agent)
    b = WorkflowGraph("g").add_node("x", other)
    assert a.fingerprint() != b.fingerprint()


def test_repr_shows_counts() -> None:
    """repr names the graph and its size."""
    assert repr(chain("a", "b")) == "WorkflowGraph('chain', nodes=2, edges=1)"
