"""How much of a medec training file made from MEDEC's training pairs overlaps the MEDEC-MS test set.

    .venv/bin/python bench/medec_contamination.py [--shared ../shared/data/medec] [--max-pairs N]

Runs the medec recipe over `derived-third-party/medec_ms_train_error_pairs.jsonl` against an oracle
fake provider (it answers each critic with the ground truth and each generator with a trace that
names the change, so every example is kept; the traces are filler, the notes are MEDEC's), exports
the rows with `--decontaminate-against MEDEC-MS-TestSet…csv` at the defaults and with
`--min-overlap 0` (any shared 13-gram), and prints what was removed and why. Writes
bench/results-medec-contamination.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FILLER = ("First I summarise the presentation and the key findings, then I weigh each finding against the "
          "diagnosis and plan I would expect, consider at least one alternative explanation, and check every "
          "sentence of the note in order against what the evidence supports before I settle on my judgement.")


def oracle(cases: list[Any]) -> Any:
    from synthtrace.testing import FakeProvider

    def norm(s: str | None) -> str:
        return " ".join((s or "").split())

    by_error = [(norm(c.error_sentence), c) for c in cases if c.error_sentence]
    by_fix = [(norm(c.corrected_sentence), c) for c in cases if c.corrected_sentence]

    class Oracle(FakeProvider):
        def _pick(self, body: Any, prompt: str) -> Any:
            text = norm(prompt)
            if "Review this clinical note for a medical error" in text:
                case = next((c for s, c in by_error if s in text), None)
                if case is not None:
                    return {"reasoning": FILLER, "error_found": True, "error_sentence_id": case.error_sentence_id,
                            "corrected_sentence": case.corrected_sentence}
                return {"reasoning": FILLER, "error_found": False, "error_sentence_id": -1, "corrected_sentence": ""}
            if "To build this training case" in text:
                case = next((c for s, c in by_fix if s in text), None)
                if case is not None:
                    return (f'I change "{case.corrected_sentence}" into "{case.error_sentence}" to make a '
                            f"{case.error_type or 'medical'} error. {FILLER}")
            return FILLER

    return Oracle(record=False)


def export(run: Path, out: Path, test_csv: Path, *extra: str) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "synthtrace.cli", "export", "sft", str(run), "--out", str(out),
                           "--val-fraction", "0", "--decontaminate-against", str(test_csv), *extra],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    removed = [json.loads(line) for line in out.with_name(f"{out.stem}.removed{out.suffix}").read_text().splitlines()]
    kept = sum(1 for _ in out.open())
    items = collections.Counter(r["evidence"]["item"] for r in removed)
    parts = collections.Counter(f"{r['example']['metadata'].get('role', '?')} {r['part']}" for r in removed)
    top = sorted(removed, key=lambda r: -r["evidence"]["overlap"])[:5]
    return {"kept": kept, "removed": len(removed), "seconds": round(time.perf_counter() - started, 2),
            "by_kind_and_part": dict(parts.most_common()), "test_items_hit": len(items),
            "training_notes_hit": len({str(r["row_id"]).split("_")[0] for r in removed}),
            "strongest": [{"row": r["row_id"], "test_item": r["evidence"]["item"], "overlap": r["evidence"]["overlap"],
                           "shared_ngrams": r["evidence"]["shared_ngrams"], "ngram": r["evidence"]["ngram"]}
                          for r in top]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data" / "medec")
    p.add_argument("--max-pairs", type=int, default=None)
    args = p.parse_args()
    pairs = args.shared / "derived-third-party" / "medec_ms_train_error_pairs.jsonl"
    test_csv = args.shared / "MEDEC-MS-TestSet-with-GroundTruth-and-ErrorType.csv"
    import synthtrace
    from synthtrace.inputs import Record
    from synthtrace.recipes.medec.data import MedecCase, read_cases

    cases = [MedecCase.from_data(r.data) for r in read_cases(pairs) if isinstance(r, Record)]
    work = Path(tempfile.mkdtemp(prefix="medec-contamination-"))
    with oracle(cases) as fp:
        cfg = work / "cfg.yaml"
        cfg.write_text(json.dumps({"endpoints": {"oracle": {"kind": "openai", "base_url": fp.openai_base}},
                                   "default_endpoint": "oracle", "default_model": "oracle"}))
        extra = {"max_records": args.max_pairs} if args.max_pairs else {}
        result = synthtrace.run("medec", pairs, work / "run", config=cfg, concurrency=64, quiet=True, samples=1,
                                **extra)
    report = {"pairs": result.records_done + result.records_rejected, "rows": result.rows_written,
              "defaults": export(work / "run", work / "sft.jsonl", test_csv),
              "any_shared_13gram": export(work / "run", work / "strict.jsonl", test_csv, "--min-overlap", "0")}
    (REPO / "bench" / "results-medec-contamination.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
