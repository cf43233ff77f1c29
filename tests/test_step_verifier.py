"""The step verifier: the engine's view of a step equals a from-scratch forward, the head learns
a planted signal and ranks siblings, persistence, labels, and the search path."""

import tempfile
from pathlib import Path

import pytest
import torch
from scripted_engine import ARITH, ScriptedEngine
from test_engine import grow
from test_generate import lively_policy

import search
from search.interfaces import StepView
from verifier import load_verifier
from verifier.baselines import CheckerOracle, LogprobRanker, RandomRanker
from verifier.config import VerifierTrainConfig
from verifier.step_data import StepData, step_label
from verifier.step_head import PackedSteps, StepVerifier, UniformDropout, collate_steps
from verifier.step_train import batch_of, calibrate_steps, fit_step_verifier, score_data, sibling_auroc


@pytest.mark.parametrize("bias", [0.0, 2.5])
def test_step_view_equals_from_scratch_forward(bias):
    """Every alive step token's hidden state and log-prob equal a clean forward over the alive
    path (the layout equivalence); the first token after a ⟨b⟩-run is drawn from the run's last
    state, so only its log-prob may differ."""
    p = lively_policy(seed=1)
    nodes, _ = grow(p.engine(backtrack_bias=bias), depth=3, k=2)
    checked = 0
    for smp in nodes.values():
        if smp.rejected or not smp.ids:
            continue
        parent = smp.state.parent if smp.state is not None else None
        if parent is None:
            continue
        prefix = parent.path_tokens()
        full = prefix + list(smp.ids)
        out = p.model(input_ids=torch.tensor([full]), output_hidden_states=True)
        T = len(smp.ids)
        assert smp.step_hidden.shape == (T, p.hidden_size)
        torch.testing.assert_close(smp.step_hidden, out.hidden_states[-1][0, -T:], atol=1e-4, rtol=1e-4)
        logp = out.logits[0].float().log_softmax(-1)
        clean = torch.stack([logp[len(prefix) - 1 + i, t] for i, t in enumerate(smp.ids)])
        if not smp.backtracks:  # with a run, the token after it was drawn from the run's last state
            torch.testing.assert_close(smp.step_logprobs, clean, atol=1e-4, rtol=1e-4)
        assert (smp.step_entropies >= -1e-6).all()
        checked += 1
    assert checked >= 4
    if bias:
        assert any(s.backtracks for s in nodes.values())


def _planted(n_groups=120, k=4, T=6, H=16, seed=0) -> StepData:
    """Sibling groups whose wrong steps carry a mark at one position of the hidden states."""
    g = torch.Generator().manual_seed(seed)
    d = StepData()
    for gid in range(n_groups):
        for j in range(k):
            wrong = int((gid + j) % 3 == 0)
            h = torch.randn(T, H, generator=g)
            pos = int(torch.randint(0, T, (1,), generator=g))
            h[pos, 0] += 6.0 * wrong  # the error sits at a different position in every step
            d.views.append(StepView(h, -torch.rand(T, generator=g), torch.rand(T, generator=g), 1 + j % 3))
            d.labels.append(wrong)
            d.kinds.append("result" if wrong else "ok")
            d.groups.append(gid)
            d.problem_ids.append(f"p{gid}")
            d.logprobs.append(-1.0)
            d.path_logprobs.append(-1.0)
            d.p_policy.append(0.0)
            d.texts.append("x")
    return d


def test_fit_learns_a_planted_signal_and_ranks_siblings():
    train, test = _planted(seed=0), _planted(n_groups=40, seed=1)
    head, hist = fit_step_verifier(train, test, hidden_size=16, width=32, layers=1, epochs=12, batch_size=64,
                                   lr=3e-3, dropout=0.0, progress=False)
    s = score_data(head, test)
    assert sibling_auroc(s, test.labels, test.groups)["auroc"] > 0.9
    rnd = RandomRanker(0).score_steps(test.views).tolist()
    assert sibling_auroc(rnd, test.labels, test.groups)["auroc"] < 0.75
    assert hist and "val_sibling_auroc" in hist[-1]


def test_bf16_autocast_training_learns_the_planted_signal_with_fp32_weights():
    # labels as saved (hidden states fp16 holds exactly: the packed store keeps them in fp16) — as in the demo
    train, test = _planted(seed=0).as_saved(), _planted(n_groups=40, seed=1).as_saved()
    head, _ = fit_step_verifier(train, test, hidden_size=16, width=32, layers=1, epochs=12, batch_size=64,
                                lr=3e-3, dropout=0.0, precision="bf16", progress=False)
    assert train.__dict__["_packed"][1].hidden.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in head.parameters())
    s = score_data(head, test)
    assert sibling_auroc(s, test.labels, test.groups)["auroc"] > 0.9
    with pytest.raises(ValueError, match="precision"):
        fit_step_verifier(train, test, hidden_size=16, epochs=1, precision="fp16", progress=False)
    with pytest.raises(ValueError, match="precision"):
        VerifierTrainConfig(out="x", policy="tiny", precision="half")


def test_one_step_changes_every_parameter_group():
    d = _planted(n_groups=8)
    d.views = [StepView(v.hidden, v.logprobs, v.entropies, v.depth, ids=tuple(range(3, 3 + v.hidden.shape[0])))
               for v in d.views]  # token ids 3..8; 5..8 are "digits" below
    head = StepVerifier(16, width=32, layers=1, dropout=0.0, digit_ids=(5, 6, 7, 8))
    before = {k: v.clone() for k, v in head.state_dict().items()}

    b = batch_of(d, range(len(d)), head)
    assert b.place[0].tolist() == [0, 0, 4, 3, 2, 1]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(head(b), torch.tensor(d.labels, dtype=torch.float32))
    loss.backward()
    torch.optim.SGD(head.parameters(), lr=0.1).step()
    changed = {k.split(".")[0] for k, v in head.state_dict().items() if not torch.equal(v, before[k])}
    assert {"encoder", "in_proj", "scalar_proj", "tok", "place", "pos", "head"} <= changed


def test_sibling_auroc_by_hand():
    # group 0: wrong scores 0.9 vs right 0.1 and 0.95 -> 1 of 2 pairs; group 1: one class only
    r = sibling_auroc([0.9, 0.1, 0.95, 0.3, 0.4], [1, 0, 0, 0, 0], [0, 0, 0, 1, 1])
    assert r == {"auroc": 0.5, "pairs": 2, "groups": 1}
    assert sibling_auroc([0.5, 0.5], [1, 0], [0, 0])["auroc"] == 0.5  # ties count half
    assert sibling_auroc([0.1], [1], [0])["auroc"] is None


def test_save_load_round_trip_and_calibration(tmp_path):
    d = _planted(n_groups=20)
    d.views = [StepView(v.hidden, v.logprobs, v.entropies, v.depth, ids=(5, 6, 3, 7, 8, 4)) for v in d.views]
    head = StepVerifier(16, width=32, layers=1, tokenizer_fingerprint="abc", digit_ids=(5, 6, 7, 8))
    torch.nn.init.normal_(head.place.weight)
    calibrate_steps(head, d)
    head.save(tmp_path / "v")
    back = load_verifier(tmp_path / "v")
    assert isinstance(back, StepVerifier) and back.digit_ids == head.digit_ids
    torch.testing.assert_close(back.score_steps(d.views), head.score_steps(d.views))
    assert float(back.logit_scale) == float(head.logit_scale)


def test_wrong_width_and_empty_input_are_refused():
    head = StepVerifier(16, width=32, layers=1)
    with pytest.raises(ValueError, match="hidden size 16"):
        head.score_steps([StepView(torch.zeros(3, 8), torch.zeros(3), torch.zeros(3), 1)])
    with pytest.raises(ValueError, match="no steps"):
        collate_steps([], [], [], [], max_tokens=4)
    with pytest.raises(TypeError, match="score_steps"):
        head.score(torch.zeros(1, 16))
    with pytest.raises(ValueError, match="multiple"):
        StepVerifier(16, width=30, heads=4)


def test_long_steps_keep_their_last_tokens():
    b = collate_steps([torch.arange(10.0).view(10, 1)], [torch.zeros(10)], [torch.zeros(10)], [1], max_tokens=4)
    assert b.hidden[0, :, 0].tolist() == [6.0, 7.0, 8.0, 9.0] and b.mask.all()


def test_uniform_dropout_has_nn_dropouts_law():
    torch.manual_seed(0)
    d = UniformDropout(0.25)
    x = torch.full((1000, 1000), 2.0, requires_grad=True)
    y = d(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.003  # 1e6 draws: 5 standard errors
    assert torch.allclose(y[kept], torch.tensor(2.0 / 0.75)) and abs(y.mean().item() - 2.0) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], torch.tensor(1 / 0.75))
    d.eval()
    assert torch.equal(d(x), x)
    head = StepVerifier(8, width=16, layers=1, heads=2, dropout=0.3)
    assert sum(isinstance(m, UniformDropout) for m in head.modules()) == 4  # 3 in the layer, 1 in the head
    with pytest.raises(ValueError):
        UniformDropout(1.0)


def test_packed_batches_equal_the_per_row_collation():
    """The flat store training gathers from gives every batch ``collate_steps`` gives: tails of
    long steps, clamped log-probs, ids only where they match the hidden rows, digit places of the
    tail, zero padding, in any row order and with repeats."""
    g = torch.Generator().manual_seed(0)
    digits = frozenset({3, 4, 5})
    views = []
    for i in range(40):
        T = int(torch.randint(1, 14, (1,), generator=g))
        ids = tuple(int(x) for x in torch.randint(0, 8, (T,), generator=g))
        ids = ids if i % 5 else ids[:-1]  # every fifth step's ids do not match its rows: unknown (-1)
        lp = torch.randn(T, generator=g) * 20  # some below the -30 clamp
        views.append(StepView(torch.randn(T, 6, generator=g), lp, torch.rand(T, generator=g), 1 + i % 4, ids=ids))
    head = StepVerifier(6, width=8, layers=1, heads=2, max_tokens=9, digit_ids=sorted(digits))
    packed = PackedSteps(views, max_tokens=9, digit_ids=digits)
    for rows in ([0], list(range(40)), [39, 2, 2, 17, 5], [i for i in range(40) if i % 3 == 0][::-1]):
        want, got = head.batch_of([views[i] for i in rows]), packed.batch(rows)
        for name in ("hidden", "scalars", "mask", "depth", "ids", "place"):
            a, b = getattr(want, name), getattr(got, name)
            assert a.dtype == b.dtype and torch.equal(a, b), (name, rows)
    assert (packed.batch(range(40)).ids == -1).any() and (packed.batch(range(40)).place > 0).any()
    assert packed.hidden.dtype == torch.float32  # random fp32 states: fp16 would change them
    # states fp16 holds exactly are stored in fp16 and come back equal
    saved = [StepView(v.hidden.half().float(), v.logprobs, v.entropies, v.depth, ids=v.ids) for v in views]
    small = PackedSteps(saved, max_tokens=9, digit_ids=digits)
    assert small.hidden.dtype == torch.float16
    want, got = head.batch_of(saved), small.batch(range(40))
    assert got.hidden.dtype == torch.float32 and torch.equal(want.hidden, got.hidden)


def test_collected_steps_train_on_what_a_resumed_run_reads_back(tmp_path):
    g = torch.Generator().manual_seed(1)
    data = StepData(labels=[0, 1], kinds=["ok", "result"], groups=[0, 0], problem_ids=["a", "a"], logprobs=[-1.0, -2.0],
                    path_logprobs=[-1.0, -2.0], p_policy=[0.1, 0.2], texts=["x", "y"], prefix_ids=[(1,), (1,)],
                    views=[StepView(torch.randn(3, 4, generator=g), torch.randn(3), torch.rand(3), 1, ids=(5, 6, 7))
                           for _ in range(2)])
    data.save(tmp_path / "s.pt", key="k")
    back, now = StepData.load(tmp_path / "s.pt", key="k"), data.as_saved()
    assert not torch.equal(now.views[0].hidden, data.views[0].hidden)  # rounded through fp16, as the file holds them
    for a, b in zip(back.views, now.views, strict=True):
        assert torch.equal(a.hidden, b.hidden) and torch.equal(a.logprobs, b.logprobs) and a.ids == b.ids
    assert back.labels == now.labels and back.groups == now.groups
    for name in now.__dataclass_fields__:  # every field as it was, the floats exactly
        if name != "views":
            assert getattr(back, name) == getattr(now, name), name
    # a file in the layout before the flat one (a list of per-row tensors) still reads back the same
    torch.save({"key": "k", **{k: getattr(data, k) for k in data.__dataclass_fields__ if k != "views"},
                "views": [(v.hidden.half(), v.logprobs, v.entropies, v.depth, list(v.ids)) for v in data.views]},
               tmp_path / "old.pt")
    old = StepData.load(tmp_path / "old.pt", key="k")
    assert all(torch.equal(a.hidden, b.hidden) and a.ids == b.ids for a, b in zip(old.views, back.views, strict=True))
    assert StepData.load(tmp_path / "s.pt", key="other") is None


@pytest.mark.parametrize("question, prefix, step, stop, want", [
    ("Ann has 3 bags of 4 pens.", "", "She has 3*4=<<3*4=12>>12 pens.\n", "newline", (0, "ok")),
    ("Ann has 3 bags of 4 pens.", "", "She has 3*4=<<3*4=13>>13 pens.\n", "newline", (1, "result")),
    ("Ann has 3 bags of 4 pens.", "", "She has 3*9=<<3*9=27>>27 pens.\n", "newline", (1, "operand")),
    ("Ann has 3 bags of 4 pens.", "", "She has <<3*4=12>>13 pens.\n", "newline", (1, "result")),
    ("Ann has 3 bags of 4 pens.", "She has <<3*4=12>>12 pens.\n", "#### 12\n", "answer", (0, "ok")),
    ("Ann has 3 bags of 4 pens.", "She has <<3*4=12>>12 pens.\n", "#### 13\n", "answer", (1, "answer")),
    ("Ann has 3 bags of 4 pens.", "", "She has <<3*4=12\n", "newline", (1, "malformed")),
    ("Ann has 3 bags.", "", "She has 3 and 3 and 3 and 3", "max_step_tokens", (1, "runaway")),
])
def test_step_labels(question, prefix, step, stop, want):
    assert step_label(question, prefix, step, stop) == want


def test_search_feeds_step_views_to_a_step_verifier():
    """A step verifier gets one view per non-rejected child; the oracle needs no tensors beyond it."""
    seen = []

    class Spy:
        hidden_size = 4

        def score_steps(self, views):
            seen.extend(views)
            return torch.tensor([0.2] * len(views))

    class ViewEngine(ScriptedEngine):
        def _sample(self, state, seed, temperature):
            s = super()._sample(state, seed, temperature)
            if s.rejected:
                return s
            import dataclasses

            T = max(1, len(s.ids))
            return dataclasses.replace(s, step_hidden=torch.zeros(T, 4), step_logprobs=torch.zeros(T),
                                       step_entropies=torch.zeros(T))

    sol = search.solve("What is x?", strategy="beam", policy=ViewEngine(ARITH), verifier=Spy(), threshold=1.0,
                       seed=3, width=2, samples=2)
    scored = [n for n in sol.tree.nodes[1:] if n.status != "rejected"]
    assert len(seen) == len(scored) and all(n.p_backtrack == pytest.approx(0.2) for n in scored)
    assert {v.depth for v in seen} >= {1, 2}
    assert all(v.prompt for v in seen) and any(v.prefix for v in seen)


def test_baseline_rankers():
    v_ok = StepView(torch.zeros(1, 4), torch.tensor([-0.1]), torch.zeros(1), 1, "x <<2*3=6>>6\n", "", "2 and 3")
    v_bad = StepView(torch.zeros(1, 4), torch.tensor([-2.0]), torch.zeros(1), 1, "x <<2*3=7>>7\n", "", "2 and 3")
    assert CheckerOracle().score_steps([v_ok, v_bad]).tolist() == [0.0, 1.0]
    lp = LogprobRanker().score_steps([v_ok, v_bad])
    assert lp[1] > lp[0]
    r1, r2 = RandomRanker(0).score_steps([v_ok, v_bad]), RandomRanker(0).score_steps([v_ok, v_bad])
    assert torch.equal(r1, r2) and not torch.equal(r1, RandomRanker(1).score_steps([v_ok, v_bad]))


def test_reference_steps_are_labelled_like_the_checker_and_viewed_like_decoding():
    """Every reference group holds the correct line (label 0) and slipped versions the step
    checker calls wrong (label 1); each view equals a clean forward over prompt + lines before +
    the step, and feature dropout only touches the policy features."""
    from policy.data import generate_problems
    from verifier.step_data import _forced_views, reference_steps
    from verifier.step_train import _drop_features

    p = lively_policy(seed=2)
    problems = generate_problems(6, seed=3, split="validation")
    d = reference_steps(p, problems, slips=2, seed=0, progress=False)
    assert len(d) >= 12 and 0 < sum(d.labels) < len(d)
    by_group = {}
    for i, g in enumerate(d.groups):
        by_group.setdefault(g, []).append(i)
    assert all(g < 0 for g in by_group)
    known = {"reference:" + q.id: q.question + "\n" + q.solution for q in problems}
    for rows in by_group.values():
        assert [d.labels[i] for i in rows].count(0) == 1 and len(rows) >= 2
        for i in rows:
            label, kind = step_label(known[d.problem_ids[i]], "", d.texts[i], "eos")
            assert label == d.labels[i], (d.texts[i], kind)
    for i in (0, len(d) - 1):
        full = list(d.prefix_ids[i]) + list(d.views[i].ids)
        out = p.model(input_ids=torch.tensor([full]), output_hidden_states=True)
        T = len(d.views[i].ids)
        torch.testing.assert_close(d.views[i].hidden, out.hidden_states[-1][0, -T:], atol=1e-4, rtol=1e-4)
    # one tree forward per problem (slips as branches) == one padded forward per step, on every row
    per_step = _forced_views(p, [(d.prefix_ids[i], d.views[i].ids) for i in range(len(d))], batch_size=5,
                             progress=False, desc="")
    assert any(d.labels) and any(lab == 0 for lab in d.labels)
    for v, (h, lp, ent) in zip(d.views, per_step, strict=True):
        torch.testing.assert_close(v.hidden, h, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(v.logprobs, lp, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(v.entropies, ent, atol=1e-4, rtol=1e-4)
    b = collate_steps([v.hidden for v in d.views], [v.logprobs for v in d.views], [v.entropies for v in d.views],
                      [v.depth for v in d.views], max_tokens=96, ids=[v.ids for v in d.views])
    torch.manual_seed(0)
    dropped = _drop_features(b, 0.5)
    zeroed = (dropped.hidden.abs().sum((1, 2)) == 0) & b.mask.any(1)
    assert 0 < int(zeroed.sum()) < len(d)
    assert torch.equal(dropped.ids, b.ids) and torch.equal(dropped.mask, b.mask)
    assert _drop_features(b, 0.0) is b


def test_malformed_steps_score_one_whatever_the_head_says():
    head = StepVerifier(16, width=32, layers=1)
    h = torch.randn(5, 16)
    views = [StepView(h, -torch.rand(5), torch.rand(5), 1, text)
             for text in ("She has <<3*4=12>>12 pens.\n", "She has <<3*4=12\n", "She has <<3*4>>12 pens.\n")]
    p = head.score_steps(views)
    assert float(p[0]) < 1.0 and float(p[1]) == 1.0 and float(p[2]) == 1.0


def test_search_uses_the_verifiers_calibrated_threshold_unless_told_otherwise():
    class Scorer:
        hidden_size = 4
        default_threshold = 0.15  # below the 0.2 every step gets: everything is pruned at it

        def score_steps(self, views):
            return torch.tensor([0.2] * len(views))

    class ViewEngine(ScriptedEngine):
        def _sample(self, state, seed, temperature):
            import dataclasses

            s = super()._sample(state, seed, temperature)
            T = max(1, len(s.ids))
            return s if s.rejected else dataclasses.replace(s, step_hidden=torch.zeros(T, 4),
                                                              step_logprobs=torch.zeros(T), step_entropies=torch.zeros(T))

    sol = search.solve("What is x?", strategy="beam", policy=ViewEngine(ARITH), verifier=Scorer(), seed=3, width=2,
                       samples=2)
    assert sol.tree.config["threshold"] == 0.15 and sol.stats["nodes_pruned"] > 0
    told = search.solve("What is x?", strategy="beam", policy=ViewEngine(ARITH), verifier=Scorer(), seed=3, width=2,
                        samples=2, threshold=0.5)
    assert told.tree.config["threshold"] == 0.5 and told.stats["nodes_pruned"] == 0


def test_calibrated_threshold_spares_right_validation_steps():
    from verifier.step_train import THRESHOLD_GRID, calibrated_threshold

    d = _planted(n_groups=30)
    head = StepVerifier(16, width=32, layers=1)
    head.logit_bias.fill_(-30.0)  # every step scores ~0: the lowest threshold spares them all
    assert calibrated_threshold(head, d) == THRESHOLD_GRID[0]
    head.logit_bias.fill_(30.0)  # every step scores ~1: no threshold below 1 spares right steps
    assert calibrated_threshold(head, d) is None
    head.default_threshold = 0.85
    assert StepVerifier.from_folder(head.save(Path(tempfile.mkdtemp()) / "v"),
                                    head.config()).default_threshold == 0.85


def test_tree_views_refuse_a_step_that_is_not_where_it_says():
    from verifier.step_data import _tree_views

    p = lively_policy(seed=2)
    trunk = list(p.prompt_ids("What is 2+3?")) + [5, 6, 7]
    with pytest.raises(ValueError, match="not the trunk's tokens"):
        _tree_views(p, [(trunk, [(len(trunk) - 3, [5, 6, 8], True)])], batch_size=2, progress=False, desc="")
    with pytest.raises(ValueError, match="non-empty trunk prefix"):
        _tree_views(p, [(trunk, [(0, [5], False)])], batch_size=2, progress=False, desc="")
    (views,) = _tree_views(p, [(trunk, [(len(trunk) - 3, [5, 6, 7], True), (len(trunk) - 3, [9, 9], False)])],
                           batch_size=2, progress=False, desc="")
    assert [tuple(v[0].shape) for v in views] == [(3, p.hidden_size), (2, p.hidden_size)]
    # a branch reads the trunk before it, not the trunk's own step: it equals a forward without that step
    out = p.model(input_ids=torch.tensor([trunk[:-3] + [9, 9]]), output_hidden_states=True)
    torch.testing.assert_close(views[1][0], out.hidden_states[-1][0, -2:], atol=1e-4, rtol=1e-4)



@pytest.mark.parametrize("select", ["best", "last"])
def test_fit_keeps_the_best_or_the_last_epoch(select):
    train, val = _planted(n_groups=30, seed=0), _planted(n_groups=20, seed=1)
    head, hist = fit_step_verifier(train, val, hidden_size=16, width=32, layers=1, epochs=5, batch_size=16, lr=3e-3,
                                   dropout=0.0, patience=1, select=select, progress=False)
    got = sibling_auroc(score_data(head, val), val.labels, val.groups)["auroc"]
    aurocs = [h["val_sibling_auroc"] for h in hist]
    if select == "last":  # every epoch runs (patience is ignored) and the final weights are returned
        assert len(hist) == 5 and got == pytest.approx(aurocs[-1])
    else:
        assert got == pytest.approx(max(aurocs)) and (len(hist) == 5 or aurocs[-1] < max(aurocs))
    with pytest.raises(ValueError, match="select"):
        fit_step_verifier(train, val, hidden_size=16, epochs=1, select="first", progress=False)
    # a run of very few optimiser steps (no room for a warm-up phase) trains at a constant rate
    tiny, tiny_hist = fit_step_verifier(_planted(n_groups=4), None, hidden_size=16, width=32, layers=1, epochs=2,
                                        batch_size=256, progress=False)
    assert len(tiny_hist) == 2 and torch.isfinite(tiny.raw_logits(batch_of(val, range(4), tiny))).all()
