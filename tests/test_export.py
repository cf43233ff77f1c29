"""Tree exports: JSON round trip, GraphML/GEXF read back by networkx, DOT rendered by Graphviz,
escaping of hostile text, clear errors on bad input, and random trees through every exporter."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.export import FORMATS, NO_SCORE, export_tree, load_tree, render_dot, render_html, tree_to_networkx
from search.tree import STATUSES, Tree

BT = "<|backtrack|>"
HOSTILE = "</script><script>window.__pwned=1</script> \"q\" 'a' & <!-- ünïcødé ✓ \u2028 \\n \x07"


BT_ID = 100_000  # the ⟨b⟩ token in these hand-built trees; other tokens are code points
STEPS = [  # (raw trace, alive text, wrong?) per depth; ⟨b⟩-runs delete the characters before them
    [("48/2 = <<48/2=24>>24\n", False), ("48/2 = 23" + BT * 2 + "24\n", False), ("48*2 = <<48*2=96>>96\n", True)],
    [("24+7 = <<24+7=31>>31\n", False), ("24-7 = <<24-7=17>>17\n", True), ("He has 24+7 = 30" + BT + "1 now.\n", False)],
    [("#### 31", False), ("#### 17", True), ("So he has 31 apples.\n", False)],
    [("#### 31", False), ("#### 71", True)],
]


def step_tokens(raw: str) -> tuple[tuple[int, ...], tuple[int, ...], str, tuple[tuple[int, int], ...]]:
    """(alive ids, raw ids, alive text, ⟨b⟩-runs) of a raw trace, one token per character or ⟨b⟩."""
    raw_ids = []
    for i, part in enumerate(raw.split(BT)):
        raw_ids += ([BT_ID] if i else []) + [ord(c) for c in part]
    alive, runs = [], []
    for j, t in enumerate(raw_ids):
        if t != BT_ID:
            alive.append(t)
            continue
        alive.pop()
        if runs and runs[-1][0] + runs[-1][1] == j:
            runs[-1][1] += 1
        else:
            runs.append([j, 1])
    return tuple(alive), tuple(raw_ids), "".join(map(chr, alive)), tuple(map(tuple, runs))


def make_tree(n_steps: int = 40, *, seed: int = 0, hostile: bool = True) -> Tree:
    """A hand-built tree shaped like a beam search on a GSM8K problem: up to ``n_steps`` nodes, wrong
    steps scored high and pruned at τ=0.5, some rejected, terminal answers, the chosen path to a
    correct one, and (``hostile``) a last node whose text tries to break out of HTML."""
    rng = random.Random(seed)
    tree = Tree(question="Tom has 48 apples and gives half to Ann. Then he buys 7 more. How many now?",
                config={"strategy": "beam", "threshold": 0.5, "beam_width": 3}, stats={"nodes_expanded": 0})
    root = tree.add_root(tuple(range(20)), "Q: Tom has 48 apples… A:")
    frontier, expanded = [root], 0
    while len(tree) < n_steps and frontier:
        parent = frontier.pop(0)
        tree.set_status(parent, "expanded")
        expanded += 1
        options = STEPS[min(tree[parent].depth, len(STEPS) - 1)]
        for _ in range(rng.randint(2, 3)):
            if len(tree) >= n_steps:
                break
            raw, wrong = rng.choice(options)
            ids, raw_ids, text, runs = step_tokens(raw)
            p = round(0.3 + 0.7 * rng.random() if wrong else 0.35 * rng.random(), 3)
            nid = tree.add_child(parent, ids=ids, raw_ids=raw_ids, text=text, raw_text=raw,
                                 logprob=-rng.random() * 5, p_backtrack=p, p_backtrack_policy=round(p * 0.6, 3),
                                 backtracks=runs, visits=rng.randint(0, 5), value_sum=rng.random())
            if p >= 0.5:
                tree.set_status(nid, "pruned", reason=f"P(backtrack)={p} ≥ τ=0.5")
            elif text.startswith("####"):
                tree.update(nid, status="terminal", answer=text[5:], reason="EOS")
            elif rng.random() < 0.08:
                tree.set_status(nid, "rejected", reason="a ⟨b⟩-run crossed the step start")
            else:
                frontier.append(nid)
    answers = [n.id for n in tree if n.answer == "31"] or [len(tree) - 1]
    tree.chosen = tree.path(answers[0])
    if hostile:
        tree.update(len(tree) - 1, text=HOSTILE, raw_text=HOSTILE + BT, p_backtrack=None)
    tree.stats["nodes_expanded"] = expanded
    return tree


def graph_equal(a: nx.DiGraph, b: nx.DiGraph, *, drop_edge_keys: tuple[str, ...] = ()) -> None:
    assert sorted(a.nodes) == sorted(b.nodes)
    assert sorted(a.edges) == sorted(b.edges)
    for v in a.nodes:
        assert a.nodes[v] == b.nodes[v], v
    for u, v in a.edges:
        want = {k: x for k, x in a.edges[u, v].items() if k not in drop_edge_keys}
        got = {k: x for k, x in b.edges[u, v].items() if k not in drop_edge_keys}
        assert want == got


# ---- JSON --------------------------------------------------------------------------------------
def test_json_round_trip_is_identical(tmp_path: Path) -> None:
    tree = make_tree()
    first = export_tree(tree, tmp_path / "a.json")
    again = load_tree(first)
    second = export_tree(again, tmp_path / "b.json")
    assert first.read_bytes() == second.read_bytes()
    assert again.to_dict() == tree.to_dict()
    assert again.children == tree.children and again.chosen == tree.chosen


def test_accepts_a_solution_and_writes_atomically(tmp_path: Path) -> None:
    tree = make_tree(12)
    solution = SimpleNamespace(answer="31", text="…", tree=tree, stats={})
    out = export_tree(solution, tmp_path / "sub" / "t.json")
    assert load_tree(out).to_dict() == tree.to_dict()
    assert [p.name for p in out.parent.iterdir()] == ["t.json"]  # no temp file left behind
    with pytest.raises(ValueError, match="Tree or a Solution"):
        export_tree(object(), tmp_path / "x.json")
    with pytest.raises(ValueError, match="suffix must be one of"):
        export_tree(tree, tmp_path / "t.png")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d.update(schema="other"), "schema"),
        (lambda d: d.pop("nodes"), "nodes"),
        (lambda d: d["nodes"][2].update(status="sleeping"), "nodes[2].status"),
        (lambda d: d["nodes"][3].update(parent=7), "nodes[3].parent"),
        (lambda d: d["nodes"][1].update(p_backtrack="high"), "nodes[1].p_backtrack"),
        (lambda d: d["nodes"][1].update(ids="abc"), "nodes[1].ids"),
        (lambda d: d["nodes"][1].pop("raw_text"), "nodes[1].raw_text"),
        (lambda d: d["nodes"][1].update(colour="red"), "nodes[1].colour"),
        (lambda d: d.update(chosen=[0, 999]), "chosen"),
    ],
)
def test_bad_json_names_the_field(tmp_path: Path, edit, field: str) -> None:
    data = make_tree(10).to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="field " + re.escape(f"'{field}")):
        load_tree(path)


def test_corrupted_json_is_a_clear_error(tmp_path: Path) -> None:
    good = export_tree(make_tree(10), tmp_path / "t.json").read_text()
    path = tmp_path / "cut.json"
    path.write_text(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cut\.json is not valid JSON \(line \d+"):
        load_tree(path)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_tree(path)


# ---- networkx, GraphML, GEXF -----------------------------------------------------------------
def test_networkx_graph_mirrors_the_tree() -> None:
    tree = make_tree()
    g = tree_to_networkx(tree)
    assert nx.is_arborescence(g) and g.number_of_nodes() == len(tree)
    for node in tree:
        assert g.nodes[node.id]["text"] == node.text and g.nodes[node.id]["p_backtrack"] == node.p_backtrack
        assert sorted(g.successors(node.id)) == sorted(tree.children[node.id])
    assert [u for u, v, c in g.edges(data="chosen") if c] == tree.chosen[:-1]
    flat = tree_to_networkx(tree, flat=True)
    assert flat.nodes[len(tree) - 1]["p_backtrack"] == NO_SCORE  # the hostile node has no score
    assert json.loads(flat.graph["config"]) == tree.config
    for _, attrs in flat.nodes(data=True):
        assert all(isinstance(v, str | int | float | bool) for v in attrs.values())


def test_graphml_reads_back_identical(tmp_path: Path) -> None:
    tree = make_tree()
    path = export_tree(tree, tmp_path / "t.graphml")
    back = nx.read_graphml(path, node_type=int)
    want = tree_to_networkx(tree, flat=True)
    graph_equal(want, back)
    assert {k: back.graph[k] for k in want.graph} == want.graph
    assert back.nodes[len(tree) - 1]["text"] == HOSTILE.replace("\x07", "\ufffd")
    raw = path.read_text(encoding="utf-8")
    assert "<script>" not in raw and "&lt;/script&gt;" in raw


def test_gexf_reads_back_identical(tmp_path: Path) -> None:
    tree = make_tree()
    path = export_tree(tree, tmp_path / "t.gexf")
    back = nx.read_gexf(path, node_type=int)
    graph_equal(tree_to_networkx(tree, flat=True), back, drop_edge_keys=("id",))
    assert "<script>" not in path.read_text(encoding="utf-8")


def test_carriage_returns_survive_xml(tmp_path: Path) -> None:
    tree = Tree(question="q\r\n")
    tree.add_root((1,), "a\r\nb\rc ")
    for suffix, read in ((".graphml", nx.read_graphml), (".gexf", nx.read_gexf)):
        back = read(export_tree(tree, tmp_path / f"t{suffix}"), node_type=int)
        assert back.nodes[0]["text"] == "a\r\nb\rc "


# ---- DOT ------------------------------------------------------------------------------------------
def _dot() -> str:
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz 'dot' is not installed (CI installs it with .ci/install-system-deps)")
    return dot


def test_dot_renders_with_graphviz(tmp_path: Path) -> None:
    dot = _dot()
    tree = make_tree()
    path = export_tree(tree, tmp_path / "t.dot")
    res = subprocess.run([dot, "-Tsvg", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr, res.stderr
    svg = res.stdout
    assert svg.count('class="node"') == len(tree) and svg.count('class="edge"') == len(tree) - 1
    assert "<script>" not in svg and "&lt;/script&gt;" in svg
    pruned = tree.by_status("pruned")
    text = path.read_text()
    assert text.count('style="rounded,filled,dashed') == len(pruned)
    assert text.count("style=bold") == len(tree.chosen) - 1


def test_dot_escapes_quotes_and_backslashes() -> None:
    tree = Tree(question='say "hi" \\ there')
    tree.add_root((1,), 'a "b" \\N \\\n{c}')
    src = render_dot(tree)
    assert '\\"hi\\" \\\\ there' in src and 'a \\"b\\" \\\\N \\\\' in src


# ---- HTML -------------------------------------------------------------------------------------------
def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    tree = make_tree()
    page = export_tree(tree, tmp_path / "t.html").read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and page.lower().count("<script") == 2  # data + viewer only
    assert "<!--" not in page and "\u2028" not in page and "{{" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    data = page.split('<script type="application/json" id="tree-data">')[1].split("</script>")[0]
    payload = json.loads(data)
    assert payload["tree"] == json.loads(json.dumps(tree.to_dict()))
    assert payload["threshold"] == 0.5


def test_html_replaces_non_finite_numbers() -> None:
    tree = Tree(question="q", stats={"ratio": math.inf})
    tree.add_root((1,), "r")
    tree.add_child(0, ids=(2,), raw_ids=(2,), text="x", raw_text="x", logprob=-math.inf, p_backtrack=math.nan)
    page = render_html(tree)
    data = page.split('id="tree-data">')[1].split("</script>")[0]
    assert "Infinity" not in data and "NaN" not in data
    assert json.loads(data)["tree"]["nodes"][1]["logprob"] is None


# ---- random trees through every exporter --------------------------------------------------------
texts = st.text(max_size=30)
scores = st.none() | st.floats(0, 1)


@st.composite
def trees(draw) -> Tree:
    tree = Tree(question=draw(texts), config={"threshold": draw(st.floats(0, 1))})
    tree.add_root(tuple(draw(st.lists(st.integers(0, 500), max_size=5))), draw(texts))
    for _ in range(draw(st.integers(0, 25))):
        parent = draw(st.integers(0, len(tree) - 1))
        text, raw = draw(texts), draw(texts)
        nid = tree.add_child(parent, ids=tuple(map(ord, text)), raw_ids=tuple(map(ord, raw)), text=text,
                             raw_text=raw, logprob=draw(st.floats(-100, 0)), p_backtrack=draw(scores),
                             p_backtrack_policy=draw(scores), answer=draw(st.none() | texts),
                             backtracks=tuple(draw(st.lists(st.tuples(st.integers(0, 9), st.integers(1, 4)),
                                                            max_size=2))),
                             visits=draw(st.integers(0, 50)), value_sum=draw(st.floats(-50, 50)))
        tree.set_status(nid, draw(st.sampled_from(STATUSES)), reason=draw(st.none() | texts))
    leaf = draw(st.integers(0, len(tree) - 1))
    tree.chosen = tree.path(leaf) if draw(st.booleans()) else []
    return tree


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees())
def test_random_trees_through_every_exporter(tmp_path: Path, tree: Tree) -> None:
    assert set(FORMATS) == {".json", ".graphml", ".gexf", ".dot", ".html"}
    first = export_tree(tree, tmp_path / "t.json")
    assert export_tree(load_tree(first), tmp_path / "u.json").read_bytes() == first.read_bytes()
    want = tree_to_networkx(tree, flat=True)
    graph_equal(want, nx.read_graphml(export_tree(tree, tmp_path / "t.graphml"), node_type=int))
    graph_equal(want, nx.read_gexf(export_tree(tree, tmp_path / "t.gexf"), node_type=int), drop_edge_keys=("id",))
    dot = export_tree(tree, tmp_path / "t.dot").read_text()
    assert dot.count(" -> ") == len(tree) - 1
    page = export_tree(tree, tmp_path / "t.html").read_text(encoding="utf-8")
    data = page.split('id="tree-data">')[1].split("</script>")[0]
    assert "<" not in data and json.loads(data)["tree"]["question"] == tree.question


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees())
def test_random_trees_render_with_graphviz(tmp_path: Path, tree: Tree) -> None:
    path = export_tree(tree, tmp_path / "t.dot")
    res = subprocess.run(["dot", "-Tsvg", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr, res.stderr
    assert res.stdout.count('class="node"') == len(tree)


def test_numpy_scalars_export_as_numbers(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    tree = Tree(question="q", config={"threshold": np.float64(0.25), "width": np.int64(3)})
    tree.add_root((1,), "r")
    tree.add_child(0, ids=(np.int64(5),), raw_ids=(np.int64(5),), text="x", raw_text="x",
                   logprob=np.float32(-0.5), p_backtrack=np.float32(0.75), visits=np.int64(2))
    back = load_tree(export_tree(tree, tmp_path / "t.json"))
    assert back[1].p_backtrack == 0.75 and back[1].ids == (5,) and back.config == {"threshold": 0.25, "width": 3}
    flat = nx.read_graphml(export_tree(tree, tmp_path / "t.graphml"), node_type=int)
    assert flat.nodes[1]["p_backtrack"] == 0.75 and flat.nodes[1]["visits"] == 2 and flat.nodes[1]["ids"] == "[5]"
    payload = json.loads(render_html(tree).split('id="tree-data">')[1].split("</script>")[0])
    assert payload["threshold"] == 0.25 and payload["tree"]["nodes"][1]["p_backtrack"] == 0.75
    export_tree(tree, tmp_path / "t.gexf")
    assert "0.75" in render_dot(tree)
