"""Every entry point takes the same forms of path (DESIGN §6, the composition root).

Policy sources: a policy folder, a training run (``OUT/policy``), a ``rewind demo`` run
(``run.json``), a LoRA adapter folder, a ``.gguf`` file and a hub name. ``policy.load_policy``,
``experiments.wiring``, ``search.solve(policy=...)`` and every command that takes a policy resolve
each of them to the same place (``policy.locate``: a spy stops each call there), and the tiny
ones are loaded and searched with for real (a ``.gguf`` load is ``test_real_model``'s, a hub name
cannot be loaded offline). Verifier sources: a verifier folder, a train-verifier run
(``OUT/verifier``), a training run and a demo run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from real_model import smollm2_gguf

import policy.model
import search
import verifier
from experiments import wiring
from experiments.commands.cli import main
from policy import Policy, load_policy, tiny_policy
from policy.locate import locate
from policy.lora import apply_lora
from verifier import VerifierHead, tokenizer_fingerprint

HUB = "rewind-tests/no-such-model"  # a hub name: resolved, never downloaded
SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, Path | str]:
    d = tmp_path_factory.mktemp("forms")
    torch.manual_seed(0)
    pol = tiny_policy(**SMALL)
    head = VerifierHead(pol.hidden_size, width=8,
                        tokenizer_fingerprint=tokenizer_fingerprint(pol.tokenizer, pol.backtrack_id))
    pol.save(d / "policy")
    head.save(d / "verifier")
    pol.save(d / "train" / "policy")  # rewind train-policy --out train
    head.save(d / "train" / "verifier")
    head.save(d / "vrun" / "verifier")  # rewind train-verifier --out vrun
    pol.save(d / "demo" / "train" / "policy")  # rewind demo
    head.save(d / "demo" / "verifier_train" / "verifier")
    (d / "demo" / "run.json").write_text(json.dumps({"policy": "train/policy",
                                                     "verifier": "verifier_train/verifier"}))
    (d / "demo" / "config.json").write_text(json.dumps({"quick": True}))  # the demo's own config, no model's
    apply_lora(load_policy(d / "policy"), r=2).save(d / "adapter")
    return {"policy folder": d / "policy", "training run": d / "train", "demo run": d / "demo",
            "adapter": d / "adapter", "gguf": smollm2_gguf(), "hub name": HUB,
            "verifier folder": d / "verifier", "verifier run": d / "vrun"}


POLICY_FORMS = ["policy folder", "training run", "demo run", "adapter", "gguf", "hub name"]
LOADABLE = ["policy folder", "training run", "demo run", "adapter"]
RUNS_WITH_VERIFIER = {"training run", "demo run"}


@pytest.mark.parametrize("form", POLICY_FORMS)
def test_wiring_resolves_where_locate_does(forms, form):
    src = wiring.resolve(forms[form])
    assert locate(src.policy) == locate(forms[form])
    assert (src.verifier is not None) == (form in RUNS_WITH_VERIFIER)
    if form == "demo run":
        assert src.policy == str(forms[form] / "train" / "policy") and src.run == forms[form]


@pytest.mark.parametrize("form", LOADABLE)
def test_load_policy_wiring_and_solve_load_every_form(forms, form):
    pol = load_policy(forms[form])
    assert isinstance(pol, Policy) and pol.backtrack_id is not None
    w_pol, w_ver = wiring.load(forms[form])
    assert w_pol.hidden_size == pol.hidden_size and (w_ver is not None) == (form in RUNS_WITH_VERIFIER)
    sol = search.solve("What is 2 + 3?", policy=str(forms[form]), strategy="greedy", max_depth=1,
                       max_step_tokens=2)
    assert sol.stats["nodes_expanded"] >= 1
    assert (sol.stats["verifier_calls"] > 0) == (form in RUNS_WITH_VERIFIER)  # a run brings its verifier
    assert search.solve("What is 2 + 3?", policy=Path(forms[form]), strategy="greedy", max_depth=1,
                        max_step_tokens=2).tree.question == sol.tree.question  # PathLike too


@pytest.mark.parametrize("form", ["verifier folder", "verifier run", "training run", "demo run"])
def test_load_verifier_wiring_and_solve_take_every_verifier_form(forms, form):
    pol = load_policy(forms["policy folder"])
    head = verifier.load_verifier(forms[form], pol)
    assert head.hidden_size == pol.hidden_size
    assert wiring.load_verifier_for(forms[form], pol).hidden_size == pol.hidden_size
    _, ver = wiring.load(forms["policy folder"], verifier=forms[form])
    assert ver is not None
    sol = search.solve("What is 2 + 3?", policy=pol, verifier=str(forms[form]), strategy="greedy", max_depth=1,
                       max_step_tokens=2)
    assert sol.stats["verifier_calls"] > 0


class _Reached(Exception):
    """Raised where load_policy would load: the command got that far with the source resolved."""


# the command line (SOURCE: the form) of every command that takes a policy
COMMANDS = {
    "generate": ["generate", "--policy", "SOURCE", "What is 2 + 3?"],
    "solve": ["solve", "--policy", "SOURCE", "What is 2 + 3?"],
    "eval": ["eval", "--run", "SOURCE", "--method", "decode", "--n", "1", "--out", "out"],
    "sweep": ["sweep", "--run", "SOURCE", "--signal", "policy", "--n", "1", "--out", "out"],
    "train-policy": ["train-policy", "--model", "SOURCE", "--num-problems", "8", "--num-eval", "2", "--out", "out"],
    "train-verifier": ["train-verifier", "--policy", "SOURCE", "--num-problems", "3", "--out", "out"],
    "bench": ["bench", "--model", "SOURCE", "--smoke", "--device", "cpu", "--out", "out"],
    "diagnose": ["diagnose", "SOURCE", "--n", "1", "--out", "out"],
}


def _command(argv: list[str]):
    return lambda src: main([src if a == "SOURCE" else a for a in argv])


ENTRY_POINTS = {
    "policy.load_policy": lambda src: load_policy(src),
    "experiments.wiring.load": lambda src: wiring.load(src),
    "search.solve": lambda src: search.solve("What is 2 + 3?", policy=src),
    **{f"rewind {name}": _command(argv) for name, argv in COMMANDS.items()},
}
# pieces owned elsewhere that do not take every form yet (strict: passing turns into a failure)
NOT_YET: dict[str, str] = {}


@pytest.mark.parametrize("entry", [pytest.param(e, marks=pytest.mark.xfail(strict=True, reason=NOT_YET[e]))
                                   if e in NOT_YET else e for e in ENTRY_POINTS])
def test_every_entry_point_resolves_every_form_the_same(forms, entry, monkeypatch, tmp_path):
    real = policy.model.locate
    seen = []

    def spy(name, **kw):
        seen.append(real(name, **kw))
        raise _Reached

    monkeypatch.setattr(policy.model, "locate", spy)
    monkeypatch.chdir(tmp_path)  # commands write OUT relative to here
    for form in POLICY_FORMS:
        with pytest.raises(_Reached):
            ENTRY_POINTS[entry](str(forms[form]))
        assert seen[-1] == real(forms[form]), (entry, form)
