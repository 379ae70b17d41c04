"""Throughput of the embedded model: one request at a time against eight at once, in one run.

    python bench/local_model.py [--prompts 32] [--concurrency 8] [--max-tokens 128] [--threads N] [--model PATH]

The same GGUF (default: the bundled SmolLM2-135M Q4_1), the same prompts, each answer exactly
`--max-tokens` long (`ignore_eos`), greedy. First sequentially, through a `LocalClient` with one
slot; then with `--concurrency` requests in flight, through a client whose server has that many
slots (llama.cpp decodes them together). Prints generated tokens per second for both, their
ratio, and the process's peak RSS. Exit status 0 when the ratio is at least 1.7.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

from synthtrace.llm.local import LocalClient, default_model_path
from synthtrace.types import ChatRequest

TOPICS = ["the history of the bicycle", "how a refrigerator keeps food cold", "a walk through a forest in autumn",
          "tips for learning a new language", "a robot who learns to paint", "why the sky is blue",
          "how bread rises", "the life of a honeybee"]


def prompts(n: int) -> list[str]:
    return [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} (paragraph {i + 1})." for i in range(n)]


async def generate(client: LocalClient, texts: list[str], concurrency: int, max_tokens: int) -> tuple[int, float]:
    """(completion tokens, seconds) for every prompt, `concurrency` at a time; the model is loaded first."""
    await client.chat(ChatRequest("local", [{"role": "user", "content": "Hi."}], {"max_tokens": 1}))
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> int:
        async with gate:
            req = ChatRequest("local", [{"role": "user", "content": text}],
                              {"max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True})
            return (await client.chat(req)).usage.completion_tokens

    started = time.perf_counter()
    tokens = await asyncio.gather(*(one(t) for t in texts))
    return sum(tokens), time.perf_counter() - started


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default=None, help="a GGUF file (default: the bundled SmolLM2-135M)")
    args = ap.parse_args()
    model = args.model or default_model_path()
    texts = prompts(args.prompts)
    figures = {}
    for label, slots in (("sequential", 1), (f"{args.concurrency} at once", args.concurrency)):
        client = LocalClient(model_path=model, n_threads=args.threads, max_concurrency=slots)
        try:
            tokens, seconds = await generate(client, texts, slots, args.max_tokens)
        finally:
            await client.aclose()
        figures[label] = tokens / seconds
        print(f"{label:>12}: {tokens:,} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s")
    ratio = figures[f"{args.concurrency} at once"] / figures["sequential"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'ratio':>12}: {ratio:.2f}x  (model {model}; {args.prompts} prompts of {args.max_tokens} tokens; "
          f"peak RSS {peak_mb:.0f} MB)")
    return 0 if ratio >= 1.7 else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
