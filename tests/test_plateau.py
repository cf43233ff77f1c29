"""Plateau stopping: the rule on scripted eval losses, the callback on fake Trainer objects, and a
tiny training run that stops early and says so in metrics.json."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from datasets import Dataset

from policy.plateau import PlateauRule, PlateauStop, best_eval
from policy.sft import fit
from policy.train_config import TrainConfig


def _stop_step(losses, patience, delta, every=50):
    rule = PlateauRule(patience, delta)
    for i, loss in enumerate(losses, 1):
        if rule.update(i * every, loss):
            return i * every
    return None


def test_rule_stops_after_patience_evals_without_a_relative_improvement():
    # 1.0 -> 0.5 improves; 0.499 and 0.497 are < 1% below 0.5: two bad evals in a row stop at the 4th eval
    assert _stop_step([1.0, 0.5, 0.499, 0.497, 0.1], patience=2, delta=0.01) == 200
    # an improvement in between resets the count
    assert _stop_step([1.0, 0.5, 0.499, 0.40, 0.399, 0.398], patience=2, delta=0.01) == 300
    # a worse eval counts as no improvement too; patience 3 needs three in a row
    assert _stop_step([1.0, 1.2, 1.1, 0.5, 0.6, 0.7, 0.8], patience=3, delta=0.0) == 350
    # still improving by more than delta: never stops
    assert _stop_step([1.0 * 0.9 ** i for i in range(20)], patience=1, delta=0.05) is None


def test_rule_compares_with_the_last_improving_eval_not_the_previous_one():
    # each eval is 0.6% below the one before, but after 2 of them the total is >1%: slow drift stops
    # only when no eval beats the reference (the last improving one) by 1%
    assert _stop_step([1.0, 0.994, 0.988, 0.982], patience=2, delta=0.01) is None  # 0.988 < 0.99 resets
    assert _stop_step([1.0, 0.995, 0.9951, 0.9952], patience=3, delta=0.01) == 200


def test_rule_counts_each_step_once_and_validates():
    rule = PlateauRule(1, 0.01)
    assert not rule.update(50, 1.0)
    assert not rule.update(50, 2.0)  # the same step again (the final evaluate): ignored
    assert rule.update(100, 1.0) and rule.stop_step == 100
    assert not rule.update(150, 5.0)  # after the stop nothing changes
    with pytest.raises(ValueError, match="patience"):
        PlateauRule(0, 0.01)
    with pytest.raises(ValueError, match="delta"):
        PlateauRule(2, 1.5)


def _eval(cb, step, loss, state):
    state.global_step = step
    control = SimpleNamespace(should_training_stop=False)
    cb.on_evaluate(None, state, control, metrics={"eval_loss": loss})
    return control.should_training_stop


def test_callback_sets_should_training_stop_at_the_plateau_eval():
    cb, state = PlateauStop(2, 0.01), SimpleNamespace(global_step=0, log_history=[])
    cb.on_train_begin(None, state, SimpleNamespace(should_training_stop=False))
    flags = [_eval(cb, 50 * i, loss, state) for i, loss in enumerate([2.0, 1.0, 0.999, 0.998, 0.5], 1)]
    assert flags == [False, False, False, True, False]
    assert cb.summary() == {"stopped_early": True, "plateau_step": 200}


def test_callback_ignores_evals_after_training_and_replays_a_resumed_history():
    cb, state = PlateauStop(1, 0.01), SimpleNamespace(global_step=0, log_history=[])
    assert not _eval(cb, 50, 1.0, state)  # before on_train_begin: not training, not counted
    cb.on_train_begin(None, state, SimpleNamespace())
    assert not _eval(cb, 50, 1.0, state)
    cb.on_train_end(None, state, SimpleNamespace())
    assert not _eval(cb, 100, 1.0, state) and cb.summary()["stopped_early"] is False
    resumed = PlateauStop(2, 0.01)
    history = [{"loss": 3.0, "step": 10}, {"eval_loss": 1.0, "step": 50}, {"eval_loss": 0.999, "step": 100}]
    state = SimpleNamespace(global_step=100, log_history=history)
    resumed.on_train_begin(None, state, SimpleNamespace())
    assert _eval(resumed, 150, 0.998, state)  # the eval at 100 already counted once: this is the 2nd
    assert best_eval(history) == (0.999, 100) and best_eval([{"loss": 1.0, "step": 1}]) == (None, None)


def test_train_config_validates_the_plateau_knobs(tmp_path):
    with pytest.raises(ValueError, match="plateau_patience must be an int >= 0"):
        TrainConfig(out=str(tmp_path), plateau_patience=-1)
    with pytest.raises(ValueError, match=r"plateau_delta .* in \[0, 1\)"):
        TrainConfig(out=str(tmp_path), plateau_delta=1.0)
    assert TrainConfig(out=str(tmp_path)).plateau_patience == 0  # off by default: old runs train as before


def _toy(tmp_path, **kw):
    from test_train_sft import toy_policy, toy_rows

    policy = toy_policy()
    data = Dataset.from_list(toy_rows(policy.tokenizer, policy.backtrack_id, 8))
    base = dict(out=str(tmp_path / "run"), mode="hard", max_steps=12, batch_size=4, warmup_ratio=0.0,
                logging_steps=1, eval_steps=1, save_steps=1000, precision="fp32", lr_scheduler="constant")
    fit(policy, data, data.select(range(4)), TrainConfig(**{**base, **kw}))
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_a_tiny_run_stops_at_the_plateau_and_records_it(tmp_path):
    # lr 1e-12: the eval loss cannot move by 1%, so evals 2 and 3 do not improve and step 3 is the stop
    m = _toy(tmp_path, lr=1e-12, plateau_patience=2, plateau_delta=0.01)
    assert m["stopped_early"] is True and m["plateau_step"] == 3 and m["global_step"] == 3
    assert m["best_eval_step"] in (1, 2, 3) and m["best_eval_loss"] > 0 and m["train_tokens"] > 0


def test_a_tiny_run_without_the_rule_trains_to_max_steps(tmp_path):
    m = _toy(tmp_path, lr=1e-12, max_steps=4)
    assert m["stopped_early"] is False and m["plateau_step"] is None and m["global_step"] == 4


def test_keep_best_puts_back_the_weights_of_the_lowest_eval_loss():
    import torch

    model = torch.nn.Linear(2, 1)
    state = SimpleNamespace(global_step=0, log_history=[])
    for keep in (True, False):
        cb = PlateauStop(2, 0.01, keep_best=keep)
        cb.on_train_begin(None, state, SimpleNamespace())
        seen = {}
        for step, loss in ((50, 1.0), (100, 0.5), (150, 0.7), (200, 0.6)):
            with torch.no_grad():
                model.weight.fill_(step)  # the weights "trained" up to this eval
            seen[step] = model.weight.detach().clone()
            state.global_step = step
            cb.on_evaluate(None, state, SimpleNamespace(should_training_stop=False), metrics={"eval_loss": loss},
                           model=model)
        cb.on_train_end(None, state, SimpleNamespace(), model=model)
        if keep:
            assert torch.equal(model.weight, seen[100]) and cb.summary()["restored_best_step"] == 100
        else:
            assert torch.equal(model.weight, seen[200]) and "restored_best_step" not in cb.summary()
        assert cb.summary()["plateau_step"] == 200


def test_keep_best_restores_nothing_when_the_best_lies_before_a_resume():
    import torch

    model = torch.nn.Linear(2, 1)
    history = [{"eval_loss": 0.2, "step": 50}]  # the best, from before the checkpoint: its weights are gone
    state = SimpleNamespace(global_step=50, log_history=history)
    cb = PlateauStop(1, 0.01, keep_best=True)
    cb.on_train_begin(None, state, SimpleNamespace())
    state.global_step = 100
    cb.on_evaluate(None, state, SimpleNamespace(should_training_stop=False), metrics={"eval_loss": 0.3}, model=model)
    before = model.weight.detach().clone()
    cb.on_train_end(None, state, SimpleNamespace(), model=model)
    assert torch.equal(model.weight, before) and cb.summary()["restored_best_step"] is None


def test_a_tiny_run_with_keep_best_ends_on_its_best_eval(tmp_path):
    # a large learning rate makes the eval loss move both ways; whatever the last eval, the saved
    # policy's final eval loss is the lowest one seen while training
    m = _toy(tmp_path, lr=0.05, max_steps=12, plateau_patience=4, plateau_delta=0.0, plateau_keep_best=True)
    evals = [h["eval_loss"] for h in m["log_history"] if "eval_loss" in h][:-1]  # the last is the final evaluate()
    assert m["eval_loss"] == pytest.approx(min(evals), rel=1e-5)
    # (seeded: here the last eval, at step 12, is above the one at step 11, so weights are put back)
    assert m["restored_best_step"] is not None and evals[-1] > min(evals)
    with pytest.raises(ValueError, match="plateau_keep_best"):
        TrainConfig(out=str(tmp_path), plateau_keep_best="yes")
