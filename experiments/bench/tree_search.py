"""Benchmark groups 2 (KV sharing), 3 (search vs ``model.generate``) and the search half of 4
(verifier overhead), on the built-in test problems.

The tiny random policy rarely writes a newline or EOS, so steps run to the step cap and
solutions to the depth cap: every search here does its full budget of work, which is what a
speed comparison wants. ``threshold=1`` prunes nothing unless a row says otherwise.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

import search
from experiments.bench.setup import Setup
from experiments.bench.timing import Row, check, paired, timed
from verifier import VerifierHead

__all__ = ["fed_tokens", "kv_rows", "peer_rows", "verifier_search_rows"]

# a step that ends on one of these stopped *before* its last token was fed (EOS, or the ⟨b⟩ that
# would cross the step's start): that token is in the tree but never ran through the model
_UNFED_LAST = ("eos", "rejected", "context")


def fed_tokens(tree: search.Tree) -> int:
    """Tokens of ``tree`` that decoding fed to the model: the prompt and every step's raw tokens,
    less the last token of steps that ended on EOS, a rejection or the context limit."""
    return sum(len(n.raw_ids) - (n.stop_reason in _UNFED_LAST and len(n.raw_ids) > 0) for n in tree.nodes)


def _knobs(setup: Setup, **extra: Any) -> dict[str, Any]:
    s = setup.sizes
    return {"max_step_tokens": s.step_tokens, "max_depth": s.depth, "threshold": 1.0, "seed": setup.cfg.seed,
            **extra}


def _solve(setup: Setup, strategy: str, *, share_kv: bool = True, problems: int = 1, engine=None, **knobs: Any):
    policy = engine if engine is not None else setup.policy
    return lambda: search.solve_many(setup.problems[:problems], strategy=strategy, policy=policy,
                                     share_kv=share_kv, **_knobs(setup, **knobs))


def kv_rows(setup: Setup) -> list[Row]:
    s = setup.sizes
    rows: list[Row] = []
    cases = [("beam", f"beam W={s.beam_width} M={s.beam_samples}", {"width": s.beam_width, "samples": s.beam_samples}),
             ("mcts", f"MCTS {s.mcts_simulations} simulations", {"simulations": s.mcts_simulations})]
    for k, (strategy, label, knobs) in enumerate(cases):
        res = paired(_solve(setup, strategy, **knobs), _solve(setup, strategy, share_kv=False, **knobs),
                     reps=s.reps, warmup=s.warmup, device=setup.device)
        shared, baseline = res["ours_out"][0], res["peer_out"][0]
        st, sb = shared.stats, baseline.stats
        fed = fed_tokens(shared.tree)
        rows.append(Row(
            id=f"2{'ab'[k]}", name=f"{label}: wall time, KV shared", ours=res["ours_s"], peer=res["peer_s"], unit="s",
            peer_name="share_kv=False", ratio=res["ratio"], ratio_means="re-encoding wall ÷ sharing wall",
            target=">= 3", met=check(res["ratio"], ">= 3"),
            note=f"tokens run: {st['tokens_run']:,} shared vs {sb['tokens_run']:,} re-encoded "
                 f"({sb['tokens_run'] / st['tokens_run']:.2f}× fewer); same tree ({st['nodes']} nodes) both ways.",
            extra={"shared_stats": st, "baseline_stats": sb, **_times(res)}))
        ratio = st["tokens_run"] / fed
        rows.append(Row(
            id=f"2{'cd'[k]}", name=f"{label}: tokens run ÷ tokens in tree", ours=float(st["tokens_run"]),
            peer=float(fed), unit="tok", peer_name="fed tokens in tree", ratio=ratio,
            ratio_means="tokens run ÷ fed tokens in the tree", target="<= 1.0", met=check(round(ratio, 4), "<= 1.0"),
            note=f"raw tokens in tree {st['tokens_in_tree']:,} (ratio {st['tokens_run'] / st['tokens_in_tree']:.3f}): "
                 "the EOS or ⟨b⟩ that ends a step is stored but never fed.",
            extra={"tokens_in_tree": st["tokens_in_tree"], "fed_tokens_in_tree": fed, "tokens_run": st["tokens_run"]}))
    rows.append(_peak_kv_row(setup))
    return rows


def _peak_kv_row(setup: Setup) -> Row:
    """The engine's peak KV (every live slot of its store) vs the KV of the tree's distinct tokens."""
    s = setup.sizes
    knobs = {"width": s.beam_width, "samples": s.beam_samples}
    # a threshold that prunes about half the nodes (the median P(⟨b⟩) of an unpruned run):
    # pruned nodes must give their KV back at once
    probe = _solve(setup, "beam", **knobs)()[0]
    threshold = statistics.median(n.p_backtrack for n in probe.tree.nodes[1:] if n.p_backtrack is not None)
    engine = setup.policy.engine(share_kv=True)
    sol = _solve(setup, "beam", engine=engine, threshold=threshold, **knobs)()[0]
    distinct = sum(len(n.ids) for n in sol.tree.nodes) * engine.store.pool.bytes_per_slot
    peak = engine.peak_kv_bytes
    ratio = peak / distinct if distinct else float("nan")
    return Row(id="2e", name=f"beam W={s.beam_width} M={s.beam_samples}, pruning: peak KV held",
               ours=peak / 2**20, peer=distinct / 2**20, unit="MiB", peer_name="KV of the tree's distinct tokens",
               ratio=ratio, ratio_means="engine's peak KV ÷ KV of the tree's alive tokens (prompt + every node)",
               target="<= 1.1", met=check(ratio, "<= 1.1"),
               note=f"threshold {threshold:.4f}: {sol.stats['nodes_pruned']} of {sol.stats['nodes']} nodes pruned. "
                    "The engine's peak counts every slot at its highest moment, the rows of an expansion in "
                    "progress and tokens a ⟨b⟩-run later deletes included; search's peak_kv_bytes is the same "
                    f"store count ({sol.stats['peak_kv_bytes']:,} bytes).",
               extra={"engine_peak_bytes": peak, "distinct_tree_bytes": distinct, "stats": sol.stats})


def _times(res: dict) -> dict:
    return {k: res[k] for k in ("ours_s", "peer_s", "ours_all_s", "peer_all_s")}


def peer_rows(setup: Setup) -> list[Row]:
    s = setup.sizes
    return [_beam_vs_hf(setup, s.beam_samples, "3a"), _best_of_n_vs_hf(setup)]


def _beam_vs_hf(setup: Setup, samples: int, rid: str) -> Row:
    """Step beam search (W beams, M samples each) vs ``model.generate(num_beams=W)`` in tokens/s:
    tokens generated ÷ wall, where the peer generates W tokens per step."""
    s = setup.sizes
    w = s.beam_width
    length = s.step_tokens * s.depth  # the beam's solutions are this long (steps run to their caps)
    enc = setup.encode(setup.prompts(1))
    res = paired(_solve(setup, "beam", width=w, samples=samples),
                 lambda: setup.hf_generate(enc, max_new_tokens=length, num_beams=w, early_stopping=False),
                 reps=s.reps, warmup=s.warmup, device=setup.device)
    ours_tokens = res["ours_out"][0].stats["tokens_generated"]
    peer_tokens = w * res["peer_out"].shape[1]
    ours_tps, peer_tps = ours_tokens / res["ours_s"], peer_tokens / res["peer_s"]
    ratio = statistics.median((ours_tokens / a) / (peer_tokens / b) for a, b in zip(res["ours_all_s"], res["peer_all_s"]))
    return Row(id=rid, name=f"beam W={w} M={samples} tokens/s ({length} tokens deep)", ours=ours_tps, peer=peer_tps,
               unit="tok/s", peer_name=f"generate(num_beams={w})", ratio=ratio,
               ratio_means="ours tokens/s ÷ peer tokens/s", target=">= 1", met=check(ratio, ">= 1"),
               note=f"ours decodes W×M = {w * samples} rows per step, the peer {w}; wall "
                    f"{res['ours_s']:.2f}s vs {res['peer_s']:.2f}s.",
               extra={"ours_tokens": ours_tokens, "peer_tokens": peer_tokens, **_times(res)})


def _best_of_n_vs_hf(setup: Setup) -> Row:
    """Best-of-N (prompt prefilled once, its KV shared by the N samples) vs ``generate(
    num_return_sequences=N, do_sample=True)`` (the prompt expanded to N rows and prefilled N
    times), same number of new tokens per sample."""
    s = setup.sizes
    n = s.best_of
    length = s.step_tokens * s.depth
    prompts = setup.prompts(1)
    enc = setup.encode(prompts)
    res = paired(_solve(setup, "best_of_n", n=n, temperature=1.0),
                 lambda: setup.hf_generate(enc, max_new_tokens=length, num_return_sequences=n, do_sample=True),
                 reps=s.reps, warmup=s.warmup, device=setup.device)
    ours_tokens = res["ours_out"][0].stats["tokens_generated"]
    peer_tokens = setup.count_new(res["peer_out"])
    ratio = statistics.median((ours_tokens / a) / (peer_tokens / b) for a, b in zip(res["ours_all_s"], res["peer_all_s"]))
    # what sharing the prompt is worth: prefilling N copies of it vs one
    ids = enc["input_ids"]
    model = setup.policy.model

    def prefill(k: int):
        with torch.no_grad():
            return model(input_ids=ids.expand(k, -1), use_cache=True)

    t_n = statistics.median(timed(lambda: prefill(n), setup.device)[0] for _ in range(max(3, s.reps)))
    t_1 = statistics.median(timed(lambda: prefill(1), setup.device)[0] for _ in range(max(3, s.reps)))
    prompt_share = (t_n - t_1) / res["peer_s"]
    return Row(id="3b", name=f"best-of-{n} tokens/s ({length} tokens per sample)",
               ours=ours_tokens / res["ours_s"], peer=peer_tokens / res["peer_s"], unit="tok/s",
               peer_name=f"generate(num_return_sequences={n})", ratio=ratio,
               ratio_means="ours tokens/s ÷ peer tokens/s (= peer wall ÷ ours per token)", target=">= 1",
               met=check(ratio, ">= 1"),
               note=f"prefilling the {ids.shape[1]}-token prompt {n}× instead of once costs {(t_n - t_1) * 1e3:.1f} ms "
                    f"= {prompt_share:.1%} of the peer's wall time: that is all the shared prompt can gain.",
               extra={"ours_tokens": ours_tokens, "peer_tokens": peer_tokens, "prefill_n_s": t_n, "prefill_1_s": t_1,
                      "prompt_share_of_peer": prompt_share, **_times(res)})


class _TimedVerifier:
    """A verifier head whose ``score`` calls are timed (search sees an ordinary verifier)."""

    def __init__(self, head, device: torch.device):
        self.head, self.device = head, device
        self.hidden_size = head.hidden_size
        self.seconds, self.calls = 0.0, 0

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.head.score(hidden.to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def verifier_search_rows(setup: Setup) -> list[Row]:
    s = setup.sizes
    v = _TimedVerifier(VerifierHead(setup.policy.hidden_size).to(setup.device), setup.device)
    shares, walls = [], []
    run = _solve(setup, "beam", width=s.beam_width, samples=s.beam_samples)
    for i in range(s.warmup + s.reps):
        v.seconds, v.calls = 0.0, 0
        sol = search.solve_many(setup.problems[:1], strategy="beam", policy=setup.policy, verifier=v,
                                **_knobs(setup, width=s.beam_width, samples=s.beam_samples))[0]
        if i >= s.warmup:
            shares.append(v.seconds / sol.stats["wall_s"])
            walls.append(sol.stats["wall_s"])
    plain_s = statistics.median(timed(run, setup.device)[0] for _ in range(s.reps))
    share = statistics.median(shares)
    return [Row(id="4a", name=f"verifier scoring share of beam search (W={s.beam_width} M={s.beam_samples})",
                ours=share * 100, peer=None, unit="%", peer_name="search wall time", ratio=share,
                ratio_means="time in verifier.score ÷ search wall time", target="<= 0.05", met=check(share, "<= 0.05"),
                note=f"{sol.stats['verifier_calls']} calls scoring {sol.stats['nodes_scored']} nodes; wall "
                     f"{statistics.median(walls):.2f}s with the verifier, {plain_s:.2f}s with the policy's own P(⟨b⟩).",
                extra={"shares": shares, "walls_s": walls, "plain_s": plain_s, "stats": sol.stats})]
