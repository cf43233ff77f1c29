"""``rewind export``: a tree file or a run folder to every format; user errors exit 2 with one line."""

from __future__ import annotations

import networkx as nx
import pytest
from test_export import make_tree

from experiments.commands.cli import main
from search.export import export_tree, load_tree


def test_export_from_a_json_file(tmp_path, capsys) -> None:
    tree = make_tree(20)
    src = export_tree(tree, tmp_path / "tree.json")
    for suffix in (".html", ".dot", ".graphml", ".gexf", ".json"):
        out = tmp_path / f"out{suffix}"
        assert main(["export", str(src), str(out)]) == 0
        assert out.stat().st_size > 0
    assert f"{len(tree)} nodes" in capsys.readouterr().out
    assert load_tree(tmp_path / "out.json").to_dict() == tree.to_dict()
    assert nx.read_graphml(tmp_path / "out.graphml").number_of_nodes() == len(tree)


def test_export_from_a_run_folder_picks_by_index(tmp_path, capsys) -> None:
    trees = [make_tree(10, seed=0), make_tree(25, seed=2)]
    for i, tree in enumerate(trees):
        export_tree(tree, tmp_path / "run" / "trees" / f"{i:03d}.json")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "a.json")]) == 0
    assert "tree 1 of 2" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "b.json"), "--index", "1"]) == 0
    assert load_tree(tmp_path / "a.json").to_dict() == trees[0].to_dict()
    assert load_tree(tmp_path / "b.json").to_dict() == trees[1].to_dict()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{run}", "{tmp}/x.png"], "suffix must be one of"),
        (["{tmp}/missing", "{tmp}/x.html"], "does not exist"),
        (["{tmp}", "{tmp}/x.html"], "holds no trees/*.json"),
        (["{run}", "{tmp}/x.html", "--index", "5"], "out of range"),
        (["{bad}", "{tmp}/x.html"], "field 'schema_version'"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, args, message) -> None:
    export_tree(make_tree(5), tmp_path / "run" / "trees" / "000.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "rewind.tree", "schema_version": 0, "question": "q", "nodes": []}')
    argv = [a.format(run=tmp_path / "run", tmp=tmp_path, bad=bad) for a in args]
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
