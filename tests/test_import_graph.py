"""The import graph of the four packages (DESIGN §6), read from the source with ``ast``.

Every ``import`` counts, at module top or inside a function (a function-level import hides an edge,
it does not remove it); only ``if TYPE_CHECKING:`` blocks are left out, since they never run. An
import names the most specific module it reaches: ``from policy.data import grading`` is an edge to
``policy.data.grading``, ``from policy import load_policy`` one to ``policy`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("policy", "verifier", "search", "experiments")
COMMANDS = "experiments.commands"
# Third-party imports that may wait inside a function: optional extras, or heavy modules that
# only one code path needs (plots, PEFT, the hub, distributed). Our own modules never wait.
DEFERRABLE = ("matplotlib", "peft", "datasets", "huggingface_hub", "scipy", "torch.distributed", "transformers",
              "urllib", "os", "numpy")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, in_function: bool = False):
    """(imported name, line, inside a function) for every import that runs."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (x for child in node.orelse for x in _imports(ast.Module([child], []), module, is_package,
                                                                      in_function))
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno, in_function
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                yield f"{base}.{a.name}", node.lineno, in_function
        else:
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _imports(node, module, is_package, inner)


def _resolve(name: str) -> str | None:
    """The most specific module of ours that ``name`` (``a.b.c`` or ``a.b.attr``) reaches."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str, bool]]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    raw = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, line, in_fn in _imports(tree, mod, path.name == "__init__.py"):
            raw.append((mod, line, name, in_fn))
            target = _resolve(name)
            if target is not None and target != mod:
                edges[mod].add(target)
    return edges, raw


EDGES, RAW = _graph()


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_what_it_must():
    # the graph is real: known edges are found, function-level ones included
    assert "policy.engine" in EDGES["policy.model"]
    assert "experiments.wiring" in EDGES["experiments.studies.demo"]
    assert len(MODULES) > 60 and sum(map(len, EDGES.values())) > 150
    # and the cycle finder finds a planted circle
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    cycles = _cycles(EDGES)
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_search_imports_neither_policy_nor_verifier():
    bad = [(m, line, name) for m, line, name, _ in RAW
           if m.split(".")[0] == "search" and name.split(".")[0] in ("policy", "verifier")]
    assert not bad, f"search/ must not import policy/ or verifier/ (DESIGN §6): {bad}"


def test_no_library_module_imports_a_command():
    bad = [(m, line, name) for m, line, name, _ in RAW
           if not m.startswith(COMMANDS) and (_resolve(name) or "").startswith(COMMANDS)]
    assert not bad, f"only experiments.commands may import a command module: {bad}"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_imports_at_the_top(pkg):
    """Our own modules are imported at module top; only heavy or optional third-party modules may wait."""
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line} {name}" for m, line, name, in_fn in RAW
           if in_fn and m.split(".")[0] == pkg and not name.startswith(DEFERRABLE)]
    assert not bad, "function-level imports of our own modules:\n" + "\n".join(bad)
