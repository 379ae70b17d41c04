"""The whole loop on CPU: the embedded model's own verified traces make it better on held-out problems.

    .venv/bin/python bench/loop.py [--train 600] [--heldout 150] [--samples 8] [--epochs 3] [--out runs/loop]

1. Problems: sums and differences of two small numbers ("What is 31 - 10?"), from a seeded
   generator; the training and held-out sets share no (operation, a, b).
2. Generate: `synthtrace run math` on the training problems with the embedded SmolLM2-135M and no
   system prompt, up to `--samples` answers per problem, keeping the verified ones (at most two).
3. Train: `synthtrace export sft` of those rows, then a LoRA adapter from the embedded model's own
   weights (`train --base local`).
4. Evaluate: `synthtrace eval math` greedy on the held-out problems, the base and the trained
   model under the same backend (`hf:`), and the paired comparison.

Prints each stage's wall time, both pass@1 figures with their 95 % intervals, and the paired
difference with its interval and McNemar's exact p; exit status 0 when that interval excludes zero.
Nothing is tuned on the held-out set. The run dir keeps every stage's output.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

FORMS = ["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {op} {b}."]


def problems(count: int, seed: int, avoid: set[tuple[str, int, int]]) -> tuple[list[dict], set[tuple[str, int, int]]]:
    """`count` sums and differences of two small numbers, none of whose (operation, a, b) is in `avoid`."""
    rng = random.Random(seed)
    out, used = [], set()
    while len(out) < count:
        op, a, b = rng.choice("+-"), rng.randint(2, 40), rng.randint(1, 12)
        if op == "-" and b >= a:
            a, b = b + rng.randint(1, 10), a
        key = (op, a, b)
        if key in avoid or key in used:
            continue
        used.add(key)
        answer = a + b if op == "+" else a - b
        out.append({"id": f"s{seed}-{len(out)}", "question": rng.choice(FORMS).format(a=a, op=op, b=b),
                    "answer": f"#### {answer}"})
    return out, used


def cli(*args: object) -> str:
    done = subprocess.run([sys.executable, "-m", "synthtrace.cli", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"synthtrace {' '.join(map(str, args[:2]))} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--heldout", type=int, default=150)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("runs/loop"))
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    train_set, used = problems(args.train, seed=1, avoid=set())
    heldout, _ = problems(args.heldout, seed=3, avoid=used)
    for name, rows in (("train.jsonl", train_set), ("heldout.jsonl", heldout)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    started = time.monotonic()
    cli("run", "math", "-i", out / "train.jsonl", "-o", out / "generated", "--model", "local", "-q",
        "--k", 2, "--budget", args.samples, "--temperature", args.temperature, "--max-tokens", args.max_tokens,
        "--verifier", "number", "--system", "")
    times["generate"] = time.monotonic() - started
    kept = sum(1 for _ in (out / "generated" / "rows.jsonl").open())

    started = time.monotonic()
    cli("export", "sft", out / "generated", "--format", "messages", "--out", out / "sft.jsonl", "--val-fraction", 0)
    cli("train", "--data", out / "sft.jsonl", "--base", "local", "-o", out / "adapter", "--epochs", args.epochs,
        "--batch-size", 4, "--grad-accum", 1, "--lr", args.lr, "--max-length", 384, "--no-gradient-checkpointing",
        "--save-steps", 1000)
    times["train"] = time.monotonic() - started

    base = out / "adapter" / "base"
    started = time.monotonic()
    cli("eval", "math", "-i", out / "heldout.jsonl", "-o", out / "eval-base", "--model", f"hf:{base}", "-q",
        "--budget", 1, "--max-tokens", args.max_tokens, "--verifier", "number", "--system", "")
    cli("eval", "math", "-i", out / "heldout.jsonl", "-o", out / "eval-trained", "--model",
        f"hf:{base}+{out / 'adapter'}", "-q", "--budget", 1, "--max-tokens", args.max_tokens, "--verifier", "number",
        "--system", "", "--compare", out / "eval-base")
    times["evaluate"] = time.monotonic() - started

    b = json.loads((out / "eval-base" / "metrics.json").read_text())["pass@1"]
    m = json.loads((out / "eval-trained" / "metrics.json").read_text())
    t, c = m["pass@1"], m["compared_with"]
    d = c["difference"]
    print(f"training problems {args.train}, verified traces kept {kept}; held-out problems {args.heldout}")
    print(f"base    pass@1 {b['estimate']:.3f}  [{b['low']:.3f}, {b['high']:.3f}]")
    print(f"trained pass@1 {t['estimate']:.3f}  [{t['low']:.3f}, {t['high']:.3f}]")
    print(f"gain {d['estimate']:+.3f}  [{d['low']:+.3f}, {d['high']:+.3f}]  ({c['b_only']} better, {c['a_only']} worse;"
          f" McNemar exact p = {c['p_value']:.4f})")
    print("wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
          + f"; total {sum(times.values()) / 60:.1f} min")
    return 0 if d["low"] > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
