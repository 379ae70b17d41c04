"""How fast is the fake server itself? A self-check so the benchmarks are never bottlenecked by it.

    python bench/server_check.py [--requests 20000] [--concurrency 200] [--latency 0.05]

Starts the fake provider pinned to CPU 0, hammers it from this process (aiohttp on uvloop, pinned to
CPU 1) and reports the client's achieved rate and the server's capacity: requests answered per
second of server CPU, i.e. what one core can serve. Scenario B needs about 4,000 req/s. The client
is a bare aiohttp loop, so its rate and CPU per request are also the ceiling any aiohttp client,
synthtrace included, can reach on this machine: read the scenarios' figures against it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import aiohttp
import orjson
from fake_server import FakeServerProcess

NEEDED_RPS = 4000.0  # scenario B: concurrency 200 / latency 0.05 s


async def _load(url: str, requests: int, concurrency: int) -> tuple[int, float, float]:
    """Send `requests` chat completions with `concurrency` workers; (answers verified, seconds, client CPU s)."""
    queue = iter(range(requests))
    good = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal good
            for i in queue:
                prompt = f"check {i}"
                payload = orjson.dumps({"model": "fake", "messages": [{"role": "user", "content": prompt}]})
                async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as resp:
                    data = orjson.loads(await resp.read())
                good += data["choices"][0]["message"]["content"] == "echo: " + prompt

        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return good, time.perf_counter() - started, time.process_time() - cpu_started


def run_check(requests: int = 20000, concurrency: int = 200, latency: float = 0.05,
              pin: bool = True) -> dict[str, Any]:
    """Measure the server; returns the figures (also used by run_bench.py)."""
    two_cpus = pin and (os.cpu_count() or 1) >= 2
    with FakeServerProcess(latency=latency, cpu=0 if two_cpus else None) as server:
        if two_cpus and hasattr(os, "sched_setaffinity"):
            before_affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {1})
        cpu_before = server.cpu_seconds()
        try:
            import uvloop
            good, seconds, client_cpu = uvloop.run(_load(server.url + "/v1/chat/completions", requests, concurrency))
        except ImportError:
            good, seconds, client_cpu = asyncio.run(_load(server.url + "/v1/chat/completions", requests, concurrency))
        cpu_after = server.cpu_seconds()
        if two_cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, before_affinity)
    server_cpu = (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else None
    capacity = requests / server_cpu if server_cpu else None
    return {
        "requests": requests, "concurrency": concurrency, "latency_s": latency,
        "verified": good, "wall_s": round(seconds, 3), "achieved_rps": round(requests / seconds, 1),
        # the bare aiohttp loop is the floor any aiohttp client pays: a measure of this machine's speed
        "client_cpu_s_per_1000": round(client_cpu / requests * 1000, 4),
        "ideal_rps": concurrency / latency if latency else None,
        "server_cpu_s": round(server_cpu, 3) if server_cpu is not None else None,
        "server_capacity_rps_per_core": round(capacity, 1) if capacity else None,
        "server_core_share_at_4000_rps": round(NEEDED_RPS / capacity, 3) if capacity else None,
        "ok": bool(capacity and capacity >= NEEDED_RPS and good == requests),
        "server_stats": server.stats,
    }


def describe(result: dict[str, Any]) -> str:
    capacity = result["server_capacity_rps_per_core"]
    share = result["server_core_share_at_4000_rps"]
    return (f"server check: {result['requests']} requests at concurrency {result['concurrency']}, "
            f"latency {result['latency_s']} s: bare aiohttp client achieved {result['achieved_rps']:.0f} req/s "
            f"(ideal {result['ideal_rps'] or 0:.0f}) at {result['client_cpu_s_per_1000']:.3f} CPU s per 1,000 "
            f"requests, {result['verified']} answers verified; "
            f"server used {result['server_cpu_s']} CPU s -> capacity {capacity or 0:.0f} req/s per core "
            f"({(share or 0) * 100:.0f}% of a core at {NEEDED_RPS:.0f} req/s) "
            f"[{'OK' if result['ok'] else 'TOO SLOW'}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to separate CPUs")
    args = parser.parse_args()
    print(describe(run_check(args.requests, args.concurrency, args.latency, pin=not args.no_pin)))


if __name__ == "__main__":
    main()
