"""The built-in recipes through the same registry and option declaration as a user's: every flag
they had keeps working, the config's `recipes.NAME:` fills what no flag gives, and the manifest
records what the run used.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import read_jsonl
from test_science import script_stages

from synthtrace.cli import main as cli_main
from synthtrace.export.hf import HfOptions
from synthtrace.export.sft import ExportOptions
from synthtrace.options import build, parse_duration, specs
from synthtrace.recipe import load_recipe
from synthtrace.registry import BUILTIN_RECIPES
from synthtrace.train.lora import TrainOptions

ROOT = Path(__file__).resolve().parents[1]
MEDEC_SAMPLE = ROOT / "examples" / "medec" / "medec-ms-val-sample.csv"
SCIENCE_SAMPLE = ROOT / "examples" / "science" / "passages.jsonl"
PROMPTS = ROOT / "examples" / "prompts.jsonl"


def options_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())["options"]


def models_asked(fp) -> set[str]:
    return {r.body["model"] for r in fp.requests}


def test_every_builtin_is_registered_and_declares_its_options():
    for name in BUILTIN_RECIPES:
        cls = load_recipe(name)
        assert cls.name == name and cls.description
        for spec in specs(cls.Options):
            assert spec.help, f"{name}: option {spec.name} has no help"


def test_completions_flags(fp, cli, tmp_path, config_file):
    out = tmp_path / "run"
    result = cli("run", "completions", "--input-file", PROMPTS, "-o", out, "--config", config_file(), "-q",
                 "--system", "Be terse.", "--temperature", 0.25, "--max-tokens", 99)
    assert result.exit_code == 0, result.output
    assert options_of(out) == {"system": "Be terse.", "temperature": 0.25, "max_tokens": 99}
    first = fp.requests[0].body
    assert first["messages"][0] == {"role": "system", "content": "Be terse."}
    assert first["temperature"] == 0.25 and first["max_tokens"] == 160  # a line's own value wins


def test_medec_flags(fp, cli, tmp_path, config_file):
    out = tmp_path / "run"
    result = cli("run", "medec", "-i", MEDEC_SAMPLE, "-o", out, "--config", config_file(), "-q", "-k", 2,
                 "--hint-on-failure", "--keep-unverified", "--min-similarity", 0.4, "--critic-model", "critic-x",
                 "--generator-model", "writer-y", "--max-tokens", 300, "--max-records", 1)
    assert result.exit_code == 0, result.output
    assert options_of(out) == {"samples": 2, "hint_on_failure": True, "keep_unverified": True, "min_similarity": 0.4,
                               "critic_model": "critic-x", "generator_model": "writer-y", "max_tokens": 300}
    assert models_asked(fp) == {"critic-x", "writer-y"} and {r.body["max_tokens"] for r in fp.requests} == {300}


def test_science_flags_and_config(fp, cli, tmp_path, config_file):
    script_stages(fp)
    cfg = config_file(recipes={"science": {"judges": ["judge-from-config"], "grader": "grader-from-config",
                                           "traces_per_sample": 1}})
    out = tmp_path / "traces.json"
    result = cli("run", "science", "--input-file", SCIENCE_SAMPLE, "--output", out, "--config", cfg, "-q",
                 "--max-traces", 1, "--no-resume", "--quality-check", "--min-quality-score", 1,
                 "--max-regenerations", 0, "--grade-answers", "--passage-tokens", 900, "--max-tokens", 700)
    assert result.exit_code == 0, result.output
    run = tmp_path / "traces.json.run"
    assert options_of(run) == {"traces_per_sample": 1, "traces_per_question": 1, "max_traces": 1, "resume": False,
                               "quality_check": True, "min_quality_score": 1.0, "max_regenerations": 0,
                               "judges": ["judge-from-config"], "grade_answers": True, "grader": "grader-from-config",
                               "passage_tokens": 900, "max_tokens": 700}
    assert {"judge-from-config", "grader-from-config"} <= models_asked(fp)
    settings = json.loads((run / "manifest.json").read_text())["settings"]
    assert settings["fresh"] is True and settings["max_records"] == 1 and settings["outputs"] == {"traces": str(out)}
    assert f"traces:   {out}" in result.stdout

    fp.reset()
    script_stages(fp)
    result = cli("run", "science", "-i", SCIENCE_SAMPLE, "-o", tmp_path / "run2", "--config", cfg, "-q",
                 "--max-records", 1, "--quality-check", "--min-quality-score", 1, "--judge-model", "j1",
                 "--judge-model", "j2", "--grade-answers", "--grader-model", "g1")
    assert result.exit_code == 0, result.output
    assert options_of(tmp_path / "run2")["judges"] == ["j1", "j2"]  # flags win over the config
    assert {"j1", "j2", "g1"} <= models_asked(fp) and "judge-from-config" not in models_asked(fp)


@pytest.mark.parametrize("flag, value, message", [
    ("--samples", 11, "11 is not in the range 1<=x<=10"),
    ("--min-similarity", 1.5, "1.5 is not in the range 0<=x<=1"),
])
def test_medec_flags_out_of_range_are_refused(cli, tmp_path, config_file, flag, value, message):
    result = cli("run", "medec", "-i", MEDEC_SAMPLE, "-o", tmp_path / "run", "--config", config_file(), flag, value)
    assert result.exit_code == 2 and message in result.output


def test_eval_medec_keeps_its_name_and_flags(fp, cli, tmp_path, config_file):
    out = tmp_path / "eval"
    result = cli("eval", "medec", "-i", MEDEC_SAMPLE, "-o", out, "--config", config_file(), "-q", "--max-tokens", 64,
                 "--temperature", 0.5, "--explain-format", "--bleurt-checkpoint", "nowhere")
    assert result.exit_code == 0, result.output
    assert options_of(out) == {"max_tokens": 64, "temperature": 0.5, "explain_format": True}
    assert (out / "metrics.json").is_file() and len(read_jsonl(out / "rows.jsonl")) == 3


def _command(*names: str) -> tuple[click.Command, click.Context]:
    command, ctx = cli_main, click.Context(cli_main, info_name="synthtrace")
    for name in names:
        command = command.get_command(ctx, name)
        ctx = click.Context(command, parent=ctx, info_name=name)
    return command, ctx


@pytest.mark.parametrize("names, cls", [(("export", "sft"), ExportOptions), (("export", "hf"), HfOptions),
                                        (("train",), TrainOptions)])
def test_export_and_train_flags_are_their_options_fields(cli, tmp_path, names, cls):
    """Each field is a flag of its command, its default the dataclass's, shown in --help as it is."""
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    required = {"data": data, "base": "some/model", "output": tmp_path / "out"} if cls is TrainOptions else {}
    args = (["--data", data, "--base", "some/model", "--output", tmp_path / "out"] if cls is TrainOptions
            else [data, "--out", tmp_path / "sft.jsonl"])
    command, ctx = _command(*names)
    records = {p.name: p.get_help_record(ctx) for p in command.params if isinstance(p, click.Option)}
    shown = cli(*names, "--help").output
    for f in dataclasses.fields(cls):
        assert f.name in records, f"{cls.__name__}.{f.name} has no flag"
        flags, help_text = records[f.name]
        assert flags.split(" ")[0].rstrip(",") in shown
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            assert "[required]" in help_text
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if isinstance(default, bool):
            assert ("[default: " in help_text) is default  # a switch shows its default when it is on
        elif default in (None, []):
            assert "[default:" not in help_text
        else:
            text = (",".join(default) if isinstance(default, tuple)
                    else f"({', '.join(default)})" if isinstance(default, list) else str(default))
            assert f"[default: {text}" in help_text, (f.name, help_text)

    # Given no flags, the command builds the dataclass's defaults.
    given = command.make_context(names[-1], [str(a) for a in args], parent=ctx.parent).params
    given = {k: v for k, v in given.items() if k not in ("run_path", "out")}
    assert build(cls, given) == cls(**required)


def test_one_duration_parser():
    for text, seconds in [("90", 90), ("1.5", 1.5), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400),
                          ("7d", 604800), ("1d 12h", 129600), ("2H", 7200), (45, 45), (None, None)]:
        assert parse_duration(text) == seconds, text
    with pytest.raises(ValueError) as e:
        parse_duration("soon", "--older-than")
    assert str(e.value) == ("--older-than: expected a duration such as 90s, 30m, 2h, 1h30m or 7d (or a number of "
                            "seconds, e.g. 90), got 'soon'")
    for bad in ("", "30m1h", "-5", "h", "1x"):
        with pytest.raises(ValueError):
            parse_duration(bad)
