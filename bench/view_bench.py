"""How fast `synthtrace view` opens a large run and answers a filter.

    .venv/bin/python bench/view_bench.py [--rows 100000] [--rejected 20000] [--repeat 5]

Writes a medec-shaped run (four kinds of rows per note, notes of ~1,200 characters, traces of
~250 words, provenance with two calls each, a fifth of the critics rejected with reasons) into a
temporary directory, then times, in a child process each so that nothing is cached in memory:
building the index the first time, and opening it again (the index exists); and, over HTTP to the
viewer's own server, the questions the page asks when a filter changes (`page` and `facets`
together) for a few filters. Prints the figures and the peak RSS of each step.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import orjson

WORDS = ("patient presents with acute pain fever history of hypertension diabetes examination reveals tenderness "
         "laboratory results show elevated white count imaging demonstrates consolidation treatment started "
         "antibiotics the diagnosis is supported by findings consistent with infection plan follow up").split()
TYPES = ("diagnosis", "management", "treatment", "pharmacotherapy", "causalOrganism")


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def write_run(run: Path, rows: int, rejected: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    run.mkdir(parents=True)
    kinds = ("critic_correct", "critic_error", "generator_correct", "generator_error")
    with open(run / "rows.jsonl", "wb") as f:
        for i in range(rows):
            note, kind = f"ms-{i // 4}", kinds[i % 4]
            error = kind.endswith("error")
            row = {"note_id": f"{note}_{kind}", "role": kind.split("_")[0], "task": "assessment",
                   "note": text(rng, 180), "reasoning": f"<reasoning>{text(rng, 250)}</reasoning>",
                   "label": "ERROR" if error else "CORRECT", "answer": text(rng, 20),
                   "prompt": {"system": "You review notes.", "user": text(rng, 200)},
                   "verified": rng.random() < 0.8 if kind.startswith("critic") else None,
                   "attempts": rng.randint(1, 3), "hinted": False,
                   "provenance": {"recipe": "medec", "record_id": note, "source_note_id": note,
                                  "calls": [{"model": "gpt4o", "key": f"{rng.getrandbits(128):032x}",
                                             "prompt_tokens": 700, "completion_tokens": 400, "cost_usd": 0.004}] * 2,
                                  "prompt_tokens": 1400, "completion_tokens": 800,
                                  "cost_usd": round(rng.uniform(0.002, 0.02), 6)}}
            if error:
                row["error_type"] = TYPES[i % 5]
                row["error_details"] = {"error_sentence": text(rng, 12), "corrected_sentence": text(rng, 12)}
            f.write(orjson.dumps(row) + b"\n")
    with open(run / "rejected.jsonl", "wb") as f:
        for i in range(rejected):
            f.write(orjson.dumps({"id": f"ms-{i}", "record_id": f"ms-{i}", "part": f"ms-{i}_critic_error",
                                  "reason": f"critic not verified after 3 attempt(s): wrong sentence: "
                                            f"{rng.randint(0, 9)}, expected {rng.randint(0, 9)}",
                                  "source": "notes.csv", "line": i + 2,
                                  "attempts": [{"verified": False, "problem": text(rng, 10)}] * 3}) + b"\n")
    (run / "manifest.json").write_text(json.dumps({"recipe": "medec", "recipe_ref": "medec", "status": "complete"}))


CHILD = """
import resource, sys, time
from pathlib import Path
t = time.perf_counter()
from synthtrace.view.index import RunIndex
index = RunIndex(Path(sys.argv[1]))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

FILTERS = {
    "none": {"kind": "row"},
    "role = critic": {"kind": "row", "fields": {"role": {"in": ["critic"]}}},
    "verified and diagnosis": {"kind": "row", "fields": {"verified": {"in": ["true"]},
                                                         "error_type": {"in": ["diagnosis"]}}},
    "cost range": {"kind": "row", "fields": {"provenance.cost_usd": {"min": 0.01, "max": 0.015}}},
    "search 'consolidation infection'": {"kind": "row", "q": "consolidation infection"},
    "rejected, one reason": {"kind": "rejected", "fields": {
        "reason_group": {"in": ["critic not verified after # attempt(s): wrong sentence: #, expected #"]}}},
}


def open_time(run: Path) -> tuple[float, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(run)], capture_output=True, text=True, check=True)
    seconds, rss = done.stdout.split()
    return float(seconds), float(rss)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rejected", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t = time.perf_counter()
        write_run(run, args.rows, args.rejected)
        size = sum(p.stat().st_size for p in run.iterdir()) / 1e6
        print(f"run: {args.rows:,} rows + {args.rejected:,} rejected, {size:,.0f} MB "
              f"(written in {time.perf_counter() - t:.1f} s)")
        build, rss = open_time(run)
        print(f"first open (builds the index): {build:.2f} s, peak RSS {rss:.0f} MB, "
              f"index {(run / 'view-index.db').stat().st_size / 1e6:,.0f} MB")
        opens = [open_time(run) for _ in range(args.repeat)]
        print(f"open again: median {statistics.median(o[0] for o in opens):.3f} s "
              f"(min {min(o[0] for o in opens):.3f}, max {max(o[0] for o in opens):.3f}), "
              f"peak RSS {max(o[1] for o in opens):.0f} MB")

        from synthtrace.view.server import ViewServer

        server = ViewServer([run], port=0)
        import threading

        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            for name, spec in FILTERS.items():
                q = urllib.parse.quote(json.dumps(spec))
                times, total = [], None
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    with urllib.request.urlopen(f"{server.url}api/0/page?spec={q}&size=50") as r:
                        total = json.loads(r.read())["total"]
                    with urllib.request.urlopen(f"{server.url}api/0/facets?spec={q}") as r:
                        r.read()
                    times.append(time.perf_counter() - t)
                print(f"filter {name!r}: {total:,} matches, page + counts in median "
                      f"{statistics.median(times):.3f} s (max {max(times):.3f})")
        finally:
            server.close()
        print(f"this process's peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
