"""How fast is the fake server itself? A self-check so the benchmarks are never bottlenecked by it.

    python bench/server_check.py [--requests 20000] [--concurrency 200] [--latency 0.05]

Starts the fake provider pinned to CPU 0 and hammers it from this process (uvloop, pinned to CPU 1)
twice: with a bare aiohttp client loop and with a bare loop over synthtrace's own connection pool
(`synthtrace.llm.http`, the transport every remote call uses). Reports each client's achieved rate
and CPU per request, and the server's capacity: requests answered per second of server CPU, i.e.
what one core can serve. Scenario B needs about 4,000 req/s. The bare loops are also a measure of
the machine: synthtrace's figures in the scenarios are the pool loop's plus the engine's own work
(bench/engine_overhead.py), and the aiohttp loop shows what an aiohttp-based client would start from.
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

from synthtrace.llm.http import ConnectionPool

NEEDED_RPS = 4000.0  # scenario B: concurrency 200 / latency 0.05 s


async def _load(url: str, requests: int, concurrency: int, client: str) -> tuple[int, float, float]:
    """Send `requests` chat completions with `concurrency` workers; (answers verified, seconds, client CPU s)."""
    queue = iter(range(requests))
    good = 0
    if client == "aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def post(payload: bytes) -> bytes:
            async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as resp:
                return await resp.read()
        close = session.close
    else:
        pool = ConnectionPool({"Content-Type": "application/json"})

        async def post(payload: bytes) -> bytes:
            return (await pool.request("POST", url, payload)).body
        close = pool.aclose

    async def worker() -> None:
        nonlocal good
        for i in queue:
            prompt = f"check {i}"
            payload = orjson.dumps({"model": "fake", "messages": [{"role": "user", "content": prompt}]})
            data = orjson.loads(await post(payload))
            good += data["choices"][0]["message"]["content"] == "echo: " + prompt

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await close()
    return good, seconds, cpu


def run_check(requests: int = 20000, concurrency: int = 200, latency: float = 0.05,
              pin: bool = True) -> dict[str, Any]:
    """Measure the server and both bare client loops; returns the figures (also used by run_bench.py)."""
    two_cpus = pin and (os.cpu_count() or 1) >= 2
    clients: dict[str, dict[str, Any]] = {}
    with FakeServerProcess(latency=latency, cpu=0 if two_cpus else None) as server:
        if two_cpus and hasattr(os, "sched_setaffinity"):
            before_affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {1})
        cpu_before = server.cpu_seconds()
        url = server.url + "/v1/chat/completions"
        for client in ("aiohttp", "synthtrace"):
            good, seconds, client_cpu = _run(_load(url, requests, concurrency, client))
            clients[client] = {"verified": good, "wall_s": round(seconds, 3),
                               "achieved_rps": round(requests / seconds, 1),
                               "cpu_s_per_1000": round(client_cpu / requests * 1000, 4)}
        cpu_after = server.cpu_seconds()
        if two_cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, before_affinity)
    server_cpu = (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else None
    capacity = 2 * requests / server_cpu if server_cpu else None
    return {
        "requests": requests, "concurrency": concurrency, "latency_s": latency,
        "ideal_rps": concurrency / latency if latency else None,
        # the bare loops are a measure of this machine's speed; synthtrace's transport is its floor
        "bare_clients": clients,
        "server_cpu_s": round(server_cpu, 3) if server_cpu is not None else None,
        "server_capacity_rps_per_core": round(capacity, 1) if capacity else None,
        "server_core_share_at_4000_rps": round(NEEDED_RPS / capacity, 3) if capacity else None,
        "ok": bool(capacity and capacity >= NEEDED_RPS and all(c["verified"] == requests for c in clients.values())),
        "server_stats": server.stats,
    }


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def describe(result: dict[str, Any]) -> str:
    capacity = result["server_capacity_rps_per_core"]
    share = result["server_core_share_at_4000_rps"]
    loops = "; ".join(
        f"bare {name} loop {c['achieved_rps']:.0f} req/s at {c['cpu_s_per_1000']:.3f} CPU s per 1,000 "
        f"({c['verified']} verified)" for name, c in result["bare_clients"].items())
    return (f"server check: {result['requests']} requests x 2 at concurrency {result['concurrency']}, "
            f"latency {result['latency_s']} s (ideal {result['ideal_rps'] or 0:.0f} req/s): {loops}; "
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
