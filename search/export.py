"""Tree exports: JSON, networkx, GraphML, GEXF, Graphviz DOT and a self-contained HTML viewer.

``export_tree(tree_or_solution, path)`` picks the format from the suffix of ``path``:

==========  ===============================================================================
``.json``   ``Tree.to_dict()``: the versioned schema ``rewind.tree`` (see ``search/tree.py``);
            ``load_tree`` reads it back, so JSON → Tree → JSON is byte-identical.
``.graphml`` networkx GraphML (yEd, Gephi, networkx). Graph attributes: ``schema``,
            ``schema_version``, ``question``, and ``config``/``stats``/``chosen`` as JSON strings.
``.gexf``   networkx GEXF 1.2 (Gephi). Node and edge attributes only: GEXF has no graph
            attributes, so the question, config and stats live in the JSON/GraphML exports.
``.dot``    Graphviz text: pruned nodes dashed, rejected nodes dotted, the chosen path bold.
``.html``   one self-contained page (inline JS/CSS, no network) that draws the tree.
==========  ===============================================================================

GraphML and GEXF hold only strings, ints, floats and booleans, so file attributes are *flat*
(``tree_to_networkx(tree, flat=True)``):

- a missing score (``p_backtrack``, ``p_backtrack_policy`` is ``None``) is ``-1.0``
  (``NO_SCORE``): real scores are probabilities in [0, 1];
- a missing ``answer`` or ``reason`` is the empty string;
- tuples (``ids``, ``raw_ids``, ``seed_path``, ``backtracks``) are JSON strings;
- characters that XML 1.0 forbids (most control characters) become U+FFFD;
- node attribute ``label`` is a one-line preview of the text (Gephi and yEd show it), ``chosen``
  marks nodes and edges on ``tree.chosen``, ``value`` is the MCTS mean value.

GEXF readers add an ``id`` attribute to every edge; networkx reads GraphML/GEXF node ids as
strings unless asked for ``node_type=int``.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import networkx as nx

from search.tree import NO_PARENT, SCHEMA_VERSION, Node, Tree

__all__ = ["BACKTRACK_MARKERS", "FORMATS", "NO_SCORE", "export_tree", "load_tree", "render_dot",
           "render_html", "tree_to_networkx"]

NO_SCORE = -1.0  # stands for a missing probability in GraphML/GEXF (real ones are in [0, 1])
# how a ⟨b⟩ appears in decoded raw text (policy.backtrack.BACKTRACK_TOKEN; search does not import policy)
BACKTRACK_MARKERS: tuple[str, ...] = ("<|backtrack|>", "⟨b⟩")
_LABEL_CHARS = 40  # characters of text in a node's one-line label
_XML_INVALID = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NODE_TYPES: dict[str, tuple[type, ...]] = {  # JSON types of node fields, checked by load_tree
    "id": (int,), "parent": (int,), "depth": (int,), "ids": (list,), "raw_ids": (list,),
    "text": (str,), "raw_text": (str,), "logprob": (int, float), "p_backtrack": (int, float, type(None)),
    "p_backtrack_policy": (int, float, type(None)), "status": (str,), "answer": (str, type(None)),
    "seed_path": (list,), "backtracks": (list,), "reason": (str, type(None)), "visits": (int,),
    "value_sum": (int, float),
}


# ---- reading ---------------------------------------------------------------------------------
def _as_tree(obj: Any) -> Tree:
    """A ``Tree``, or the ``.tree`` of a ``Solution`` (any object that has one)."""
    if isinstance(obj, Tree):
        return obj
    tree = getattr(obj, "tree", None)
    if isinstance(tree, Tree):
        return tree
    raise ValueError(f"expected a search.Tree or a Solution with a .tree, got {type(obj).__name__}")


def _check_node_types(data: dict[str, Any]) -> None:
    nodes = data.get("nodes")
    if not isinstance(nodes, list):
        raise ValueError(f"field 'nodes' must be a list, got {type(nodes).__name__}")
    for i, d in enumerate(nodes):
        if not isinstance(d, dict):
            raise ValueError(f"field 'nodes[{i}]' must be an object")
        for key, types in _NODE_TYPES.items():
            v = d.get(key)
            if key in d and (not isinstance(v, types) or (isinstance(v, bool) and bool not in types)):
                want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise ValueError(f"field 'nodes[{i}].{key}' is {v!r}; expected {want}")
    for key in ("config", "stats"):
        if not isinstance(data.get(key, {}), dict):
            raise ValueError(f"field {key!r} must be an object")
    if not isinstance(data.get("chosen", []), list):
        raise ValueError("field 'chosen' must be a list of node ids")


def load_tree(path: str | os.PathLike[str]) -> Tree:
    """Read a tree written by ``export_tree(..., "x.json")``; a clear ``ValueError`` names the bad field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a tree file (write one with `rewind solve --export FILE.json`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if isinstance(data, dict) and data.get("schema_version") == SCHEMA_VERSION:
        _check_node_types(data)
    try:
        return Tree.from_dict(data)
    except IndexError as e:  # a chosen id outside the tree
        raise ValueError(f"field 'chosen': {e}") from None


# ---- networkx ----------------------------------------------------------------------------------
def _plain(o: Any) -> Any:
    """``json.dumps`` hook: numpy/torch scalars (``.item()``) become Python numbers."""
    if hasattr(o, "item") and callable(o.item):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serializable (in a tree's config, stats or node fields)")


def _dumps(x: Any) -> str:
    return json.dumps(x, sort_keys=True, default=_plain)


def _xml_safe(s: str) -> str:
    return _XML_INVALID.sub("\ufffd", s)


def _score(x: float | None) -> float:
    return NO_SCORE if x is None or math.isnan(x) else float(x)


def _label(text: str, limit: int = _LABEL_CHARS) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def _node_attrs(n: Node, on_path: bool, flat: bool) -> dict[str, Any]:
    if not flat:
        return {"parent": n.parent, "depth": n.depth, "ids": n.ids, "raw_ids": n.raw_ids, "text": n.text,
                "raw_text": n.raw_text, "logprob": n.logprob, "p_backtrack": n.p_backtrack,
                "p_backtrack_policy": n.p_backtrack_policy, "status": n.status, "answer": n.answer,
                "seed_path": n.seed_path, "backtracks": n.backtracks, "reason": n.reason,
                "visits": n.visits, "value_sum": n.value_sum, "value": n.value, "chosen": on_path}
    return {"label": _xml_safe(_label(n.text)), "parent": n.parent, "depth": n.depth,
            "ids": _dumps(list(n.ids)), "raw_ids": _dumps(list(n.raw_ids)),
            "text": _xml_safe(n.text), "raw_text": _xml_safe(n.raw_text), "logprob": float(n.logprob),
            "p_backtrack": _score(n.p_backtrack), "p_backtrack_policy": _score(n.p_backtrack_policy),
            "status": n.status, "answer": _xml_safe(n.answer or ""), "reason": _xml_safe(n.reason or ""),
            "seed_path": _dumps(list(n.seed_path)), "backtracks": _dumps([list(b) for b in n.backtracks]),
            "visits": int(n.visits), "value_sum": float(n.value_sum), "value": float(n.value),
            "chosen": on_path}


def tree_to_networkx(tree: Tree, *, flat: bool = False) -> nx.DiGraph:
    """The tree as a ``networkx.DiGraph``: node ``i`` is ``tree[i]``, edges go parent → child.

    ``flat=False`` keeps Python values (tuples, ``None``) for analysis; ``flat=True`` gives the
    typed attributes written to GraphML/GEXF (see the module docstring for the sentinels).
    """
    tree = _as_tree(tree)
    on_path = set(tree.chosen)
    chosen_edges = set(zip(tree.chosen, tree.chosen[1:]))
    dumps = _dumps if flat else (lambda x: x)
    g = nx.DiGraph(schema="rewind.tree", schema_version=SCHEMA_VERSION,
                   question=_xml_safe(tree.question) if flat else tree.question,
                   config=dumps(tree.config), stats=dumps(tree.stats), chosen=dumps(list(tree.chosen)))
    for n in tree:
        g.add_node(n.id, **_node_attrs(n, n.id in on_path, flat))
        if n.parent != NO_PARENT:
            g.add_edge(n.parent, n.id, chosen=(n.parent, n.id) in chosen_edges)
    return g


def _graphml_text(tree: Tree) -> str:
    writer = nx.readwrite.graphml.GraphMLWriter(graph=tree_to_networkx(tree, flat=True), encoding="utf-8")
    # ElementTree writes a carriage return in element text raw, and XML readers turn it into "\n";
    # the writer itself only emits "\n", so every raw "\r" is data and becomes a character reference.
    return str(writer).replace("\r", "&#13;")


def _gexf_text(tree: Tree) -> str:
    graph = tree_to_networkx(tree, flat=True)
    graph.graph = {}  # GEXF has no graph attributes (networkx would drop them anyway)
    return "\n".join(nx.generate_gexf(graph)) + "\n"


# ---- Graphviz DOT ------------------------------------------------------------------------------
def _dot_str(s: str) -> str:
    """A DOT double-quoted string; newlines become ``\\n`` (centred lines), control chars U+FFFD."""
    s = _xml_safe(s).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + s.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n") + '"'


def _p_colour(p: float | None) -> str:
    """Fill colour for P(backtrack): green (0) → yellow → red (1); grey when unscored."""
    if p is None or math.isnan(p):
        return "#d9dee4"
    p = min(max(float(p), 0.0), 1.0)
    r, g = (int(255 * 2 * p), 200) if p < 0.5 else (255, int(200 * 2 * (1 - p)))
    return f"#{r:02x}{g:02x}60"


def render_dot(tree: Tree) -> str:
    """Graphviz source of the tree (``dot -Tsvg tree.dot > tree.svg``)."""
    tree = _as_tree(tree)
    on_path, chosen_edges = set(tree.chosen), set(zip(tree.chosen, tree.chosen[1:]))
    lines = ["digraph rewind_tree {", '  charset="UTF-8";', "  rankdir=LR;",
             f"  label={_dot_str(_label(tree.question, 120))}; labelloc=t;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [color="#8895a7"];']
    for n in tree:
        p = "—" if n.p_backtrack is None or math.isnan(n.p_backtrack) else f"{n.p_backtrack:.2f}"
        label = f"#{n.id} {_label(n.text, 32)}\np={p} {n.status}"
        styles = ["rounded", "filled"] + {"pruned": ["dashed"], "rejected": ["dotted"]}.get(n.status, [])
        fill = "#eeeeee" if n.status in ("pruned", "rejected") else _p_colour(n.p_backtrack)
        if n.id in on_path:
            styles.append("bold")
        extra = ", penwidth=3, color=\"#b8860b\"" if n.id in on_path else ""
        lines.append(f"  n{n.id} [label={_dot_str(label)}, tooltip={_dot_str(n.raw_text)}, "
                     f"style=\"{','.join(styles)}\", fillcolor=\"{fill}\"{extra}];")
    for n in tree:
        if n.parent != NO_PARENT:
            bold = ' [style=bold, penwidth=3, color="#b8860b"]' if (n.parent, n.id) in chosen_edges else ""
            lines.append(f"  n{n.parent} -> n{n.id}{bold};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- HTML viewer -------------------------------------------------------------------------------
def _finite(x: Any) -> Any:
    """JSON-for-JavaScript: ``JSON.parse`` rejects NaN/Infinity, so those become null."""
    if not isinstance(x, str | int | float | bool | dict | list | tuple | type(None)) and hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _script_json(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``</script>``, ``<!--`` or line separators."""
    text = json.dumps(_finite(data), ensure_ascii=False, default=_plain)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _viewer_file(name: str) -> str:
    return (resources.files("search") / "viewer" / name).read_text(encoding="utf-8")


def render_html(tree: Tree, *, title: str | None = None) -> str:
    """The self-contained viewer page for ``tree`` (templates in ``search/viewer/``)."""
    tree = _as_tree(tree)
    threshold = _finite(tree.config.get("threshold"))
    payload = {"tree": tree.to_dict(), "backtrack_markers": list(BACKTRACK_MARKERS),
               "threshold": threshold if isinstance(threshold, int | float) and 0 <= threshold <= 1 else None}
    parts = {"CSS": _viewer_file("viewer.css"), "JS": _viewer_file("viewer.js"),
             "TITLE": html.escape(title or f"Rewind tree — {_label(tree.question, 80)}"),
             "DATA": _script_json(payload)}
    for name in ("CSS", "JS"):
        if re.search(r"</(script|style)", parts[name], re.I):
            raise ValueError(f"viewer/{name.lower()} must not contain a closing script/style tag")
    # one pass, so text inserted for one placeholder is never scanned for another
    return re.sub(r"\{\{(CSS|JS|TITLE|DATA)\}\}", lambda m: parts[m.group(1)], _viewer_file("viewer.html"))


# ---- writing -----------------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would survive the rename
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_text(tree: Tree) -> str:
    return json.dumps(tree.to_dict(), ensure_ascii=False, indent=1, default=_plain) + "\n"


FORMATS: dict[str, Callable[[Tree], str]] = {
    ".json": _json_text, ".graphml": _graphml_text, ".gexf": _gexf_text, ".dot": render_dot, ".html": render_html,
}


def export_tree(tree_or_solution: Tree | Any, path: str | os.PathLike[str]) -> Path:
    """Write the tree (or ``solution.tree``) to ``path`` in the format its suffix names; returns the path."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot export to {path.name!r}: the suffix must be one of {', '.join(FORMATS)}")
    _write_atomic(path, fmt(_as_tree(tree_or_solution)))
    return path
