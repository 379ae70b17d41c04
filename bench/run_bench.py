"""End-to-end benchmark: the synthtrace CLI against the fake provider, both as separate processes.

    python bench/run_bench.py [--only S,A,B,C,D] [--scale 0.1] [--cli "synthtrace"] [--no-pin] [--keep]

Scenarios (S is the fake server's own self-check, see server_check.py):

  A  latency 0.5 s,  2,000 requests, concurrency 100                  target efficiency >= 0.97
  B  latency 0.05 s, 20,000 requests, concurrency 200                 target >= 0.80, <= 0.3 CPU s
                                                                      per 1,000 requests, RSS <= 150 MB
  C  server caps at 50 in flight (429, Retry-After 1); latency 0.5 s,
     2,000 requests, concurrency 100                                  target >= 0.95 of the cap (50/0.5)
  D  latency 0.5 s, 5% HTTP 500 and 2% malformed bodies, 2,000 requests,
     concurrency 100                                                  target >= 0.85

Efficiency = (rows correct / CLI wall time) / (concurrency / latency), or / (50 / 0.5) for C. A run is
correct when every input id appears exactly once in rows.jsonl with completion == "echo: " + prompt
and rejected.jsonl is empty. Prints a table and writes bench/results.json. With two or more CPUs the
server is pinned to CPU 0 and the CLI to CPU 1 (--no-pin to let them float).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fake_server import FakeServerProcess, child_env, pin, steal_seconds
from server_check import describe, run_check

RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class Scenario:
    name: str
    requests: int
    concurrency: int
    latency: float
    target: float
    max_in_flight: int | None = None
    rate_500: float = 0.0
    rate_malformed: float = 0.0
    max_cpu_per_1000: float | None = None
    max_rss_mb: float | None = None

    @property
    def ideal_rps(self) -> float:
        """The best possible rate: every slot busy, or the server's cap when it has one."""
        slots = min(self.concurrency, self.max_in_flight or self.concurrency)
        return slots / self.latency


SCENARIOS = {
    "A": Scenario("A", 2000, 100, 0.5, 0.97),
    "B": Scenario("B", 20000, 200, 0.05, 0.80, max_cpu_per_1000=0.3, max_rss_mb=150),
    "C": Scenario("C", 2000, 100, 0.5, 0.95, max_in_flight=50),
    "D": Scenario("D", 2000, 100, 0.5, 0.85, rate_500=0.05, rate_malformed=0.02),
}


def write_prompts(path: Path, count: int) -> dict[str, str]:
    """`count` unique prompts as CLI input lines; returns id -> prompt."""
    prompts = {f"r{i:05d}": f"Summarise item {i} of the benchmark in one line (key {i * 7919 % 100003})."
               for i in range(1, count + 1)}
    with path.open("wb") as fh:
        for rid, prompt in prompts.items():
            fh.write(orjson.dumps({"id": rid, "prompt": prompt}) + b"\n")
    return prompts


def read_jsonl(path: Path) -> tuple[list[Any], int]:
    """Parsed lines of a JSONL file and the number of lines that did not parse."""
    rows, bad = [], 0
    if not path.exists():
        return rows, bad
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            bad += 1
    return rows, bad


def verify(prompts: dict[str, str], outdir: Path) -> dict[str, int]:
    """Compare rows.jsonl / rejected.jsonl with the inputs."""
    rows, bad_lines = read_jsonl(outdir / "rows.jsonl")
    rejected, _ = read_jsonl(outdir / "rejected.jsonl")
    seen = Counter(row.get("id") for row in rows if isinstance(row, dict))
    correct_ids = {row["id"] for row in rows if isinstance(row, dict) and row.get("id") in prompts
                   and row.get("completion") == "echo: " + prompts[row["id"]]}
    ok = sum(1 for rid in correct_ids if seen[rid] == 1)
    return {
        "rows_ok": ok,
        "rows_total": len(rows),
        "dupes": sum(n - 1 for n in seen.values() if n > 1),
        "missing": sum(1 for rid in prompts if rid not in seen),
        "wrong": sum(1 for rid in seen if rid not in correct_ids),
        "rejected": len(rejected),
        "bad_lines": bad_lines,
    }


def run_cli(cmd: list[str], cpu: int | None, limit_s: float, log: Path, env: dict[str, str] | None = None,
            tree_pss: bool = False) -> dict[str, Any]:
    """Run the CLI to completion; wall time, exit status and the child's own rusage (CPU, peak RSS).

    `env` replaces the CLI's environment (peers.py runs other clients). With `tree_pss`, the result
    also has `peak_tree_pss_mb`: the child's processes together (see `_PeakWatcher`)."""
    if env is None:
        env = child_env()
        env.setdefault("OPENAI_API_KEY", "sk-fake-bench")
    with log.open("wb") as out:
        started = time.perf_counter()
        started_wall = time.time()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)  # no preexec_fn: see `pin`
        pin(proc.pid, cpu)  # the child has only just exec'd (subprocess returns after the exec)
        killer = threading.Timer(limit_s, _kill_tree, (proc.pid,))
        killer.start()
        watcher = _PeakWatcher(proc.pid, tree=tree_pss)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
            watcher.stop()
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {
        "exit_code": proc.returncode,
        "killed_after_s": limit_s if proc.returncode == -signal.SIGKILL else None,
        "wall_s": wall,
        "started_at": started_wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        # ru_maxrss of a child started by fork counts this (parent) process's resident pages at the
        # fork, which at 200,000 prompts held in memory here is more than the CLI itself ever uses
        "peak_rss_mb": watcher.peak_kib / 1024 if watcher.peak_kib else usage.ru_maxrss / 1024,
    }
    if tree_pss:
        result["peak_tree_pss_mb"] = watcher.peak_tree_kib / 1024 if watcher.peak_tree_kib else None
    return result


class _PeakWatcher:
    """The child's own high-water RSS (VmHWM, counted from its exec), read every 20 ms until it exits.

    With `tree`, also the peak of the proportional set size (PSS) summed over the child and all its
    descendants, sampled every 0.25 s: a client that forks workers (distilabel runs each step in its
    own process) holds memory that the first process's VmHWM does not see, and adding up their RSS
    would count every page they share once per process (twice the PSS sum, for distilabel). A
    process's PSS splits each shared page among the processes that map it, so for a single process
    it is a little below its RSS. Reading smaps_rollup costs about 1 ms per process, hence the
    slower sampling."""

    TREE_EVERY = 12  # ticks of 20 ms between two samples of the tree

    def __init__(self, pid: int, tree: bool = False):
        self.pid = pid
        self.path = f"/proc/{pid}/status"
        self.tree = tree
        self.peak_kib = 0
        self.peak_tree_kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        tick = 0
        while not self._done.wait(0.02):
            try:
                with open(self.path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except (OSError, ValueError, IndexError):  # not Linux, or the process is gone
                if not os.path.exists(self.path):
                    return
            tick += 1
            if self.tree and tick % self.TREE_EVERY == 1:
                self.peak_tree_kib = max(self.peak_tree_kib, _tree_pss_kib(self.pid))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants now (Linux /proc; elsewhere just `pid`)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):  # gone meanwhile, or no /proc
            continue
    return found


def _tree_pss_kib(pid: int) -> int:
    """PSS of `pid` and all its descendants now, in KiB (VmRSS for one without smaps_rollup; one that
    vanishes meanwhile counts 0)."""
    total = 0
    for p in _process_tree(pid):
        for path, key in ((f"/proc/{p}/smaps_rollup", "Pss:"), (f"/proc/{p}/status", "VmRSS:")):
            try:
                with open(path) as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith(key))
                break
            except (OSError, ValueError, StopIteration):
                continue
    return total


def _kill_tree(pid: int) -> None:
    """SIGKILL a client past its time limit, and whatever processes it started (found before it dies)."""
    for p in _process_tree(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


# argv of a client for (prompts file, output directory, base URL, concurrency); it writes rows.jsonl there
Command = Callable[[Path, Path, str, int], list[str]]


def cli_command(cli: list[str]) -> Command:
    """The synthtrace CLI's `run completions`, fresh and quiet, as every scenario runs it."""
    def command(prompts: Path, outdir: Path, base_url: str, concurrency: int) -> list[str]:
        return [*cli, "run", "completions", "--input", str(prompts), "--output", str(outdir),
                "--base-url", base_url, "--model", "fake", "--concurrency", str(concurrency), "--quiet", "--fresh"]
    return command


def run_scenario(sc: Scenario, scale: float, cli: list[str], pin: bool, workdir: Path) -> dict[str, Any]:
    return measure(sc, scale, cli_command(cli), pin, workdir)


def measure(sc: Scenario, scale: float, command: Command, pin: bool, workdir: Path, *,
            env: dict[str, str] | None = None, min_limit_s: float = 60.0, tree_pss: bool = False) -> dict[str, Any]:
    """One scenario for one client: fresh prompts and fake server, the client run to its end, its rows checked.

    Used for the synthtrace CLI here and for other tools by peers.py; `env` and `tree_pss` go to
    `run_cli`, and the client is killed after max(`min_limit_s`, 20 x the ideal time)."""
    count = max(1, round(sc.requests * scale))
    sdir = workdir / sc.name
    sdir.mkdir(parents=True, exist_ok=True)
    prompts = write_prompts(sdir / "prompts.jsonl", count)
    outdir = sdir / "out"
    server_cpu, cli_cpu = (0, 1) if pin else (None, None)
    ideal_s = count / sc.ideal_rps
    with FakeServerProcess(latency=sc.latency, max_in_flight=sc.max_in_flight, rate_500=sc.rate_500,
                           rate_malformed=sc.rate_malformed, cpu=server_cpu) as server:
        cmd = command(sdir / "prompts.jsonl", outdir, server.url + "/v1", sc.concurrency)
        server_cpu_before = server.cpu_seconds()
        steal_before = steal_seconds(cli_cpu)
        run = run_cli(cmd, cli_cpu, limit_s=max(min_limit_s, 20 * ideal_s), log=sdir / "cli.log", env=env,
                      tree_pss=tree_pss)
        server_cpu_after = server.cpu_seconds()
        steal_after = steal_seconds(cli_cpu)
    check = verify(prompts, outdir)
    stats = server.stats
    rps = check["rows_ok"] / run["wall_s"]
    efficiency = rps / sc.ideal_rps
    first, last = stats.get("first_request_at"), stats.get("last_answer_at")
    window = (last - first) if first and last and last > first else None
    correct = check["rows_ok"] == count and check["rejected"] == 0 and check["rows_total"] == count
    result: dict[str, Any] = {
        "scenario": sc.name, "requests": count, "concurrency": sc.concurrency, "latency_s": sc.latency,
        "max_in_flight": sc.max_in_flight, "rate_500": sc.rate_500, "rate_malformed": sc.rate_malformed,
        "ideal_rps": sc.ideal_rps, "ideal_s": ideal_s,
        "wall_s": round(run["wall_s"], 3), "achieved_rps": round(rps, 1), "efficiency": round(efficiency, 4),
        "target": sc.target, "correct": correct, **check,
        "cli_exit_code": run["exit_code"], "cli_killed_after_s": run["killed_after_s"],
        "cli_cpu_s": round(run["cpu_s"], 3),
        "cpu_s_per_1000": round(run["cpu_s"] / count * 1000, 4),
        "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "first_request_after_s": round(first - run["started_at"], 3) if first else None,
        # the last answer to the CLI's exit: its last commit and row, the manifest, closing up
        "exit_after_last_answer_s": round(run["started_at"] + run["wall_s"] - last, 3) if last else None,
        "efficiency_server_window": round(check["rows_ok"] / window / sc.ideal_rps, 4) if window else None,
        "server_requests": stats.get("requests_total"), "server_by_status": stats.get("by_status"),
        "server_by_outcome": stats.get("by_outcome"),
        "server_prompts_answered_more_than_once": stats.get("prompts_answered_more_than_once"),
        "server_peak_in_flight": stats.get("peak_in_flight"),
        # time the hypervisor took from the CLI's core meanwhile (all cores when not pinned)
        "cli_core_steal_s": (round(steal_after - steal_before, 2)
                             if steal_before is not None and steal_after is not None else None),
        "server_cpu_share": (round((server_cpu_after - server_cpu_before) / run["wall_s"], 3)
                             if server_cpu_before is not None and server_cpu_after is not None else None),
    }
    if tree_pss:
        result["peak_tree_pss_mb"] = run["peak_tree_pss_mb"] and round(run["peak_tree_pss_mb"], 1)
    failures = []
    if not correct:
        failures.append("rows not correct")
    if efficiency < sc.target:
        failures.append(f"efficiency {efficiency:.3f} < {sc.target}")
    if sc.max_cpu_per_1000 is not None and result["cpu_s_per_1000"] > sc.max_cpu_per_1000:
        failures.append(f"CPU {result['cpu_s_per_1000']:.3f} s/1000 > {sc.max_cpu_per_1000}")
    if sc.max_rss_mb is not None and result["peak_rss_mb"] > sc.max_rss_mb:
        failures.append(f"RSS {result['peak_rss_mb']:.0f} MB > {sc.max_rss_mb}")
    result["failures"] = failures
    result["passed"] = not failures
    result["verdict"] = "pass" if not failures else "FAIL"
    return result


COLUMNS = [("scenario", "sc", "{}"), ("requests", "requests", "{}"), ("wall_s", "wall s", "{:.2f}"),
           ("efficiency", "eff", "{:.3f}"), ("target", "target", "{:.2f}"), ("rows_ok", "rows ok", "{}"),
           ("dupes", "dupes", "{}"), ("missing", "missing", "{}"), ("wrong", "wrong", "{}"),
           ("rejected", "rejected", "{}"), ("cpu_s_per_1000", "CPU s/1k", "{:.3f}"),
           ("peak_rss_mb", "RSS MB", "{:.0f}"), ("first_request_after_s", "1st req s", "{:.2f}"),
           ("exit_after_last_answer_s", "exit s", "{:.3f}"),
           ("efficiency_server_window", "eff srv", "{:.3f}"), ("server_requests", "srv req", "{}"),
           ("server_cpu_share", "srv CPU", "{:.0%}"), ("cli_core_steal_s", "steal s", "{:.2f}"),
           ("verdict", "result", "{}")]


def print_table(results: list[dict[str, Any]]) -> None:
    cells = [[h for _, h, _ in COLUMNS]]
    for r in results:
        cells.append([fmt.format(r[key]) if r.get(key) is not None else "-" for key, _, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    for n, row in enumerate(cells):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for r in results:
        if r["failures"]:
            print(f"{r['scenario']}: " + "; ".join(r["failures"]) + f" (CLI log: {r['cli_log']})")


def default_cli() -> list[str]:
    beside = Path(sys.executable).parent / "synthtrace"
    found = str(beside) if beside.exists() else shutil.which("synthtrace")
    return [found] if found else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="S,A,B,C,D", help="comma-separated scenarios (S = server self-check)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts (0.1 for a quick look)")
    parser.add_argument("--cli", default=None, help="command that starts the CLI (default: synthtrace beside python)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and CLI to separate CPUs")
    parser.add_argument("--keep", action="store_true", help="keep inputs, outputs and CLI logs (printed path)")
    parser.add_argument("--results", default=str(RESULTS), help="where to write the JSON results")
    args = parser.parse_args()
    chosen = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    cli = shlex.split(args.cli) if args.cli else default_cli()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scale": args.scale, "cli": cli, "pinned": pin,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform(),
                    "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None},
    }
    if "S" in chosen:
        check = run_check(requests=max(2000, round(20000 * args.scale)), pin=pin)
        print(describe(check))
        report["server_check"] = check
    scenarios = [SCENARIOS[s] for s in chosen if s in SCENARIOS]
    if scenarios and not cli:
        print("no synthtrace CLI found (pip install -e . or pass --cli)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="synthtrace-bench-"))
    results = []
    for sc in scenarios:
        print(f"running {sc.name}: {round(sc.requests * args.scale)} requests ...", flush=True)
        result = run_scenario(sc, args.scale, cli, pin, workdir)
        result["cli_log"] = str(workdir / sc.name / "cli.log")
        results.append(result)
    if results:
        print_table(results)
    report["scenarios"] = results
    Path(args.results).write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.results}")
    if args.keep or not all(r["passed"] for r in results):
        print(f"work dir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r["passed"] for r in results) and report.get("server_check", {}).get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
