"""Shards of one input run apart (a job array) and merge back into exactly the unsharded run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import prompts, read_jsonl

from synthtrace.engine.shards import parse_shard, shard_of


def run(cli: Any, inp: Path, out: Path, cfg: Path, *extra: Any) -> Any:
    result = cli("run", "completions", "-i", inp, "-o", out, "--config", cfg, "-q", *extra)
    assert result.exit_code == 0, result.output
    return result


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["provenance"]["record_id"]: r for r in rows}


def test_shards_then_merge_give_exactly_the_rows_of_one_run(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(prompts(60) + ["{broken", {"id": "r3", "prompt": "a repeated id"}, {"prompt": "no id"}])
    cfg = config_file()
    run(cli, inp, tmp_path / "whole", cfg)
    for i in range(3):
        run(cli, inp, tmp_path / "sharded", cfg, "--shard", f"{i}/3")
    parts = [read_jsonl(tmp_path / "sharded" / f"shard-{i}-of-3" / "rows.jsonl") for i in range(3)]
    assert all(parts) and len({r["id"] for p in parts for r in p}) == sum(len(p) for p in parts)  # disjoint

    merged = cli("merge", tmp_path / "sharded", "-o", tmp_path / "merged")
    assert merged.exit_code == 0, merged.output
    assert "merged 3 run(s): 60 records" in merged.stdout
    whole, joined = read_jsonl(tmp_path / "whole" / "rows.jsonl"), read_jsonl(tmp_path / "merged" / "rows.jsonl")
    assert by_id(joined) == by_id(whole)  # the same records, rows and provenance
    reasons = sorted(e["reason"] for e in read_jsonl(tmp_path / "merged" / "rejected.jsonl"))
    assert reasons == sorted(e["reason"] for e in read_jsonl(tmp_path / "whole" / "rejected.jsonl"))
    manifest = json.loads((tmp_path / "merged" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["result"]["records_done"] == 60
    assert manifest["result"]["journal_calls"] == 60 and manifest["recipe"] == "completions"

    before = {p.name: p.read_bytes() for p in (tmp_path / "merged").iterdir() if p.suffix == ".jsonl"}
    assert cli("merge", tmp_path / "sharded", "-o", tmp_path / "merged").exit_code == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "merged").iterdir() if p.suffix == ".jsonl"} == before
    assert cli("export", "sft", tmp_path / "merged", "--out", tmp_path / "sft.jsonl", "--val-fraction", 0).exit_code == 0
    assert len(read_jsonl(tmp_path / "sft.jsonl")) == 60


def test_a_shard_resumes_and_a_missing_one_makes_the_merge_partial(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(prompts(20))
    cfg = config_file()
    run(cli, inp, tmp_path / "s", cfg, "--shard", "0/2")
    asked = len(fp.requests)
    again = run(cli, inp, tmp_path / "s", cfg, "--shard", "0/2")
    assert len(fp.requests) == asked and "from earlier runs" in again.stdout
    merged = cli("merge", tmp_path / "s", "-o", tmp_path / "m")
    assert merged.exit_code == 0 and "missing: shard-1-of-2" in merged.stderr
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["status"] == "partial"


def test_runs_that_differ_are_refused_and_a_bad_shard_is_named(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(prompts(4))
    cfg = config_file()
    run(cli, inp, tmp_path / "a", cfg, "--max-tokens", 10)
    run(cli, inp, tmp_path / "b", cfg, "--max-tokens", 20)
    refused = cli("merge", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "m")
    assert refused.exit_code == 1 and "the runs differ in options" in refused.output
    assert "'max_tokens': 10" in refused.output and "'max_tokens': 20" in refused.output
    into_itself = cli("merge", tmp_path / "a", "-o", tmp_path / "a")
    assert into_itself.exit_code == 1 and "is one of the runs being merged" in into_itself.output
    bad = cli("run", "completions", "-i", inp, "-o", tmp_path / "c", "--config", cfg, "--shard", "3/3")
    assert bad.exit_code == 2 and "expected I/N with 0 <= I < N" in bad.output


def test_shards_are_stable_and_spread_evenly():
    assert parse_shard("2/8") == (2, 8)
    counts = [0] * 4
    for i in range(4000):
        counts[shard_of(f"id-{i}", 4)] += 1
    assert all(900 < c < 1100 for c in counts)
    assert shard_of("ms-val-219", 7) == shard_of("ms-val-219", 7)
