"""Three replicas of one model, one answering 429s past its cap and one killed mid-run.

    python bench/replicas_bench.py [--requests 12000] [--latency 0.1] [--concurrency 40] [--kill-at 4]

Three fake servers, each a process of its own: A plain; B answering 429 (Retry-After 1 s) beyond 20
requests at once; C SIGKILLed `--kill-at` seconds after the CLI starts (no clean-up: its connections
and the answers it held vanish). The CLI runs `completions` with `--base-url` given three times and
`--concurrency` per replica. Each replica can serve min(concurrency, its cap) / latency requests a
second while it lives; efficiency = the time those live replicas need at best for every request
(C counted only until its kill) / the CLI's wall time. The run is correct when every id is in
rows.jsonl exactly once with its own answer and nothing is rejected. Writes bench/results-replicas.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from fake_server import FakeServerProcess
from run_bench import run_cli, verify, write_prompts

RESULTS = Path(__file__).resolve().parent / "results-replicas.json"
B_CAP = 20


def ideal_seconds(n: int, rates: list[float], killed_rate: float, kill_at: float) -> float:
    """The least time `n` requests take when every replica serves at its rate, one of them until `kill_at`."""
    everyone = sum(rates) + killed_rate
    if n <= everyone * kill_at:
        return n / everyone
    return kill_at + (n - everyone * kill_at) / sum(rates)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=12000)
    p.add_argument("--latency", type=float, default=0.1)
    p.add_argument("--concurrency", type=int, default=40, help="per replica")
    p.add_argument("--kill-at", type=float, default=4.0, help="seconds after the CLI starts")
    p.add_argument("--no-pin", action="store_true", help="let the servers and the CLI float over the CPUs")
    args = p.parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    server_cpu, cli_cpu = (0, 1) if pin else (None, None)

    work = Path(tempfile.mkdtemp(prefix="replicas-bench-"))
    prompts = write_prompts(work / "in.jsonl", args.requests)
    lat, conc = args.latency, args.concurrency
    with (FakeServerProcess(latency=lat, cpu=server_cpu) as a,
          FakeServerProcess(latency=lat, max_in_flight=B_CAP, retry_after=1.0, cpu=server_cpu) as b,
          FakeServerProcess(latency=lat, cpu=server_cpu) as c):
        cmd = [sys.executable, "-m", "synthtrace.cli", "run", "completions", "--input", str(work / "in.jsonl"),
               "--output", str(work / "run"), "--model", "fake", "--concurrency", str(conc), "--quiet", "--fresh"]
        for server in (a, b, c):
            cmd += ["--base-url", server.url + "/v1"]
        killer = threading.Timer(args.kill_at, os.kill, (c.pid, signal.SIGKILL))
        killer.start()
        try:
            run = run_cli(cmd, cli_cpu, 600, work / "cli.log")
        finally:
            killer.cancel()
    check = verify(prompts, work / "run")
    rates = [conc / lat, min(conc, B_CAP) / lat]
    ideal = ideal_seconds(args.requests, rates, conc / lat, args.kill_at)
    a_ok, b_ok = a.stats.get("by_outcome", {}).get("ok", 0), b.stats.get("by_outcome", {}).get("ok", 0)
    result = {
        "requests": args.requests, "latency_s": lat, "concurrency_per_replica": conc, "kill_at_s": args.kill_at,
        "wall_s": round(run["wall_s"], 2), "ideal_s": round(ideal, 2), "efficiency": round(ideal / run["wall_s"], 3),
        "exit_code": run["exit_code"], "cpu_s": round(run["cpu_s"], 2), "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "answered": {"A": a_ok, "B": b_ok, "C (killed, by difference)": args.requests - a_ok - b_ok},
        "b_throttled": b.stats.get("by_outcome", {}).get("capped", 0),
        **check,
    }
    correct = (run["exit_code"] == 0 and check["rows_ok"] == args.requests and not check["dupes"]
               and not check["rejected"])
    result["correct"] = correct
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not correct:
        print(f"INCORRECT: see {work / 'cli.log'}", file=sys.stderr)
    return 0 if correct and result["efficiency"] >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
