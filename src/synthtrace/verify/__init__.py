"""Verifiers: is this answer right, against this reference? A typed verdict, never a bare bool.

    from synthtrace.verify import default_ladder
    v = await default_ladder().check("... so the answer is \\\\boxed{\\\\frac{3}{4}}.", "0.75")
    v.verdict, v.reason, v.rung        # Verdict.CORRECT, "0.75 = 0.75", "number"

Rungs: `ExactRung` (normalised text), `NumberRung` (thousands separators, percent, fractions,
units, tolerance), `ChoiceRung` (option letters), `MathRung` (Math-Verify in killable workers,
`pip install 'synthtrace[verify]'`), `CodeRung` (Python run against tests in a sandbox), `JudgeRung`
(a model, asked in both orders). A `Ladder` asks them in order until one decides; a timeout or an
error is never reported as `incorrect`. `sample_until` draws answers until enough are verified;
`verifier_reward` makes a ladder a reward function for TRL's GRPO.
"""

from __future__ import annotations

from synthtrace.verify.code import CodeRung
from synthtrace.verify.judge import JudgeRung
from synthtrace.verify.math import MathRung
from synthtrace.verify.reward import verifier_reward
from synthtrace.verify.rules import ChoiceRung, ExactRung, NumberRung, boxed, final_span, parse_number
from synthtrace.verify.sampling import Sample, Samples, sample_until
from synthtrace.verify.verdict import Ladder, Rung, Verdict, Verification

__all__ = ["ChoiceRung", "CodeRung", "ExactRung", "JudgeRung", "Ladder", "MathRung", "NumberRung", "Rung", "Sample", "Samples",
           "Verdict", "Verification", "RUNGS", "DEFAULT_RUNGS", "boxed", "default_ladder", "ladder_of", "verifier_reward", "final_span", "parse_number", "sample_until"]


RUNGS = {"exact": ExactRung, "number": NumberRung, "choice": ChoiceRung, "math": MathRung}  # by name, no arguments
DEFAULT_RUNGS = ("exact", "number", "choice", "math")


def ladder_of(names: list[str] | tuple[str, ...]) -> Ladder:
    """The ladder of the rungs named, in the order given (`--verifier` flags)."""
    unknown = [n for n in names if n not in RUNGS]
    if unknown:
        raise ValueError(f"unknown verifier {unknown[0]!r} (known: {', '.join(RUNGS)})")
    return Ladder([RUNGS[n]() for n in names])


def default_ladder(time_limit_s: float = 5.0) -> Ladder:
    """Exact text, then numbers, then option letters, then Math-Verify."""
    return Ladder([ExactRung(), NumberRung(), ChoiceRung(), MathRung(time_limit_s)])
