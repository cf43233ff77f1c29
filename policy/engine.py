"""``PolicyEngine``: the policy side of search (``search.interfaces.PolicyEngine``).

Every node of a search tree owns the KV of its own alive step tokens (a ``KVSegment``) and the
logits for the token after it. Expanding nodes loads each parent's path — the concatenation of
the segments from the root — into one left-padded batch cache, repeats each row once per child
seed, and decodes one step per row with hard backtracking (``RewindBatch``). No token of the
tree is run through the model twice. With ``share_kv=False`` the path is re-encoded instead
(the benchmark's baseline).

Segments are reference counted along the tree: a node's segment is freed once search released
it and no child still needs it, so pruned branches give their memory back at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from policy.data.grading import extract_answer
from policy.decoding import KVSegment, RewindBatch
from policy.generate import newline_token_ids
from policy.sampling import SamplingConfig, choose_tokens, row_generators
from search.interfaces import ExpandResult, Prompt, StepRequest, StepSample

if TYPE_CHECKING:  # policy.model imports this module to build engines: Policy is only an annotation here
    from policy.model import Policy

__all__ = ["NodeKV", "RewindEngine"]


def _segment_bytes(seg: KVSegment | None) -> int:
    if seg is None:
        return 0
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in seg)


@dataclass(eq=False)
class NodeKV:
    """Engine-side state of one tree node (the opaque handle search holds)."""

    parent: NodeKV | None
    tokens: tuple[int, ...]  # this node's alive tokens (the prompt for a root)
    segment: KVSegment | None  # KV of ``tokens``; None after it is freed (or when not sharing)
    next_logits: torch.Tensor | None  # [V] logits for the token after this node
    hidden: torch.Tensor | None = None  # [H] last-layer hidden state at this node's last token
    depth: int = 0
    released: bool = False
    live_children: int = 0
    prompt_len: int = field(default=0)  # tokens of the root prompt on this path

    def path(self) -> list[NodeKV]:
        out, n = [], self
        while n is not None:
            out.append(n)
            n = n.parent
        return out[::-1]

    def path_tokens(self) -> list[int]:
        return [t for n in self.path() for t in n.tokens]


class RewindEngine:
    """Implements ``search.interfaces.PolicyEngine`` over a ``Policy``."""

    def __init__(self, policy: Policy, *, share_kv: bool = True, max_backtracks_per_step: int = 16,
                 backtrack_bias: float = 0.0, max_kv_bytes: int | None = None, prompt_format=None):
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
        self.hidden_size = policy.hidden_size
        self.kv_bytes = 0  # bytes of live segments
        self.peak_kv_bytes = 0
        self._newlines = newline_token_ids(policy.tokenizer)

    # ---- memory ---------------------------------------------------------------------------
    def _hold(self, node: NodeKV) -> None:
        self.kv_bytes += _segment_bytes(node.segment)
        self.peak_kv_bytes = max(self.peak_kv_bytes, self.kv_bytes)
        if node.parent is not None:
            node.parent.live_children += 1

    def release(self, state: NodeKV) -> None:
        if state is None or state.released:
            return
        state.released = True
        self._maybe_free(state)

    def _maybe_free(self, node: NodeKV) -> None:
        while node is not None and node.released and node.live_children == 0 and node.next_logits is not None:
            self.kv_bytes -= _segment_bytes(node.segment)
            node.segment = None
            node.next_logits = None
            parent = node.parent
            if parent is not None:
                parent.live_children -= 1
            node = parent

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
        batch = RewindBatch(self.policy.model, self.policy.backtrack_id)
        logits, hidden = batch.prefill(ids)
        out = []
        for r, x in enumerate(ids):
            seg = batch.row_segment(r, len(x)) if self.share_kv else None
            node = NodeKV(parent=None, tokens=tuple(x), segment=seg, next_logits=logits[r].clone(),
                          hidden=hidden[r].float().cpu(), prompt_len=len(x))
            self._hold(node)
            out.append(Prompt(state=node, ids=tuple(x), text=texts[r], tokens_run=len(x), kv_bytes=_segment_bytes(seg)))
        return out

    def solution_text(self, prompt_state: NodeKV, ids: Sequence[int]) -> str:
        return self.policy.tokenizer.decode(list(ids), skip_special_tokens=True)

    # ---- expansion ------------------------------------------------------------------------
    def _load(self, requests: Sequence[StepRequest]) -> tuple[RewindBatch, torch.Tensor]:
        """A batch with one row per request holding the parent's path, and the parents'
        next-token logits ``[R, V]``."""
        batch = RewindBatch(self.policy.model, self.policy.backtrack_id)
        paths = [r.state.path() for r in requests]
        tokens = [[t for n in p for t in n.tokens] for p in paths]
        if self.share_kv:
            for r, p in zip(requests, paths):
                if any(n.segment is None for n in p) or r.state.next_logits is None:
                    raise ValueError("a requested node's KV was already freed (expanded after release?)")
            batch.load_segments([[n.segment for n in p] for p in paths], tokens, [len(t) for t in tokens])
            logits = torch.stack([r.state.next_logits for r in requests])
            return batch, logits
        logits, _ = batch.prefill(tokens)
        return batch, logits

    @torch.no_grad()
    def expand(self, requests: Sequence[StepRequest], *, temperature: float, top_p: float = 1.0,
               max_step_tokens: int = 64) -> list[ExpandResult]:
        if not requests:
            return []
        if max_step_tokens < 1:
            raise ValueError(f"max_step_tokens must be >= 1, got {max_step_tokens}")
        if self.max_kv_bytes is not None and self.kv_bytes > self.max_kv_bytes:
            raise MemoryError(f"KV memory limit reached: {self.kv_bytes} live bytes > max_kv_bytes={self.max_kv_bytes}")
        sampling = SamplingConfig(do_sample=temperature > 0, temperature=temperature or 1.0, top_p=top_p)
        batch, parent_logits = self._load(requests)
        counts = [len(r.seeds) for r in requests]
        owner = [i for i, c in enumerate(counts) for _ in range(c)]
        batch.repeat(counts)
        logits = parent_logits[torch.tensor(owner, device=parent_logits.device)]
        seeds = [s for r in requests for s in r.seeds]
        results: list[list[StepSample | None]] = [[None] * c for c in counts]
        slot = [j for c in counts for j in range(c)]
        rows = _StepDecoder(self, batch, logits, seeds, sampling, max_step_tokens)
        for r, sample in rows.run([requests[o].state for o in owner]):
            results[owner[r]][slot[r]] = sample
        run_per_req = [0] * len(requests)
        for r, n in enumerate(rows.fed_per_row):
            run_per_req[owner[r]] += n
        prefix_run = [len(r.state.path_tokens()) if not self.share_kv else 0 for r in requests]
        prefix_saved = [len(r.state.path_tokens()) if self.share_kv else 0 for r in requests]
        return [ExpandResult(samples=tuple(res), tokens_run=run_per_req[i] + prefix_run[i], tokens_saved=prefix_saved[i])
                for i, res in enumerate(results)]


class _StepDecoder:
    """Decodes one step for every row of a loaded batch (rows = children to draw)."""

    def __init__(self, engine: RewindEngine, batch: RewindBatch, logits: torch.Tensor, seeds: list[int],
                 sampling: SamplingConfig, max_step_tokens: int):
        self.engine, self.batch, self.logits = engine, batch, logits
        self.gens = None if sampling.greedy else row_generators(seeds, logits.device)
        self.sampling, self.max_step_tokens = sampling, max_step_tokens
        self.fed_per_row = [0] * len(seeds)

    def run(self, parents: list[NodeKV]):
        eng, batch = self.engine, self.batch
        bid, eos = eng.policy.backtrack_id, eng.policy.tokenizer.eos_token_id
        limit = eng.policy.max_positions
        live = list(range(len(parents)))  # original row index of each batch row
        raw = [[] for _ in parents]
        lps = [[] for _ in parents]
        # per row, one entry per alive step token (mirrors the row's cache past its floor):
        # [log-prob, entropy, last-layer hidden once fed] — the verifier's view of the step
        self.alive: list[list[list]] = [[] for _ in parents]
        pending: list[tuple[float, float] | None] = [None] * len(parents)
        last_hidden: list[torch.Tensor | None] = [None] * len(parents)
        last_logits = [self.logits[r] for r in range(len(parents))]
        logits = self.logits
        gens = self.gens
        while live:
            if not torch.isfinite(logits).all():
                raise ValueError("the model produced NaN/inf logits during search")
            logp = logits.log_softmax(-1)
            entropy = -(logp.exp() * logp).sum(-1)  # [B] entropy of each row's next-token distribution
            proc = logits.clone()
            proc[:, bid] += eng.backtrack_bias
            for b, r in enumerate(live):
                if sum(1 for t in raw[r] if t == bid) >= eng.max_backtracks_per_step:
                    proc[b, bid] = float("-inf")
            chosen = choose_tokens(proc, self.sampling, gens).tolist()
            keep = []
            for b, (r, c) in enumerate(zip(live, chosen)):
                raw[r].append(c)
                lps[r].append(float(logp[b, c]))
                pending[r] = (lps[r][-1], float(entropy[b]))
                row = batch.rows[b]
                step_alive = len(row.cached) - row.floor - row.run  # alive step tokens before this run
                stop = None
                if c == bid and row.run + 1 > step_alive:
                    stop = "rejected"
                elif c == eos:
                    stop = "eos"
                elif limit is not None and len(row.cached) + 1 >= limit:
                    stop = "context"
                if stop:
                    yield r, self._sample(parents[r], b, r, raw[r], lps[r], last_hidden[r], last_logits[r], stop)
                else:
                    keep.append(b)
            if not keep:
                return
            if len(keep) < len(live):
                batch.select(keep)
                live = [live[b] for b in keep]
                if gens is not None:
                    gens = [gens[b] for b in keep]
            toks = torch.tensor([raw[r][-1] for r in live])
            closing = [batch.rows[b].run if raw[r][-1] != bid else 0 for b, r in enumerate(live)]
            logits, hidden = batch.feed(toks)
            done = []
            for b, r in enumerate(live):
                self.fed_per_row[r] += 1
                self._track_alive(r, raw[r][-1], closing[b], pending[r], hidden[b])
                last_hidden[r], last_logits[r] = hidden[b], logits[b]
                c = raw[r][-1]
                in_run = batch.rows[b].run > 0
                if c in eng._newlines:
                    done.append((b, "answer" if self._answer_line(batch.rows[b]) else "newline"))
                elif len(raw[r]) >= self.max_step_tokens and not in_run:
                    done.append((b, "max_step_tokens"))
            if done:
                for b, stop in done:
                    r = live[b]
                    yield r, self._sample(parents[r], b, r, raw[r], lps[r], last_hidden[r], last_logits[r], stop)
                keep = [b for b in range(len(live)) if b not in {d for d, _ in done}]
                if not keep:
                    return
                batch.select(keep)
                logits = logits[keep]
                live = [live[b] for b in keep]
                if gens is not None:
                    gens = [gens[b] for b in keep]

    def _track_alive(self, r: int, token: int, closed_run: int, lp_ent: tuple[float, float], hidden) -> None:
        """Mirror one fed token in row ``r``'s alive list: a ⟨b⟩ adds nothing (its run is deleted
        with it); a token that closes a run of k first drops the k alive tokens the run deletes."""
        if token == self.engine.policy.backtrack_id:
            return
        alive = self.alive[r]
        if closed_run:
            del alive[max(0, len(alive) - closed_run):]
        alive.append([lp_ent[0], lp_ent[1], hidden])

    def _step_view(self, r: int, n_ids: int, pending_run: int, parent: NodeKV):
        """(hidden [T, H], log-probs [T], entropies [T]) of the step's ``n_ids`` alive tokens.

        A run still pending at the end of the step (EOS or the context limit chose the next token)
        deletes its tokens from the view as it does from ``ids``. A step with no fed alive token
        is seen through the parent's last state."""
        alive = self.alive[r]
        if pending_run:
            del alive[max(0, len(alive) - pending_run):]
        if len(alive) != n_ids:
            raise RuntimeError(f"internal: the step's alive view has {len(alive)} tokens but its ids {n_ids}")
        if not alive:
            h = parent.hidden if parent.hidden is not None else torch.zeros(self.engine.hidden_size)
            return h.float().cpu().view(1, -1), torch.zeros(1), torch.zeros(1)
        hidden = torch.stack([a[2] for a in alive]).float().cpu()  # [T, H]
        return (hidden, torch.tensor([a[0] for a in alive], dtype=torch.float32),
                torch.tensor([a[1] for a in alive], dtype=torch.float32))

    def _answer_line(self, row) -> bool:
        text = self.engine.policy.tokenizer.decode(row.cached[row.floor:], skip_special_tokens=True)
        return text.lstrip().startswith("####")

    def _sample(self, parent: NodeKV, b: int, r: int, raw: list[int], lps: list[float], hidden, logits, stop: str) -> StepSample:
        eng, batch = self.engine, self.batch
        tok, bid = eng.policy.tokenizer, eng.policy.backtrack_id
        row = batch.rows[b]
        rejected = stop == "rejected"
        finished = stop in ("eos", "answer", "context")
        pending = 0
        if rejected:
            ids: list[int] = []
        else:
            pending = row.run
            if pending:  # the step ended inside a run (EOS or context): apply it to the text only
                k = pending
                deleted = max(0, min(k, len(row.cached) - k - row.floor))
                cached = row.cached[: len(row.cached) - k - deleted]
            else:
                cached = row.cached
            ids = list(cached[row.floor:])  # EOS is never fed, so never cached
        events = _runs(raw, bid)
        segment = None
        state = None
        if not rejected and not finished:
            segment = batch.row_segment(b, len(ids)) if eng.share_kv else None
            state = NodeKV(parent=parent, tokens=tuple(ids), segment=segment, next_logits=logits.clone(),
                           hidden=None if hidden is None else hidden.float().cpu(), depth=parent.depth + 1, prompt_len=parent.prompt_len)
            eng._hold(state)
        answer = None
        if finished:
            full = parent.path_tokens()[parent.prompt_len:] + ids
            answer = extract_answer(tok.decode(full, skip_special_tokens=True))
        p_b = float(logits.float().softmax(-1)[bid])
        h = hidden if hidden is not None else parent.hidden  # nothing fed: the parent's last state
        view = (None, None, None) if rejected else self._step_view(r, len(ids), pending, parent)
        return StepSample(
            step_hidden=view[0], step_logprobs=view[1], step_entropies=view[2],
            ids=tuple(ids), raw_ids=tuple(raw), text=tok.decode(ids, skip_special_tokens=True),
            raw_text=tok.decode(raw, skip_special_tokens=False), logprob=float(sum(lps)), backtracks=events,
            hidden=None if h is None else h.float().cpu(), p_backtrack_policy=p_b, state=state, rejected=rejected,
            finished=finished, answer=answer, kv_bytes=_segment_bytes(segment), stop_reason=stop,
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
