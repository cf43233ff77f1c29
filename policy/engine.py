"""``RewindEngine``: the policy side of search (``search.interfaces.PolicyEngine``).

Every node of a search tree is a handle in one ``KVStore`` (``policy/kv_store.py``) that owns
the KV of its own alive step tokens, plus the logits for the token after it. Expanding a node
forks one empty child handle per seed (no KV is copied: a child's rows read the parent's path
in place through the tree-attention mask of ``policy.decoding``) and decodes one step per row
with the shared ``Stepper``. When a step ends, its row's handle *is* the child's KV. No token of
the tree is run through the model twice, and a prompt prefix shared by the problems (a few-shot
prompt) is run once. With ``share_kv=False`` each expansion re-encodes its path instead (the
benchmark's baseline).

A node's KV is freed once search released it and no child still needs it, so pruned branches
give their memory back at once; ``kv_bytes`` / ``peak_kv_bytes`` are the store's own counts of
every live slot.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from policy.data.grading import extract_answer
from policy.decoding import new_store, prefill
from policy.generate import newline_token_ids
from policy.kv_store import Handle, KVStore
from policy.sampling import SamplingConfig, row_generators
from policy.stepper import Row, StepConfig, Stepper
from search.interfaces import ExpandResult, Prompt, StepRequest, StepSample

if TYPE_CHECKING:  # policy.model imports this module to build engines: Policy is only an annotation here
    from policy.model import Policy

__all__ = ["NodeKV", "RewindEngine"]


@dataclass(eq=False)
class NodeKV:
    """Engine-side state of one tree node (the opaque handle search holds)."""

    parent: NodeKV | None
    tokens: tuple[int, ...]  # this node's alive tokens (the prompt for a root)
    kv: Handle | None  # the store handle of ``tokens``; None when not sharing
    next_logits: torch.Tensor | None  # [V] logits for the token after this node; None once released
    hidden: torch.Tensor | None = None  # [H] last-layer hidden state at this node's last token
    depth: int = 0
    released: bool = False
    prompt_len: int = 0  # tokens of the root prompt on this path
    owner: object = None  # the store owner its problem's KV counts toward (shared by the whole tree)
    store: KVStore | None = field(default=None, repr=False)

    def kv_usage(self) -> tuple[int, int]:
        """(live, peak) KV bytes of this node's problem: the store's own count of its owner
        (``search.accounting.MeteredState``): every slot the problem's tree holds, its prompt's
        included, except a prompt prefix shared with other problems (held once, in its own lane)."""
        if self.store is None:
            return 0, 0
        return self.store.owner_bytes(self.owner), self.store.owner_peak_bytes(self.owner)

    def path(self) -> list[NodeKV]:
        out, n = [], self
        while n is not None:
            out.append(n)
            n = n.parent
        return out[::-1]

    def path_tokens(self) -> list[int]:
        return [t for n in self.path() for t in n.tokens]


class _StepRules:
    """Search's stop rules: a ⟨b⟩ that would cross the step's start rejects it; EOS and the
    context end the solution (before feeding); a newline or the step cap ends the step (after)."""

    def __init__(self, policy: Policy, max_step_tokens: int, newlines: frozenset[int]):
        self.tok, self.bid, self.eos = policy.tokenizer, policy.backtrack_id, policy.tokenizer.eos_token_id
        self.limit, self.max_step_tokens, self.newlines = policy.max_positions, max_step_tokens, newlines

    def before_feed(self, row: Row, c: int) -> str | None:
        if c == self.bid and row.sim.run + 1 > row.sim.alive:
            return "rejected"
        if c == self.eos:
            return "eos"
        if self.limit is not None and row.handle.length + 1 >= self.limit:
            return "context"
        return None

    def after_feed(self, row: Row, c: int) -> str | None:
        if c in self.newlines:
            text = self.tok.decode(row.handle.tokens, skip_special_tokens=True)
            return "answer" if text.lstrip().startswith("####") else "newline"
        if len(row.raw) >= self.max_step_tokens and not row.sim.run:
            return "max_step_tokens"
        return None


class RewindEngine:
    """Implements ``search.interfaces.PolicyEngine`` over a ``Policy``."""

    def __init__(self, policy: Policy, *, share_kv: bool = True, max_backtracks_per_step: int = 16,
                 backtrack_bias: float = 0.0, max_kv_bytes: int | None = None, prompt_format=None,
                 share_prompt_min: int = 32):
        if policy.backtrack_id is None:
            raise ValueError("search needs a policy with the backtrack token")
        if max_kv_bytes is not None and max_kv_bytes <= 0:
            raise ValueError(f"max_kv_bytes must be > 0, got {max_kv_bytes}")
        self.policy = policy
        self.share_kv = share_kv
        self.max_backtracks_per_step = max_backtracks_per_step
        self.backtrack_bias = backtrack_bias  # added to the ⟨b⟩ logit when choosing (not to logprobs)
        self.max_kv_bytes = max_kv_bytes
        self.prompt_format = prompt_format  # a policy.prompts.PromptFormat, or None: the policy's own
        self.share_prompt_min = share_prompt_min  # a prompt prefix this long, shared by problems, runs once
        self.hidden_size = policy.hidden_size
        self.store = new_store(policy.model)
        self._problems = itertools.count()  # owner keys of problems whose KV is re-encoded (share_kv=False)
        self._newlines = newline_token_ids(policy.tokenizer)

    # ---- memory ---------------------------------------------------------------------------
    @property
    def kv_bytes(self) -> int:
        """Bytes of every live KV slot (cached shared prefixes and their per-problem copies included)."""
        return self.store.bytes

    @property
    def peak_kv_bytes(self) -> int:
        return self.store.peak_bytes

    def release(self, state: NodeKV) -> None:
        """Search draws no more children from ``state``. Releasing a node twice is an error."""
        if state is None:
            return
        if state.released:
            raise ValueError("this search node was already released")
        state.released = True
        state.next_logits = None
        if state.kv is not None:
            self.store.release(state.kv)

    def _check_memory(self) -> None:
        over = self.kv_bytes - (self.max_kv_bytes or 0)
        if self.max_kv_bytes is None or over <= 0:
            return
        self.store.evict(min(over, self.store.evictable_bytes()))  # cached prefixes go first
        if self.kv_bytes > self.max_kv_bytes:
            raise MemoryError(f"KV memory limit reached: {self.kv_bytes} live bytes > max_kv_bytes={self.max_kv_bytes}")

    # ---- prompts --------------------------------------------------------------------------
    def _format(self, question: str) -> tuple[str, list[int]]:
        # The policy's prompt format (or the engine's override): the same ids training saw.
        fmt = self.prompt_format or self.policy.prompt_format
        return fmt.render(question, self.policy.tokenizer), fmt.encode(question, self.policy.tokenizer)

    @torch.no_grad()
    def start(self, questions: Sequence[str]) -> list[Prompt]:
        formatted = [self._format(q) for q in questions]
        texts, ids = [t for t, _ in formatted], [x for _, x in formatted]
        limit = self.policy.max_positions
        for i, x in enumerate(ids):
            if limit is not None and len(x) >= limit:
                raise ValueError(f"question {i} has {len(x)} prompt tokens; the model's context is {limit}")
        share = self.share_prompt_min if self.share_kv else None
        owners = None if self.share_kv else [("problem", next(self._problems)) for _ in ids]
        roots, logits, hidden, run = prefill(self.policy.model, self.store, ids, share_min=share, owners=owners)
        out = []
        for r, x in enumerate(ids):
            kv = roots[r] if self.share_kv else None
            if kv is None:
                self.store.release(roots[r])
            node = NodeKV(parent=None, tokens=tuple(x), kv=kv, next_logits=logits[r].clone(),
                          hidden=hidden[r].float().cpu(), prompt_len=len(x), owner=roots[r].owner, store=self.store)
            out.append(Prompt(state=node, ids=tuple(x), text=texts[r], tokens_run=run[r],
                              kv_bytes=0 if kv is None else self.store.handle_bytes(kv)))
        return out

    def solution_text(self, prompt_state: NodeKV, ids: Sequence[int]) -> str:
        return self.policy.tokenizer.decode(list(ids), skip_special_tokens=True)

    # ---- expansion ------------------------------------------------------------------------
    def _bases(self, requests: Sequence[StepRequest]) -> tuple[list[Handle], torch.Tensor, list[Handle]]:
        """The handle each request's rows extend and the parents' next-token logits ``[R, V]``.
        Without sharing, each path is re-encoded into a temporary root (returned last, to release)."""
        for r in requests:
            if r.state.released or r.state.next_logits is None:
                raise ValueError("a requested node was already released (expanded after release?)")
        if self.share_kv:
            return [r.state.kv for r in requests], torch.stack([r.state.next_logits for r in requests]), []
        paths = [r.state.path_tokens() for r in requests]
        owners = [r.state.owner for r in requests]
        temps, logits, _, _ = prefill(self.policy.model, self.store, paths, share_min=None, owners=owners)
        return temps, logits, temps

    @torch.no_grad()
    def expand(self, requests: Sequence[StepRequest], *, temperature: float, top_p: float = 1.0,
               max_step_tokens: int = 64) -> list[ExpandResult]:
        if not requests:
            return []
        if max_step_tokens < 1:
            raise ValueError(f"max_step_tokens must be >= 1, got {max_step_tokens}")
        self._check_memory()
        sampling = SamplingConfig(do_sample=temperature > 0, temperature=temperature or 1.0, top_p=top_p)
        bases, parent_logits, temps = self._bases(requests)
        owner = [i for i, r in enumerate(requests) for _ in r.seeds]
        seeds = [s for r in requests for s in r.seeds]
        gens = [None] * len(seeds) if sampling.greedy else row_generators(seeds, parent_logits.device)
        keys = [(i, j) for i, r in enumerate(requests) for j in range(len(r.seeds))]
        rows = [Row(index=(i, j), handle=self.store.insert(bases[i]), gen=g, forced=tuple(requests[i].prefix),
                    ban=requests[i].ban) for (i, j), g in zip(keys, gens)]
        cfg = StepConfig(backtrack_id=self.policy.backtrack_id, newlines=self._newlines, sampling=sampling,
                         backtrack_bias=self.backtrack_bias, max_backtracks_per_line=self.max_backtracks_per_step,
                         entropies=True)
        stepper = Stepper(self.policy.model, self.store, cfg, _StepRules(self.policy, max_step_tokens, self._newlines))
        results: list[list[StepSample | None]] = [[None] * len(r.seeds) for r in requests]
        run = [0] * len(requests)
        for row, stop in stepper.run(rows, parent_logits[torch.tensor(owner, device=parent_logits.device)]):
            i, j = row.index
            results[i][j] = self._sample(requests[i].state, row, stop)
            run[i] += row.fed
        for t in temps:
            self.store.release(t)
        return [ExpandResult(samples=tuple(res), tokens_run=run[i] + (0 if self.share_kv else temps[i].length),
                             tokens_saved=requests[i].state.kv.length if self.share_kv else 0)
                for i, res in enumerate(results)]

    def _step_view(self, row: Row, n_ids: int, parent: NodeKV):
        """(hidden [T, H], log-probs [T], entropies [T]) of the step's ``n_ids`` alive tokens.

        A run still pending at the end of the step (EOS or the context limit chose the next token)
        deletes its tokens from the view as it does from ``ids``. A step with no fed alive token
        is seen through the parent's last state."""
        alive = row.alive[: n_ids]
        if len(alive) != n_ids:
            raise RuntimeError(f"internal: the step's alive view has {len(alive)} tokens but its ids {n_ids}")
        if not alive:
            h = parent.hidden if parent.hidden is not None else torch.zeros(self.hidden_size)
            return h.float().cpu().view(1, -1), torch.zeros(1), torch.zeros(1)
        hidden = torch.stack([a[2] for a in alive]).float().cpu()  # [T, H]
        return (hidden, torch.tensor([a[0] for a in alive], dtype=torch.float32),
                torch.tensor([a[1] for a in alive], dtype=torch.float32))

    def _sample(self, parent: NodeKV, row: Row, stop: str) -> StepSample:
        tok, bid = self.policy.tokenizer, self.policy.backtrack_id
        rejected = stop == "rejected"
        finished = stop in ("eos", "answer", "context")
        ids: list[int] = []
        if not rejected:  # a run pending at the end (EOS or context) applies to the text only
            sim = row.sim
            k, deleted = (sim.run, min(sim.run, sim.alive))
            ids = row.handle.tokens[: len(row.handle.tokens) - k - deleted]
        state = None
        if not rejected and not finished:  # the row's handle becomes the child's KV (no copy)
            state = NodeKV(parent=parent, tokens=tuple(ids), kv=row.handle if self.share_kv else None,
                           next_logits=row.logits.clone(), depth=parent.depth + 1, prompt_len=parent.prompt_len,
                           hidden=None if row.hidden is None else row.hidden.float().cpu(), owner=parent.owner,
                           store=self.store)
        kv_bytes = self.store.handle_bytes(row.handle) if state is not None and state.kv is not None else 0
        if state is None or state.kv is None:
            self.store.release(row.handle)
        answer = None
        if finished:
            full = parent.path_tokens()[parent.prompt_len:] + ids
            answer = extract_answer(tok.decode(full, skip_special_tokens=True))
        p_b = float(row.logits.float().softmax(-1)[bid])
        h = row.hidden if row.hidden is not None else parent.hidden  # nothing fed: the parent's last state
        view = (None, None, None) if rejected else self._step_view(row, len(ids), parent)
        return StepSample(
            step_hidden=view[0], step_logprobs=view[1], step_entropies=view[2],
            ids=tuple(ids), raw_ids=tuple(row.raw), text=tok.decode(ids, skip_special_tokens=True),
            raw_text=tok.decode(row.raw, skip_special_tokens=False), logprob=float(sum(row.logprobs)),
            backtracks=_runs(row.raw, bid), hidden=None if h is None else h.float().cpu(), p_backtrack_policy=p_b,
            state=state, rejected=rejected, finished=finished, answer=answer, kv_bytes=kv_bytes, stop_reason=stop,
        )


def _runs(raw: list[int], bid: int) -> tuple[tuple[int, int], ...]:
    out, i = [], 0
    while i < len(raw):
        if raw[i] == bid:
            j = i
            while j < len(raw) and raw[j] == bid:
                j += 1
            out.append((i, j - i))
            i = j
        else:
            i += 1
    return tuple(out)
