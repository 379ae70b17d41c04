"""Peer runner: the official openai SDK's AsyncOpenAI, one chat completion per prompt.

The SDK has no batch runner of its own; what its documentation shows for many requests is asyncio:
here an asyncio.Semaphore(N) around `client.chat.completions.create`, all prompts gathered at once.
Retries are the SDK's own: `max_retries=6` (its default is 2) with its exponential backoff, which
honours Retry-After, on connection errors, 408, 409, 429 and 5xx; `timeout=60` s per attempt.

`--http httpx` (the default) is the SDK's own transport (httpx2 since openai 3) with its default
pool: at most 1,000 connections, 100 kept idle; a pool sized to the concurrency made no difference
in scenario B. `--http aiohttp` is `DefaultAioHttpClient` (the `openai[aiohttp]` extra), which the
SDK's README recommends "for improved concurrency performance"; peers.py runs it as the tool
"openai-aiohttp".

A 200 answer whose body is not JSON is not retried by the SDK: with its default (non-strict)
response validation `create` returns the body as a str. Such a prompt counts as failed here.
See common.py for the command line.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from common import isolate, parse_args, read_prompts, report, write_rows

TIMEOUT_S = 60.0
MAX_RETRIES = 6


async def generate(args, prompts: list[dict[str, str]]) -> tuple[list[tuple[str, str]], Counter[str]]:
    from openai import APIError, AsyncOpenAI, DefaultAioHttpClient
    from openai.types.chat import ChatCompletion

    http_client = DefaultAioHttpClient() if args.http == "aiohttp" else None  # None: the SDK's own httpx client
    client = AsyncOpenAI(base_url=args.base_url, max_retries=MAX_RETRIES, timeout=TIMEOUT_S, http_client=http_client)
    gate = asyncio.Semaphore(args.concurrency)
    failures: Counter[str] = Counter()

    async def one(prompt: str) -> str | None:
        async with gate:
            try:
                answer = await client.chat.completions.create(
                    model=args.model, messages=[{"role": "user", "content": prompt}])
            except APIError as e:  # retries exhausted, or not retryable
                failures[type(e).__name__] += 1
                return None
        if not isinstance(answer, ChatCompletion):  # a non-JSON body, handed back as text
            failures["non-JSON body"] += 1
            return None
        return answer.choices[0].message.content

    async with client:
        answers = await asyncio.gather(*(one(p["prompt"]) for p in prompts))
    rows = [(p["id"], text) for p, text in zip(prompts, answers) if text is not None]
    return rows, failures


def main() -> None:
    args = parse_args(__doc__.split("\n")[0], extra=lambda parser: parser.add_argument(
        "--http", choices=("httpx", "aiohttp"), default="httpx", help="the SDK's transport (default: httpx)"))
    isolate(args.cache_dir)
    prompts = read_prompts(args.input)
    started = time.perf_counter()
    rows, failures = asyncio.run(generate(args, prompts))
    write_rows(args.output, rows)
    import openai

    report(tool="openai" if args.http == "httpx" else "openai-aiohttp", version=openai.__version__, http=args.http,
           prompts=len(prompts), rows=len(rows), failed=sum(failures.values()), failures=dict(failures),
           seconds=round(time.perf_counter() - started, 3))


if __name__ == "__main__":
    main()
