"""Benchmark group 1 (decoding) and the decoding half of group 4 (verifier overhead).

Both sides decode the same prompts for the same number of tokens: ⟨b⟩ is forbidden on both
(``backtrack_bias=-inf`` here, ``suppress_tokens`` for ``model.generate``), no stop at the
``####`` line, greedy. So the ratio measures the rewind machinery's overhead on ordinary tokens
(per-row positions, masks and bookkeeping) against the library's own loop.
"""

from __future__ import annotations

import statistics
import time

import torch

from experiments.bench.setup import Setup
from experiments.bench.timing import Row, check, paired
from policy.decoding import RewindBatch, new_store, prefill
from policy.generate import generate
from verifier import VerifierHead

__all__ = ["decoding_rows", "rewind_cost", "verifier_decode_rows"]

NO_BACKTRACK = float("-inf")


def _ours(setup: Setup, prompts: list[str], n: int):
    return lambda: generate(setup.policy, prompts, max_new_tokens=n, backtrack_bias=NO_BACKTRACK,
                            stop_at_answer=False)


def decoding_rows(setup: Setup) -> list[Row]:
    s = setup.sizes
    n = s.decode_tokens
    rows: list[Row] = []
    step_s = None
    for k, batch in enumerate(s.decode_batches):
        prompts = setup.prompts(batch)
        enc = setup.encode(prompts)
        res = paired(_ours(setup, prompts, n), lambda enc=enc: setup.hf_generate(enc, max_new_tokens=n),
                     reps=s.reps, warmup=s.warmup, device=setup.device)
        ours_tokens = sum(len(g.raw_ids) for g in res["ours_out"])
        peer_tokens = setup.count_new(res["peer_out"])
        ours_tps, peer_tps = ours_tokens / res["ours_s"], peer_tokens / res["peer_s"]
        # per-repetition ratio of tokens/s (token counts are fixed across repetitions)
        ratio = statistics.median((ours_tokens / a) / (peer_tokens / b)
                                  for a, b in zip(res["ours_all_s"], res["peer_all_s"]))
        rows.append(Row(id=f"1{'abcdefgh'[k]}", name=f"decode tokens/s, batch {batch}, {n} new tokens",
                        ours=ours_tps, peer=peer_tps, unit="tok/s", peer_name="model.generate",
                        ratio=ratio, ratio_means="ours tokens/s ÷ model.generate tokens/s", target=">= 0.9",
                        met=check(ratio, ">= 0.9"),
                        extra={"ours_tokens": ours_tokens, "peer_tokens": peer_tokens, **_times(res)}))
        step_s = res["ours_s"] / n  # per decode step (prefill amortised) at the largest batch
    cost = rewind_cost(setup, batch=max(s.decode_batches), reps=s.rewind_reps)
    share = cost["median_s"] / step_s if step_s else float("nan")
    rows.append(Row(id=f"1{'abcdefgh'[len(s.decode_batches)]}",
                    name=f"cost of one rewind (run of 2 ⟨b⟩, batch {max(s.decode_batches)})",
                    ours=cost["median_s"] * 1e6, peer=step_s * 1e6, unit="µs", peer_name="one decode step",
                    ratio=share, ratio_means="rewind ÷ decode step (a share; lower is better)",
                    note=f"KVStore.truncate of one row (its newest slots go back to the lane; no KV moves; "
                         f"{cost['layers']} layers, {cost['width']} slots wide); median of {s.rewind_reps}.",
                    extra={**cost, "decode_step_s": step_s}))
    return rows


def _times(res: dict) -> dict:
    return {"ours_s": res["ours_s"], "peer_s": res["peer_s"], "ours_all_s": res["ours_all_s"],
            "peer_all_s": res["peer_all_s"]}


@torch.no_grad()
def rewind_cost(setup: Setup, *, batch: int, reps: int, run: int = 2, fed: int = 32) -> dict:
    """Median wall time of one rewind: closing a ⟨b⟩-run of ``run`` (which deletes ``run`` tokens)
    in one row of a ``batch``-row store that holds the prompts and ``fed`` generated tokens.

    Times ``KVStore.truncate`` directly (a rewind is a length decrement: the row's newest slots go
    back to its lane, no KV moves): a whole ``feed`` costs a forward (~1000× more), so its
    difference with and without a rewind would drown in noise. The slots are re-taken between
    repetitions (untimed); their contents are meaningless, their cost is the same."""
    policy = setup.policy
    store = new_store(policy.model)
    prompts = [policy.tokenizer.encode(p, add_special_tokens=False) for p in setup.prompts(batch)]
    roots, _, _, _ = prefill(policy.model, store, prompts)
    rb = RewindBatch(policy.model, store, [store.insert(r) for r in roots], policy.backtrack_id)
    tok = policy.tokenizer.encode("1", add_special_tokens=False)[0]
    for _ in range(fed):
        rb.feed([tok] * batch)
    row = rb.rows[0]
    times = []
    for _ in range(reps):
        store.extend(row, [policy.backtrack_id] * run)
        t0 = time.perf_counter()
        store.truncate(row, 2 * run)
        if setup.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        store.extend(row, [tok] * run)
    return {"median_s": statistics.median(times), "min_s": min(times), "layers": store.pool.n_layers,
            "width": store.pool.width(), "batch": batch, "run": run}


class _TimedScorer:
    """An ``on_forward`` hook that scores every fed token with the verifier head and times it."""

    def __init__(self, head, device: torch.device):
        self.head, self.device, self.seconds, self.calls = head, device, 0.0, 0

    def __call__(self, rows, logits, hidden) -> None:
        t0 = time.perf_counter()
        self.head.score(hidden)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        self.calls += 1


def verifier_decode_rows(setup: Setup) -> list[Row]:
    """Decoding with the verifier head scoring every fed token (``on_forward``) vs without."""
    s = setup.sizes
    batch, n = max(s.decode_batches), s.decode_tokens
    head = VerifierHead(setup.policy.hidden_size).to(setup.device)
    prompts = setup.prompts(batch)
    scorer = _TimedScorer(head, setup.device)
    scoring: list[float] = []  # scoring seconds of each call of ours(), in order

    def ours():
        scorer.seconds, scorer.calls = 0.0, 0
        generate(setup.policy, prompts, max_new_tokens=n, backtrack_bias=NO_BACKTRACK, stop_at_answer=False,
                 on_forward=scorer)
        scoring.append(scorer.seconds)

    res = paired(ours, _ours(setup, prompts, n), reps=s.reps, warmup=s.warmup, device=setup.device)
    share = statistics.median(sc / t for sc, t in zip(scoring[-s.reps:], res["ours_all_s"]))
    slowdown = 1.0 / res["ratio"] - 1.0  # (time with scoring - without) / without
    return [Row(id="4b", name=f"verifier scoring share of decoding (batch {batch}, every token scored)",
                ours=share * 100, peer=None, unit="%", peer_name="decoding time", ratio=share,
                ratio_means="scoring time ÷ decoding time", target="<= 0.05", met=check(share, "<= 0.05"),
                note=f"measured side by side: decoding with the hook is {slowdown:+.1%} slower than without.",
                extra={"scoring_s": scoring[-s.reps:], "slowdown": slowdown, **_times(res)})]
