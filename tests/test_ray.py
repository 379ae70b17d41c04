"""`--ray`: a run's shards as Ray workers on a local cluster, merged into one run dir, surviving a worker
killed with SIGKILL — every row once, and no call whose answer reached a journal asked again.

Ray is kept on loopback: its node address is 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set by
synthtrace), usage statistics are off, and the proxy variables point at a dead loopback port so that
anything Ray might try to fetch from elsewhere fails at once (127.0.0.1 and localhost bypass it).
Each test starts its own cluster in its process and stops it (never `ray stop`, which ends every Ray
process on the machine).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import _write_jsonl, cli_command, make_config, prompts, read_jsonl, subprocess_env
from test_kill_resume import journaled_calls

import synthtrace
from synthtrace.testing import FakeProvider

pytest.importorskip("ray", reason="needs the ray extra (pip install 'synthtrace[ray]')")

LOOPBACK_ONLY = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                 "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                 "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost",
                 "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in LOOPBACK_ONLY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["provenance"]["record_id"]: r for r in rows}


def test_ray_workers_give_the_rows_of_one_process_and_resume(tmp_path, write_jsonl):
    inp = write_jsonl(prompts(120) + ["{broken"])
    with FakeProvider(latency=0.01) as fp:
        cfg = make_config(tmp_path / "cfg.yaml", fp)
        whole = synthtrace.run("completions", inp, tmp_path / "whole", config=cfg, quiet=True)
        asked = len(fp.requests)
        fp.reset()
        result = synthtrace.run("completions", inp, tmp_path / "ray", config=cfg, quiet=True, ray="local",
                                ray_workers=2, concurrency=8)
        assert len(fp.requests) == asked  # each record asked once, by one of the two workers
        assert fp.peak_in_flight <= 8  # the workers split the run's concurrency: 4 each
        again = synthtrace.run("completions", inp, tmp_path / "ray", config=cfg, quiet=True, ray="local")
        assert len(fp.requests) == asked  # the re-run found both shards done: nothing sent
    assert whole.status == result.status == "complete"
    assert result.records_done == 120 and result.bad_input == 1 and result.stats["calls"] == 120
    rows = read_jsonl(tmp_path / "ray" / "rows.jsonl")
    assert by_id(rows) == by_id(read_jsonl(tmp_path / "whole" / "rows.jsonl"))  # the same ids and content
    assert len(rows) == 120
    assert [e["reason"] for e in read_jsonl(tmp_path / "ray" / "rejected.jsonl")] == \
        [e["reason"] for e in read_jsonl(tmp_path / "whole" / "rejected.jsonl")]
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["result"]["journal_calls"] == 120
    assert sorted(p.name for p in (tmp_path / "ray").glob("shard-*")) == ["shard-0-of-2", "shard-1-of-2"]
    assert again.status == "complete" and again.records_skipped == 120 and again.stats["calls"] == 0


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def _shard_workers(driver: int) -> list[int]:
    """The Ray worker processes running shards under this driver (Ray names them ray::ShardWorker)."""
    pids = []
    for p in _descendants(driver):
        try:
            if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ray::ShardWorker"):
                pids.append(p)
        except OSError:
            continue
    return pids


def _rows(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds Ray's worker processes through /proc")
def test_a_worker_killed_with_sigkill_is_restarted_and_nothing_paid_twice(tmp_path):
    n = 300
    inp = _write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "run"
    with FakeProvider(latency=0.05) as fp:
        cfg = make_config(tmp_path / "cfg.yaml", fp)
        cmd = cli_command("run", "completions", "-i", inp, "-o", out, "--config", cfg, "-q", "-c", 8,
                          "--ray", "--ray-workers", 2)
        with open(tmp_path / "cli.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=subprocess_env(LOOPBACK_ONLY), cwd=tmp_path, stdout=log,
                                    stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 90
                while min(_rows(out / f"shard-{i}-of-2" / "rows.jsonl") for i in range(2)) < 30:
                    assert proc.poll() is None, (tmp_path / "cli.log").read_text()
                    assert time.monotonic() < deadline, "no progress"
                    time.sleep(0.01)
                workers = _shard_workers(proc.pid)
                assert len(workers) == 2, workers
                os.kill(workers[0], signal.SIGKILL)
                # What reached the journals by the kill (Ray takes seconds to start the worker again).
                journaled = set(journaled_calls(out / "shard-0-of-2" / "journal.db").values()) | \
                    set(journaled_calls(out / "shard-1-of-2" / "journal.db").values())
                proc.wait(timeout=120)
            finally:
                proc.kill()
                proc.wait()
    log = (tmp_path / "cli.log").read_text()
    assert proc.returncode == 0, log
    assert "run complete" in log and "Traceback" not in log
    assert "its worker died and Ray started it again; it resumes from its journal" in log

    rows = read_jsonl(out / "rows.jsonl")
    assert collections.Counter(r["provenance"]["record_id"] for r in rows) == \
        collections.Counter(f"r{i}" for i in range(n))  # every row, exactly once
    answered = fp.count_by_prompt()
    assert all(answered[f"prompt {i}"] >= 1 for i in range(n))
    assert len(journaled) >= 60 and [p for p in journaled if answered[p] != 1] == []  # none asked again
    again = [p for p, k in answered.items() if k > 1]
    assert len(again) <= 4, again  # only what the killed worker had in flight (its 4 slots) was asked again
    shards = [json.loads((out / f"shard-{i}-of-2" / "manifest.json").read_text())["result"] for i in range(2)]
    assert any(s["records_skipped"] >= 30 for s in shards)  # the restarted worker resumed its shard
    assert "records done: 300\n" in log  # its first process's records counted as done in this run, not earlier
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_ray_refuses_what_it_cannot_do_before_starting(cli, tmp_path, write_jsonl, config_file, monkeypatch):
    inp = write_jsonl(prompts(3))
    cfg = config_file()
    both = cli("run", "completions", "-i", inp, "-o", tmp_path / "a", "--config", cfg, "--ray", "--shard", "0/2")
    assert both.exit_code == 2 and "--ray makes its own shards: give --ray or --shard, not both" in both.output

    assert cli("run", "completions", "-i", inp, "-o", tmp_path / "plain", "--config", cfg, "-q").exit_code == 0
    over = cli("run", "completions", "-i", inp, "-o", tmp_path / "plain", "--config", cfg, "--ray")
    assert over.exit_code == 2 and "holds a run made without --ray: re-run it without --ray" in over.output

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    missing = cli("run", "completions", "-i", inp, "-o", tmp_path / "b", "--config", cfg, "--ray", "auto")
    assert missing.exit_code == 2 and "--ray needs Ray: pip install 'synthtrace[ray]'" in missing.output


def test_a_run_without_ray_never_imports_it(tmp_path, fp):
    inp = _write_jsonl(tmp_path / "in.jsonl", prompts(3))
    code = ("import sys, synthtrace; r = synthtrace.run('completions', sys.argv[1], sys.argv[2], base_url=sys.argv[3], "
            "model='fake', quiet=True); assert r.status == 'complete', r.status; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    done = subprocess.run([sys.executable, "-c", code, str(inp), str(tmp_path / "run"), fp.openai_base],
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
