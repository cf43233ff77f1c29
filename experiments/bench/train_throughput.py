"""Benchmark: training tokens/s of the `hard` layout against `clean` (and `masked`) at the same batch.

Not a test. Each mode trains the same model for the same number of optimiser steps on the same
examples (batch by batch); time covers collation (the `hard` layout is built in Python per batch,
as in training), forward, backward and the AdamW step. Tokens are the non-pad tokens of each batch
as the mode feeds them: `clean` feeds the clean solutions, `masked` and `hard` the longer
error + ⟨b⟩ + correction sequences, so `hard` vs `masked` isolates the layout's own cost.

    python -m experiments.bench.train_throughput --out runs/throughput [--batch-size 32 --steps 20]
        [--precision both]   # fp32 and bf16 autocast side by side, every mode


Writes ``OUT/throughput.md`` (a Markdown table) and ``OUT/throughput.json``.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from experiments.flags import add_config_flags, config_from_args
from policy import data, tiny_policy
from policy.atomic import atomic_write_json, atomic_write_text
from policy.collator import Collator
from search.knobs import knob

__all__ = ["ThroughputConfig", "main", "measure"]


def _examples(n: int, seed: int, tokenizer) -> list[dict]:
    problems = data.generate_problems(n, seed=seed, split="train")
    return list(data.build_dataset("sft", problems, tokenizer, seed=seed))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class _Run:
    """One mode's model, optimiser, collator and counters."""

    def __init__(self, mode: str, *, device: torch.device, attn: str, seed: int, bf16: bool) -> None:
        policy = tiny_policy(seed=seed, attn_implementation=attn)
        self.mode, self.pad, self.bf16 = mode, policy.tokenizer.pad_token_id, bf16
        self.model = policy.model.to(device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.collate = Collator(mode=mode, pad_token_id=self.pad, backtrack_id=policy.backtrack_id,
                                attn_form="bool" if attn == "sdpa" else "float")
        self.tokens, self.padded, self.collate_s, self.total_s = 0, 0, 0.0, 0.0

    def step(self, examples: list[dict], device: torch.device, timed: bool) -> None:
        _sync(device)
        t0 = time.perf_counter()
        batch = self.collate(examples)
        t1 = time.perf_counter()
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(**batch).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        _sync(device)
        t2 = time.perf_counter()
        if timed:
            self.tokens += int(batch["input_ids"].ne(self.pad).sum())
            self.padded += batch["input_ids"].numel()
            self.collate_s += t1 - t0
            self.total_s += t2 - t0

    def row(self) -> dict:
        return {"mode": self.mode, "precision": "bf16" if self.bf16 else "fp32", "tokens": self.tokens, "padded_tokens": self.padded, "seconds": self.total_s,
                "collate_seconds": self.collate_s, "tokens_per_s": self.tokens / self.total_s,
                "model_tokens_per_s": self.tokens / (self.total_s - self.collate_s)}


def measure(modes: list[str], examples: list[dict], *, batch_size: int, steps: int, warmup: int,
            device: torch.device, attn: str, bf16: bool | list[bool], seed: int = 0) -> list[dict]:
    """Train one fresh tiny policy per mode (and per precision, ``bf16`` a list) on the same
    batches; they take turns step by step (so a shared, busy machine slows them alike).
    Tokens/s over the ``steps`` timed steps."""
    runs = [_Run(m, device=device, attn=attn, seed=seed, bf16=b) for b in (bf16 if isinstance(bf16, list) else [bf16])
            for m in modes]
    for step in range(warmup + steps):
        lo = (step * batch_size) % max(1, len(examples) - batch_size + 1)
        for run in runs:
            run.step(examples[lo : lo + batch_size], device, timed=step >= warmup)
    return [run.row() for run in runs]


def _table(rows: list[dict], meta: dict) -> str:
    peer = {(r["mode"], r["precision"]): r for r in rows}
    lines = [f"Train throughput, tiny policy, batch {meta['batch_size']}, {meta['steps']} timed steps, "
             f"{meta['device']} ({meta['attn']})", "",
             "| mode | precision | tokens/s | × clean | × fp32 | tokens/s w/o collation | collation share | tokens/step |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        clean, fp32 = peer[("clean", r["precision"])], peer.get((r["mode"], "fp32"))
        vs_fp32 = f"{r['tokens_per_s'] / fp32['tokens_per_s']:.2f}" if fp32 else "–"
        lines.append(f"| {r['mode']} | {r['precision']} | {r['tokens_per_s']:.0f} | "
                     f"{r['tokens_per_s'] / clean['tokens_per_s']:.2f} | {vs_fp32} | "
                     f"{r['model_tokens_per_s']:.0f} | {r['collate_seconds'] / r['seconds']:.1%} | "
                     f"{r['tokens'] / meta['steps']:.0f} |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, kw_only=True)
class ThroughputConfig:
    """The flags of ``python -m experiments.bench.train_throughput``."""

    out: str = knob(None, "folder for throughput.md and throughput.json")
    batch_size: int = knob(32, "examples per step, >= 1")
    steps: int = knob(20, "timed steps per mode, >= 1")
    warmup: int = knob(3, "untimed steps first, >= 0")
    num_problems: int = knob(400, "problems to build examples from, >= 1")
    device: Literal["auto", "cpu", "cuda"] = knob("auto", "auto = cuda when present")
    attn: Literal["sdpa", "eager"] = knob("sdpa", "attention implementation")
    modes: str = knob("clean,masked,hard", "comma-separated training modes; clean (the baseline) included")
    precision: Literal["auto", "fp32", "bf16", "both"] = knob(
        "auto", "autocast: auto = bf16 on a GPU that has it, else fp32; both = fp32 and bf16 side by side")

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("--out is required")
        if self.batch_size < 1 or self.steps < 1 or self.warmup < 0 or self.num_problems < 1:
            raise ValueError("--batch-size, --steps and --num-problems must be >= 1, --warmup >= 0")
        if "clean" not in self.modes.split(","):
            raise ValueError("--modes must include clean (the baseline of the table)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(p, ThroughputConfig)
    cfg = config_from_args(p.parse_args(argv), ThroughputConfig)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    auto = device.type == "cuda" and torch.cuda.is_bf16_supported()
    bf16 = {"auto": [auto], "fp32": [False], "bf16": [True], "both": [False, True]}[cfg.precision]
    examples = _examples(cfg.num_problems, 0, tiny_policy().tokenizer)
    rows = measure(cfg.modes.split(","), examples, batch_size=cfg.batch_size, steps=cfg.steps, warmup=cfg.warmup,
                   device=device, attn=cfg.attn, bf16=bf16)
    meta = {"batch_size": cfg.batch_size, "steps": cfg.steps, "warmup": cfg.warmup, "attn": cfg.attn,
            "bf16": bf16, "device": torch.cuda.get_device_name() if device.type == "cuda" else
            f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "torch": torch.__version__, "examples": len(examples)}
    table = _table(rows, meta)
    out = Path(cfg.out)
    atomic_write_text(out / "throughput.md", table)
    atomic_write_json(out / "throughput.json", {"meta": meta, "rows": rows})
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
