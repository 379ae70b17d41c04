"""Throughput and memory of the embedded llama.cpp backend on the bundled SmolLM2-135M.

    python bench/local_model.py [--runs 5] [--max-tokens 128] [--threads N] [--model PATH]

Loads the model once, runs a few ~128-token generations through `LocalClient` and reports prompt
evaluation and generation speed (from llama.cpp's own timings) plus the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time

import llama_cpp

from synthtrace.llm.local import LocalClient, default_model_path
from synthtrace.types import ChatRequest

PROMPTS = [
    "Write a short paragraph about the history of the bicycle.",
    "Explain how a refrigerator keeps food cold, in simple terms.",
    "Describe a walk through a forest in autumn.",
    "List some tips for learning a new language and explain each briefly.",
    "Tell a short story about a robot who learns to paint.",
]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def perf(llm: llama_cpp.Llama) -> tuple[float, int, float, int]:
    """(prompt ms, prompt tokens, generation ms, generated tokens) of the last call, per llama.cpp."""
    d = llama_cpp.llama_perf_context(llm._ctx.ctx)
    return d.t_p_eval_ms, d.n_p_eval, d.t_eval_ms, d.n_eval


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    client = LocalClient(model_path=args.model, n_threads=args.threads)
    print(f"model: {client.model_path or default_model_path()}  threads: {client.n_threads}")
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    warm = await client.chat(ChatRequest("local", [{"role": "user", "content": "Hi"}], {"max_tokens": 4}))
    print(f"load + first call: {time.perf_counter() - t0:.2f}s  ({warm.usage.completion_tokens} tokens)")

    pp_rates, tg_rates, walls = [], [], []
    for i in range(args.runs):
        prompt = PROMPTS[i % len(PROMPTS)]
        req = ChatRequest("local", [{"role": "system", "content": "You are a helpful assistant."},
                                    {"role": "user", "content": prompt}],
                          {"max_tokens": args.max_tokens, "temperature": 0.7, "seed": i})
        start = time.perf_counter()
        res = await client.chat(req)
        wall = time.perf_counter() - start
        llm = client._pool._idle[0]
        p_ms, p_n, g_ms, g_n = perf(llm)
        pp = p_n / p_ms * 1000 if p_ms else float("nan")
        tg = g_n / g_ms * 1000 if g_ms else float("nan")
        pp_rates.append(pp)
        tg_rates.append(tg)
        walls.append(res.usage.completion_tokens / wall)
        print(f"run {i}: prompt {res.usage.prompt_tokens:3d} tok ({p_n} evaluated) {pp:7.0f} tok/s | "
              f"gen {res.usage.completion_tokens:3d} tok {tg:6.1f} tok/s | wall {wall:.2f}s "
              f"({res.finish_reason})")
        llama_cpp.llama_perf_context_reset(llm._ctx.ctx)

    # The runs above re-evaluate only the ~18 new tokens (the shared system prompt stays in the KV
    # cache), so prompt speed there is mostly per-batch overhead; a long fresh prompt shows the rate.
    long_prompt = " ".join(PROMPTS) * 8
    await client.chat(ChatRequest("local", [{"role": "user", "content": long_prompt}], {"max_tokens": 1}))
    p_ms, p_n, _, _ = perf(client._pool._idle[0])
    print(f"\nlong prompt eval   : {p_n / p_ms * 1000:8.0f} tok/s ({p_n} tokens in {p_ms:.0f} ms)")
    print(f"median prompt eval : {statistics.median(pp_rates):8.0f} tok/s (short, cache-warm prompts)")
    print(f"median generation  : {statistics.median(tg_rates):8.1f} tok/s")
    print(f"median end-to-end  : {statistics.median(walls):8.1f} completion tok/s (incl. prompt, sampling)")
    print(f"peak RSS           : {peak_rss_mib():8.0f} MiB (before load {rss_before:.0f} MiB)")
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
