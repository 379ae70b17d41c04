"""The rule rungs: normalised exact match, numbers, multiple-choice letters.

Each reads the answer's final span first — what a `\\boxed{}` holds, else what follows "answer
is" / "Answer:" / "Final answer", else the last line — so that the numbers of the working do not
count. They judge only pairs they understand and abstain (None) on the rest.
"""

from __future__ import annotations

import math
import re
import time
from fractions import Fraction
from typing import Any

from synthtrace.verify.verdict import Verdict, Verification

_FINAL = re.compile(r"(?:final answer|the answer is|answer\s*[:=]|answer\s+is)\s*[:=]?\s*(.+)", re.IGNORECASE | re.DOTALL)


def boxed(text: str) -> str | None:
    """What the last `\\boxed{…}` (or `\\fbox{…}`) of `text` holds, braces balanced; None without one."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def final_span(answer: str) -> str:
    """The part of a model's answer that states its result."""
    inner = boxed(answer)
    if inner is not None:
        return inner.strip()
    matches = list(_FINAL.finditer(answer))
    if matches:
        return matches[-1].group(1).strip(" *_:\n").split("\n")[0].strip()
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def normalise(text: str) -> str:
    """Case, spaces, markdown emphasis, `$`, `\\text{}`, trailing full stops and wrapping quotes aside."""
    t = text.strip()
    t = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}", r"\1", t)
    t = t.replace("$", "").replace("**", "").replace("\\left", "").replace("\\right", "").replace("\\!", "")
    t = re.sub(r"\s+", " ", t).strip().strip("\"'`").strip()
    return t.rstrip(".").strip().lower()


class ExactRung:
    """The final span equals the reference once both are normalised; otherwise it abstains."""

    name = "exact"

    async def check(self, answer: str, reference: Any) -> Verification | None:
        if not isinstance(reference, str) or not reference.strip():
            return None
        started = time.perf_counter()
        if normalise(final_span(answer)) == normalise(reference) or normalise(answer) == normalise(reference):
            return Verification(Verdict.CORRECT, "the same text", self.name, time.perf_counter() - started)
        return None


# -- numbers --------------------------------------------------------------------------------------

_NUMBER = r"[-+−]?(?:\d{1,3}(?:(?:,|\{,\})\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
_FRACTION = re.compile(r"^([-+−]?)\\[dt]?frac\{\s*(" + _NUMBER + r")\s*\}\{\s*(" + _NUMBER + r")\s*\}$")
_SLASH = re.compile(r"^(" + _NUMBER + r")\s*/\s*(" + _NUMBER + r")$")
_TIMES_TEN = re.compile(r"^(" + _NUMBER + r")\s*(?:\\times|×|\*|x)\s*10\^\{?([-+−]?\d+)\}?$")
_PLAIN = re.compile(r"^(" + _NUMBER + r")$")
_UNIT_WORDS = r"(?:[a-zA-Z][a-zA-Z ]*|°[CF]?|\\(?:circ|%)|%)?"
_CURRENCY = re.compile(r"^(?:\\\$|\$|€|£|usd|eur|gbp)\s*", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER + r"(?:\s*(?:\\%|%))?")
# A span's last number, when it follows `=`, "equals" or "is" and ends the span (a unit word or a full
# stop may follow): the result it states.
_STATED_RESULT = re.compile(r"(?:=|\bequals\b|\bis\b)\s*(" + _NUMBER + r"(?:\s*%)?)\s*[a-z]*\W*$")


class Number:
    """A parsed number: its exact value, and whether it was written as a percentage."""

    __slots__ = ("value", "percent")

    def __init__(self, value: Fraction, percent: bool):
        self.value = value
        self.percent = percent


def _to_fraction(token: str) -> Fraction:
    token = token.replace("{,}", "").replace(",", "").replace("−", "-")
    return Fraction(token)


def parse_number(text: str) -> Number | None:
    """The number `text` states — `1,234`, `25%`, `\\frac{3}{4}`, `3/4`, `1.2e3`, `$12.50`, `5 cm`,
    `x = 2` — or None when it is not one number."""
    t = normalise(text)
    t = re.sub(r"^[a-z]\s*=\s*", "", t)  # "x = 2"
    t = _CURRENCY.sub("", t)
    percent = bool(re.search(r"(?:\\%|%|percent)\s*$", t))
    t = re.sub(r"\s*(?:\\%|%|percent)\s*$", "", t)
    t = re.sub(r"\s*\^\\circ$|\s*°[cf]?$", "", t)
    for pattern in (_FRACTION, _SLASH, _TIMES_TEN, _PLAIN):
        core = t
        m = pattern.match(core)
        if m is None:
            core = re.sub(r"\s+" + _UNIT_WORDS + r"$", "", t)  # "5 cm", "12.5 dollars"
            m = pattern.match(core)
        if m is None:
            continue
        try:
            if pattern is _FRACTION:
                sign = -1 if m.group(1) in ("-", "−") else 1
                value = sign * _to_fraction(m.group(2)) / _to_fraction(m.group(3))
            elif pattern is _SLASH:
                value = _to_fraction(m.group(1)) / _to_fraction(m.group(2))
            elif pattern is _TIMES_TEN:
                value = _to_fraction(m.group(1)) * Fraction(10) ** int(m.group(2).replace("−", "-"))
            else:
                value = _to_fraction(m.group(1))
        except (ValueError, ZeroDivisionError):
            return None
        return Number(value, percent)
    return None


class NumberRung:
    """Numbers compared by value within `rel_tol`: `1,234` = `1234`, `3/4` = `0.75`, `25%` = `0.25`."""

    name = "number"

    def __init__(self, rel_tol: float = 1e-6):
        self.rel_tol = rel_tol

    async def check(self, answer: str, reference: Any) -> Verification | None:
        if not isinstance(reference, str):
            return None
        ref = parse_number(reference)
        if ref is None:
            return None
        started = time.perf_counter()
        span = final_span(answer)
        got = parse_number(span)
        if got is None:  # "42 apples in all", "so it is 25%": the span's one number, in plain text only
            plain = normalise(span)
            numbers = _ANY_NUMBER.findall(plain)
            if not numbers:
                return Verification(Verdict.UNPARSEABLE_ANSWER, f"no number in {span[:80]!r}", self.name,
                                    time.perf_counter() - started)
            if re.search(r"[\\^_{}]", plain):
                return None  # LaTeX: not for this rung to say
            if len(numbers) > 1:  # "17 + 8 = 25", "so 17 + 8 equals 25": the number it ends on as a result
                stated = _STATED_RESULT.search(plain)
                if stated is None or re.search(r"\b(?:or|either)\b", plain):
                    return None  # several numbers and no one result stated
                numbers = [stated.group(1)]
            got = parse_number(numbers[0])
            if got is None:
                return None
        seconds = time.perf_counter() - started
        unit, ref_unit = _unit(span), _unit(reference)
        if unit and ref_unit and unit != ref_unit:
            return Verification(Verdict.INCORRECT, f"in {unit}, the reference is in {ref_unit}", self.name, seconds)
        if self._equal(got, ref):
            return Verification(Verdict.CORRECT, f"{_show(got)} = {_show(ref)}", self.name, seconds)
        return Verification(Verdict.INCORRECT, f"{_show(got)} ≠ {_show(ref)}", self.name, seconds)

    def _equal(self, a: Number, b: Number) -> bool:
        candidates = [(a.value, b.value)]
        if a.percent != b.percent:  # 25% is 0.25; a grader also takes 25 for 25%
            scaled = (a.value / 100, b.value) if a.percent else (a.value, b.value / 100)
            candidates.append(scaled)
        return any(math.isclose(float(x), float(y), rel_tol=self.rel_tol, abs_tol=1e-12) for x, y in candidates)


_UNIT = re.compile(r"[\d.}]\s*([a-z]+)(?:\s|$)")
_NOT_UNITS = {"e", "x", "and", "or", "is", "so", "then", "in", "of", "the", "dollars", "usd", "eur", "euros",
              "percent", "pi", "apples"}


def _unit(text: str) -> str | None:
    """The unit word that follows the last number of `text` (`5 cm` → cm), plurals folded; None without one."""
    found = _UNIT.findall(normalise(text))
    if not found:
        return None
    word = found[-1]
    if word in _NOT_UNITS or len(word) > 12:
        return None
    return word[:-1] if word.endswith("s") and len(word) > 3 else word


def _show(n: Number) -> str:
    v = n.value
    text = str(v.numerator) if v.denominator == 1 else f"{float(v):g}"
    return text + ("%" if n.percent else "")


# -- multiple choice ------------------------------------------------------------------------------

_LETTER_REFERENCE = re.compile(r"^\(?([A-Ja-j])\)?[.:]?$")
_LETTER = r"\**\(?([A-J])\)?\**(?![a-z])"
_STATED = re.compile(r"(?:answer\s*(?:is|:)|i (?:would )?(?:pick|choose|select)|correct (?:option|choice) is)\s*:?\s*"
                     + _LETTER, re.IGNORECASE)
_NAMED = re.compile(r"(?:option|choice)\s*(?:is|:)?\s*:?\s*" + _LETTER, re.IGNORECASE)
_ALONE = re.compile(r"^\s*\**\(?([A-J])\)?\**[.):]?\s*$", re.IGNORECASE | re.MULTILINE)
_HEDGED = re.compile(r"\b([A-J])\)?\s+(?:or|and)\s+\(?([A-J])\b")


def choice_letter(answer: str) -> str | None:
    """The option letter an answer settles on; None when it names none or hedges between two."""
    inner = boxed(answer)
    if inner is not None:
        m = re.match(r"^\s*\(?(?:\\text\{)?([A-Ja-j])\}?\)?\s*$", inner)
        if m:
            return m.group(1).upper()
    for pattern in (_STATED, _ALONE, _NAMED):  # what it says it answers, before options it discusses
        m = next(pattern.finditer(answer), None)
        if m is not None:
            after = answer[m.start():m.end() + 12]
            return None if _HEDGED.search(after) else m.group(1).upper()
    last = final_span(answer)
    m = re.match(r"^\(?([A-Ja-j])\)?[.):]?(?:\s|$)", last)
    return m.group(1).upper() if m else None


class ChoiceRung:
    """A multiple-choice reference (one letter, A–J): the answer's chosen letter must be it."""

    name = "choice"

    async def check(self, answer: str, reference: Any) -> Verification | None:
        if not isinstance(reference, str):
            return None
        m = _LETTER_REFERENCE.match(reference.strip())
        if m is None:
            return None
        started = time.perf_counter()
        want = m.group(1).upper()
        got = choice_letter(answer)
        seconds = time.perf_counter() - started
        if got is None:
            return Verification(Verdict.UNPARSEABLE_ANSWER, "no option letter in the answer", self.name, seconds)
        verdict = Verdict.CORRECT if got == want else Verdict.INCORRECT
        return Verification(verdict, f"chose {got}, the reference is {want}", self.name, seconds)
