"""Prompts made of random catalogue words, numbers, units and punctuation: make_part answers each
with a part whose script parses and whose geometry is positive, or with CannotMake; never with
another exception."""

from __future__ import annotations

import ast
import random

from services.generator.ports import CannotMake
from services.generator.templates import make_part

WORDS = (
    "box cube plate cylinder rod disc tube pipe flange bracket l-bracket standoff spacer enclosure "
    "case lid with a the of x by * , . ; and holes hole bolt more add remove fewer m3 m5 m10 m7 "
    'mm cm m in inch " ft diameter radius od id bore wall thick thickness long length wide width '
    "tall height deep across circle pcd from the edges inset hex round open top no without "
    "four six twelve 1/2 0 .5 fillet twice \u00f8 \u00d7 :"
).split()


def prompts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 14)):
            if rng.random() < 0.35:
                parts.append(str(rng.choice([1, 2, 3, 4, 5, 6, 8, 10, 12, 20, 30, 40, 60, 100])))
            else:
                parts.append(rng.choice(WORDS))
        out.append(" ".join(parts))
    return out


def test_random_prompts_make_a_part_or_refuse() -> None:
    made = 0
    for prompt in prompts(seed=20261202, n=1500):
        try:
            part = make_part(prompt)
        except CannotMake as refused:
            assert "They make: box" in refused.message, prompt
            continue
        made += 1
        ast.parse(part.script)
        assert part.expected.volume_mm3 is not None and part.expected.volume_mm3 > 0, prompt
        assert part.expected.bbox_mm is not None and min(part.expected.bbox_mm) > 0, prompt
        # a script it wrote can be edited with a random prompt too
        for edit in prompts(seed=made, n=3):
            try:
                make_part(edit, parent_script=part.script)
            except CannotMake:
                pass
    assert made > 0


def mutations(seed: int, n: int) -> list[str]:
    """The catalogue's examples with numbers changed, words dropped, repeated or inserted."""
    from services.generator.templates import CATALOGUE

    rng = random.Random(seed)
    bases = [entry.example for entry in CATALOGUE] + [
        "enclosure 80x60x40 mm, wall 2 mm, with a lid",
        "plate 120 x 40 x 4 mm with five M5 holes",
        "round spacer diameter 8 mm, bore 3.2, length 15",
    ]
    numbers = ["0", "0.05", "0.5", "1", "2.5", "3", "7", "13", "50", "99", "250", "20000", "1/3"]
    out = []
    for _ in range(n):
        tokens = rng.choice(bases).replace(",", " ,").split()
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(tokens))
            action = rng.random()
            if action < 0.5 and any(c.isdigit() for c in tokens[i]):
                tokens[i] = rng.choice(numbers)
            elif action < 0.65:
                del tokens[i]
            elif action < 0.8:
                tokens.insert(i, tokens[i])
            else:
                tokens.insert(i, rng.choice(WORDS))
            if not tokens:
                tokens = ["box"]
        out.append(" ".join(tokens))
    return out


def test_mutated_examples_make_a_part_or_refuse() -> None:
    made = 0
    for prompt in mutations(seed=7, n=1000):
        try:
            part = make_part(prompt)
        except CannotMake as refused:
            assert "They make: box" in refused.message, prompt
            continue
        made += 1
        ast.parse(part.script)
        assert part.expected.volume_mm3 is not None and part.expected.volume_mm3 > 0, prompt
        assert part.expected.bbox_mm is not None and min(part.expected.bbox_mm) > 0, prompt
    assert made > 100
