"""`synthtrace export hf`: a math run on the fake provider → Parquet configs that datasets loads and TRL
tokenises, and a card whose numbers are the run's, kept across exports (push: test_push.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # datasets and transformers never look for the Hub here
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
import yaml
from conftest import make_config, read_jsonl

from synthtrace.export import card as C
from synthtrace.export.hf import schemas, split_names

PROBLEMS = [
    {"id": "easy", "question": "What is 20 + 22?", "answer": "20 + 22 = 42\n#### 42"},
    {"id": "slow", "problem": "Simplify $\\frac{18}{24}$.", "solution": "$\\boxed{\\frac{3}{4}}$"},
    {"id": "hard", "problem": "What is 7 * 8?", "answer": "56"},
    {"unique_id": "test/algebra/1", "problem": "Solve $x + 1 = 3$.", "answer": 2},
    {"id": "blank", "problem": "   ", "answer": "1"},  # cannot run: rejected at the input stage
]
OPTIONS = ("--k", 2, "--budget", 6, "--verifier", "number", "--verifier", "math")


def script(fp: Any) -> None:
    fp.script("20 + 22", "Add them: 20 + 22.\n\\boxed{42}", "So it is \\boxed{42}")
    fp.script("Simplify", "Halve it: 9/16.\n\\boxed{\\frac{9}{16}}", "It is \\boxed{0.7}",
              "Divide by 6.\n\\boxed{0.75}", repeat_last=True)
    fp.script("7 * 8", "Seven eights.\n\\boxed{54}", repeat_last=True)
    fp.script("x + 1", "Subtract 1.\n\\boxed{2}", repeat_last=True)


@pytest.fixture
def run(fp: Any, cli: Any, tmp_path: Path, write_jsonl: Any) -> Path:
    """A finished math run: rows with per-sample verdicts, one problem rejected after 6 wrong
    samples, one input line that could not run, and a journal."""
    script(fp)
    out = tmp_path / "run"
    done = cli("run", "math", "-i", write_jsonl(PROBLEMS), "-o", out, "--config",
               make_config(tmp_path / "c.yaml", fp), "-q", *OPTIONS)
    assert done.exit_code == 0, done.output
    return out


def export(cli: Any, run: Path, out: Path, *args: Any) -> Any:
    done = cli("export", "hf", run, "--out", out, *args)
    assert done.exit_code == 0, done.output
    return done


def card_of(path: Path) -> tuple[dict[str, Any], str]:
    text = (path / "README.md").read_text(encoding="utf-8")
    m = re.match(r"---\n(.*?)\n---\n(.*)", text, re.DOTALL)
    assert m, text[:200]
    return yaml.safe_load(m.group(1)), m.group(2)


def table_value(body: str, label: str) -> int:
    m = re.search(rf"^\| {re.escape(label)} \| ([\d,]+) \|$", body, re.MULTILINE)
    assert m, f"no row {label!r} in the card"
    return int(m.group(1).replace(",", ""))


def load(directory: Path, config: str, tmp_path: Path) -> Any:
    datasets = pytest.importorskip("datasets")
    return datasets.load_dataset(str(directory), config, split="train", cache_dir=str(tmp_path / "hf-cache"))


# -- the configs ----------------------------------------------------------------------------------

def test_every_config_loads_with_datasets_and_keys_metadata_by_the_same_id(run, cli, tmp_path):
    pytest.importorskip("datasets")
    out = tmp_path / "hf"
    export(cli, run, out, "--license", "apache-2.0")
    rows = read_jsonl(run / "rows.jsonl")
    default, metadata, rejected = (load(out, c, tmp_path) for c in ("default", "metadata", "rejected"))

    assert default.num_rows == metadata.num_rows == len(rows) == 6  # every row verified, every row kept
    assert default.column_names == ["id", "messages"]
    assert default["id"] == metadata["id"]  # in the order of rows.jsonl
    assert sorted(default["id"]) == ["easy#0", "easy#1", "slow#0", "slow#1", "test/algebra/1#0", "test/algebra/1#1"]
    for line, row in zip(default, rows):
        system, user, assistant = line["messages"]
        assert (system["role"], user["role"], assistant["role"]) == ("system", "user", "assistant")
        assert user["content"] == row["problem"]
        assert assistant["content"] == f"<think>\n{row['reasoning']}\n</think>\n\n{row['answer']}"
    for meta, row in zip(metadata, rows):  # OpenR1-style per-sample verdicts, and what the row cost
        assert meta["verdicts"] == [s["verdict"] for s in row["sampling"]["samples"]]
        assert meta["verified"] is True and meta["verdict"] == "correct"
        assert meta["pass_rate"] == row["sampling"]["pass_rate"] and meta["samples"] == row["sampling"]["drawn"]
        assert meta["prompt_tokens"] == row["provenance"]["prompt_tokens"]
        assert meta["cost_usd"] == row["provenance"]["cost_usd"] and meta["models"] == ["fake"]
        assert (meta["recipe"], meta["prompt_version"], meta["source"]) == ("math", "1", "in.jsonl")
        assert json.loads(meta["checks"])["verification"]["verdict"] == "correct"
    by_stage = {r["stage"]: r for r in rejected}
    assert sorted(by_stage) == ["input", "verification"]
    hard = by_stage["verification"]
    assert hard["record_id"] == "hard" and hard["reason"] == "no verified answer in 6 samples (budget)"
    assert hard["verdicts"] == ["incorrect"] * 6 and hard["calls"] == 6
    assert by_stage["input"]["line"] == 5 and "problem" in by_stage["input"]["reason"]
    assert not any("/" in (r["source"] or "") for r in [*metadata, *rejected])  # no local path is published


def test_trl_tokenises_the_default_config_with_qwen3_templates_unpatched(run, cli, tmp_path):
    """TRL's own dataset preparation, as SFTTrainer runs it, on a tiny Qwen3 model built here: the
    tiny model's Qwen3-style template, and Qwen3's template as TRL ships it with assistant-only loss
    (TRL swaps in its Qwen3 training template): the think block and the answer are what is learnt."""
    for lib in ("torch", "transformers", "trl", "datasets"):
        pytest.importorskip(lib)
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from synthtrace.train.tiny import build_tiny_model

    out = tmp_path / "hf"
    export(cli, run, out, "--license", "apache-2.0")
    default = load(out, "default", tmp_path)
    rows = read_jsonl(run / "rows.jsonl")
    base = build_tiny_model(tmp_path / "base", [m["content"] for line in default for m in line["messages"]])
    stock = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8")
    for template, assistant_only in ((None, False), (stock, True)):
        tok = AutoTokenizer.from_pretrained(base)
        if template is not None:
            tok.chat_template = template
        args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2,
                         report_to=[], use_cpu=True, save_strategy="no", assistant_only_loss=assistant_only,
                         dataset_num_proc=None)
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=args, train_dataset=default,
                             processing_class=tok)
        prepared = trainer.train_dataset
        assert prepared.num_rows == len(rows)
        for line, row in zip(prepared, rows):
            target = f"<think>\n{row['reasoning']}\n</think>\n\n{row['answer']}<|im_end|>\n"
            text = tok.decode(line["input_ids"])
            assert text.startswith("<|im_start|>system\n") and text.endswith(f"<|im_start|>assistant\n{target}")
            if assistant_only:
                assert tok.decode([t for t, lab in zip(line["input_ids"], line["labels"]) if lab != -100]) == target
        if assistant_only:
            assert trainer.train().training_loss > 0  # and it trains, as it is


def test_features_are_as_datasets_writes_them():
    datasets = pytest.importorskip("datasets")
    for schema in schemas(pa).values():
        assert C.features_yaml(schema) == datasets.Features.from_arrow_schema(schema)._to_yaml_list()


def test_splits_are_named_by_source_file():
    assert split_names(["/data/gsm8k.jsonl"]) == {0: "train"}
    assert split_names(["/a/gsm8k-test.jsonl", "/b/MATH 500.csv", "/c/gsm8k-test.jsonl", "/d/all.jsonl"]) == {
        0: "gsm8k_test", 1: "MATH_500", 2: "gsm8k_test_2", 3: "all_"}
    assert all(re.fullmatch(r"\w+(\.\w+)*", n) for n in split_names(["x/-.jsonl", "y/é.csv"]).values())


# -- the card -------------------------------------------------------------------------------------

def _journal_totals(run: Path) -> tuple[int, int, int]:
    with sqlite3.connect(run / "journal.db") as db:
        return db.execute("SELECT COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM calls").fetchone()


def test_the_cards_counts_are_the_runs(run, cli, tmp_path):
    out = tmp_path / "hf"
    export(cli, run, out, "--license", "cc-by-4.0", "--source-dataset", "openai/gsm8k", "--language", "en")
    meta, body = card_of(out)
    rows = read_jsonl(run / "rows.jsonl")
    rejected = read_jsonl(run / "rejected.jsonl")
    records = {r["provenance"]["record_id"] for r in rows}
    whole = [e for e in rejected if "record_id" in e]
    bad_input = [e for e in rejected if "record_id" not in e]

    assert meta["license"] == "cc-by-4.0" and meta["source_datasets"] == ["openai/gsm8k"]
    assert meta["annotations_creators"] == ["machine-generated"] and "synthetic" in meta["tags"]
    assert meta["size_categories"] == ["n<1K"] and meta["task_categories"] == ["text-generation"]
    files = {c["config_name"]: c["data_files"] for c in meta["configs"]}
    assert files == {c: [{"split": "train", "path": f"{c}/train-00000-of-00001.parquet"}]
                     for c in ("default", "metadata", "rejected")}
    counts = {i["config_name"]: i["splits"][0]["num_examples"] for i in meta["dataset_info"]}
    assert counts == {"default": len(rows), "metadata": len(rows), "rejected": len(rejected)}
    for config, n in counts.items():  # and what the files hold
        assert pq.read_table(out / files[config][0]["path"]).num_rows == n

    assert table_value(body, "input records") == len(records) + len(whole) + len(bad_input) == len(PROBLEMS)
    assert table_value(body, "records with rows") == len(records) == 3
    assert table_value(body, "rows generated") == len(rows)
    assert table_value(body, "rows verified") == sum(r["verified"] is True for r in rows)
    assert table_value(body, "rows exported") == len(rows)
    assert table_value(body, "records rejected whole") == len(whole) == 1
    assert table_value(body, "input lines that could not run") == len(bad_input) == 1
    assert "| verification | no verified answer in # samples (budget) | 1 |" in body

    sampling = {r["provenance"]["record_id"]: r["sampling"] for r in rows} | {e["id"]: e["sampling"] for e in whole}
    drawn = sum(s["drawn"] for s in sampling.values())
    ok = sum(s["verified"] for s in sampling.values())
    assert f"Samples: {ok} of {drawn} answers drawn verified" in body

    calls, prompt_tokens, completion_tokens = _journal_totals(run)
    assert f"| fake | fake | {calls} | {prompt_tokens} | {completion_tokens} | $0.0000 |" in body
    assert f"In all: {calls} calls, {prompt_tokens} prompt tokens, {completion_tokens} completion tokens" in body
    assert "`math` version `1` (6 rows)" in body
    assert "During the run: not asked for." in body and "At export: not asked for." in body
    # The run was started in-process (no `synthtrace run` argv): the command is rebuilt from the manifest.
    assert "synthtrace run math -i in.jsonl -o run --config c.yaml --model fake --k 2 --budget 6 " \
           "--verifier number --verifier math" in body
    assert str(tmp_path) not in body  # no local path: the example loads DIR by its name…
    assert 'load_dataset("hf", "metadata", split="train")' in body
    assert 'load_dataset("alice/x", "metadata"' in C.relocate(body, "alice/x")  # …and a push, by the repo's


def test_cleaning_removes_with_evidence_and_the_card_says_how_many(run, cli, tmp_path):
    pytest.importorskip("datasketch")
    out = tmp_path / "hf"
    export(cli, run, out, "--license", "mit", "--dedup", "question")
    removed = read_jsonl(out / "removed.jsonl")
    # each problem has two verified answers: the second row of each repeats the first's question
    assert sorted(r["id"] for r in removed) == ["easy#1", "slow#1", "test/algebra/1#1"]
    assert all(r["reason"] == "near-duplicate question" and r["evidence"]["neighbour"] == r["id"][:-1] + "0"
               for r in removed)
    meta, body = card_of(out)
    counts = {i["config_name"]: i["splits"][0]["num_examples"] for i in meta["dataset_info"]}
    assert counts == {"default": 3, "metadata": 3, "rejected": 2 + 3}
    assert table_value(body, "rows removed by cleaning") == 3 and table_value(body, "rows exported") == 3
    assert "| cleaning | near-duplicate question | 3 |" in body
    assert "3 rows removed (3 near-duplicate question), each in `removed.jsonl` with its evidence" in body
    assert "synthtrace export hf run --out hf --dedup question --license mit\n" in body  # this export, as a command

    export(cli, run, out)  # no cleaning asked for: the earlier evidence does not linger; the licence is the card's
    assert not (out / "removed.jsonl").exists()
    assert card_of(out)[0]["license"] == "mit"


def test_a_second_export_keeps_what_was_added_to_the_card(run, cli, tmp_path):
    out = tmp_path / "hf"
    export(cli, run, out, "--license", "apache-2.0")
    meta, body = card_of(out)
    meta["tags"].append("arithmetic")
    meta["pretty_name"] = "Small sums"
    meta["configs"].append({"config_name": "extra", "data_files": "extra/*.parquet"})
    mine = "## Why we made it\n\nTo teach a small model to add. Written by hand.\n"
    body = body.replace(C.BEGIN, "Intro written by hand.\n\n" + C.BEGIN) + "\n" + mine
    body = body.replace("| rows exported | 6 |", "| rows exported | 999 |")  # the generated part is not ours
    (out / "README.md").write_text(C.join_card(meta, body), encoding="utf-8")

    export(cli, run, out, "--no-include-hinted")  # again: no --license, the card states it
    meta2, body2 = card_of(out)
    assert meta2["license"] == "apache-2.0" and meta2["pretty_name"] == "Small sums"
    assert meta2["tags"] == ["synthetic", "synthtrace", "reasoning", "arithmetic"]
    assert [c["config_name"] for c in meta2["configs"]] == ["default", "metadata", "rejected", "extra"]
    assert body2.count(mine) == 1 and body2.count("Intro written by hand.") == 1
    assert body2.count(C.BEGIN) == 1 and body2.count(C.END) == 1
    assert table_value(body2, "rows exported") == 6


def test_a_split_that_is_gone_leaves_no_file_and_no_stale_info(run, cli, tmp_path):
    """datasets#8608: an export with fewer splits than the last must not leave the old ones behind."""
    merged = tmp_path / "merged"
    shutil.copytree(run, merged)
    rows = read_jsonl(run / "rows.jsonl")
    for row in rows[3:]:  # as if merged from a run over a second input file
        row["provenance"]["source"]["file"] = "/elsewhere/more-problems.jsonl"
    (merged / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "hf"
    export(cli, merged, out, "--license", "apache-2.0")
    meta, body = card_of(out)
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == ["in", "more_problems"]
    assert "`in` ← `in.jsonl`, `more_problems` ← `more-problems.jsonl`" in body

    export(cli, run, out)
    meta, _ = card_of(out)
    assert sorted(p.name for p in (out / "default").iterdir()) == ["train-00000-of-00001.parquet"]
    assert {s["name"] for i in meta["dataset_info"] for s in i["splits"]} == {"train"}


def test_the_cards_command_makes_the_rows_again_from_the_journal_with_no_model_call(run, cli, fp, tmp_path):
    out = tmp_path / "hf"
    export(cli, run, out, "--license", "apache-2.0")
    command = re.search(r"```bash\n(synthtrace run .*)\n", card_of(out)[1]).group(1)
    args = shlex.split(command)[1:]
    args[args.index("-o") + 1] = "again"  # the cli fixture runs in tmp_path, where the run's files are
    (tmp_path / "again").mkdir()
    shutil.copy(run / "journal.db", tmp_path / "again" / "journal.db")
    fp.reset()
    done = cli(*args)
    assert done.exit_code == 0, done.output
    assert fp.requests == []

    def answers(path: Path) -> list[tuple[str, str, str]]:
        return sorted((r["id"], r["reasoning"], r["answer"]) for r in read_jsonl(path / "rows.jsonl"))
    assert answers(tmp_path / "again") == answers(run)


# -- what is refused ------------------------------------------------------------------------------

def test_a_missing_license_is_a_clear_error_and_writes_nothing(run, cli, tmp_path):
    out = tmp_path / "hf"
    done = cli("export", "hf", run, "--out", out)
    assert done.exit_code != 0
    assert "no licence given" in done.output and "--license apache-2.0" in done.output
    assert not out.exists()


def test_a_run_with_nothing_to_export_says_why_and_leaves_no_directory(run, cli, tmp_path):
    rows = read_jsonl(run / "rows.jsonl")
    (run / "rows.jsonl").write_text("".join(json.dumps({**r, "verified": False}) + "\n" for r in rows))
    out = tmp_path / "hf"
    done = cli("export", "hf", run, "--out", out, "--license", "mit")
    assert done.exit_code != 0
    assert "nothing to export: 6 row(s) read" in done.output and "6 unverified (--include-unverified" in done.output
    assert not out.exists()


def test_an_unfinished_run_is_refused_unless_asked_and_bad_lines_are_named(run, cli, tmp_path):
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    out = tmp_path / "hf"
    refused = cli("export", "hf", run, "--out", out, "--license", "mit")
    assert refused.exit_code != 0 and "did not finish" in refused.output and "status: interrupted" in refused.output
    assert "--allow-unfinished" in refused.output

    with open(run / "rows.jsonl", "a", encoding="utf-8") as f:
        f.write('{"torn": \n')
    done = export(cli, run, out, "--license", "mit", "--allow-unfinished")
    assert re.search(r"rows\.jsonl:7: invalid JSON", done.output)
    _, body = card_of(out)
    assert "**The run did not finish** (its manifest says status: `interrupted`)" in body
    assert "Unreadable lines of `rows.jsonl`, in no config: 1 (`rows.jsonl:7: invalid JSON" in body

    (run / "manifest.json").unlink()
    gone = cli("export", "hf", run, "--out", out, "--license", "mit")
    assert gone.exit_code != 0 and "not a run directory: no manifest.json" in gone.output

    bad_card = tmp_path / "bad"
    bad_card.mkdir()
    (bad_card / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    (run / "manifest.json").write_text(json.dumps(manifest))
    refused = cli("export", "hf", run, "--out", bad_card, "--license", "mit")
    assert refused.exit_code != 0 and "README.md: its YAML header cannot be read" in refused.output
    assert (bad_card / "README.md").read_text() == "---\nlicense: [unclosed\n---\n"
