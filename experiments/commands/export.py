"""``rewind export RUN_OR_JSON OUT``: convert a recorded search tree to another format.

``RUN_OR_JSON`` is a tree JSON file (``search.export_tree(..., "x.json")``) or a run folder whose
``trees/`` holds such files (sorted by name; ``--index`` picks one, default the first). The
format of ``OUT`` follows its suffix: ``.html`` (the self-contained viewer), ``.dot``,
``.graphml``, ``.gexf`` or ``.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from search.export import FORMATS, export_tree, load_tree

__all__ = ["add_arguments", "find_tree_file", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_OR_JSON", type=Path,
                        help="a tree .json file, or a run folder with trees/*.json")
    parser.add_argument("out", metavar="OUT", type=Path, help=f"output file; suffix one of {', '.join(FORMATS)}")
    parser.add_argument("--index", type=int, default=0,
                        help="which tree of a run folder's trees/*.json, in name order (default 0)")


def find_tree_file(source: Path, index: int = 0) -> tuple[Path, int]:
    """The tree file that ``source`` names, and how many trees the run folder holds (1 for a file)."""
    if source.is_file():
        return source, 1
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    trees = sorted((source / "trees").glob("*.json"))
    if not trees:
        raise FileNotFoundError(f"{source} holds no trees/*.json (rewind solve --export or rewind demo writes them)")
    if not -len(trees) <= index < len(trees):
        raise ValueError(f"--index {index} is out of range: {source}/trees holds {len(trees)} trees")
    return trees[index], len(trees)


def run(args: argparse.Namespace) -> int:
    if args.out.suffix.lower() not in FORMATS:
        raise ValueError(f"cannot export to {args.out.name!r}: the suffix must be one of {', '.join(FORMATS)}")
    path, count = find_tree_file(args.source, args.index)
    tree = load_tree(path)
    out = export_tree(tree, args.out)
    which = f" (tree {args.index % count + 1} of {count}; --index picks another)" if count > 1 else ""
    print(f"wrote {out} from {path}{which}: {len(tree)} nodes, {len(tree.by_status('pruned'))} pruned, "
          f"chosen path of {len(tree.chosen)}")
    return 0
