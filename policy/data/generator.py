"""The built-in task: GSM8K-form multi-step arithmetic word problems, seeded and deterministic.

A problem is a short story in one of several themes (shopping, baking, saving, travel, farming,
reading): a starting amount, then events that add, remove, multiply or share. Each event is one
solution step with a calculator annotation; the last line is ``#### answer``::

    Question: Ava picks 3 baskets of 7 apples. She eats 4 apples. How many apples does Ava have now?
    Ava has <<3*7=21>>21 apples.
    Then she has <<21-4=17>>17 apples.
    #### 17

The default size is what a ~1M-parameter char-level model learns in minutes to roughly half
accuracy: 2-3 steps, operands 2..20, products of a one-digit count, results at most 3 digits,
``+ - *`` (``*`` also as "doubles").

Splits are disjoint by construction: a question belongs to the split its text hashes into
(train 80%, validation 10%, test 10%), whatever the seed, so no question text is shared by two
splits; within a split, repeated texts are skipped.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from policy.data.problems import Problem

__all__ = ["OPERATIONS", "SPLITS", "Difficulty", "generate_problems"]

SPLITS = {"train": (0, 80), "validation": (80, 90), "test": (90, 100)}  # hash buckets of 100
OPERATIONS = ("+", "-", "*", "/")


@dataclass(frozen=True, kw_only=True)
class Difficulty:
    """Difficulty knobs of the built-in generator."""

    min_steps: int = 2  # fewest annotated steps, >= 1
    max_steps: int = 3  # most annotated steps, >= min_steps, <= 8
    min_operand: int = 2  # smallest number in a question, >= 1
    max_operand: int = 9  # largest number in a question, >= min_operand + 1
    max_result: int = 99  # every intermediate value stays in [0, max_result]
    max_factor: int = 4  # the count in a product ("k bags of m"): 2..max_factor, >= 2
    ops: tuple[str, ...] = ("+", "-", "*")  # subset of OPERATIONS; "/" is always exact

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps <= 8:
            raise ValueError(f"need 1 <= min_steps <= max_steps <= 8, got {self.min_steps}, {self.max_steps}")
        if not 1 <= self.min_operand < self.max_operand:
            raise ValueError(f"need 1 <= min_operand < max_operand, got {self.min_operand}, {self.max_operand}")
        if self.max_factor < 2:
            raise ValueError(f"max_factor must be >= 2, got {self.max_factor}")
        if self.max_result < self.max_operand:
            raise ValueError(f"max_result ({self.max_result}) must be >= max_operand ({self.max_operand})")
        ops = tuple(self.ops)
        if not ops or any(op not in OPERATIONS for op in ops) or len(set(ops)) != len(ops):
            raise ValueError(f"ops must be distinct members of {OPERATIONS}, got {self.ops!r}")
        if "+" not in ops and "*" not in ops:
            raise ValueError("ops must contain '+' or '*' (a story needs a way to grow)")
        object.__setattr__(self, "ops", ops)


@dataclass(frozen=True)
class _Theme:
    unit: str  # plural noun of what is counted
    start: str  # "{name} has {a} ..."; the amount before any step
    product: str  # "{name} has {a} ... of {b} ..."; a first step a*b
    add: tuple[str, ...]  # "+ n" events
    sub: tuple[str, ...]  # "- n" events
    pack: str  # "+ k*m" event: two steps
    mul: str  # "* k" event
    div: str  # "/ k" event
    question: str


_THEMES = (
    _Theme("apples", "{name} has {a} apples.", "{name} picks {a} baskets of {b} apples.",
           ("{P} picks {n} more apples.", "A friend gives {o} {n} apples."),
           ("{P} eats {n} apples.", "{P} sells {n} apples."),
           "{P} buys {k} bags of {m} apples.", "Then {p} doubles {q} apples.", "{P} splits them into {k} equal piles and keeps one.",
           "How many apples does {name} have now?"),
    _Theme("dollars", "{name} has ${a}.", "{name} saves ${a} a week for {b} weeks.",
           ("{P} earns ${n} more.", "{P} gets ${n} as a gift."),
           ("{P} spends ${n} on a book.", "{P} pays ${n} for lunch."),
           "{P} sells {k} toys for ${m} each.", "Then {q} money doubles.", "{P} shares it equally with {k1} friends and keeps a share.",
           "How many dollars does {name} have now?"),
    _Theme("cookies", "{name} has {a} cookies.", "{name} bakes {a} trays of {b} cookies.",
           ("{P} bakes {n} more cookies.", "A neighbor brings {n} cookies."),
           ("{P} eats {n} cookies.", "{P} gives {n} cookies away."),
           "{P} bakes {k} more trays of {m}.", "Then {p} doubles the batch.", "{P} packs them into {k} equal boxes and keeps one box.",
           "How many cookies does {name} have now?"),
    _Theme("km", "{name} is {a} km from home.", "{name} drives {a} km a day for {b} days, away from home.",
           ("{P} drives {n} km farther.", "{P} rides a bus {n} km farther."),
           ("{P} drives {n} km back toward home.", "{P} walks {n} km back."),
           "{P} then drives {k} hours at {m} km an hour, farther away.", "Then {p} doubles {q} distance from home.",
           "{P} moves to the point 1/{k} of the way from home.",
           "How many km from home is {name} now?"),
    _Theme("stickers", "{name} has {a} stickers.", "{name} buys {a} sheets of {b} stickers.",
           ("{P} wins {n} more stickers.", "A friend gives {o} {n} stickers."),
           ("{P} loses {n} stickers.", "{P} trades away {n} stickers."),
           "{P} gets {k} packs of {m} stickers.", "Then {q} collection doubles.", "{P} splits them equally among {k} albums and counts one album.",
           "How many stickers does {name} have now?"),
    _Theme("marbles", "{name} has {a} marbles.", "{name} has {a} jars of {b} marbles.",
           ("{P} finds {n} more marbles.", "{P} wins {n} marbles in a game."),
           ("{P} loses {n} marbles.", "{P} gives {n} marbles to a friend."),
           "{P} buys {k} bags of {m} marbles.", "Then {p} doubles {q} marbles.",
           "{P} sorts them into {k} equal jars and keeps one jar.",
           "How many marbles does {name} have now?"),
)
_NAMES = (("Ava", "she"), ("Ben", "he"), ("Mia", "she"), ("Leo", "he"), ("Zoe", "she"), ("Sam", "he"),
          ("Ivy", "she"), ("Max", "he"), ("Lily", "she"), ("Omar", "he"), ("Nora", "she"), ("Eli", "he"))
_OBJ = {"she": "her", "he": "him"}
_POSS = {"she": "her", "he": "his"}


def _bucket(question: str) -> int:
    return int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest(), "big") % 100


def _story(rng: random.Random, d: Difficulty) -> tuple[str, str, int] | None:
    """One problem as (question, solution, answer), or ``None`` when the draw broke a limit."""
    theme = rng.choice(_THEMES)
    name, p = rng.choice(_NAMES)
    fill = {"name": name, "p": p, "P": p.capitalize(), "o": _OBJ[p], "q": _POSS[p]}
    unit = theme.unit
    steps = rng.randint(d.min_steps, d.max_steps)
    draw = lambda: rng.randint(d.min_operand, d.max_operand)  # noqa: E731
    sentences, lines = [], []

    def step(expr: str, value: int, line: str) -> int:
        lines.append(line.format(f"<<{expr}={value}>>{value}", **fill))
        return value

    if "*" in d.ops and rng.random() < 0.5:
        a, b = rng.randint(2, d.max_factor), draw()
        sentences.append(theme.product.format(a=a, b=b, **fill))
        x = step(f"{a}*{b}", a * b, "{name} has {0} " + unit + ".")
    else:
        x = draw()
        sentences.append(theme.start.format(a=x, **fill))
    while len(lines) < steps:
        left = steps - len(lines)
        # "*" is a pack event (k*m, then +): two steps, and it needs "+" too.
        kinds = [op for op in d.ops if op != "*" or (left >= 2 and "+" in d.ops)] + (["x2"] if "*" in d.ops else [])
        kind = rng.choice(kinds)
        if kind == "+":
            n = draw()
            sentences.append(rng.choice(theme.add).format(n=n, **fill))
            x = step(f"{x}+{n}", x + n, "Now {p} has {0} " + unit + ".")
        elif kind == "-":
            if x <= d.min_operand:
                return None
            n = rng.randint(d.min_operand, min(d.max_operand, x - 1))
            sentences.append(rng.choice(theme.sub).format(n=n, **fill))
            x = step(f"{x}-{n}", x - n, "Then {p} has {0} " + unit + ".")
        elif kind == "*":
            k, m = rng.randint(2, d.max_factor), draw()
            sentences.append(theme.pack.format(k=k, m=m, **fill))
            y = step(f"{k}*{m}", k * m, "That adds {0} " + unit + ".")
            x = step(f"{x}+{y}", x + y, "In total {p} has {0} " + unit + ".")
        elif kind == "x2":
            sentences.append(theme.mul.format(**fill))
            x = step(f"{x}*2", 2 * x, "Doubled, that is {0} " + unit + ".")
        else:  # "/": exact division only
            divisors = [k for k in range(2, 6) if x % k == 0 and x // k >= 1]
            if not divisors:
                return None
            k = rng.choice(divisors)
            sentences.append(theme.div.format(k=k, k1=k - 1, **fill))
            x = step(f"{x}/{k}", x // k, "One share is {0} " + unit + ".")
        if x > d.max_result:
            return None
    sentences.append(theme.question.format(**fill))
    return " ".join(sentences), "\n".join([*lines, f"#### {x}"]), x


def generate_problems(n: int, *, seed: int = 0, split: str = "train", **difficulty) -> list[Problem]:
    """``n`` distinct built-in problems of ``split`` ("train", "validation" or "test").

    Deterministic in ``(seed, split, difficulty)``; problem ``i`` comes from
    ``random.Random(f"{seed}:{split}:{attempt}")``. ``difficulty`` are ``Difficulty`` fields.
    Ids are ``builtin-<split>-<seed>-<index>``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    d = Difficulty(**difficulty)
    lo, hi = SPLITS[split]
    problems: list[Problem] = []
    seen: set[str] = set()
    attempt = 0
    while len(problems) < n:
        if attempt > 200 * n + 10_000:
            raise ValueError(f"could only draw {len(problems)} distinct {split} problems of difficulty {d}")
        rng = random.Random(f"{seed}:{split}:{attempt}")
        attempt += 1
        drawn = _story(rng, d)
        if drawn is None:
            continue
        question, solution, answer = drawn
        if question in seen or not lo <= _bucket(question) < hi:
            continue
        seen.add(question)
        problems.append(Problem(question, solution, str(answer), f"builtin-{split}-{seed}-{len(problems)}"))
    return problems
