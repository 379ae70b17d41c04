"""One process against two Ray workers (`--ray --ray-workers 2`) on the fake provider, and Ray's fixed cost.

    .venv/bin/python bench/ray_bench.py [--requests 20000] [--latency 0.05] [--concurrency 200] [--no-pin]

Each round runs `synthtrace run completions` twice against the same fake server process: plainly,
and with `--ray --ray-workers 2` (a local cluster started and stopped by the run, the two workers
sharing the run's concurrency, then the merge). Efficiency = correct rows per second ÷ (concurrency
÷ latency), over the CLI's whole wall time. Ray's fixed cost is measured apart: the same two runs
over 10 requests, whose difference is the cluster's start and stop, the workers' start and the
merge. With two or more CPUs the server is pinned to CPU 0 and the CLI (with every process it
starts, Ray's included) to CPU 1. Needs the ray extra. Writes bench/results-ray.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from fake_server import FakeServerProcess, child_env
from run_bench import run_cli, verify, write_prompts

RESULTS = Path(__file__).resolve().parent / "results-ray.json"
# Ray stays on loopback and keeps its statistics to itself (synthtrace sets the rest).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "no_proxy": "127.0.0.1,localhost"}


def one(work: Path, name: str, url: str, requests: int, concurrency: int, ray: bool, cpu: int | None) -> dict[str, Any]:
    prompts = write_prompts(work / f"{name}.jsonl", requests)
    out = work / name
    cmd = [sys.executable, "-m", "synthtrace.cli", "run", "completions", "--input", str(work / f"{name}.jsonl"),
           "--output", str(out), "--base-url", url + "/v1", "--model", "fake", "--concurrency", str(concurrency),
           "--quiet"]
    if ray:
        cmd += ["--ray", "--ray-workers", "2"]
    env = {**child_env(), "OPENAI_API_KEY": "sk-fake-bench", **RAY_ENV}
    run = run_cli(cmd, cpu, 900, work / f"{name}.log", env=env, tree_pss=True)
    check = verify(prompts, out)
    run.update(check)
    run["correct"] = run["exit_code"] == 0 and check["rows_ok"] == requests and not check["dupes"]
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--no-pin", action="store_true")
    args = p.parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    server_cpu, cli_cpu = (0, 1) if pin else (None, None)
    ideal = args.concurrency / args.latency
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    table: dict[str, Any] = {"requests": args.requests, "latency_s": args.latency, "concurrency": args.concurrency}
    with FakeServerProcess(latency=args.latency, cpu=server_cpu) as server:
        for label, ray in (("plain", False), ("ray", True)):
            small = one(work, f"{label}-small", server.url, 10, args.concurrency, ray, cli_cpu)
            big = one(work, label, server.url, args.requests, args.concurrency, ray, cli_cpu)
            table[label] = {
                "wall_s": round(big["wall_s"], 2), "efficiency": round(args.requests / big["wall_s"] / ideal, 3),
                "cpu_s_driver_process": round(big["cpu_s"], 2), "peak_tree_pss_mb": round(big["peak_tree_pss_mb"] or 0),
                "correct": big["correct"] and small["correct"], "ten_requests_wall_s": round(small["wall_s"], 2)}
    fixed = table["ray"]["ten_requests_wall_s"] - table["plain"]["ten_requests_wall_s"]
    table["ray_fixed_cost_s"] = round(fixed, 2)
    table["ray"]["efficiency_past_fixed_cost"] = round(args.requests / (table["ray"]["wall_s"] - fixed) / ideal, 3)
    RESULTS.write_text(json.dumps(table, indent=2) + "\n")
    print(json.dumps(table, indent=2))
    return 0 if table["plain"]["correct"] and table["ray"]["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
