"""Decontamination and near-duplicates: recall and false positives on a planted set, then time and peak
memory of an export of 10,000 to 100,000 rows.

    .venv/bin/python bench/clean_bench.py [--rows 10000,30000,100000] [--shared ../shared/data/medec]

Planted set (`synthtrace.testing.planted`): 200 generated evaluation documents, training texts that
hold each of them verbatim, with 3 words changed, or with their sentences reordered (inside words
of their own), and 400 clean texts that share only boilerplate sentences with them; the same kinds
on MEDEC-MS test notes, with the validation notes as the clean ones, when `--shared` has them.
Rates are at the defaults (13-grams, 8-grams for short items, overlap ≥ 0.1) and, for the clean
texts, also with any shared 13-gram (`--min-overlap 0`).

Scale: a completions run of ROWS rows (prompt and completion of about 180 words each; 1 % of the
prompts hold an evaluation document, 1 % repeat an earlier prompt with one word changed), through
`synthtrace export sft RUN --decontaminate-against EVAL --dedup question` as a child process, with
its peak RSS. EVAL is 1,000 generated documents. Writes bench/results-clean.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from fake_server import child_env
from run_bench import run_cli

from synthtrace.quality.contamination import ContaminationIndex, eval_items
from synthtrace.testing.planted import Corpus

REPO = Path(__file__).resolve().parents[1]


def rate(index: ContaminationIndex, texts: list[str]) -> float:
    return round(sum(index.find(t) is not None for t in texts) / len(texts), 4)


def planted(work: Path, shared: Path) -> dict[str, Any]:
    corpus = Corpus()
    evals = [corpus.document() for _ in range(200)]
    path = work / "planted.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": t}) + "\n" for i, t in enumerate(evals)))
    clean = [corpus.wrapped(corpus.document()) for _ in range(400)]
    sets = {"generated": (path, evals, clean)}
    test_csv = shared / "MEDEC-MS-TestSet-with-GroundTruth-and-ErrorType.csv"
    val_csv = shared / "MEDEC-MS-ValidationSet-with-GroundTruth-and-ErrorType.csv"
    if test_csv.exists() and val_csv.exists():
        notes = [t for _, field, t in eval_items(test_csv) if field == "Text"]
        sets["MEDEC-MS test notes"] = (test_csv, notes, [t for _, f, t in eval_items(val_csv) if f == "Text"])
    out: dict[str, Any] = {}
    for name, (source, items, others) in sets.items():
        index = ContaminationIndex.build([source], cache=False)
        strict = ContaminationIndex.build([source], min_overlap=0.0, cache=False)
        out[name] = {"items": len(items), "recall": {
            "verbatim": rate(index, [corpus.wrapped(t) for t in items]),
            "3 words changed": rate(index, [corpus.wrapped(corpus.changed(t)) for t in items]),
            "sentences reordered": rate(index, [corpus.wrapped(corpus.reordered(t)) for t in items])},
            "clean": len(others), "false_positives": rate(index, others),
            "false_positives_any_shared_13gram": rate(strict, others)}
        print(json.dumps({name: out[name]}), flush=True)
    return out


def write_run(path: Path, rows: int, evals: list[str], corpus: Corpus) -> None:
    path.mkdir(parents=True, exist_ok=True)
    earlier: list[str] = []
    with open(path / "rows.jsonl", "wb") as f:
        for i in range(rows):
            roll = corpus.rnd.random()
            if roll < 0.01:
                prompt = corpus.wrapped(corpus.rnd.choice(evals))
            elif roll < 0.02 and earlier:
                prompt = corpus.changed(corpus.rnd.choice(earlier), 1)
            else:
                prompt = corpus.document()
            if len(earlier) < 2000:
                earlier.append(prompt)
            row = {"id": f"r{i}", "prompt": prompt, "completion": corpus.document(),
                   "provenance": {"recipe": "completions", "record_id": f"r{i}"}}
            f.write(orjson.dumps(row) + b"\n")


def scale(work: Path, sizes: list[int]) -> list[dict[str, Any]]:
    corpus = Corpus(seed=2)
    evals = [corpus.document() for _ in range(1000)]
    eval_path = work / "eval.jsonl"
    eval_path.write_text("".join(json.dumps({"id": f"e{i}", "question": t}) + "\n" for i, t in enumerate(evals)))
    env = {**child_env(), "XDG_CACHE_HOME": str(work / "cache")}
    results = []
    for n in sizes:
        run = work / f"run-{n}"
        write_run(run, n, evals, corpus)
        out = work / f"sft-{n}.jsonl"
        cmd = [sys.executable, "-m", "synthtrace.cli", "export", "sft", str(run), "--out", str(out),
               "--val-fraction", "0", "--decontaminate-against", str(eval_path), "--dedup", "question"]
        measured = run_cli(cmd, None, 1800, work / f"export-{n}.log", env=env)
        reasons: dict[str, int] = {}
        for line in out.with_name(f"sft-{n}.removed.jsonl").read_bytes().splitlines():
            reason = orjson.loads(line)["reason"]
            reasons[reason] = reasons.get(reason, 0) + 1
        results.append({"rows": n, "exit_code": measured["exit_code"], "wall_s": round(measured["wall_s"], 1),
                        "rows_per_s": round(n / measured["wall_s"]), "peak_rss_mb": round(measured["peak_rss_mb"], 1),
                        "removed": reasons})
        print(json.dumps(results[-1]), flush=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="10000,30000,100000")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data" / "medec")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clean-bench-"))
    report = {"planted": planted(work, args.shared), "scale": scale(work, [int(x) for x in args.rows.split(",")])}
    (REPO / "bench" / "results-clean.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["exit_code"] == 0 for r in report["scale"]) else 1


if __name__ == "__main__":
    sys.exit(main())
