"""Peer runner: a distilabel Pipeline, LoadDataFromDicts >> TextGeneration with OpenAILLM.

The way distilabel's documentation shows for an OpenAI-compatible server: `OpenAILLM(base_url=...,
model=...)` inside a `TextGeneration` task. distilabel runs every step in its own process and hands
the task its rows in batches of `input_batch_size`; an async LLM such as OpenAILLM sends a whole
batch at once (asyncio.gather) and the next batch starts when the last answer of this one is in.
So `input_batch_size` is its concurrency knob, set to the scenario's concurrency, and the loader
emits batches of the same size. There is no other limit on requests in flight to set. (More
`replicas` of the task would add processes; each tool here gets one core.)

Retries are those of the openai SDK client that OpenAILLM builds: `max_retries=6` (distilabel's
default) on connection errors, 429 and 5xx, `timeout=60` s. When a request of a batch still fails,
distilabel logs a warning and gives every row of that batch an empty (None) generation; those rows
count as failed here. When some batches failed and others did not, building the Distiset at the end
can raise (pyarrow will not cast the failed batches' all-None column to string); the runner then
exits 1 without rows. The pipeline's cache is off (`use_cache=False`) and lives in a fresh directory
per run. See common.py for the command line.
"""

from __future__ import annotations

import time

from common import isolate, parse_args, read_prompts, report, write_rows

TIMEOUT_S = 60
MAX_RETRIES = 6


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    isolate(args.cache_dir)
    import distilabel
    from distilabel.models.llms import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    prompts = read_prompts(args.input)
    started = time.perf_counter()
    with Pipeline(name="peers-bench", cache_dir=args.cache_dir / "distilabel") as pipeline:
        load = LoadDataFromDicts(
            data=[{"id": p["id"], "instruction": p["prompt"]} for p in prompts], batch_size=args.concurrency)
        generate = TextGeneration(
            llm=OpenAILLM(model=args.model, base_url=args.base_url, max_retries=MAX_RETRIES, timeout=TIMEOUT_S),
            input_batch_size=args.concurrency)
        load >> generate
    distiset = pipeline.run(use_cache=False)
    rows = [(r["id"], r["generation"]) for r in distiset["default"]["train"] if r.get("generation") is not None]
    write_rows(args.output, rows)
    report(tool="distilabel", version=distilabel.__version__, prompts=len(prompts), rows=len(rows),
           failed=len(prompts) - len(rows), seconds=round(time.perf_counter() - started, 3))


if __name__ == "__main__":
    main()
