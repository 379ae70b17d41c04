"""Answer verifiers against hand-labelled pairs: false accepts, false rejects, abstentions, time.

    .venv/bin/python bench/verify_bench.py [--pairs tests/fixtures/verify_pairs.jsonl] [--mistakes]

Every row of the fixture (`answer`, `reference`, `truth`, `theme`, `note`) goes through each rung
alone (`ExactRung`, `NumberRung`, `ChoiceRung`, `MathRung`) and through `default_ladder()`, all rows
of one judge at once (`asyncio.gather`). `truth` means: the answer's final answer is mathematically
equal to the reference, as a human grader would accept it (units, formatting, 25% for 0.25; not
3.14 for pi nor 0.333 for 1/3 unless the question asked for that rounding).

Per judge: rows judged (the rung did not abstain), abstentions, `unparseable_*` verdicts, timeouts
and errors, false accepts (truth false, verdict `correct`) over the false rows, false rejects (truth
true, verdict anything but `correct`, abstentions included) over the true rows and over the true
rows the judge did judge, and the wall time of the batch (Math-Verify's worker start is warmed up
first and not counted). Then the ladder's mistakes per theme; `--mistakes` lists them row by row.
Always exits 0: it measures, it does not gate (tests/test_verify_labelled.py does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from synthtrace.verify import ChoiceRung, ExactRung, MathRung, NumberRung, Verdict, Verification, default_ladder

REPO = Path(__file__).resolve().parents[1]
PAIRS = REPO / "tests" / "fixtures" / "verify_pairs.jsonl"


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


async def judge_all(judge: Any, rows: list[dict[str, Any]]) -> tuple[list[Verification | None], float]:
    started = time.perf_counter()
    out = await asyncio.gather(*(judge.check(r["answer"], r["reference"]) for r in rows))
    return list(out), time.perf_counter() - started


def summarise(rows: list[dict[str, Any]], verdicts: list[Verification | None]) -> dict[str, Any]:
    trues = [v for r, v in zip(rows, verdicts) if r["truth"]]
    falses = [v for r, v in zip(rows, verdicts) if not r["truth"]]
    judged_trues = [v for v in trues if v is not None]
    fa = sum(v is not None and v.verdict is Verdict.CORRECT for v in falses)
    fr = sum(v is None or v.verdict is not Verdict.CORRECT for v in trues)
    fr_judged = sum(v.verdict is not Verdict.CORRECT for v in judged_trues)
    return {
        "rows": len(rows),
        "judged": sum(v is not None for v in verdicts),
        "abstained": sum(v is None for v in verdicts),
        "unparseable": sum(v is not None and v.verdict in (Verdict.UNPARSEABLE_ANSWER, Verdict.UNPARSEABLE_REFERENCE)
                           for v in verdicts),
        "timeout_error": sum(v is not None and v.verdict in (Verdict.TIMEOUT, Verdict.ERROR) for v in verdicts),
        "false_accepts": fa,
        "false_accept_rate": fa / len(falses) if falses else 0.0,
        "false_rejects": fr,
        "false_reject_rate": fr / len(trues) if trues else 0.0,
        "false_reject_rate_judged": fr_judged / len(judged_trues) if judged_trues else 0.0,
    }


def mistake(row: dict[str, Any], v: Verification | None) -> bool:
    correct = v is not None and v.verdict is Verdict.CORRECT
    return correct != row["truth"]


async def main_async(args: argparse.Namespace) -> None:
    rows = load(args.pairs)
    n_true = sum(r["truth"] for r in rows)
    print(f"{len(rows)} rows ({n_true} true, {len(rows) - n_true} false) from {args.pairs}")
    print(f"{len(Counter(r['theme'] for r in rows))} themes\n")

    math, ladder = MathRung(), default_ladder()
    warm = time.perf_counter()
    await asyncio.gather(math.check("1", "1"), ladder.rungs[-1].check("1", "1"))
    print(f"Math-Verify workers started in {time.perf_counter() - warm:.2f} s (not counted below)\n")
    judges: list[tuple[str, Any]] = [("exact", ExactRung()), ("number", NumberRung()), ("choice", ChoiceRung()),
                                     ("math", math), ("default_ladder", ladder)]
    results: dict[str, tuple[list[Verification | None], float]] = {}
    for name, judge in judges:
        results[name] = await judge_all(judge, rows)
    math.close()
    ladder.rungs[-1].close()

    header = (f"{'judge':<15} {'judged':>6} {'abstain':>7} {'unparse':>7} {'t/o+err':>7} {'FA':>4} {'FA rate':>8} "
              f"{'FR':>4} {'FR rate':>8} {'FR|judged':>9} {'seconds':>8}")
    print(header)
    print("-" * len(header))
    for name, (verdicts, seconds) in results.items():
        s = summarise(rows, verdicts)
        print(f"{name:<15} {s['judged']:>6} {s['abstained']:>7} {s['unparseable']:>7} {s['timeout_error']:>7} "
              f"{s['false_accepts']:>4} {s['false_accept_rate']:>8.1%} {s['false_rejects']:>4} "
              f"{s['false_reject_rate']:>8.1%} {s['false_reject_rate_judged']:>9.1%} {seconds:>8.2f}")
    print("\nFA rate: over the false rows; FR rate: over the true rows (an abstention is not `correct`); "
          "FR|judged: over the true rows the judge did not abstain on.\n")

    verdicts, _ = results["default_ladder"]
    themes = sorted({r["theme"] for r in rows})
    header = f"{'theme (ladder)':<18} {'rows':>4} {'true':>4} {'false':>5} {'FA':>3} {'FR':>3} {'deciding rungs':<40}"
    print(header)
    print("-" * len(header))
    for theme in themes:
        idx = [i for i, r in enumerate(rows) if r["theme"] == theme]
        t = sum(rows[i]["truth"] for i in idx)
        fa = sum(mistake(rows[i], verdicts[i]) and not rows[i]["truth"] for i in idx)
        fr = sum(mistake(rows[i], verdicts[i]) and rows[i]["truth"] for i in idx)
        by = Counter(verdicts[i].rung if verdicts[i] is not None else "-" for i in idx)
        print(f"{theme:<18} {len(idx):>4} {t:>4} {len(idx) - t:>5} {fa:>3} {fr:>3} "
              f"{', '.join(f'{k} {n}' for k, n in by.most_common()):<40}")
    total = sum(mistake(r, v) for r, v in zip(rows, verdicts))
    print(f"\nladder mistakes: {total} of {len(rows)}")

    if args.mistakes:
        print("\nladder mistakes, row by row:")
        for i, (r, v) in enumerate(zip(rows, verdicts)):
            if mistake(r, v):
                kind = "FA" if not r["truth"] else "FR"
                got = f"{v.verdict.value} by {v.rung}: {v.reason}" if v is not None else "abstained"
                print(f"  [{kind}] #{i + 1} {r['theme']}: answer={r['answer']!r} reference={r['reference']!r}\n"
                      f"        -> {got}   ({r['note']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--mistakes", action="store_true", help="list the ladder's mistakes row by row")
    args = parser.parse_args()
    try:
        asyncio.run(main_async(args))
    except Exception as e:  # noqa: BLE001 - a measurement, never a gate
        print(f"bench failed: {type(e).__name__}: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
