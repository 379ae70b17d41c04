"""Peers: synthtrace against the openai SDK, curator and distilabel, in run_bench.py's scenarios A-D.

    bash bench/peers/install.sh           # once: each tool into its own venv under bench/.peers-venv/
    .venv/bin/python bench/peers.py [--only A,B,C,D] [--scale 0.1] [--runs N] [--keep]
        [--tools synthtrace,openai,openai-aiohttp,curator,distilabel]

`openai` is the SDK on its default transport, `openai-aiohttp` the same runner on the aiohttp
transport that the SDK recommends for concurrency (see bench/peers/openai_sdk.py).

Every (tool, scenario) run goes through run_bench.py's own `measure`: unique prompts, a fresh fake
server pinned to CPU 0, the client pinned to CPU 1, its wall time, CPU (wait4 rusage: its own and
its reaped children's), peak RSS (VmHWM) and the check of its rows.jsonl (every id exactly once with
"echo: " + prompt). synthtrace runs as run_bench runs it (`synthtrace run completions`); each other
tool runs through its runner in bench/peers/, on its own venv's interpreter. Efficiency is
correct rows / wall time / ideal rate, as in run_bench. Peak memory is also taken over the client's
whole process tree (`tree MB`), since distilabel runs its steps in worker processes.

A run is killed after max(120 s, 20 x its ideal time) and reported as killed. With --runs N every
scenario is run N times, the tools taking turns within each round so that a slow spell of the machine
hits them alike; the table shows each (tool, scenario)'s median run by efficiency. All runs go to
bench/peers-results.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run_bench import SCENARIOS, Command, cli_command, default_cli, measure

HERE = Path(__file__).resolve().parent
PEERS_VENVS = HERE / ".peers-venv"  # one venv per tool, made by bench/peers/install.sh
RESULTS = HERE / "peers-results.json"
# tool -> (its venv under PEERS_VENVS, its runner in bench/peers/, the runner's own options)
PEERS = {
    "openai": ("openai", "openai_sdk.py", ["--http", "httpx"]),
    "openai-aiohttp": ("openai", "openai_sdk.py", ["--http", "aiohttp"]),
    "curator": ("curator", "curator_run.py", []),
    "distilabel": ("distilabel", "distilabel_run.py", []),
}
TOOL_ORDER = ("synthtrace", *PEERS)
MIN_LIMIT_S = 120.0


@dataclass(frozen=True)
class Tool:
    name: str
    command: Command
    env: dict[str, str] | None  # None: run_bench's own environment for the synthtrace CLI


def peer_python(venv: str) -> Path:
    return PEERS_VENVS / venv / "bin" / "python"


def peer_command(venv: str, runner: str, options: list[str]) -> Command:
    """argv of a runner in bench/peers/ on its tool's venv; it writes OUTDIR/rows.jsonl."""
    python, script = peer_python(venv), HERE / "peers" / runner

    def command(prompts: Path, outdir: Path, base_url: str, concurrency: int) -> list[str]:
        return [str(python), str(script), "--input", str(prompts), "--output", str(outdir / "rows.jsonl"),
                "--base-url", base_url, "--model", "fake", "--concurrency", str(concurrency), *options]
    return command


def peer_env() -> dict[str, str]:
    """This environment without anything that points Python at synthtrace or .venv; the runners add
    their own offline switches (bench/peers/common.py) before they import their tool."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("OPENAI_API_KEY", "sk-fake-bench")
    return env


def runner_summary(log: Path) -> dict[str, Any] | None:
    """The runner's closing `{"summary": ...}` line, or None (killed, crashed, or synthtrace)."""
    try:
        lines = log.read_bytes().splitlines()
    except OSError:
        return None
    for line in reversed(lines[-20:]):
        if line.startswith(b'{"summary"'):
            try:
                return json.loads(line)["summary"]
            except (ValueError, KeyError):
                return None
    return None


def outcome(r: dict[str, Any]) -> str:
    """One word or two for the table: ok, how many rows were not right, killed, or the exit status."""
    if r["cli_killed_after_s"] is not None:
        return f"killed at {r['cli_killed_after_s']:.0f} s"
    if r["cli_exit_code"] != 0:
        return f"exit {r['cli_exit_code']}"
    return "ok" if r["correct"] else f"{r['requests'] - r['rows_ok']} not ok"


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median efficiency (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["efficiency"])[(len(runs) - 1) // 2]


COLUMNS = [("tool", "tool", "{}"), ("scenario", "sc", "{}"), ("requests", "requests", "{}"),
           ("wall_s", "wall s", "{:.2f}"), ("efficiency", "eff", "{:.3f}"), ("eff_range", "eff runs", "{}"),
           ("rows_ok", "rows ok", "{}"), ("dupes", "dupes", "{}"), ("missing", "missing", "{}"),
           ("wrong", "wrong", "{}"), ("cpu_s_per_1000", "CPU s/1k", "{:.3f}"), ("peak_rss_mb", "RSS MB", "{:.0f}"),
           ("peak_tree_pss_mb", "tree MB", "{:.0f}"), ("first_request_after_s", "1st req s", "{:.2f}"),
           ("server_requests", "srv req", "{}"), ("cli_core_steal_s", "steal s", "{:.2f}"), ("outcome", "result", "{}")]


def print_tables(shown: list[dict[str, Any]], scenarios: list[str], tools: list[str]) -> None:
    cells = [[h for _, h, _ in COLUMNS]]
    for r in shown:
        cells.append([fmt.format(r[key]) if r.get(key) is not None else "-" for key, _, fmt in COLUMNS])
    _print_grid(cells)
    # the same figures as a tool x scenario matrix: efficiency (correct/requests), CPU s/1k, memory
    by_key = {(r["tool"], r["scenario"]): r for r in shown}
    print()
    header = ["eff (correct/requests) | CPU s/1k | RSS MB / tree MB"] + scenarios
    grid = [header]
    for tool in tools:
        row = [tool]
        for sc in scenarios:
            r = by_key.get((tool, sc))
            if r is None:
                row.append("-")
                continue
            note = "" if r["outcome"] == "ok" or r["outcome"].endswith("not ok") else f" [{r['outcome']}]"
            tree = f"{r['peak_tree_pss_mb']:.0f}" if r.get("peak_tree_pss_mb") else "-"
            row.append(f"{r['efficiency']:.3f} ({r['rows_ok']}/{r['requests']}) | {r['cpu_s_per_1000']:.2f} | "
                       f"{r['peak_rss_mb']:.0f} / {tree}{note}")
        grid.append(row)
    _print_grid(grid, first_left=True)


def _print_grid(cells: list[list[str]], first_left: bool = False) -> None:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for n, row in enumerate(cells):
        print("  ".join(cell.ljust(w) if first_left and i == 0 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="A,B,C,D", help="comma-separated scenarios")
    parser.add_argument("--tools", default=",".join(TOOL_ORDER), help="comma-separated: " + ", ".join(TOOL_ORDER))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts (0.1 for a quick look)")
    parser.add_argument("--runs", type=int, default=1, help="rounds of every (tool, scenario); the table shows medians")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to separate CPUs")
    parser.add_argument("--keep", action="store_true", help="keep inputs, outputs and logs (printed path)")
    parser.add_argument("--results", default=str(RESULTS), help="where to write the JSON results")
    args = parser.parse_args()
    scenarios = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    tool_names = [t.strip().lower() for t in args.tools.split(",") if t.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS] + [t for t in tool_names if t not in TOOL_ORDER]
    if unknown:
        parser.error(f"unknown scenario or tool: {', '.join(unknown)}")

    tools = []
    for name in tool_names:
        if name == "synthtrace":
            cli = default_cli()
            if not cli:
                print("no synthtrace CLI found beside this python (pip install -e .)", file=sys.stderr)
                return 2
            tools.append(Tool(name, cli_command(cli), None))
        else:
            venv, runner, options = PEERS[name]
            if not peer_python(venv).exists():
                print(f"{peer_python(venv)} is missing: run bash bench/peers/install.sh first", file=sys.stderr)
                return 2
            tools.append(Tool(name, peer_command(venv, runner, options), peer_env()))

    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    workdir = Path(tempfile.mkdtemp(prefix="synthtrace-peers-"))
    runs: list[dict[str, Any]] = []
    for round_no in range(1, args.runs + 1):
        for name in scenarios:
            sc = SCENARIOS[name]
            for tool in tools:
                print(f"round {round_no}/{args.runs}: {tool.name} in {name}, "
                      f"{max(1, round(sc.requests * args.scale))} requests ...", flush=True)
                tool_dir = workdir / f"round{round_no}" / tool.name
                r = measure(sc, args.scale, tool.command, pin, tool_dir, env=tool.env, min_limit_s=MIN_LIMIT_S,
                            tree_pss=True)
                log = tool_dir / name / "cli.log"
                r.update(tool=tool.name, round=round_no, log=str(log), tool_summary=runner_summary(log))
                r["outcome"] = outcome(r)
                runs.append(r)

    shown = []
    for tool in tools:
        for name in scenarios:
            mine = [r for r in runs if r["tool"] == tool.name and r["scenario"] == name]
            row = dict(median_run(mine))
            effs = [r["efficiency"] for r in mine]
            row["eff_range"] = f"{min(effs):.3f}-{max(effs):.3f}" if len(mine) > 1 else None
            shown.append(row)
    print_tables(shown, scenarios, [t.name for t in tools])

    versions = {r["tool"]: r["tool_summary"]["version"] for r in runs if r.get("tool_summary")}
    if "synthtrace" in tool_names:
        versions["synthtrace"] = importlib.metadata.version("synthtrace")
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scale": args.scale, "runs_per_scenario": args.runs,
        "pinned": pin, "versions": versions,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform(),
                    "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "table": [{k: r.get(k) for k, _, _ in COLUMNS} for r in shown],
        "runs": runs,
    }
    Path(args.results).write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.results}")
    broken = [r for r in runs if r["cli_killed_after_s"] is not None or r["cli_exit_code"] != 0]
    for r in broken:
        print(f"{r['tool']} {r['scenario']} round {r['round']}: {r['outcome']} (log: {r['log']})")
    if args.keep or broken:
        print(f"work dir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
