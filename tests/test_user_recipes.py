"""A user's own recipe, as a user runs it: a file outside the package, a plugin, and the Python API.

The recipe files are the ones in examples/recipes/, written against `import synthtrace` only. Every
run goes to the fake provider on loopback. What is checked is what a user sees: rows, rejected
entries with their reasons, the dry run's figures, the budget, the progress bar, resume after
`kill -9`, `synthtrace recipes`, and the errors for a reference that names no recipe.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import _write_jsonl, cli_command, kill_9_when, make_config, prompts, read_jsonl, subprocess_env

import synthtrace
from synthtrace.testing import FakeProvider

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "recipes"
WORD_PROBLEMS = EXAMPLES / "word_problems.py"
JUDGED = EXAMPLES / "judged_answers.py"
SYSTEM_CHARS = len("Solve the problem step by step. End with one last line: `Answer: <number>`.")


def problems(n: int) -> list[dict[str, Any]]:
    return [{"id": f"p{i}", "question": f"What is {i} plus {i}? (problem {i})", "answer": 2 * i} for i in range(n)]


def run_args(recipe: Path | str, inp: Path, out: Path, cfg: Path, *extra: Any) -> list[Any]:
    return ["run", recipe, "-i", inp, "-o", out, "--config", cfg, "-q", *extra]


# --- a recipe file ---------------------------------------------------------------------------------


def test_a_recipe_file_runs_by_path_and_keeps_rows_and_reasons(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(problems(3))
    fp.script("problem 0", "0 plus 0 is 1.\nAnswer: 1", "Adding nothing to nothing leaves 0.\nAnswer: 0")
    fp.script("problem 1", {"text": "Answer: 2", "reasoning": "1 + 1 = 2"})
    # problem 2: the default answer ("echo: …") never says "Answer:", so every sample fails
    out = tmp_path / "run"
    result = cli(*run_args(WORD_PROBLEMS, inp, out, config_file(), "-k", 3))
    assert result.exit_code == 0, result.output

    rows = {row["id"]: row for row in read_jsonl(out / "rows.jsonl")}
    assert set(rows) == {"p0", "p1"}
    assert rows["p0"]["attempts"] == 2 and rows["p0"]["answer"] == "Answer: 0"
    assert rows["p0"]["reasoning"] == "Adding nothing to nothing leaves 0."
    assert rows["p1"]["reasoning"] == "1 + 1 = 2" and rows["p1"]["attempts"] == 1
    prov = rows["p0"]["provenance"]
    assert prov["recipe"] == "word-problems" and len(prov["calls"]) == 2 and prov["source"]["line"] == 1

    (rejected,) = read_jsonl(out / "rejected.jsonl")
    assert rejected["id"] == "p2" and rejected["reason"] == "no answer matched 4 in 3 tries"
    assert rejected["answers"] == [None, None, None] and len(rejected["calls"]) == 3

    sent = sorted((r.prompt, r.body["temperature"]) for r in fp.requests if "problem 2" in r.prompt)
    assert [t for _, t in sent] == [0.2, 0.5, 0.8]  # three distinct samples, each asked once
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"] == "word-problems" and manifest["options"] == {"samples": 3, "max_tokens": 1024}
    assert manifest["recipe_ref"] == f"{WORD_PROBLEMS}:WordProblems"
    assert "rejected: 1" in result.stdout and f"{out / 'rejected.jsonl'}" in result.stdout


def test_a_re_run_of_a_recipe_file_resumes_from_the_journal(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(problems(2))
    fp.script("problem 1", "Answer: 2", repeat_last=True)
    args = run_args(WORD_PROBLEMS, inp, tmp_path / "run", config_file(), "-k", 2)
    assert cli(*args).exit_code == 0
    asked = len(fp.requests)
    again = cli(*args)
    assert again.exit_code == 0 and len(fp.requests) == asked  # p1 done, p0's two failed samples replayed
    assert "+1 from earlier runs" in again.stdout and "2 replayed from the journal" in again.stdout


def test_dry_run_counts_the_calls_the_recipe_makes_and_sends_nothing(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(problems(3) + ["{not json"])
    cfg = config_file(prices={"fake": {"input": 1000.0, "output": 2000.0}})
    out = tmp_path / "run"
    result = cli(*run_args(WORD_PROBLEMS, inp, out, cfg, "-k", 3, "--max-tokens", 100, "--dry-run"))
    assert result.exit_code == 0, result.output
    assert fp.requests == [] and not out.exists()
    # An empty stand-in answer fails the check, so each problem costs all three samples: 9 calls, each
    # its messages' characters / 4 (+1) prompt tokens and max_tokens completion tokens.
    prompt = sum(3 * ((SYSTEM_CHARS + len(p["question"])) // 4 + 1) for p in problems(3))
    cost = (prompt * 1000 + 9 * 100 * 2000) / 1e6
    text = " ".join(result.stdout.split())
    assert "calls │ 9" in text and f"prompt tokens │ {prompt:,}" in text and "completion tokens │ 900" in text
    assert f"${cost:.4f} at most" in text and "bad input │ 1" in text


def test_max_usd_stops_before_the_budget_and_a_bigger_one_finishes(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(problems(8))
    for i in range(8):
        fp.script(f"problem {i}", f"Answer: {2 * i}")
    # A cent a token: a call costs ~$0.3, and reserves ~$0.7 (its prompt and --max-tokens) while in flight.
    cfg = config_file(prices={"fake": {"input": 10_000.0, "output": 10_000.0}})
    out = tmp_path / "run"
    first = cli(*run_args(WORD_PROBLEMS, inp, out, cfg, "--max-usd", 1.5, "--max-tokens", 40, "-c", 1))
    assert first.exit_code == 3, first.output
    assert "stopped before the budget was passed" in first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "budget" and manifest["result"]["stats"]["cost_usd_total"] <= 1.5
    done = len(read_jsonl(out / "rows.jsonl"))
    assert 0 < done < 8 and not read_jsonl(out / "rejected.jsonl")  # untouched records are not rejections

    second = cli(*run_args(WORD_PROBLEMS, inp, out, cfg, "--max-usd", 100, "--max-tokens", 40))
    assert second.exit_code == 0, second.output
    assert sorted(r["id"] for r in read_jsonl(out / "rows.jsonl")) == [f"p{i}" for i in range(8)]
    assert all(n == 1 for n in fp.count_by_prompt().values())  # nothing paid twice


def test_the_progress_bar_names_the_recipe_and_counts_its_rows(fp, cli_subprocess, tmp_path, write_jsonl,
                                                               config_file):
    inp = write_jsonl(problems(3))
    for i in range(3):
        fp.script(f"problem {i}", f"Answer: {2 * i}")
    done = cli_subprocess("run", WORD_PROBLEMS, "-i", inp, "-o", tmp_path / "run", "--config", config_file(),
                          env={"FORCE_COLOR": "1", "COLUMNS": "160"})
    assert done.returncode == 0, done.stderr
    assert "word-problems" in done.stderr and "3/3" in done.stderr and "rows" in done.stderr


def test_a_recipe_file_killed_mid_run_resumes_without_asking_again(tmp_path):
    n = 120
    # The fake answers "echo: <question>", so a question that ends in its own answer is solved at once.
    inp = _write_jsonl(tmp_path / "in.jsonl", [{"id": f"p{i}", "question": f"{i} + {i}? Answer: {2 * i}",
                                               "answer": 2 * i} for i in range(n)])
    out = tmp_path / "run"
    with FakeProvider(latency=0.05) as fp:
        cfg = make_config(tmp_path / "cfg.yaml", fp)
        cmd = cli_command(*run_args(WORD_PROBLEMS, inp, out, cfg, "-c", 8))
        proc = subprocess.Popen(cmd, env=subprocess_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        kill_9_when(proc, lambda: len(read_lines(out / "rows.jsonl")) >= 30)
        answered_before = journaled_prompts(out / "journal.db")
        asked_before = fp.count_by_prompt()
        assert 30 <= len(answered_before) < n
        again = subprocess.run(cmd, env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        asked_after = fp.count_by_prompt()
    assert sorted(r["id"] for r in read_jsonl(out / "rows.jsonl")) == sorted(f"p{i}" for i in range(n))
    repeated = [p for p in answered_before if asked_after[p] > asked_before[p]]
    assert repeated == []


def read_lines(path: Path) -> list[bytes]:
    try:
        return [line for line in path.read_bytes().split(b"\n") if line.endswith(b"}")]
    except FileNotFoundError:
        return []


def journaled_prompts(journal: Path) -> list[str]:
    with closing(sqlite3.connect(journal)) as db:
        return [json.loads(result)["text"].removeprefix("echo: ") for (result,) in db.execute("SELECT result FROM calls")]


# --- references that name no recipe, options of the wrong type -------------------------------------


@pytest.mark.parametrize("ref, message", [
    ("word-problem", "unknown recipe 'word-problem' (known: completions, medec, science"),
    ("./nowhere.py", "recipe file not found: nowhere.py"),
    ("synthtrace.types:Usage", "'synthtrace.types:Usage' is type"),
    ("no_such_module_here:Recipe", "cannot load recipe 'no_such_module_here:Recipe': ModuleNotFoundError"),
])
def test_a_reference_that_names_no_recipe_is_a_clear_message(cli, tmp_path, write_jsonl, ref, message):
    inp = write_jsonl(problems(1))
    result = cli("run", ref, "-i", inp, "-o", tmp_path / "run")
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_a_file_without_a_recipe_or_with_a_broken_one_is_named_with_its_line(cli, tmp_path, write_jsonl):
    inp = write_jsonl(problems(1))
    plain = tmp_path / "plain.py"
    plain.write_text("import synthtrace\n\nX = 1\n")
    result = cli("run", plain, "-i", inp, "-o", tmp_path / "run")
    assert result.exit_code == 2 and "defines no recipe (a subclass of synthtrace.Recipe)" in result.output
    broken = tmp_path / "broken.py"
    broken.write_text("import synthtrace\n\n\nclass R(synthtrace.Recipe):\n    async def process(self, record, llm)\n")
    result = cli("run", broken, "-i", inp, "-o", tmp_path / "run")
    assert result.exit_code == 2 and f"{broken}:5:" in result.output, result.output
    not_async = tmp_path / "sync.py"
    not_async.write_text("import synthtrace\n\n\nclass R(synthtrace.Recipe):\n    def process(self, record, llm):\n"
                         "        return []\n")
    result = cli("run", not_async, "-i", inp, "-o", tmp_path / "run")
    assert result.exit_code == 2 and f"{not_async}:4:" in result.output and "async def process" in result.output


def test_options_of_the_wrong_type_are_refused_from_flags_config_and_python(fp, cli, tmp_path, write_jsonl,
                                                                          config_file):
    inp = write_jsonl(problems(1))
    result = cli(*run_args(WORD_PROBLEMS, inp, tmp_path / "run", config_file(), "-k", "many"))
    assert result.exit_code == 2 and "'many' is not a valid integer" in result.output
    cfg = config_file(recipes={"word-problems": {"samples": "lots"}})
    result = cli(*run_args(WORD_PROBLEMS, inp, tmp_path / "run", cfg))
    assert result.exit_code == 2 and f"{cfg}: recipes.word-problems samples: 'lots' is not a valid integer" \
        in " ".join(result.output.split())
    cfg = config_file(recipes={"word-problems": {"sample": 3}})
    result = cli(*run_args(WORD_PROBLEMS, inp, tmp_path / "run", cfg))
    assert "unknown option 'sample'" in result.output and "did you mean 'samples'?" in result.output
    from synthtrace.options import OptionError
    from synthtrace.recipe import load_recipe

    cls = load_recipe(str(WORD_PROBLEMS))
    with pytest.raises(OptionError, match="samples: 0 is not in the range 1<=x<=8"):
        cls(samples=0)
    assert cls(samples="3").options.samples == 3  # values convert as flags do


def test_config_options_apply_and_flags_win_over_them(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(problems(1))
    cfg = config_file(recipes={"word-problems": {"samples": 2, "max_tokens": 64}})
    assert cli(*run_args(WORD_PROBLEMS, inp, tmp_path / "a", cfg)).exit_code == 0
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["options"] == {"samples": 2, "max_tokens": 64}
    assert cli(*run_args(WORD_PROBLEMS, inp, tmp_path / "b", cfg, "-k", 1)).exit_code == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["options"] == {"samples": 1, "max_tokens": 64}
    assert {r.body["max_tokens"] for r in fp.requests} == {64}


# --- a plugin --------------------------------------------------------------------------------------


PLUGIN_MODULE = '''
from dataclasses import dataclass
import synthtrace


class Haiku(synthtrace.Recipe):
    """Three-line poems about each topic."""

    name = "haiku"

    @dataclass(frozen=True)
    class Options:
        lines: int = synthtrace.option(3, "Lines per poem.", min=1)

    async def process(self, record, llm):
        reply = await llm.chat([{"role": "user", "content": f"A poem of {self.options.lines} lines about "
                                                            f"{record.data['topic']}"}])
        return [{"id": record.id, "poem": reply.text}]
'''


def install_plugin(tmp_path: Path, name: str, module: str, entry_points: str) -> dict[str, str]:
    """Build a wheel of distribution NAME (one module, the given entry points), pip-install it into a
    directory of its own, and return an environment that sees it."""
    dist = f"{name.replace('-', '_')}-1.0.dist-info"
    files = {
        f"{name.replace('-', '_')}.py": module,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": entry_points,
    }
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    wheel = tmp_path / f"{name.replace('-', '_')}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    site = tmp_path / f"site-{name}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=120)
    return subprocess_env({"PYTHONPATH": str(site)})


def test_an_installed_plugin_is_listed_and_runs_by_name(fp, tmp_path, write_jsonl, config_file):
    env = install_plugin(tmp_path, "synthtrace-haiku", PLUGIN_MODULE,
                         "[synthtrace.recipes]\nhaiku = synthtrace_haiku:Haiku\n")
    listed = subprocess.run(cli_command("recipes"), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    text = " ".join(listed.stdout.split())
    assert "haiku plugin synthtrace_haiku:Haiku (synthtrace-haiku 1.0)" in text
    assert "Three-line poems about each topic." in text and "--lines Lines per poem. (default: 3)" in text
    assert "medec built in" in text and "science built in" in text

    inp = write_jsonl([{"id": "t1", "topic": "autumn"}])
    out = tmp_path / "run"
    done = subprocess.run(cli_command("run", "haiku", "-i", inp, "-o", out, "--config", config_file(), "-q",
                                      "--lines", 5), env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    (row,) = read_jsonl(out / "rows.jsonl")
    assert row["poem"] == "echo: A poem of 5 lines about autumn" and row["provenance"]["recipe"] == "haiku"
    assert json.loads((out / "manifest.json").read_text())["recipe_ref"] == "synthtrace_haiku:Haiku"


PROVIDER_MODULE = '''
"""A provider in one file: answers in capitals, in this process."""
from synthtrace.types import ChatResult, Usage


class ShoutClient:
    name = "shout"
    native_schema = False
    max_concurrency = None
    in_process = True

    @classmethod
    def from_endpoint(cls, name, endpoint):
        return cls()

    async def chat(self, req):
        text = req.messages[-1]["content"].upper()
        return ChatResult(text, usage=Usage(len(text) // 4, len(text) // 4), finish_reason="stop", model=req.model)

    async def aclose(self):
        pass
'''


def test_a_provider_plugin_is_one_file_and_one_entry_point(tmp_path, write_jsonl):
    env = install_plugin(tmp_path, "synthtrace-shout", PROVIDER_MODULE,
                         "[synthtrace.providers]\nshout = synthtrace_shout:ShoutClient\n")
    cfg = tmp_path / "shout.yaml"
    cfg.write_text("endpoints: {loud: {kind: shout}}\nmodels: {loud: {endpoint: loud, model: loud-1}}\n"
                   "default_model: loud\n")
    inp = write_jsonl([{"id": "a", "prompt": "quiet please"}])
    out = tmp_path / "run"
    done = subprocess.run(cli_command("run", "completions", "-i", inp, "-o", out, "--config", cfg, "-q"), env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (row,) = read_jsonl(out / "rows.jsonl")
    assert row["completion"] == "QUIET PLEASE" and row["provenance"]["calls"][0]["provider_model"] == "loud-1"

    cfg.write_text("endpoints: {loud: {kind: shuot}}\ndefault_endpoint: loud\n")
    done = subprocess.run(cli_command("run", "completions", "-i", inp, "-o", out, "--config", cfg), env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{cfg}: endpoints.loud.kind: unknown provider kind 'shuot'" in done.stderr
    assert "did you mean 'shout'?" in done.stderr


ECHO_RECIPE = '''
import synthtrace


class Echo(synthtrace.Recipe):
    async def process(self, record, llm):
        reply = await llm.chat([{"role": "user", "content": record.data["text"]}])
        return [{"id": record.id, "said": reply.text}]
'''


def test_the_default_reader_takes_csv_and_parquet_with_the_same_id_rules(fp, cli, tmp_path, config_file):
    recipe = tmp_path / "echo.py"
    recipe.write_text(ECHO_RECIPE)
    csv_in = tmp_path / "in.csv"
    csv_in.write_text('id,text\nc1,"one, with a comma"\n,no id here\nc2,"two\nlines"\nc1,again\n')
    out = tmp_path / "csv"
    result = cli("run", recipe, "-i", csv_in, "-o", out, "--config", config_file(), "-q")
    assert result.exit_code == 0, result.output
    assert {r["id"]: r["said"] for r in read_jsonl(out / "rows.jsonl")} == \
        {"c1": "echo: one, with a comma", "c2": "echo: two\nlines"}
    rejected = {e["line"]: e["reason"] for e in read_jsonl(out / "rejected.jsonl")}
    assert rejected == {3: "missing or empty `id` (a string or integer)", 6: "duplicate id 'c1' (first at line 2)"}
    assert f"{csv_in}:3: missing or empty `id`" in result.stderr

    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    parquet_in = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["alpha", "beta", "gamma"]}), parquet_in)
    out = tmp_path / "parquet"
    result = cli("run", recipe, "-i", parquet_in, "-o", out, "--config", config_file(), "-q")
    assert result.exit_code == 0, result.output
    assert sorted(r["said"] for r in read_jsonl(out / "rows.jsonl")) == ["echo: alpha", "echo: beta", "echo: gamma"]
    assert "records done: 3" in result.stdout


# --- the Python API --------------------------------------------------------------------------------


def test_arun_works_inside_a_running_event_loop(fp, tmp_path, write_jsonl, config_file):
    from synthtrace.recipe import load_recipe

    inp = write_jsonl(problems(2))
    fp.script("problem 1", "Answer: 2")
    WordProblems = load_recipe(str(WORD_PROBLEMS))

    async def notebook_cell() -> Any:
        with pytest.raises(RuntimeError, match=r"use `await synthtrace.arun\(...\)`"):
            synthtrace.run(WordProblems, inp, tmp_path / "x")
        return await synthtrace.arun(WordProblems(samples=2), inp, tmp_path / "run", config=config_file(),
                                     quiet=True)

    result = asyncio.run(notebook_cell())
    assert result.status == "complete" and result.records_done == 1 and result.records_rejected == 1
    assert result.paths["rows"] == tmp_path / "run" / "rows.jsonl" and result.paths["rows"].is_file()
    assert result.stats["calls"] == 3 and result.cost_usd == 0
    again = asyncio.run(synthtrace.arun(WordProblems, inp, tmp_path / "run", config=config_file(), quiet=True,
                                        samples=2))  # a class takes its options as keywords too
    assert again.records_skipped == 1 and again.stats["replayed"] == 2 and again.stats["calls"] == 0
    with pytest.raises(ValueError, match="recipe word-problems: unknown option 'samplez'.*did you mean 'samples'"):
        asyncio.run(synthtrace.arun(WordProblems, inp, tmp_path / "run", samplez=1))
    with pytest.raises(ValueError, match="run: unknown option 'concurrenzy'"):
        asyncio.run(synthtrace.arun(WordProblems(), inp, tmp_path / "run", concurrenzy=4))


def test_run_works_in_a_plain_script(fp, tmp_path, write_jsonl, config_file):
    inp = write_jsonl(problems(2))
    fp.script("problem 0", "Answer: 0")
    fp.script("problem 1", "Answer: 2")
    script = tmp_path / "make_data.py"
    script.write_text(f'''
import json
import synthtrace

result = synthtrace.run({str(WORD_PROBLEMS)!r}, {str(inp)!r}, "out", config={str(config_file())!r}, quiet=True,
                        max_records=2)
estimate = synthtrace.run({str(WORD_PROBLEMS)!r}, {str(inp)!r}, "out", config={str(config_file())!r}, dry_run=True)
print(json.dumps({{"status": result.status, "done": result.records_done, "rows": str(result.paths["rows"]),
                  "estimated_calls": estimate.calls}}))
''')
    done = subprocess.run([sys.executable, str(script)], env=subprocess_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"status": "complete", "done": 2, "rows": "out/rows.jsonl", "estimated_calls": 8}


def test_the_judge_gated_example_keeps_what_the_judge_passes(fp, cli, tmp_path, write_jsonl, config_file):
    inp = write_jsonl([{"id": "q1", "question": "Why is the sky blue?"},
                       {"id": "q2", "question": "Why is grass green?"}])
    fp.script("Question: Why is the sky blue?", {"json": {"score": 8, "reason": "clear and right"}})
    fp.script("Question: Why is grass green?", {"json": {"score": 4, "reason": "vague"}})
    out = tmp_path / "run"
    result = cli(*run_args(JUDGED, inp, out, config_file(), "--min-score", 7))
    assert result.exit_code == 0, result.output
    (row,) = read_jsonl(out / "rows.jsonl")
    (rejected,) = read_jsonl(out / "rejected.jsonl")
    assert row["id"] == "q1" and row["judge"]["score"] == 8 and row["answer"] == "echo: Why is the sky blue?"
    assert rejected["id"] == "q2" and rejected["reason"] == "judge score 4 < 7: vague" and rejected["score"] == 4
    judge_request = next(r for r in fp.requests if "rubric" in r.prompt)
    assert judge_request.body["response_format"]["type"] == "json_schema"


def test_the_public_api_is_documented_and_import_synthtrace_loads_nothing_else():
    for name in synthtrace.__all__:
        obj = getattr(synthtrace, name)
        assert (obj.__doc__ or "").strip(), f"synthtrace.{name} has no docstring"
    probe = "import sys, synthtrace; print(sorted(m for m in sys.modules if m.startswith(('synthtrace.', 'click'))))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "['synthtrace.version']", done.stdout + done.stderr


BATCH_PROVIDER_MODULE = '''
"""A provider with a batch API and a setting of its own, in one file. Its "server" is a JSON file
(TALLY_STORE) that keeps every batch created and every online request, for the test to read."""
import json
import os
from dataclasses import dataclass
from pathlib import Path

from synthtrace.llm.base import own_settings
from synthtrace.llm.batches import OK, BatchItem, BatchStatus
from synthtrace.types import ChatResult, Usage

STORE = Path(os.environ["TALLY_STORE"])


def load():
    return json.loads(STORE.read_text()) if STORE.exists() else {"batches": {}, "online": []}


def save(data):
    STORE.write_text(json.dumps(data))


def answer(signature, prompt, model):
    text = f"{signature}: {prompt}"
    return ChatResult(text, usage=Usage(3, len(text) // 4), finish_reason="stop", model=model)


class TallyClient:
    name = "tally"
    native_schema = False
    max_concurrency = None
    in_process = False
    batch_api = "synthtrace_tally:TallyBatches"

    @dataclass
    class Settings:
        signature: str = "tally"

    def __init__(self, signature):
        self.signature = signature

    @classmethod
    def from_endpoint(cls, name, endpoint):
        return cls(own_settings(cls, endpoint).signature)

    async def chat(self, req):
        data = load()
        data["online"].append(req.messages[-1]["content"])
        save(data)
        return answer(self.signature, req.messages[-1]["content"], req.model)

    async def aclose(self):
        pass


class TallyBatches:
    kind = "tally"
    max_items = 1000
    uploads = False

    def __init__(self, name, endpoint):
        self.signature = own_settings(TallyClient, endpoint).signature

    def line(self, custom_id, req):
        return json.dumps({"custom_id": custom_id, "prompt": req.messages[-1]["content"], "model": req.model}).encode()

    async def upload(self, lines):
        return None

    async def create(self, file_id, lines, local_id):
        data = load()
        batch_id = f"tb{len(data['batches']) + 1}"
        data["batches"][batch_id] = [json.loads(line) for line in lines]
        save(data)
        return batch_id

    async def find(self, file_id, created_after, count, claimed):
        return None

    async def status(self, batch_id):
        return BatchStatus(True, "ended", {"done": len(load()["batches"][batch_id])}, [batch_id])

    async def cancel(self, batch_id):
        pass

    def result_urls(self, status):
        return list(status.sources)

    def expected_results(self, status):
        return status.counts["done"]

    async def download(self, url):
        return b"".join(json.dumps(item).encode() + b"\\n" for item in load()["batches"][url])

    def read_results(self, data):
        items = [json.loads(line) for line in data.splitlines()]
        return [BatchItem(i["custom_id"], OK, answer(self.signature, i["prompt"], i["model"])) for i in items], ""

    async def aclose(self):
        pass
'''


def test_a_provider_plugin_with_a_batch_api_and_its_own_setting_runs_in_batch_mode(tmp_path, write_jsonl):
    env = install_plugin(tmp_path, "synthtrace-tally", BATCH_PROVIDER_MODULE,
                         "[synthtrace.providers]\ntally = synthtrace_tally:TallyClient\n")
    store = tmp_path / "tally.json"
    env["TALLY_STORE"] = str(store)
    cfg = tmp_path / "tally.yaml"
    endpoint = "{kind: tally, mode: batch, batch_window_s: 0.05, batch_poll_s: 0.02, signature: counted}"
    cfg.write_text(f"endpoints: {{t: {endpoint}}}\nmodels: {{t: {{endpoint: t, model: t-1}}}}\ndefault_model: t\n")
    inp = write_jsonl(prompts(6))
    out = tmp_path / "run"
    done = subprocess.run(cli_command("run", "completions", "-i", inp, "-o", out, "--config", cfg, "-q"), env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: r["completion"] for r in read_jsonl(out / "rows.jsonl")}
    assert rows == {f"r{i}": f"counted: prompt {i}" for i in range(6)}  # its own setting reached it
    data = json.loads(store.read_text())
    batched = [item["prompt"] for batch in data["batches"].values() for item in batch]
    assert sorted(batched) == sorted(f"prompt {i}" for i in range(6)) and data["online"] == []  # each once, batched
    stats = json.loads((out / "manifest.json").read_text())["result"]["stats"]
    assert stats["batch_calls"] == 6

    cfg.write_text(f"endpoints: {{t: {endpoint.replace('signature', 'signatur')}}}\ndefault_endpoint: t\n")
    bad = subprocess.run(cli_command("run", "completions", "-i", inp, "-o", tmp_path / "bad", "--config", cfg),
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert f"{cfg}: endpoints.t.signatur: not a setting of a 'tally' endpoint (its own: signature)" in bad.stderr
