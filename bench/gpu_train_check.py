"""GPU check of the training path: a tiny Qwen3 model trained in bf16 through `synthtrace train`'s code.

    python bench/gpu_train_check.py                       # CUDA + bf16: 60 steps, then merge and generate
    python bench/gpu_train_check.py --base DIR --steps 20 # a real model directory instead of the tiny one
    python bench/gpu_train_check.py --cpu --steps 6       # the same path on the CPU in fp32 (checks the script)

Writes synthetic SFT data in the qwen3 export format (system, user, assistant with a `<think>` block of
`--words` words and a verdict), builds the tiny model (unless --base), trains with gradient
checkpointing on, as the defaults do, and prints the loss at the start and the end, optimizer steps
and tokens per second (after the first step), peak GPU memory, then loads base + adapter through the
`hf:` backend and generates a few tokens. Exits 1 when the loss did not go down. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import TrainerCallback

from synthtrace.llm.hf import HFClient
from synthtrace.train.lora import TrainOptions, train
from synthtrace.train.tiny import build_tiny_model
from synthtrace.types import ChatRequest

WORDS = ("patient", "fever", "cough", "aspirin", "insulin", "asthma", "sentence", "dose", "renal", "pressure",
         "history", "finding", "culture", "treatment", "diagnosis", "infarction", "wheeze", "because", "so", "the")
SYSTEM = "You review clinical notes for medical errors."


def synthetic_examples(n: int, words: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(n):
        note = " ".join(rng.choice(WORDS) for _ in range(40))
        reasoning = " ".join(rng.choice(WORDS) for _ in range(words))
        verdict = "Verdict: CORRECT" if i % 2 else f"Verdict: ERROR\nError sentence: {i % 5}"
        out.append({"messages": [{"role": "system", "content": SYSTEM},
                                 {"role": "user", "content": f"Review this note.\n\n{note}"},
                                 {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{verdict}"}]})
    return out


class Clock(TrainerCallback):
    """Wall time of every optimizer step after the first (which pays for warm-up and kernel selection)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--words", type=int, default=300, help="words of reasoning per example")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--base", help="a model directory to train instead of the tiny model")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU in fp32 (no GPU needed)")
    ap.add_argument("--keep", help="work in this directory and keep it (default: a temporary one, removed)")
    a = ap.parse_args()
    if not a.cpu and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or pass --cpu for an fp32 run of the same path", file=sys.stderr)
        return 2

    work = Path(a.keep or tempfile.mkdtemp(prefix="gpu-train-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return check(a, work)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


def check(a: argparse.Namespace, work: Path) -> int:
    rng = random.Random(0)
    examples = synthetic_examples(a.examples, a.words, rng)
    data = work / "sft.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in examples))
    t0 = time.perf_counter()
    base = a.base or str(build_tiny_model(work / "base", [m["content"] for e in examples for m in e["messages"]],
                                          vocab_size=2048, hidden_size=a.hidden, layers=a.layers,
                                          heads=max(1, a.hidden // 64), kv_heads=max(1, a.hidden // 128)))
    built_s = time.perf_counter() - t0

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    clock = Clock()
    opts = TrainOptions(data=data, base=base, output=work / "out", max_steps=a.steps, lr=a.lr, bf16=not a.cpu,
                        batch_size=a.batch_size, grad_accum=a.grad_accum, max_length=4096, logging_steps=1,
                        save_steps=max(1, a.steps // 2), merge=True, resume=False)
    result = train(opts, callbacks=[clock])
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    intervals = [b - a_ for a_, b in zip(clock.marks, clock.marks[1:])]
    steps_per_s = len(intervals) / sum(intervals) if intervals else float("nan")
    data_tokens = json.loads((work / "out" / "synthtrace-train.json").read_text())["data"]["train"]["tokens"]
    tokens_per_step = data_tokens / max(1, result.train_examples) * a.batch_size * a.grad_accum

    client = HFClient(f"{base}+{result.output}")
    req = ChatRequest("check", examples[0]["messages"][:2], {"max_tokens": 32, "temperature": 0})

    async def generate():
        try:
            return await client.chat(req)
        finally:
            await client.aclose()

    t0 = time.perf_counter()
    reply = asyncio.run(generate())
    gen_s = time.perf_counter() - t0

    first, last = result.losses[0][1], result.losses[-1][1]
    report = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "dtype": result.dtype, "base": base, "build_s": round(built_s, 1), "steps": result.steps,
        "loss_start": round(first, 4), "loss_end": round(last, 4), "steps_per_s": round(steps_per_s, 3),
        "tokens_per_s": round(steps_per_s * tokens_per_step, 1), "peak_gpu_gib": peak_gib and round(peak_gib, 2),
        "train_runtime_s": round(result.runtime_s, 1), "merged": str(result.merged),
        "hf_generate_s": round(gen_s, 2), "hf_completion_tokens": reply.usage.completion_tokens,
        "hf_finish_reason": reply.finish_reason, "hf_has_reasoning": reply.reasoning is not None,
        "versions": {m.__name__: m.__version__ for m in (torch, __import__("transformers"), __import__("trl"),
                                                         __import__("peft"))},
    }
    print(json.dumps(report, indent=2))
    ok = last < first
    print(f"loss {first:.3f} → {last:.3f}: {'went down' if ok else 'DID NOT go down'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
