"""The default ladder against hand-labelled answer/reference pairs (tests/fixtures/verify_pairs.jsonl).

Each row: `answer` (a model's answer as models write it), `reference` (a GSM8K/MATH-style gold
answer), `truth`, `theme`, `note`. `truth` means the answer's final answer is mathematically equal
to the reference as a human grader would accept it: formatting, units, `25%` for `0.25` or for a
bare `25`, `0.\\overline{3}` or `0.333...` for 1/3 and floating-point noise (`0.30000000000000004`)
are accepted; a visible rounding (`0.333` for 1/3, `3.14` for pi) is not, unless the reference is
itself the rounded figure the question asked for; a hedge between two answers, a wrong unit or a
refusal is false. The final answer counts, not numbers of the working.

The thresholds sit a few points above what `bench/verify_bench.py` measured (2 cores, math-verify
0.9.0): false accepts 9 of 133 false rows (6.8 %), false rejects 18 of 145 true rows (12.4 %).
A change that makes the ladder worse by three or so rows fails here; one that makes it better
should lower them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("math_verify")

from synthtrace.verify import Verdict, Verification, default_ladder

PAIRS = Path(__file__).parent / "fixtures" / "verify_pairs.jsonl"
MAX_FALSE_ACCEPT_RATE = 0.03  # measured 0.015 (2 of 133)
MAX_FALSE_REJECT_RATE = 0.11  # measured 0.090 (13 of 145)
THEMES = {"exact", "thousands", "percent", "fraction", "units", "tolerance", "rounding", "choice", "latex",
          "equation", "sets", "tuples", "intervals", "sign", "scientific", "multi_number", "refusal",
          "mv_false_accept", "mv_false_reject"}


def load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return load()


@pytest.fixture(scope="module")
def verdicts(rows: list[dict[str, Any]]) -> list[Verification]:
    ladder = default_ladder()

    async def run() -> list[Verification]:
        return list(await asyncio.gather(*(ladder.check(r["answer"], r["reference"]) for r in rows)))

    try:
        return asyncio.run(run())
    finally:
        ladder.rungs[-1].close()  # the MathRung's workers


def test_fixture_is_well_formed(rows: list[dict[str, Any]]) -> None:
    assert len(rows) >= 200
    for i, row in enumerate(rows, 1):
        assert set(row) == {"answer", "reference", "truth", "theme", "note"}, f"row {i}: {sorted(row)}"
        assert isinstance(row["answer"], str), f"row {i}"
        assert isinstance(row["reference"], str) and row["reference"].strip(), f"row {i}"
        assert isinstance(row["truth"], bool), f"row {i}"
        assert isinstance(row["theme"], str) and row["theme"] in THEMES, f"row {i}: {row['theme']!r}"
        assert isinstance(row["note"], str) and row["note"].strip(), f"row {i}"
    pairs = Counter((r["answer"], r["reference"]) for r in rows)
    assert [p for p, n in pairs.items() if n > 1] == []
    truths: dict[str, set[bool]] = defaultdict(set)
    for row in rows:
        truths[row["theme"]].add(row["truth"])
    assert set(truths) == THEMES
    assert {theme: t for theme, t in truths.items() if t != {True, False}} == {}
    share = sum(r["truth"] for r in rows) / len(rows)
    assert 0.4 <= share <= 0.6, f"true rows are {share:.0%} of the set"


def _show(kind: str, rows: list[dict[str, Any]], verdicts: list[Verification], want: bool) -> str:
    return "\n".join(f"{kind} #{i}: {r['answer']!r} vs {r['reference']!r} -> {v.verdict.value} by {v.rung} ({v.reason})"
                     for i, (r, v) in enumerate(zip(rows, verdicts), 1)
                     if r["truth"] is want and v.correct is not want)


def test_ladder_false_accepts_stay_low(rows: list[dict[str, Any]], verdicts: list[Verification]) -> None:
    falses = [v for r, v in zip(rows, verdicts) if not r["truth"]]
    rate = sum(v.correct for v in falses) / len(falses)
    assert rate <= MAX_FALSE_ACCEPT_RATE, f"false-accept rate {rate:.1%}\n" + _show("FA", rows, verdicts, False)


def test_ladder_false_rejects_stay_low(rows: list[dict[str, Any]], verdicts: list[Verification]) -> None:
    trues = [v for r, v in zip(rows, verdicts) if r["truth"]]
    rate = sum(not v.correct for v in trues) / len(trues)
    assert rate <= MAX_FALSE_REJECT_RATE, f"false-reject rate {rate:.1%}\n" + _show("FR", rows, verdicts, True)


def test_no_timeouts_or_errors(rows: list[dict[str, Any]], verdicts: list[Verification]) -> None:
    trouble = [(r["answer"], r["reference"], v.verdict.value, v.reason) for r, v in zip(rows, verdicts)
               if v.verdict in (Verdict.TIMEOUT, Verdict.ERROR)]
    assert trouble == []
