"""The search tree as data: a flat list of frozen ``Node`` records indexed by node id.

A node is one *step* (DESIGN §5): the tokens up to a newline, EOS or the step-length cap. The
root holds the prompt. Nodes are never deep-copied; they change only through ``Tree`` methods,
which replace the record (``dataclasses.replace``) at its id.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["NO_PARENT", "ROOT", "SCHEMA_VERSION", "STATUSES", "Node", "Status", "Tree"]

ROOT = 0
NO_PARENT = -1
SCHEMA_VERSION = 1

Status = Literal["open", "expanded", "pruned", "terminal", "rejected"]
STATUSES: tuple[str, ...] = ("open", "expanded", "pruned", "terminal", "rejected")


@dataclass(frozen=True)
class Node:
    """One step of a search. Token fields are tuples of ids; scores are probabilities in [0, 1]."""

    id: int
    parent: int  # NO_PARENT for the root
    depth: int  # root = 0
    ids: tuple[int, ...]  # alive tokens of the step after in-step backspaces (root: the prompt)
    raw_ids: tuple[int, ...]  # tokens as sampled, ⟨b⟩ included
    text: str  # decoded alive text of the step
    raw_text: str  # decoded raw trace, ⟨b⟩ visible
    logprob: float = 0.0  # sum of the policy's log-probs of raw_ids
    p_backtrack: float | None = None  # pruning signal at the step's end (verifier, or policy P(⟨b⟩))
    p_backtrack_policy: float | None = None  # the policy's own P(⟨b⟩) at the step's end
    status: Status = "open"
    answer: str | None = None  # final answer, for terminal nodes
    seed_path: tuple[int, ...] = ()  # child indices from the root; seeds the node's sampling
    backtracks: tuple[tuple[int, int], ...] = ()  # (raw index in the step, run length) per ⟨b⟩-run
    reason: str | None = None  # why the node was pruned, rejected or ended
    stop_reason: str | None = None  # how the step ended (StepSample.stop_reason: "newline", "eos", ...)
    token_logprobs: tuple[float, ...] = ()  # log-prob of each alive token (temperature 1); () when unknown
    forced: int = 0  # a rewrite's first tokens, kept from a sibling's step (Expand.prefix)
    banned: int | None = None  # the token a rewrite could not choose after them (Expand.ban)
    visits: int = 0  # MCTS visit count
    value_sum: float = 0.0  # MCTS sum of backed-up values

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


@dataclass
class Tree:
    """A search tree over steps for one question."""

    question: str
    nodes: list[Node] = field(default_factory=list)
    children: list[list[int]] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)  # node ids from the root to the answer node
    config: dict[str, Any] = field(default_factory=dict)  # the run's strategy and knobs
    stats: dict[str, Any] = field(default_factory=dict)  # Solution.stats of the run

    # ---- building -------------------------------------------------------------------------
    def add_root(self, ids: tuple[int, ...], text: str) -> int:
        if self.nodes:
            raise ValueError("the tree already has a root")
        self.nodes.append(Node(id=ROOT, parent=NO_PARENT, depth=0, ids=tuple(ids), raw_ids=tuple(ids),
                               text=text, raw_text=text))
        self.children.append([])
        return ROOT

    def add_child(self, parent: int, **fields: Any) -> int:
        """Append a child of ``parent`` and return its id. ``fields`` are ``Node`` fields."""
        self._check(parent)
        nid = len(self.nodes)
        p = self.nodes[parent]
        fields.setdefault("seed_path", p.seed_path + (len(self.children[parent]),))
        node = Node(id=nid, parent=parent, depth=p.depth + 1, **fields)
        self.nodes.append(node)
        self.children.append([])
        self.children[parent].append(nid)
        return nid

    def update(self, nid: int, **fields: Any) -> Node:
        self._check(nid)
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown node status {fields['status']!r}; expected one of {STATUSES}")
        self.nodes[nid] = dataclasses.replace(self.nodes[nid], **fields)
        return self.nodes[nid]

    def set_status(self, nid: int, status: Status, reason: str | None = None) -> Node:
        return self.update(nid, status=status, reason=reason)

    def backup(self, nid: int, value: float) -> None:
        """Add ``value`` to every node on the path root→``nid`` (MCTS backup)."""
        for a in self.path(nid):
            n = self.nodes[a]
            self.nodes[a] = dataclasses.replace(n, visits=n.visits + 1, value_sum=n.value_sum + value)

    # ---- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __getitem__(self, nid: int) -> Node:
        self._check(nid)
        return self.nodes[nid]

    def _check(self, nid: int) -> None:
        if not isinstance(nid, int) or not 0 <= nid < len(self.nodes):
            raise IndexError(f"node {nid!r} is not in the tree ({len(self.nodes)} nodes)")

    def path(self, nid: int) -> list[int]:
        """Node ids from the root to ``nid``, both included."""
        self._check(nid)
        out = []
        while nid != NO_PARENT:
            out.append(nid)
            nid = self.nodes[nid].parent
        return out[::-1]

    def alive_ids(self, nid: int, *, include_prompt: bool = False) -> list[int]:
        """The alive token ids of the solution that ends at ``nid``."""
        path = self.path(nid)
        if not include_prompt:
            path = path[1:]
        return [t for a in path for t in self.nodes[a].ids]

    def solution_text(self, nid: int) -> str:
        """The alive solution text (root prompt excluded) that ends at ``nid``."""
        return "".join(self.nodes[a].text for a in self.path(nid)[1:])

    def by_status(self, status: Status) -> list[int]:
        return [n.id for n in self.nodes if n.status == status]

    def count_tokens(self) -> int:
        """Raw tokens stored in the tree, prompt included (each node's step counted once)."""
        return sum(len(n.raw_ids) for n in self.nodes)

    # ---- (de)serialisation (the JSON schema of search.export_tree) ------------------------
    def to_dict(self) -> dict[str, Any]:
        def clean(x: float | None) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

        nodes = []
        for n in self.nodes:
            d = dataclasses.asdict(n)
            for k in ("ids", "raw_ids", "seed_path"):
                d[k] = list(d[k])
            d["backtracks"] = [list(b) for b in n.backtracks]
            d["token_logprobs"] = [round(x, 4) for x in n.token_logprobs]
            d["p_backtrack"] = clean(n.p_backtrack)
            d["p_backtrack_policy"] = clean(n.p_backtrack_policy)
            nodes.append(d)
        return {"schema": "rewind.tree", "schema_version": SCHEMA_VERSION, "question": self.question,
                "config": self.config, "stats": self.stats, "chosen": list(self.chosen), "nodes": nodes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tree:
        if not isinstance(data, dict):
            raise ValueError(f"a tree must be a JSON object, got {type(data).__name__}")
        if data.get("schema") != "rewind.tree":
            raise ValueError(f"field 'schema' is {data.get('schema')!r}, expected 'rewind.tree'")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"field 'schema_version' is {data.get('schema_version')!r}; this Rewind reads version {SCHEMA_VERSION}"
            )
        for key in ("question", "nodes"):
            if key not in data:
                raise ValueError(f"field {key!r} is missing")
        names = {f.name for f in dataclasses.fields(Node)}
        tree = cls(question=data["question"], config=dict(data.get("config") or {}),
                   stats=dict(data.get("stats") or {}), chosen=list(data.get("chosen") or []))
        for i, d in enumerate(data["nodes"]):
            if not isinstance(d, dict):
                raise ValueError(f"field 'nodes[{i}]' must be an object")
            missing = {"id", "parent", "depth", "ids", "raw_ids", "text", "raw_text"} - d.keys()
            if missing:
                raise ValueError(f"field 'nodes[{i}].{sorted(missing)[0]}' is missing")
            unknown = set(d) - names
            if unknown:
                raise ValueError(f"field 'nodes[{i}].{sorted(unknown)[0]}' is not part of schema version {SCHEMA_VERSION}")
            if d["id"] != i:
                raise ValueError(f"field 'nodes[{i}].id' is {d['id']!r}; ids must equal list positions")
            parent = d["parent"]
            if (i == 0) != (parent == NO_PARENT) or (i > 0 and not (isinstance(parent, int) and 0 <= parent < i)):
                raise ValueError(f"field 'nodes[{i}].parent' is {parent!r}: not an earlier node id")
            if d.get("status", "open") not in STATUSES:
                raise ValueError(f"field 'nodes[{i}].status' is {d.get('status')!r}; expected one of {STATUSES}")
            d = dict(d)
            for k in ("ids", "raw_ids", "seed_path", "token_logprobs"):
                d[k] = tuple(d.get(k, ()))
            d["backtracks"] = tuple(tuple(b) for b in d.get("backtracks", ()))
            tree.nodes.append(Node(**d))
            tree.children.append([])
            if parent != NO_PARENT:
                tree.children[parent].append(i)
        for nid in tree.chosen:
            tree._check(nid)
        return tree
