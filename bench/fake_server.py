"""The fake provider as a separate process for the benchmarks: start it, watch its CPU, stop it, read its stats.

Used by `run_bench.py` and `server_check.py`. The server is
``python -m synthtrace.testing.fake_provider`` (see that module for the flags); it is optionally
pinned to one CPU so that it cannot steal time from the client being measured.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def pin(pid: int, cpu: int | None) -> None:
    """Pin a running process (a child just started) to one CPU; None or no sched_setaffinity: leave it.

    For the process being timed, this beats a preexec_fn: with one, subprocess must fork this whole
    process and run Python in the child before its exec (7.5 ms against 0.9 ms for a plain spawn of
    /bin/true from the benchmark), and that would count in the CLI's wall time."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})


def steal_seconds(cpu: int | None) -> float | None:
    """CPU time the hypervisor has taken from `cpu` (all CPUs when None) since boot, from /proc/stat.

    On a virtual machine another guest can take a core for a while; a run that lost time this way
    shows it here, rather than as a mystery in its figures."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    try:
        with open("/proc/stat") as f:
            for line in f:
                fields = line.split()
                if fields[0] == name:
                    return int(fields[8]) / CLOCK_TICKS if len(fields) > 8 else None
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_cpu_seconds(pid: int) -> float | None:
    """user+sys CPU seconds a live process has used so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def child_env() -> dict[str, str]:
    """Environment for children: the repo's src importable even without an editable install."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class FakeServerProcess:
    """``with FakeServerProcess(latency=0.05) as server: ... server.url ...``; `stats` is filled on exit."""

    def __init__(self, *, latency: float = 0.0, max_in_flight: int | None = None, retry_after: float = 1.0,
                 rate_500: float = 0.0, rate_malformed: float = 0.0, seed: int = 1, cpu: int | None = None):
        self.args = ["--port", "0", "--latency", str(latency), "--retry-after", str(retry_after),
                     "--rate-500", str(rate_500), "--rate-malformed", str(rate_malformed), "--seed", str(seed)]
        if max_in_flight is not None:
            self.args += ["--max-in-flight", str(max_in_flight)]
        self.cpu = cpu
        self.url = ""
        self.stats: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._stats_path = Path(tempfile.mkdtemp(prefix="fake-server-")) / "stats.json"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.pid)

    def __enter__(self) -> FakeServerProcess:
        cmd = [sys.executable, "-m", "synthtrace.testing.fake_provider", *self.args,
               "--stats-file", str(self._stats_path)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env())
        pin(self._proc.pid, self.cpu)
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line.startswith("READY "):
            self._proc.kill()
            raise RuntimeError(f"fake server did not start (said {line!r})")
        self.url = line.split()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if self._stats_path.exists():
            self.stats = json.loads(self._stats_path.read_text())
            self._stats_path.unlink()
        self._stats_path.parent.rmdir()
