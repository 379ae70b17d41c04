"""Batch mode: the calls of a run as OpenAI / Anthropic batches at half price, journaled, resumable, never
paid twice, finished online by a deadline. Every run goes to the fake provider, which plays both batch
APIs (`synthtrace.testing.fake_batches`) with the faults the tests need."""

from __future__ import annotations

import collections
import json
import re
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import _write_jsonl, cli_command, kill_9_when, make_config, prompts, read_jsonl, subprocess_env

from synthtrace.testing import FakeProvider

FAST = {"batch_window_s": 0.05, "batch_poll_s": 0.02}  # a batch goes 50 ms after the last call; polls every 20 ms


def batch_config(path: Path, fp: FakeProvider, kind: str = "openai", **endpoint: Any) -> Path:
    base = fp.openai_base if kind == "openai" else fp.anthropic_base
    key = {"openai": "FAKE_OPENAI_KEY", "anthropic": "FAKE_ANTHROPIC_KEY"}[kind]
    return make_config(path, fp, endpoints={"fake": {"kind": kind, "base_url": base, "timeout": 5,
                                                     "api_key_env": key, "mode": "batch", **FAST, **endpoint}},
                       prices={"fake": {"input": 2.0, "output": 8.0}})


KEYS = {"FAKE_OPENAI_KEY": "sk-fake", "FAKE_ANTHROPIC_KEY": "sk-ant-fake"}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)


def submitted_once(fp: FakeProvider) -> bool:
    """Every custom_id went into exactly one batch (however many batches timing happened to form)."""
    return set(collections.Counter(cid for b in fp.batches.values() for cid in b.custom_ids).values()) == {1}


def assert_paid_once(fp: FakeProvider, run: Path, n: int) -> None:
    """Every record a row, none rejected, nothing online, and each prompt answered (paid for) by a
    batch exactly once, counting the answers of files whose download was cut."""
    rows = read_jsonl(run / "rows.jsonl")
    assert collections.Counter(r["id"] for r in rows) == collections.Counter(f"r{i}" for i in range(n))
    assert read_jsonl(run / "rejected.jsonl") == []
    succeeded = fp.batch_succeeded(include_truncated=True)
    assert len(succeeded) == n and set(succeeded.values()) == {1}, succeeded.most_common(3)
    paid = fp.batch_count_by_prompt(include_truncated=True)
    assert len(paid) == n and set(paid.values()) == {1}, paid.most_common(3)
    assert fp.requests == []


def without_provenance(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["provenance"]["record_id"] + str(i): {k: v for k, v in r.items() if k != "provenance"}
            for i, r in enumerate(sorted(rows, key=lambda r: json.dumps(r.get("id", ""))))}


def test_completions_in_batches_match_online_at_half_the_price(fp, cli, tmp_path, write_jsonl):
    inp = write_jsonl(prompts(40))
    online_cfg = make_config(tmp_path / "online.yaml", fp, prices={"fake": {"input": 2.0, "output": 8.0}})
    online = cli("run", "completions", "-i", inp, "-o", tmp_path / "online", "--config", online_cfg, "-q")
    assert online.exit_code == 0, online.output
    fp.reset()
    batched = cli("run", "completions", "-i", inp, "-o", tmp_path / "batch", "--config",
                  batch_config(tmp_path / "b.yaml", fp), "-q")
    assert batched.exit_code == 0, batched.output
    assert fp.requests == []  # nothing online
    assert len(fp.batch_succeeded()) == 40 and set(fp.batch_succeeded().values()) == {1}
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "batch" / "rows.jsonl")}
    assert {k: r["completion"] for k, r in rows.items()} == \
        {r["id"]: r["completion"] for r in read_jsonl(tmp_path / "online" / "rows.jsonl")}
    on = json.loads((tmp_path / "online" / "manifest.json").read_text())["result"]["stats"]
    ba = json.loads((tmp_path / "batch" / "manifest.json").read_text())["result"]["stats"]
    assert on["cost_usd"] > 0 and ba["batch_cost_usd"] == pytest.approx(on["cost_usd"] / 2)
    assert ba["online_cost_usd"] == 0 and ba["batches"]["items"] == 40 and submitted_once(fp)
    assert "in batches at half price" in batched.output
    creates = fp.batch_creates()
    again = cli("run", "completions", "-i", inp, "-o", tmp_path / "batch", "--config", tmp_path / "b.yaml", "-q")
    assert again.exit_code == 0 and "+40 from earlier runs" in again.output
    assert fp.batch_creates() == creates  # a re-run sends no batch


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_medec_in_batch_mode_gives_the_rows_of_online(kind, fp, cli, tmp_path):
    from test_medec import SAMPLE, SAMPLE_PAIRS, by_note_id, script_right

    for pair in SAMPLE_PAIRS:
        script_right(fp, pair)
    online_cfg = make_config(tmp_path / "online.yaml", fp, endpoints={"fake": {
        "kind": kind, "base_url": fp.openai_base if kind == "openai" else fp.anthropic_base,
        "api_key_env": "FAKE_OPENAI_KEY" if kind == "openai" else "FAKE_ANTHROPIC_KEY"}})
    assert cli("run", "medec", "-i", SAMPLE, "-o", tmp_path / "online", "--config", online_cfg, "-q").exit_code == 0
    asked_online = len(fp.requests)
    done = cli("run", "medec", "-i", SAMPLE, "-o", tmp_path / "batch", "--config",
               batch_config(tmp_path / "b.yaml", fp, kind), "-q")
    assert done.exit_code == 0, done.output
    assert len(fp.requests) == asked_online  # the batch run sent nothing online
    online_rows = by_note_id(read_jsonl(tmp_path / "online" / "rows.jsonl"))
    batch_rows = by_note_id(read_jsonl(tmp_path / "batch" / "rows.jsonl"))
    strip = ("provenance",)
    assert {k: {f: v for f, v in r.items() if f not in strip} for k, r in batch_rows.items()} == \
        {k: {f: v for f, v in r.items() if f not in strip} for k, r in online_rows.items()}
    assert submitted_once(fp) and set(fp.batch_succeeded().values()) == {1}


def test_science_in_batch_mode_gives_the_rows_of_online(fp, cli, tmp_path, write_jsonl):
    from test_science import one_passage, run_science, script_stages

    script_stages(fp)
    inp = one_passage(write_jsonl)
    cfg = make_config(tmp_path / "online.yaml", fp)
    assert run_science(cli, inp, tmp_path / "online", cfg, "--traces-per-sample", 1).exit_code == 0
    done = run_science(cli, inp, tmp_path / "batch", batch_config(tmp_path / "b.yaml", fp), "--traces-per-sample", 1)
    assert done.exit_code == 0, done.output
    online = read_jsonl(tmp_path / "online" / "rows.jsonl")
    batch = read_jsonl(tmp_path / "batch" / "rows.jsonl")
    assert len(batch) == len(online) == 1
    assert {k: v for k, v in batch[0].items() if k != "provenance"} == \
        {k: v for k, v in online[0].items() if k != "provenance"}
    assert submitted_once(fp) and set(fp.batch_succeeded().values()) == {1}
    assert fp.batch_creates() >= 4  # stage after stage: questions, context, the four fragments, the assembly


PHASES = ["upload", "create", "poll", "download"]


@pytest.mark.parametrize("kind, phase", [("openai", p) for p in PHASES] + [("anthropic", p) for p in PHASES
                                                                           if p != "upload"])
def test_kill_9_at_each_step_then_the_same_command_pays_nothing_twice(kind, phase, tmp_path):
    n = 30
    inp = _write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "run"
    with FakeProvider() as fp:
        cfg = batch_config(tmp_path / "cfg.yaml", fp, kind)
        fp.batch_faults.hold_s = {phase: 30.0}  # the server sits on that step's answer: the kill lands there
        if phase == "poll":
            fp.batch_faults.hold_s = {}
            fp.batch_faults.complete_after_s = 30.0
        seen = {"upload": lambda: fp.batch_uploads() >= 1, "create": lambda: fp.batch_creates() >= 1,
                "poll": lambda: fp.batch_status_reads() >= 2, "download": lambda: fp.batch_downloads_started() >= 1}
        if phase == "download":
            fp.batch_faults.complete_after_s = 0.0
        cmd = cli_command("run", "completions", "-i", inp, "-o", out, "--config", cfg, "-q")
        env = subprocess_env(KEYS)
        with open(tmp_path / "first.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
            kill_9_when(proc, seen[phase])
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
        fp.batch_faults.hold_s = {}
        fp.batch_faults.complete_after_s = 0.0
        again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr
        succeeded = fp.batch_succeeded()
    rows = read_jsonl(out / "rows.jsonl")
    assert collections.Counter(r["id"] for r in rows) == collections.Counter(f"r{i}" for i in range(n))
    assert len(succeeded) == n and set(succeeded.values()) == {1}, succeeded  # each custom_id answered once
    assert submitted_once(fp)  # a batch the killed run created was adopted, not sent again
    assert fp.requests == []


def test_errored_expired_missing_and_refused_items_end_as_rows_or_reasons(fp, cli, tmp_path, write_jsonl):
    inp = write_jsonl(prompts(30))
    f = fp.batch_faults
    f.not_found_reads = 2  # the batch is not visible yet right after its creation
    f.finalizing_s = 0.1
    f.truncate_outputs = 1  # the first results file is cut short
    f.errored_ids = set()
    cfg = batch_config(tmp_path / "b.yaml", fp)
    # errored and expired: asked again in a next batch; a 400 (a bad request): the record is rejected
    from synthtrace.testing import Fault
    fp.script("prompt 7", Fault.status(400, body={"error": {"message": "this request is malformed"}}),
              repeat_last=True)
    f.errored = 0.2
    f.expired = 0.1
    done = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg, "-q")
    assert done.exit_code == 0, done.output
    rows = {r["id"] for r in read_jsonl(tmp_path / "run" / "rows.jsonl")}
    rejected = {e["id"]: e for e in read_jsonl(tmp_path / "run" / "rejected.jsonl")}
    assert rows | set(rejected) == {f"r{i}" for i in range(30)} and not rows & set(rejected)
    assert set(rejected) == {"r7"} and "this request is malformed" in rejected["r7"]["reason"]
    assert set(fp.batch_succeeded().values()) == {1}
    assert fp.batch_creates() >= 2  # what did not come back went in a later batch
    stats = json.loads((tmp_path / "run" / "manifest.json").read_text())["result"]["stats"]
    assert stats["batches"]["resent"] > 0 and stats["batches"]["failed"] == 1


def test_past_the_deadline_running_batches_are_cancelled_and_the_rest_goes_online(fp, cli, tmp_path, write_jsonl):
    inp = write_jsonl(prompts(20))
    fp.batch_faults.complete_after_s = 3600  # never done by itself
    done = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config",
               batch_config(tmp_path / "b.yaml", fp), "-q", "--batch-deadline", "1s")
    assert done.exit_code == 0, done.output
    assert len(read_jsonl(tmp_path / "run" / "rows.jsonl")) == 20
    assert len(fp.requests) == 20 and fp.batch_succeeded() == collections.Counter()  # all online, once
    assert "--batch-deadline passed: cancelled" in done.output
    assert all(b["status"] == "cancelled" for b in fp.batches.values())


def test_batch_status_shows_a_killed_runs_batches_and_cancel_stops_them_for_the_next_run(tmp_path):
    inp = _write_jsonl(tmp_path / "in.jsonl", prompts(6))
    out = tmp_path / "run"
    with FakeProvider() as fp:
        cfg = batch_config(tmp_path / "cfg.yaml", fp)
        fp.batch_faults.complete_after_s = 3600
        cmd = cli_command("run", "completions", "-i", inp, "-o", out, "--config", cfg, "-q")
        env = subprocess_env(KEYS)
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill_9_when(proc, lambda: fp.batch_status_reads() >= 1)
        status = subprocess.run(cli_command("batch", "status", out), env=env, capture_output=True, text=True)
        assert status.returncode == 0, status.stderr
        held = [int(n) for n in re.findall(r"(\d+) requests", status.stdout)]
        assert sum(held) == 6 and "in_progress" in status.stdout, status.stdout  # in one batch or more
        cancel = subprocess.run(cli_command("batch", "cancel", out), env=env, capture_output=True, text=True)
        assert cancel.returncode == 0 and "cancelled: the next run reads what it answered" in cancel.stdout
        assert {b["status"] for b in fp.batches.values()} == {"cancelled"}
        fp.batch_faults.complete_after_s = 0.0
        again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert set(fp.batch_succeeded().values()) == {1}  # the cancelled items were sent again, each once
    assert len(read_jsonl(out / "rows.jsonl")) == 6
    gone = subprocess.run(cli_command("batch", "status", tmp_path), env=subprocess_env(), capture_output=True,
                          text=True)
    assert gone.returncode == 1 and "no batches.db (this run sent no batches)" in gone.stderr


@pytest.mark.parametrize("kind, status, message", [
    ("openai", 401, "Incorrect API key provided"),
    ("openai", 429, "You exceeded your current quota, please check your plan and billing details."),
    ("anthropic", 400, "Your credit balance is too low to access the Anthropic API."),
], ids=["bad-key", "openai-no-quota", "anthropic-no-credit"])
def test_a_refused_create_stops_the_run_with_exit_1_and_the_batch_kept_on_record(kind, status, message, fp, cli,
                                                                                  tmp_path, write_jsonl):
    inp = write_jsonl(prompts(5))
    fp.batch_faults.fail_create, fp.batch_faults.fail_create_message = status, message
    done = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config",
               batch_config(tmp_path / "b.yaml", fp, kind), "-q")
    assert done.exit_code == 1 and message in done.output
    with sqlite3.connect(tmp_path / "run" / "batches.db") as db:
        prepared = db.execute("SELECT count(*) FROM batches WHERE batch_id IS NULL").fetchone()[0]
    assert prepared >= 1 and fp.batch_creates() == prepared  # each create tried once, not again and again
    assert read_jsonl(tmp_path / "run" / "rows.jsonl") == [] and read_jsonl(tmp_path / "run" / "rejected.jsonl") == []
    fp.batch_faults.fail_create = None
    assert cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", tmp_path / "b.yaml",
               "-q").exit_code == 0  # the batch kept on record is created now
    assert len(read_jsonl(tmp_path / "run" / "rows.jsonl")) == 5


def test_answers_cut_by_max_tokens_are_counted_and_asked_again_with_more_when_allowed(fp, cli, tmp_path, write_jsonl):
    inp = write_jsonl([{"id": "a", "prompt": "long one", "max_tokens": 50}, {"id": "b", "prompt": "short one"}])
    fp.script("long one", {"text": "cut sho", "finish_reason": "length"}, "the whole answer")
    cfg = make_config(tmp_path / "b.yaml", fp, endpoints={"fake": {"kind": "openai", "base_url": fp.openai_base,
                                                                   **FAST}})  # no mode: --batch asks for it
    kept = cli("run", "completions", "-i", inp, "-o", tmp_path / "kept", "--config", cfg, "-q", "--batch")
    assert kept.exit_code == 0 and "1 cut by max_tokens" in kept.output
    assert {r["id"]: r["completion"] for r in read_jsonl(tmp_path / "kept" / "rows.jsonl")}["a"] == "cut sho"
    fp.reset()
    fp.script("long one", {"text": "cut sho", "finish_reason": "length"}, "the whole answer")
    retried = cli("run", "completions", "-i", inp, "-o", tmp_path / "retried", "--config", cfg, "-q", "--batch",
                  "--batch-retry-length")
    assert retried.exit_code == 0, retried.output
    assert {r["id"]: r["completion"] for r in read_jsonl(tmp_path / "retried" / "rows.jsonl")}["a"] == \
        "the whole answer"
    assert [it.outcome for it in fp.batch_items if it.prompt == "long one"] == ["succeeded", "succeeded"]
    asked = [p["max_tokens"] for b in fp.batches.values() for p in b.params if "long one" in json.dumps(p)]
    assert asked == [50, 100] and fp.requests == []  # the second time with twice the tokens


def test_dry_run_shows_the_batch_estimate_and_max_usd_holds_in_batch_mode(fp, cli, tmp_path, write_jsonl):
    inp = write_jsonl(prompts(20))
    cfg = batch_config(tmp_path / "b.yaml", fp)
    dry = cli("run", "completions", "-i", inp, "-o", tmp_path / "dry", "--config", cfg, "--dry-run")
    assert dry.exit_code == 0 and "in batches (--batch)" in dry.output and "half price" in dry.output
    capped = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg, "-q", "--max-usd", 0.0001)
    assert capped.exit_code == 3, capped.output
    assert sum(len(b.custom_ids) for b in fp.batches.values()) < 20  # the budget stopped the rest before sending
    stats = json.loads((tmp_path / "run" / "manifest.json").read_text())["result"]["stats"]
    assert stats["cost_usd_total"] <= 0.0001


@pytest.mark.parametrize("cut", ["short", "drop"])
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_cut_download_is_read_again_and_never_paid_again(kind, cut, fp, cli, tmp_path, write_jsonl):
    n = 400
    inp = write_jsonl(prompts(n))
    f = fp.batch_faults
    f.errored, f.expired, f.not_found_reads = 0.05, 0.02, 2
    f.cut_downloads = cut  # a body that stops mid-line, or a connection dropped mid-body
    done = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config",
               batch_config(tmp_path / "b.yaml", fp, kind), "-q")
    assert done.exit_code == 0, done.output
    assert_paid_once(fp, tmp_path / "run", n)
    downloads = fp.batch_downloads()
    assert downloads and all(times >= 2 for times in downloads.values())  # each file: cut once, then read whole
    stats = json.loads((tmp_path / "run" / "manifest.json").read_text())["result"]["stats"]["batches"]
    assert stats["resent"] > 0  # the errored and expired items, and only those, went in later batches
    assert stats["resent"] == sum(1 for it in fp.batch_items if it.outcome != "succeeded")


@pytest.mark.parametrize("kind, cut", [("openai", "short"), ("openai", "drop"), ("anthropic", "short"),
                                       ("anthropic", "drop")])
def test_kill_9_during_a_cut_download_then_the_same_command_pays_nothing_twice(kind, cut, tmp_path):
    n = 400
    inp = _write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "run"
    with FakeProvider() as fp:
        cfg = batch_config(tmp_path / "cfg.yaml", fp, kind)
        f = fp.batch_faults
        f.errored, f.expired, f.not_found_reads, f.cut_downloads = 0.05, 0.02, 2, cut
        f.hold_s = {"download": 30.0}  # the kill lands while the first results are on their way
        cmd = cli_command("run", "completions", "-i", inp, "-o", out, "--config", cfg, "-q")
        env = subprocess_env(KEYS)
        with open(tmp_path / "first.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
            kill_9_when(proc, lambda: fp.batch_downloads_started() >= 1)
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
        f.hold_s = {}
        again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert_paid_once(fp, out, n)
        assert all(times >= 2 for times in fp.batch_downloads().values())


def test_results_that_never_come_whole_are_left_for_the_next_run_not_asked_again(fp, cli, tmp_path, write_jsonl):
    n = 30
    inp = write_jsonl(prompts(n))
    cfg = batch_config(tmp_path / "b.yaml", fp)
    fp.batch_faults.cut_downloads, fp.batch_faults.cut_downloads_per_file = "drop", 1000  # every download breaks
    first = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg, "-q")
    assert first.exit_code == 0, first.output
    rejected = read_jsonl(tmp_path / "run" / "rejected.jsonl")
    assert len(rejected) == n and all("the next run of the same command reads them again" in e["reason"]
                                      for e in rejected)
    assert len(fp.batch_items) == n  # nothing was submitted again
    fp.batch_faults.cut_downloads = ""
    again = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg, "-q")
    assert again.exit_code == 0, again.output
    assert_paid_once(fp, tmp_path / "run", n)
    assert submitted_once(fp)
