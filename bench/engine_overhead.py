"""The engine's own CPU per request, with no HTTP at all: what synthtrace adds to every call.

    python bench/engine_overhead.py [--records 20000] [--concurrency 200] [--repeat 3]

Runs `synthtrace run completions` in this process (the runner, gateway, journal, limiter, store and
progress as a real run uses them) against an in-memory client that answers at once, so every CPU
second is the engine's: reading input, keying and journaling each call, budgets and limits, rows
with provenance. The HTTP stack comes on top (server_check.py measures a bare loop over synthtrace's
connection pool on the same machine). Prints the best of --repeat runs, pinned to one CPU where possible.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import orjson

from synthtrace.config import Config, Endpoint
from synthtrace.engine import gateway as gateway_mod
from synthtrace.engine.runner import RunSettings, run_recipe
from synthtrace.recipes.completions import CompletionsRecipe
from synthtrace.types import ChatRequest, ChatResult, Usage


class InstantClient:
    """Answers every request at once (after one trip through the event loop), like a server with no
    latency and no HTTP."""

    name = "instant"
    native_schema = False
    max_concurrency = None

    async def chat(self, req: ChatRequest) -> ChatResult:
        await asyncio.sleep(0)
        prompt = req.messages[-1]["content"]
        return ChatResult(text="echo: " + prompt, usage=Usage(len(prompt) // 4, 8), finish_reason="stop",
                          model=req.model)

    async def aclose(self) -> None:
        pass


def one_run(records: int, concurrency: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run over `records` fresh prompts."""
    with tempfile.TemporaryDirectory(prefix="synthtrace-overhead-") as tmp:
        inp = Path(tmp) / "prompts.jsonl"
        with inp.open("wb") as f:
            for i in range(records):
                f.write(orjson.dumps({"id": f"r{i}", "prompt": f"Summarise item {i} in one line."}) + b"\n")
        config = Config(endpoints={"instant": Endpoint(kind="openai", base_url="http://unused.invalid/v1")},
                        default_endpoint="instant")
        settings = RunSettings(input=inp, output=Path(tmp) / "out", model="fake", quiet=True,
                               concurrency=concurrency)
        cpu, wall = time.process_time(), time.perf_counter()
        result = asyncio.run(run_recipe(CompletionsRecipe(), settings, config))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert result.rows_written == records and result.records_rejected == 0, result
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    gateway_mod.build_clients = lambda name, resolved, concurrency=None: [("", InstantClient())]
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    runs = [one_run(args.records, args.concurrency) for _ in range(args.repeat)]
    cpu, wall = min(runs)
    print(f"engine overhead: {cpu / args.records * 1e6:.0f} µs CPU per request "
          f"(best of {args.repeat}: {args.records:,} requests in {cpu:.2f} CPU s, {wall:.2f} s wall; "
          f"all runs: {', '.join(f'{c / args.records * 1e6:.0f}' for c, _ in runs)} µs)")


if __name__ == "__main__":
    main()
