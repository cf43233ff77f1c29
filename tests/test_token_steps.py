"""Token-only sibling steps (``verifier.token_steps``): labelled like the checker, packed like
``collate_steps`` with zero policy features, and actually learned from by ``fit_step_verifier``."""

import random
import re
from fractions import Fraction

import pytest
import torch
from test_step_verifier import _planted

from policy.data import generate_problems
from policy.data.grading import check_steps, evaluate, parse_annotations
from policy.tokenizer import char_tokenizer
from search.interfaces import StepView
from verifier.config import VerifierTrainConfig
from verifier.splits import token_problems
from verifier.step_data import _slipped_steps, with_result
from verifier.step_head import collate_steps, digit_places
from verifier.step_train import fit_step_verifier, score_data, sibling_auroc
from verifier.token_steps import PackedTokens, TokenSteps, _places, fact_slips, token_steps

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
    with pytest.raises(ValueError, match="kind"):
        token_steps(TOK, [], kind="parity")
    with pytest.raises(ValueError, match="token_slips"):
        VerifierTrainConfig(out="x", policy="tiny", token_slips="parity")


def _written(text: str) -> tuple[Fraction, Fraction | None]:
    """(the result inside the annotation, the one restated after it or None)."""
    a = parse_annotations(text)[0]
    after = re.match(r">>([\d.,]+)", text[a.result_span[1]:])
    return Fraction(a.result.replace(",", "")), (Fraction(after.group(1).rstrip(".").replace(",", "")) if after else None)


def _slip_profile(slip) -> dict[str, float]:
    """Shares of a slip generator's wrong versions of built-in reference lines: written alike in both
    places; of those, off the right result by 2 to 9; a product's neighbouring fact (an operand ±1 or ±2)."""
    rng, alike, mid, neighbour, n = random.Random(0), 0, 0, 0, 0
    for p in generate_problems(200, seed=2, split="train"):
        for line in (ln + "\n" for ln in p.solution.split("\n")):
            anns = parse_annotations(line)
            if len(anns) != 1:
                continue
            right = evaluate(anns[0].expr)
            x, op, y = re.fullmatch(r"(\d+)([-+*/])(\d+)", anns[0].expr.replace(" ", "")).groups()
            near = {evaluate(f"{int(x) + d}{op}{y}") for d in (-2, -1, 1, 2) if int(x) + d >= 0}
            near |= {evaluate(f"{x}{op}{int(y) + d}") for d in (-2, -1, 1, 2) if int(y) + d > 0}
            for text in slip(line, rng, 3):
                inside, after = _written(text)
                n += 1
                if after is not None and inside != after:
                    continue
                assert inside != right and inside >= 0
                alike += 1
                mid += 2 <= abs(inside - right) <= 9
                neighbour += inside in near and op == "*"
    return {"alike": alike / n, "mid": mid / alike, "neighbour": neighbour / n, "n": n}


def test_fact_slips_are_wrong_facts_as_the_policy_writes_them():
    facts, digits = _slip_profile(fact_slips), _slip_profile(_slipped_steps)
    assert facts["n"] > 500 and digits["n"] > 500
    # the digit slips: half written differently in the two places, and rarely 2-9 off (±1, ±10, a digit)
    assert digits["alike"] < 0.6 and digits["mid"] < 0.2
    # the fact slips: mostly written alike, and most often 2-9 off, as the policy's own wrong results are
    assert facts["alike"] > 0.7 and facts["mid"] > 0.4
    # and a product's neighbouring facts (4*4 -> 12), which the digit slips never write on purpose
    assert facts["neighbour"] > 0.05 > digits["neighbour"]
    assert fact_slips("#### 5\n", random.Random(0), 3) == [] == fact_slips("no annotation\n", random.Random(0), 3)


def test_with_result_writes_the_result_where_asked():
    line = "Then she has <<7-6=1>>1 stickers.\n"
    a = parse_annotations(line)[0]
    assert with_result(line, a, "3", "both") == "Then she has <<7-6=3>>3 stickers.\n"
    assert with_result(line, a, "3", "inside") == "Then she has <<7-6=3>>1 stickers.\n"
    assert with_result(line, a, "3", "after") == "Then she has <<7-6=1>>3 stickers.\n"
    bare = "x <<7-6=1>> y\n"  # no restated result: only the inside can change
    assert with_result(bare, parse_annotations(bare)[0], "3", "after") == "x <<7-6=3>> y\n"


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
