"""`synthtrace run completions` as a user runs it: rows, rejections, resume, budgets, secrets, cache.

Most runs go through click's CliRunner in-process; the ones about the environment (API keys,
`.env`) run `python -m synthtrace.cli` as a child process, exactly as a shell would.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import prompts, read_jsonl

from synthtrace.testing import Fault


def run_args(inp: Path, out: Path, cfg: Path | None, *extra: Any) -> list[Any]:
    args: list[Any] = ["run", "completions", "-i", inp, "-o", out, "-q"]
    if cfg is not None:
        args += ["--config", cfg]
    return [*args, *extra]


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["provenance"]["record_id"] for r in rows]


def stderr_lines(text: str) -> list[str]:
    return text.splitlines()


# --- rows ----------------------------------------------------------------------------------------


def test_rows_have_completion_usage_cost_provenance_and_carried_fields(fp, cli, tmp_path, write_jsonl, config_file):
    fp.script("hello", {"text": "hi!", "usage": {"prompt_tokens": 12, "completion_tokens": 3}})
    inp = write_jsonl([
        {"id": "a", "prompt": "hello", "topic": "greetings", "meta": {"k": [1, 2]}, "completion": "from input"},
        {"id": 7, "prompt": "seven", "temperature": 0.2, "max_tokens": 20, "stop": ["END"]},
        {"id": "m", "messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "chat"}]},
    ])
    out = tmp_path / "run"
    result = cli(*run_args(inp, out, config_file()))
    assert result.exit_code == 0, result.output
    rows = {r["provenance"]["record_id"]: r for r in read_jsonl(out / "rows.jsonl")}
    assert sorted(rows) == ["7", "a", "m"]

    a = rows["a"]
    assert a["id"] == "a" and a["completion"] == "hi!"
    assert a["usage"] == {"prompt_tokens": 12, "completion_tokens": 3}
    assert a["cost_usd"] == 0 and a["finish_reason"] == "stop"
    assert a["topic"] == "greetings" and a["meta"] == {"k": [1, 2]}
    assert a["input_fields"] == {"completion": "from input"}  # an input field never overwrites an output
    prov = a["provenance"]
    assert prov["recipe"] == "completions" and prov["source"] == {"file": str(inp), "line": 1}
    (call,) = prov["calls"]
    assert re.fullmatch(r"[0-9a-f]{32}", call["key"]) and call["model"] == "fake" and not call["cached"]

    assert rows["7"]["id"] == 7 and rows["7"]["completion"] == "echo: seven"
    assert "temperature" not in rows["7"]  # generation params are controls, not carried fields
    sent = {r.prompt: r.body for r in fp.requests}
    assert {k: sent["seven"][k] for k in ("temperature", "max_tokens", "stop")} == \
        {"temperature": 0.2, "max_tokens": 20, "stop": ["END"]}
    assert sent["chat"]["messages"][0] == {"role": "system", "content": "terse"}
    assert rows["m"]["completion"] == "echo: chat"

    with sqlite3.connect(out / "journal.db") as db:
        journaled = {k for (k,) in db.execute("SELECT key FROM calls")}
    assert {r["provenance"]["calls"][0]["key"] for r in rows.values()} == journaled
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["result"]["records_done"] == 3


def test_system_option_and_reasoning_in_rows(fp, cli, tmp_path, write_jsonl, config_file):
    fp.script("think", {"text": "<think>hmm</think>done"})
    inp = write_jsonl([{"id": "t", "prompt": "think"}])
    result = cli(*run_args(inp, tmp_path / "run", config_file(), "--system", "You are terse.", "--temperature", "0.3"))
    assert result.exit_code == 0, result.output
    (row,) = read_jsonl(tmp_path / "run" / "rows.jsonl")
    assert (row["completion"], row["reasoning"]) == ("done", "hmm")
    body = fp.requests[0].body
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert body["temperature"] == 0.3


# --- bad input -----------------------------------------------------------------------------------

BAD_LINES = {
    2: ("{not json", "invalid JSON"),
    3: ({"prompt": "no id here"}, "id"),
    4: ({"id": "np"}, "prompt"),
    5: (b'{"id": "u", "prompt": "caf\xe9"}', "UTF-8"),
    6: ({"id": "r0", "prompt": "a second r0"}, "duplicate id"),
    7: ({"id": "br", "messages": [{"role": "robot", "content": "beep"}]}, "role"),
    8: ("[1, 2, 3]", "object"),
}


def bad_input(write_jsonl: Any) -> Path:
    lines: list[Any] = [{"id": "r0", "prompt": "good zero"}]
    lines += [BAD_LINES[n][0] for n in sorted(BAD_LINES)]
    lines += [{"id": "r1", "prompt": "good one"}]
    return write_jsonl(lines, name="bad.jsonl")


def test_bad_lines_are_named_rejected_and_good_lines_still_run(fp, cli, tmp_path, write_jsonl, config_file):
    inp = bad_input(write_jsonl)
    out = tmp_path / "run"
    result = cli(*run_args(inp, out, config_file()))
    assert result.exit_code == 0, result.output
    assert sorted(ids(read_jsonl(out / "rows.jsonl"))) == ["r0", "r1"]
    assert sorted(r.prompt for r in fp.requests) == ["good one", "good zero"]
    rejected = {e["line"]: e for e in read_jsonl(out / "rejected.jsonl")}
    assert sorted(rejected) == sorted(BAD_LINES)
    lines = stderr_lines(result.stderr)
    for n, (_, what) in BAD_LINES.items():
        assert rejected[n]["source"] == str(inp)
        assert what.lower() in rejected[n]["reason"].lower(), rejected[n]
        # one line on stderr names the file and line, and says what is wrong
        assert any(f"{inp}:{n}: " in line and what.lower() in line.lower() for line in lines), (n, result.stderr)
    assert rejected[6]["id"] == "r0" and "line 1" in rejected[6]["reason"]


def test_bom_and_crlf_input_from_windows_tools_is_read(fp, cli, tmp_path, config_file):
    inp = tmp_path / "windows.jsonl"
    inp.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\r\n" for r in prompts(3)) + b"\r\n")
    out = tmp_path / "run"
    result = cli(*run_args(inp, out, config_file(), "--strict"))
    assert result.exit_code == 0, result.output
    assert sorted(ids(read_jsonl(out / "rows.jsonl"))) == ["r0", "r1", "r2"]
    assert not read_jsonl(out / "rejected.jsonl")


def test_strict_stops_before_any_request(fp, cli, tmp_path, write_jsonl, config_file):
    inp = bad_input(write_jsonl)
    out = tmp_path / "run"
    result = cli(*run_args(inp, out, config_file(), "--strict"))
    assert result.exit_code == 1
    assert fp.requests == []
    assert not (out / "rows.jsonl").exists()
    assert any(f"{inp}:2: " in line for line in stderr_lines(result.stderr)), result.stderr


def test_duplicate_ids_are_caught_however_far_apart(fp, cli, tmp_path, write_jsonl, config_file, monkeypatch):
    """Seen ids move from memory to the on-disk index in batches; a repeat is caught on both sides."""
    from synthtrace.engine.store import IdIndex

    monkeypatch.setattr(IdIndex, "MEMORY_IDS", 3)  # r0-r2 and r3-r5 go to disk, r6-r7 stay in memory
    lines = [{"id": f"r{i}", "prompt": f"p{i}"} for i in range(8)]
    lines += [{"id": "r1", "prompt": "again"}, {"id": "r7", "prompt": "again"}]
    inp = write_jsonl(lines)
    out = tmp_path / "run"
    result = cli(*run_args(inp, out, config_file()))
    assert result.exit_code == 0, result.output
    assert sorted(ids(read_jsonl(out / "rows.jsonl"))) == [f"r{i}" for i in range(8)]
    reasons = {e["line"]: e["reason"] for e in read_jsonl(out / "rejected.jsonl")}
    assert reasons == {9: "duplicate id 'r1' (first at line 2)", 10: "duplicate id 'r7' (first at line 8)"}


def test_strict_counts_a_duplicate_id_as_a_bad_line(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(prompts(3) + [{"id": "r1", "prompt": "again"}])
    result = cli(*run_args(inp, tmp_path / "run", config_file(), "--strict"))
    assert result.exit_code == 1, result.output
    assert fp.requests == []
    assert any(f"{inp}:4: duplicate id 'r1'" in line for line in stderr_lines(result.stderr)), result.stderr


def test_strict_with_clean_input_runs(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(prompts(3))
    result = cli(*run_args(inp, tmp_path / "run", config_file(), "--strict"))
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(tmp_path / "run" / "rows.jsonl")) == 3


def test_identical_requests_are_answered_once_unless_sampled(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl([{"id": "a", "prompt": "same"}, {"id": "b", "prompt": "same"},
                       {"id": "c", "prompt": "same", "sample": 1}])
    result = cli(*run_args(inp, tmp_path / "run", config_file()))
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "run" / "rows.jsonl")}
    assert sorted(rows) == ["a", "b", "c"]
    assert len(fp.requests) == 2  # a and b are one request; `sample` asks for another
    keys = {i: r["provenance"]["calls"][0]["key"] for i, r in rows.items()}
    assert keys["a"] == keys["b"] != keys["c"]


def test_config_and_model_errors_are_usage_errors(fp, cli, tmp_path, write_jsonl):
    inp = write_jsonl(prompts(1))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("endpoints:\n  fake: [unclosed\n")
    result = cli(*run_args(inp, tmp_path / "run", bad_yaml))
    assert result.exit_code == 2 and f"{bad_yaml}:" in result.stderr and "invalid YAML" in result.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("limits:\n  concurency: 4\n")
    result = cli(*run_args(inp, tmp_path / "run", unknown))
    assert result.exit_code == 2 and "concurency" in result.stderr
    result = cli(*run_args(inp, tmp_path / "run", None, "--model", "gpt-4o"))
    assert result.exit_code == 2 and "--base-url" in result.stderr
    assert fp.requests == []


# --- resume --------------------------------------------------------------------------------------


def test_rerun_resumes_without_requests_or_duplicates(fp, cli, tmp_path, write_jsonl, config_file):
    inp, out, cfg = write_jsonl(prompts(5)), tmp_path / "run", config_file()
    assert cli(*run_args(inp, out, cfg)).exit_code == 0
    assert len(fp.requests) == 5
    again = cli(*run_args(inp, out, cfg))
    assert again.exit_code == 0, again.output
    assert len(fp.requests) == 5
    assert sorted(ids(read_jsonl(out / "rows.jsonl"))) == [f"r{i}" for i in range(5)]
    assert "from earlier runs" in again.stdout


def test_input_grown_after_a_run_only_runs_the_new_lines(fp, cli, tmp_path, write_jsonl, config_file):
    out, cfg = tmp_path / "run", config_file()
    assert cli(*run_args(write_jsonl(prompts(3)), out, cfg)).exit_code == 0
    assert cli(*run_args(write_jsonl(prompts(6)), out, cfg)).exit_code == 0
    assert len(fp.requests) == 6 and fp.count_by_prompt().most_common(1)[0][1] == 1
    assert sorted(ids(read_jsonl(out / "rows.jsonl"))) == [f"r{i}" for i in range(6)]


def test_torn_last_line_is_cut_and_its_record_redone_once(fp, cli, tmp_path, write_jsonl, config_file):
    inp, out, cfg = write_jsonl(prompts(5)), tmp_path / "run", config_file()
    assert cli(*run_args(inp, out, cfg)).exit_code == 0
    rows_path = out / "rows.jsonl"
    lines = rows_path.read_bytes().splitlines(keepends=True)
    torn_id = json.loads(lines[-1])["provenance"]["record_id"]
    rows_path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a kill mid-write
    again = cli(*run_args(inp, out, cfg))
    assert again.exit_code == 0, again.output
    rows = read_jsonl(rows_path)  # every line parses again
    assert sorted(ids(rows)) == [f"r{i}" for i in range(5)]
    assert ids(rows).count(torn_id) == 1
    assert len(fp.requests) == 5  # the redone record's call was in the journal
    assert "torn" in again.stderr


def test_fresh_requests_again(fp, cli, tmp_path, write_jsonl, config_file):
    inp, out, cfg = write_jsonl(prompts(4)), tmp_path / "run", config_file()
    assert cli(*run_args(inp, out, cfg)).exit_code == 0
    result = cli(*run_args(inp, out, cfg, "--fresh"))
    assert result.exit_code == 0, result.output
    assert all(fp.count_by_prompt()[f"prompt {i}"] == 2 for i in range(4))
    assert sorted(ids(read_jsonl(out / "rows.jsonl"))) == [f"r{i}" for i in range(4)]


def test_max_records(fp, cli, tmp_path, write_jsonl, config_file):
    inp, out = write_jsonl(prompts(10)), tmp_path / "run"
    result = cli(*run_args(inp, out, config_file(), "--max-records", 3))
    assert result.exit_code == 0, result.output
    assert sorted(ids(read_jsonl(out / "rows.jsonl"))) == ["r0", "r1", "r2"]
    assert len(fp.requests) == 3


# --- dry run and budget --------------------------------------------------------------------------


def test_dry_run_sends_nothing_and_prices_a_known_model(fp, cli, tmp_path, write_jsonl):
    # 20 prompts of 4000 characters: 20 × (4000 // 4 + 1) prompt tokens; 20 × 1000 completion tokens
    # at gpt-4o-mini's $0.15 / $0.60 per million = 0.015003 USD.
    inp = write_jsonl([{"id": i, "prompt": f"{i:04d}" + "x" * 3996} for i in range(20)] + ["{broken"])
    out = tmp_path / "run"
    result = cli("run", "completions", "-i", inp, "-o", out, "--model", "openai:gpt-4o-mini", "--max-tokens", 1000,
                 "--dry-run", env={"OPENAI_BASE_URL": fp.openai_base})
    assert result.exit_code == 0, result.output
    assert fp.requests == []
    assert not out.exists()
    text = " ".join(result.stdout.split())
    assert "$0.0150" in text
    assert re.search(r"records\s+│?\s*20\b", result.stdout), result.stdout
    assert "gpt-4o-mini" in text


def test_dry_run_of_an_unpriced_model_says_so(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(prompts(2))
    result = cli(*run_args(inp, tmp_path / "run", config_file(), "--dry-run"))
    assert result.exit_code == 0, result.output
    assert fp.requests == [] and "unknown" in result.stdout


@pytest.mark.parametrize("concurrency", [1, 16])
def test_max_usd_stops_before_the_budget_and_a_bigger_budget_finishes(fp, cli, tmp_path, write_jsonl, config_file,
                                                                      concurrency):
    # Each call: 100 prompt + 101 completion tokens at $1000 per million = $0.201.
    cfg = config_file(prices={"fake": {"input": 1000.0, "output": 1000.0}})
    n, budget = 20, 2.0
    inp = write_jsonl([{"id": f"r{i}", "prompt": f"{i:02d}" + "x" * 398} for i in range(n)])
    out = tmp_path / "run"
    first = cli(*run_args(inp, out, cfg, "--max-usd", budget, "-c", concurrency))
    assert first.exit_code == 3, first.output
    assert "budget" in first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "budget"
    spent = manifest["result"]["stats"]["cost_usd_total"]
    rows = read_jsonl(out / "rows.jsonl")
    assert 0 < len(rows) < n
    row_cost = max(r["cost_usd"] for r in rows)
    assert row_cost == pytest.approx(0.201)
    assert spent == pytest.approx(sum(r["cost_usd"] for r in rows))
    assert spent <= budget
    # ... and not far before it: the run stops when the next call no longer fits, not while other
    # calls' estimates are merely reserved.
    assert budget - spent < 2 * row_cost, (spent, len(rows))
    assert not read_jsonl(out / "rejected.jsonl")  # stopped records are untouched, not rejected
    done = ids(rows)
    sent_before = len(fp.requests)

    second = cli(*run_args(inp, out, cfg, "--max-usd", 100, "-c", concurrency))
    assert second.exit_code == 0, second.output
    assert sorted(ids(read_jsonl(out / "rows.jsonl"))) == sorted(f"r{i}" for i in range(n))
    assert len(fp.requests) - sent_before == n - len(done)
    assert max(fp.count_by_prompt().values()) == 1  # nothing finished was asked again


def test_max_usd_too_small_for_one_call(fp, cli, tmp_path, write_jsonl, config_file):
    cfg = config_file(prices={"fake": {"input": 1000.0, "output": 1000.0}})
    inp = write_jsonl(prompts(3))
    result = cli(*run_args(inp, tmp_path / "run", cfg, "--max-usd", 0.001))
    assert result.exit_code == 3, result.output
    assert fp.requests == []
    assert not read_jsonl(tmp_path / "run" / "rows.jsonl")


def test_the_command_exits_with_its_status_and_all_its_output(fp, cli_subprocess, tmp_path, write_jsonl, config_file):
    """As a shell sees it: the exit status and every line printed survive the exit that skips teardown."""
    inp = write_jsonl(prompts(3))
    done = cli_subprocess(*run_args(inp, tmp_path / "run", config_file()))
    assert done.returncode == 0, done.stderr
    assert "run complete" in done.stdout and "records done: 3" in done.stdout
    assert done.stdout.rstrip().endswith(str(tmp_path / "run" / "rows.jsonl"))
    cfg = config_file(prices={"fake": {"input": 1000.0, "output": 1000.0}})
    over = cli_subprocess(*run_args(inp, tmp_path / "over", cfg, "--max-usd", 0.001))
    assert over.returncode == 3, over.stderr
    assert "run budget" in over.stdout and "stopped before the budget was passed" in over.stderr
    usage = cli_subprocess("run", "completions", "-i", inp)
    assert usage.returncode == 2 and "Missing option '--output'" in usage.stderr


# --- secrets and the environment (subprocess) ----------------------------------------------------

SECRET = "sk-test-SYNTHTRACE-do-not-leak-4f8a2c"


def files_containing(directory: Path, needle: bytes) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize("key_var", ["OPENAI_API_KEY", "SYNTHTRACE_API_KEY"])
def test_api_key_never_appears_in_outputs(fp, cli_subprocess, tmp_path, write_jsonl, key_var):
    fp.script("prompt 1", Fault.status(400, body={"error": {"message": "unsupported parameter"}}))
    fp.script("prompt 2", Fault.status(500))
    inp = write_jsonl(prompts(4))
    out = tmp_path / "run"
    proc = cli_subprocess(*run_args(inp, out, None, "--base-url", fp.openai_base, "--model", "fake"),
                          env={key_var: SECRET})
    assert proc.returncode == 0, proc.stderr
    assert all(r.has_authorization for r in fp.requests)
    assert len(read_jsonl(out / "rows.jsonl")) == 3 and len(read_jsonl(out / "rejected.jsonl")) == 1
    assert {"rows.jsonl", "rejected.jsonl", "manifest.json", "journal.db"} <= {p.name for p in out.iterdir()}
    assert files_containing(out, SECRET.encode()) == []
    assert SECRET not in proc.stdout and SECRET not in proc.stderr


@pytest.mark.parametrize("with_dotenv", [True, False])
def test_dotenv_in_the_working_directory_supplies_the_key(fp, cli_subprocess, tmp_path, write_jsonl, with_dotenv):
    work = tmp_path / "work"
    work.mkdir()
    if with_dotenv:
        (work / ".env").write_text(f"OPENAI_API_KEY={SECRET}\n")
    inp = write_jsonl(prompts(2))
    out = tmp_path / "run"
    proc = cli_subprocess(*run_args(inp, out, None, "--base-url", fp.openai_base, "--model", "fake"), cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert len(fp.requests) == 2
    assert all(r.has_authorization == with_dotenv for r in fp.requests)
    assert files_containing(out, SECRET.encode()) == []


def test_config_endpoint_key_from_env(fp, cli_subprocess, tmp_path, write_jsonl, config_file):
    """A missing key stops the run (exit 1, nothing sent, no record given up); with the key it resumes."""
    cfg = config_file(endpoints={"fake": {"kind": "openai", "base_url": fp.openai_base, "api_key_env": "MY_FAKE_KEY"}})
    inp = write_jsonl(prompts(3))
    missing = cli_subprocess(*run_args(inp, tmp_path / "a", cfg))
    assert missing.returncode == 1
    assert fp.requests == []
    assert "MY_FAKE_KEY is not set" in missing.stderr
    assert read_jsonl(tmp_path / "a" / "rejected.jsonl") == []
    ok = cli_subprocess(*run_args(inp, tmp_path / "a", cfg), env={"MY_FAKE_KEY": SECRET})
    assert ok.returncode == 0, ok.stderr
    assert len(fp.requests) == 3 and all(r.has_authorization for r in fp.requests)
    assert len(read_jsonl(tmp_path / "a" / "rows.jsonl")) == 3
    assert files_containing(tmp_path / "a", SECRET.encode()) == []


def test_refused_key_stops_the_run_instead_of_rejecting_every_record(fp, cli_subprocess, tmp_path, write_jsonl):
    fp.script("prompt", Fault.status(401, body={"error": {"message": "invalid api key"}}), repeat_last=True)
    inp, out = write_jsonl(prompts(50)), tmp_path / "run"
    args = run_args(inp, out, None, "--base-url", fp.openai_base, "--model", "fake", "-c", "2")
    proc = cli_subprocess(*args, env={"OPENAI_API_KEY": SECRET})
    assert proc.returncode == 1
    assert "invalid api key" in proc.stderr
    assert len(fp.requests) < 10  # it stopped; it did not try all 50
    assert read_jsonl(out / "rejected.jsonl") == [] and read_jsonl(out / "rows.jsonl") == []
    fp.reset()
    again = cli_subprocess(*args, env={"OPENAI_API_KEY": SECRET})
    assert again.returncode == 0, again.stderr
    assert len(read_jsonl(out / "rows.jsonl")) == 50


# --- cache commands ------------------------------------------------------------------------------


def test_cache_stats_and_prune(fp, cli, tmp_path, write_jsonl, config_file):
    inp, out = write_jsonl(prompts(3)), tmp_path / "run"
    assert cli(*run_args(inp, out, config_file())).exit_code == 0

    stats = cli("cache", "stats", out)
    assert stats.exit_code == 0, stats.output
    line = next(line for line in stats.stdout.splitlines() if "fake" in line)
    assert re.search(r"\b3\b", line), stats.stdout

    assert cli("cache", "prune", out).exit_code == 2  # says what to prune, removes nothing
    with sqlite3.connect(out / "journal.db") as db:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 3

    pruned = cli("cache", "prune", out, "--all")
    assert pruned.exit_code == 0, pruned.output
    assert "removed 3 entries" in pruned.stdout
    with sqlite3.connect(out / "journal.db") as db:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 0
    after = cli("cache", "stats", out / "journal.db")
    assert after.exit_code == 0 and not any("fake" in line for line in after.stdout.splitlines()[1:])

    # with the journal empty, a fresh run pays again
    assert cli(*run_args(inp, out, config_file(), "--fresh")).exit_code == 0
    assert len(fp.requests) == 6


def test_cache_prune_by_model_and_age(fp, cli, tmp_path, write_jsonl, config_file):
    inp, out = write_jsonl(prompts(2)), tmp_path / "run"
    assert cli(*run_args(inp, out, config_file())).exit_code == 0
    assert "removed 0 entries" in cli("cache", "prune", out, "--model", "other").stdout
    assert "removed 0 entries" in cli("cache", "prune", out, "--older-than", "1d").stdout
    assert cli("cache", "prune", out, "--older-than", "soon").exit_code == 2
    assert "removed 2 entries" in cli("cache", "prune", out, "--model", "fake").stdout


def test_python_dash_m_entry_point(cli_subprocess):
    proc = cli_subprocess("--help")
    assert proc.returncode == 0 and "run" in proc.stdout and "cache" in proc.stdout


def test_an_error_page_is_summarised_and_a_repeated_reason_printed_a_few_times(fp, cli, tmp_path, write_jsonl,
                                                                              config_file, fast_backoff):
    page = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>" + "<p>nginx</p>" * 500
    fp.script(lambda body: True, Fault.status(502, body=page), repeat_last=True)
    inp = write_jsonl(prompts(10))
    result = cli(*run_args(inp, tmp_path / "run", config_file(max_retries=1)))
    assert result.exit_code == 0, result.output
    rejected = read_jsonl(tmp_path / "run" / "rejected.jsonl")
    assert len(rejected) == 10
    assert all("an HTML page (502 Bad Gateway)" in e["reason"] and "nginx" not in e["reason"] for e in rejected)
    printed = [line for line in result.stderr.splitlines() if "an HTML page" in line and "…" not in line]
    assert len(printed) == 3
    assert "… and 7 more rejected for the same reason" in result.stderr


def test_a_provider_that_only_refuses_is_reported_and_under_stop_the_run_ends_with_its_own_code(
        fp, cli, tmp_path, write_jsonl, config_file):
    fp.script(lambda body: "stuck" in str(body), Fault.status(429, retry_after=0.1), repeat_last=True)
    inp = write_jsonl(prompts(3, "fine") + [{"id": f"s{i}", "prompt": f"stuck {i}"} for i in range(5)])
    out = tmp_path / "run"
    result = cli(*run_args(inp, out, config_file(), "--stall-after", 0.5, "--on-stall", "stop"))
    assert result.exit_code == 4, result.output
    assert "stalled:" in result.stderr and "endpoint 'fake'" in result.stderr and "429" in result.stderr
    assert sorted(r["id"] for r in read_jsonl(out / "rows.jsonl")) == ["r0", "r1", "r2"]  # what finished stays
    assert read_jsonl(out / "rejected.jsonl") == []  # the rest is left for the next run
    assert json.loads((out / "manifest.json").read_text())["status"] == "stalled"


def test_under_the_wait_policy_a_stalled_run_finishes_once_the_provider_answers_again(
        fp, cli, tmp_path, write_jsonl, config_file):
    fp.script(lambda body: True, *([Fault.status(429, retry_after=0.1)] * 30), "fine at last", repeat_last=True)
    inp = write_jsonl(prompts(3))
    out = tmp_path / "run"
    result = cli(*run_args(inp, out, config_file(), "--stall-after", 0.3))
    assert result.exit_code == 0, result.output
    assert "stalled:" in result.stderr and "waiting" in result.stderr and "answers again" in result.stderr
    assert len(read_jsonl(out / "rows.jsonl")) == 3
