"""Token-only sibling steps (``verifier.token_steps``): labelled like the checker, packed like
``collate_steps`` with zero policy features, and actually learned from by ``fit_step_verifier``."""

import random

import pytest
import torch
from test_step_verifier import _planted

from policy.data import generate_problems
from policy.data.grading import check_steps
from policy.tokenizer import char_tokenizer
from search.interfaces import StepView
from verifier.config import VerifierTrainConfig
from verifier.splits import token_problems
from verifier.step_head import collate_steps, digit_places
from verifier.step_train import fit_step_verifier, score_data, sibling_auroc
from verifier.token_steps import PackedTokens, TokenSteps, _places, token_steps

TOK = char_tokenizer()
DIGITS = frozenset(TOK.convert_tokens_to_ids(list("0123456789")))


def test_token_steps_are_labelled_like_the_checker():
    steps = token_steps(TOK, generate_problems(60, seed=3, split="train"), slips=3, seed=1)
    assert len(steps) > 300
    by: dict[int, list[int]] = {}
    for i, g in enumerate(steps.groups):
        by.setdefault(g, []).append(i)
    for rows in by.values():
        labels = [steps.labels[i] for i in rows]
        assert labels[0] == 0 and labels.count(0) == 1 and 1 <= labels.count(1) <= 3
        texts = [TOK.decode(steps.ids[i]) for i in rows]
        assert len(set(texts)) == len(texts)  # every slip differs from the line and from the other slips
        assert not check_steps(texts[0]).errors
        for text in texts[1:]:  # a slipped result inside the annotation, or a restated result that differs
            inside = bool(check_steps(text).errors)
            assert inside or text.split(">>")[1] != texts[0].split(">>")[1]
        assert len({steps.depth[i] for i in rows}) == 1
    with pytest.raises(ValueError, match="slips"):
        token_steps(TOK, [], slips=0)


def test_token_problems_are_never_a_validation_or_test_question():
    train = token_problems("builtin", 300, seed=0)
    assert len(train) == 300 and all(p.id.startswith("builtin-train-") for p in train)
    held = {p.question for split in ("validation", "test") for p in generate_problems(2000, seed=0, split=split)}
    assert not held & {p.question for p in train}
    assert token_problems("builtin", 0, seed=0) == []
    with pytest.raises(ValueError, match="token_problems"):
        VerifierTrainConfig(out="x", policy="tiny", token_problems=-1)


def test_packed_token_batches_equal_collation_with_zero_features():
    steps = token_steps(TOK, generate_problems(40, seed=5, split="train"), slips=2, seed=0)
    steps.ids.append(tuple(sorted(DIGITS))[:4] * 30)  # all digits, longer than the cut: its tail is kept
    steps.labels.append(1)
    steps.groups.append(10 ** 6)
    steps.depth.append(7)
    packed = PackedTokens(steps, hidden_size=12, max_tokens=96, digit_ids=DIGITS)
    rows = [len(steps) - 1, 0, 3, 17, len(steps) - 2]
    got = packed.batch(rows)
    zeros = lambda i, *shape: torch.zeros(len(steps.ids[i]), *shape)  # noqa: E731
    want = collate_steps([zeros(i, 12) for i in rows], [zeros(i) for i in rows], [zeros(i) for i in rows],
                         [steps.depth[i] for i in rows], max_tokens=96, ids=[steps.ids[i] for i in rows],
                         digit_ids=DIGITS)
    for name in ("hidden", "scalars", "mask", "depth", "ids", "place"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    with pytest.raises(ValueError, match="no steps"):
        packed.batch([])


def test_flat_digit_places_equal_the_per_row_ones():
    rng = random.Random(0)
    rows = [[rng.choice((0, 1, 1, 1)) for _ in range(rng.randint(1, 30))] for _ in range(300)]
    flat = [x for r in rows for x in r]
    starts = torch.cumsum(torch.tensor([len(r) for r in rows]), 0) - torch.tensor([len(r) for r in rows])
    got = _places(torch.tensor(flat, dtype=torch.bool).numpy(), starts.numpy()).tolist()
    want = [p for r in rows for p in digit_places(r, frozenset({1}))]
    assert got == want


def _marked(n_groups: int, seed: int) -> TokenSteps:
    """Token sibling groups whose wrong rows hold token 9 somewhere; right rows never do."""
    rng = random.Random(seed)
    out = TokenSteps()
    for g in range(n_groups):
        for j in range(3):
            ids = [rng.randrange(20, 40) for _ in range(rng.randint(4, 8))]
            if j:
                ids[rng.randrange(len(ids))] = 9
            out.ids.append(tuple(ids))
            out.labels.append(int(j > 0))
            out.groups.append(g)
            out.depth.append(1)
    return out


def test_fit_learns_from_token_steps_read_through_the_ids():
    # the policy-feature steps carry a planted hidden signal and no token 9; only the token rows teach token 9
    train, val = _planted(n_groups=60, seed=0), _planted(n_groups=20, seed=1)
    test = _marked(40, seed=2)
    views = [StepView(torch.randn(len(ids), 16), torch.zeros(len(ids)), torch.zeros(len(ids)), 1, ids=ids)
             for ids in test.ids]
    from verifier.step_data import StepData
    data = StepData(views=views, labels=list(test.labels), groups=list(test.groups))
    aurocs = {}
    for name, tokens in (("without", None), ("with", _marked(300, seed=1))):
        head, _ = fit_step_verifier(train, val, hidden_size=16, width=32, layers=1, epochs=6, batch_size=64, lr=3e-3,
                                    dropout=0.0, tokens=tokens, select="last", progress=False)
        aurocs[name] = sibling_auroc(score_data(head, data), data.labels, data.groups)["auroc"]
    assert aurocs["with"] > 0.95 and aurocs["without"] < 0.8, aurocs
    one_class = _marked(5, seed=0)
    one_class.labels = [1] * len(one_class)
    with pytest.raises(ValueError, match="token steps"):
        fit_step_verifier(train, val, hidden_size=16, epochs=1, tokens=one_class, progress=False)
