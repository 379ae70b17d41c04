"""Peer runner: bespokelabs curator's `curator.LLM`, online (not batch) with the "openai" backend.

The way curator's documentation shows: a subclass of `curator.LLM` whose `prompt` builds the user
message from a row and whose `parse` keeps the row's id beside the answer, called once on the
whole dataset. The backend parameters:

* `base_url`: the fake server; curator appends /chat/completions and sends with aiohttp.
* `max_concurrent_requests`: the scenario's concurrency.
* `max_requests_per_minute` / `max_tokens_per_minute`: far above anything reached here (B's 4,000
  requests/s is 240,000 a minute; curator counts 4,096 output tokens for a model it does not
  know), so that its own limiter never holds a request back.
* `max_retries`: curator's default, 10. `request_timeout`: 60 s, as for the other tools.
* `require_all_responses=False`: failed prompts come back missing instead of the call raising.

Curator keeps every run in a cache keyed by the dataset and the code; here the cache lives in a
fresh directory per run (`--cache-dir`), so nothing is answered from an earlier run. Before its
first real request curator sends one request with an empty message list, to read rate-limit headers
(the fake server answers it 400). See common.py for the command line.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

from common import isolate, parse_args, read_prompts, report, write_rows

REQUESTS_PER_MINUTE = 100_000_000
TOKENS_PER_MINUTE = 1_000_000_000_000


def use_bundled_tokenizer() -> None:
    """Point tiktoken at the copy of cl100k_base that litellm (a curator dependency) ships.

    Curator's openai backend counts each request's input tokens with tiktoken's cl100k_base,
    which tiktoken otherwise downloads on first use; this machine reaches no such host. litellm
    does the same for itself when its own tokenizer module loads."""
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(spec.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers"
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    isolate(args.cache_dir)  # before curator's import: it reads its telemetry switch then
    use_bundled_tokenizer()
    from bespokelabs import curator
    from datasets import Dataset

    class Echo(curator.LLM):
        def prompt(self, row):
            return row["prompt"]

        def parse(self, row, response):
            return {"id": row["id"], "completion": response}

    prompts = read_prompts(args.input)
    started = time.perf_counter()
    llm = Echo(model_name=args.model, backend="openai", backend_params={
        "base_url": args.base_url,
        "max_concurrent_requests": args.concurrency,
        "max_requests_per_minute": REQUESTS_PER_MINUTE,
        "max_tokens_per_minute": TOKENS_PER_MINUTE,
        "request_timeout": 60,
        "require_all_responses": False,
    })
    response = llm(Dataset.from_list(prompts), working_dir=str(args.cache_dir / "curator"))
    rows = [(r["id"], r["completion"]) for r in response.dataset if r.get("completion") is not None]
    write_rows(args.output, rows)
    report(tool="curator", version=curator.__version__, prompts=len(prompts), rows=len(rows),
           failed=len(prompts) - len(rows), seconds=round(time.perf_counter() - started, 3))


if __name__ == "__main__":
    main()
