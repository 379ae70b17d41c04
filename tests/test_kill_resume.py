"""The kill -9 property: a run killed at any moment and run again loses nothing and pays nothing twice.

The CLI runs as a child process against the fake provider, is SIGKILLed (no handler, no cleanup) at
different moments, and the same command is run again. Afterwards every input id is in rows.jsonl
exactly once, and no prompt whose answer had reached the journal before the kill was asked again.
"""

from __future__ import annotations

import collections
import json
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import _write_jsonl, cli_command, kill_9_when, make_config, prompts, read_jsonl, subprocess_env

from synthtrace.testing import FakeProvider

N = 300
CONCURRENCY = 16


def row_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def journaled_calls(journal: Path) -> dict[str, str]:
    """key → the prompt it answered, for every call in the journal (empty when there is none yet)."""
    if not journal.exists():
        return {}
    with closing(sqlite3.connect(journal)) as db:
        try:
            rows = db.execute("SELECT key, result FROM calls").fetchall()
        except sqlite3.OperationalError:  # killed before the table was made
            return {}
    calls = {}
    for key, result in rows:
        text = json.loads(result)["text"]
        assert text.startswith("echo: "), text
        calls[key] = text.removeprefix("echo: ")
    return calls


@pytest.mark.parametrize("rows_before_kill, requests_before_kill", [
    (0, 0),  # right after start: nothing sent yet
    (0, 1),  # the first requests are on the wire, no row written
    (40, 0),
    (150, 0),
], ids=["at-start", "first-requests", "40-rows", "150-rows"])
def test_kill_9_then_rerun_loses_nothing_and_repays_nothing(tmp_path, rows_before_kill, requests_before_kill):
    inp = _write_jsonl(tmp_path / "in.jsonl", prompts(N))
    out = tmp_path / "run"
    rows_path = out / "rows.jsonl"
    with FakeProvider(latency=0.05) as fp:
        cfg = make_config(tmp_path / "cfg.yaml", fp)
        cmd = cli_command("run", "completions", "-i", inp, "-o", out, "--config", cfg, "-q", "-c", CONCURRENCY)
        with open(tmp_path / "first.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=subprocess_env(), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
            kill_9_when(proc, lambda: row_count(rows_path) >= rows_before_kill
                        and len(fp.requests) >= requests_before_kill)
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
        rows_at_kill = row_count(rows_path)
        assert rows_at_kill >= rows_before_kill

        journaled = journaled_calls(out / "journal.db")
        answered_before = fp.count_by_prompt()
        # everything journaled was answered by the server; every written row was journaled
        assert all(answered_before[p] == 1 for p in journaled.values())
        assert len(journaled) >= rows_at_kill  # a row is written only after its call is journaled

        rerun = subprocess.run(cmd, env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr

    rows = read_jsonl(rows_path)
    seen = collections.Counter(r["provenance"]["record_id"] for r in rows)
    assert seen == collections.Counter(f"r{i}" for i in range(N))  # every id, exactly once
    assert all(r["completion"] == f"echo: prompt {r['id'][1:]}" for r in rows)

    answered = fp.count_by_prompt()
    assert all(answered[f"prompt {i}"] >= 1 for i in range(N))
    repaid = [p for p in journaled.values() if answered[p] != 1]
    assert repaid == [], f"journaled before the kill, yet asked again: {repaid[:5]}"
    assert all(n <= 2 for n in answered.values())  # at most: once before the kill (lost in flight), once after
    by_key = {r["provenance"]["calls"][0]["key"]: r for r in rows}
    for key in journaled:
        assert key in by_key  # the journaled answer is the one in the row
    assert not read_jsonl(out / "rejected.jsonl")


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path):
    inp = _write_jsonl(tmp_path / "in.jsonl", prompts(N))
    out = tmp_path / "run"
    with FakeProvider(latency=0.05) as fp:
        cfg = make_config(tmp_path / "cfg.yaml", fp)
        cmd = cli_command("run", "completions", "-i", inp, "-o", out, "--config", cfg, "-q", "-c", CONCURRENCY)
        # As in a terminal: a CI job started in the background inherits SIGINT ignored, and then so
        # would the CLI (Python keeps a signal ignored at start-up ignored).
        proc = subprocess.Popen(cmd, env=subprocess_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 60
            while row_count(out / "rows.jsonl") < 40:
                assert proc.poll() is None, "the run ended before it could be interrupted"
                assert time.monotonic() < deadline, "no progress"
                try:
                    proc.wait(timeout=0.01)
                except subprocess.TimeoutExpired:
                    pass
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        assert proc.returncode == 130, stderr
        assert "resume" in stderr
        assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
        before = read_jsonl(out / "rows.jsonl")  # whole lines only: an interrupt tears nothing
        assert 0 < len(before) < N
        assert sorted(p.name for p in out.iterdir()) == ["journal.db", "manifest.json", "rejected.jsonl", "rows.jsonl"]
        journaled = journaled_calls(out / "journal.db")

        rerun = subprocess.run(cmd, env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
    seen = collections.Counter(r["provenance"]["record_id"] for r in read_jsonl(out / "rows.jsonl"))
    assert seen == collections.Counter(f"r{i}" for i in range(N))
    answered = fp.count_by_prompt()
    assert all(answered[p] == 1 for p in journaled.values())
