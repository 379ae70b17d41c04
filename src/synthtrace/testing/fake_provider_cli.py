"""Command line of the fake provider, for benchmarks and for pointing CLIs at by hand.

    python -m synthtrace.testing.fake_provider --port 0 --latency 0.05 \\
        [--max-in-flight 50 --retry-after 1] [--rate-500 0.05 --rate-malformed 0.02] [--seed 1] \\
        [--batch-complete-after 2 --batch-finalizing 1 --batch-errored 0.01 --batch-expired 0.01] \\
        [--stats-file PATH]

Prints ``READY http://127.0.0.1:PORT`` (flushed) once listening, serves on uvloop when it is
installed, and on SIGTERM or SIGINT writes `FakeProvider.stats()` as JSON to the stats file and exits.
Requests are counted, not recorded one by one, so the server stays lean under benchmark load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import orjson

from synthtrace.testing.fake_provider import FakeProvider


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m synthtrace.testing.fake_provider",
                                description="A fake LLM provider server for benchmarks.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added before every answer")
    p.add_argument("--max-in-flight", type=int, default=None, help="answer 429 beyond this many concurrent requests")
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds sent with 429s")
    p.add_argument("--rate-500", type=float, default=0.0, help="fraction of requests answered HTTP 500")
    p.add_argument("--rate-429", type=float, default=0.0, help="fraction of requests answered HTTP 429")
    p.add_argument("--rate-malformed", type=float, default=0.0, help="fraction answered 200 with a non-JSON body")
    p.add_argument("--rate-truncated", type=float, default=0.0, help="fraction answered 200 with half a JSON body")
    p.add_argument("--rate-drop", type=float, default=0.0, help="fraction whose connection is closed unanswered")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reasoning", action="store_true", help="add reasoning to every answer")
    p.add_argument("--stats-file", default=None, help="write JSON stats here on SIGTERM/SIGINT")
    # the batch APIs (fake_batches): how long a batch takes, and what share of its items fail
    p.add_argument("--batch-complete-after", type=float, default=0.0, help="seconds until a batch's items are answered")
    p.add_argument("--batch-finalizing", type=float, default=0.0, help="seconds a batch then spends finalizing")
    p.add_argument("--batch-errored", type=float, default=0.0, help="fraction of batch items answered errored")
    p.add_argument("--batch-expired", type=float, default=0.0, help="fraction of batch items that expire")
    return p.parse_args(argv)


async def _serve_until_signalled(args: argparse.Namespace) -> dict[str, Any]:
    rates = {"500": args.rate_500, "429": args.rate_429, "malformed": args.rate_malformed,
             "truncated": args.rate_truncated, "drop": args.rate_drop}
    fp = FakeProvider(host=args.host, port=args.port, latency=args.latency, max_in_flight=args.max_in_flight,
                      retry_after_s=args.retry_after, fault_rates=rates, seed=args.seed,
                      reasoning=args.reasoning, record=False)
    faults = fp.batch_faults
    faults.complete_after_s, faults.finalizing_s = args.batch_complete_after, args.batch_finalizing
    faults.errored, faults.expired, faults.seed = args.batch_errored, args.batch_expired, args.seed
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await fp.astart()
    sys.stdout.write(f"READY {fp.url}\n")
    sys.stdout.flush()
    await done.wait()
    stats = fp.stats()
    await fp.astop()
    return stats


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        stats = asyncio.run(_serve_until_signalled(args))
    else:
        stats = uvloop.run(_serve_until_signalled(args))
    if args.stats_file:
        tmp = args.stats_file + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2))
        os.replace(tmp, args.stats_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
