"""The `math` recipe on the fake provider, and `synthtrace verify` on its run with no model call."""

from __future__ import annotations

import json

from conftest import make_config, read_jsonl

PROBLEMS = [
    {"id": "easy", "question": "What is 20 + 22?", "answer": "20 + 22 = 42\n#### 42"},
    {"id": "slow", "problem": "Simplify $\\frac{18}{24}$.", "solution": "$\\boxed{\\frac{3}{4}}$"},
    {"id": "hard", "problem": "What is 7 * 8?", "answer": "56"},
    {"unique_id": "test/algebra/1", "problem": "Solve $x + 1 = 3$.", "answer": 2},
]


def script(fp) -> None:
    fp.script("20 + 22", "Add them: 20 + 22.\n\\boxed{42}", "So it is \\boxed{42}")
    fp.script("Simplify", "Halve it: 9/16.\n\\boxed{\\frac{9}{16}}", "It is \\boxed{0.7}",
              "Divide by 6.\n\\boxed{0.75}", repeat_last=True)
    fp.script("7 * 8", "Seven eights.\n\\boxed{54}", repeat_last=True)
    fp.script("x + 1", "Subtract 1.\n\\boxed{2}", repeat_last=True)


def test_math_samples_until_verified_keeps_every_verdict_and_rejects_what_never_verifies(fp, cli, tmp_path,
                                                                                         write_jsonl):
    script(fp)
    inp = write_jsonl(PROBLEMS)
    out = tmp_path / "run"
    done = cli("run", "math", "-i", inp, "-o", out, "--config", make_config(tmp_path / "c.yaml", fp), "-q",
               "--k", 2, "--budget", 6, "--verifier", "number", "--verifier", "math")
    assert done.exit_code == 0, done.output
    rows = read_jsonl(out / "rows.jsonl")
    by_id: dict[str, list] = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    assert sorted(by_id) == ["easy", "slow", "test/algebra/1"]
    assert len(by_id["easy"]) == 2 and by_id["easy"][0]["sampling"]["drawn"] == 2  # stopped at two verified
    slow = by_id["slow"][0]["sampling"]
    verdicts = [s["verdict"] for s in slow["samples"]]  # two wrong, then a wave that verifies
    assert verdicts.count("incorrect") == 2 and verdicts.count("correct") >= 2 and len(verdicts) <= 6
    assert slow["stopped"] == "enough" and 0 < slow["pass_rate"] < 1
    assert all(r["verified"] and r["verification"]["verdict"] == "correct" for r in rows)
    assert by_id["easy"][0]["answer"] == "\\boxed{42}" and "20 + 22" in by_id["easy"][0]["reasoning"]
    (hard,) = read_jsonl(out / "rejected.jsonl")
    assert hard["id"] == "hard" and hard["reason"] == "no verified answer in 6 samples (budget)"
    assert [s["verdict"] for s in hard["sampling"]["samples"]] == ["incorrect"] * 6

    sft = cli("export", "sft", out, "--format", "messages", "--out", tmp_path / "sft.jsonl", "--val-fraction", 0)
    assert sft.exit_code == 0, sft.output
    assert len(read_jsonl(tmp_path / "sft.jsonl")) == len(rows)


def test_verify_rechecks_from_the_journal_with_no_model_call_and_applies_only_when_asked(fp, cli, tmp_path,
                                                                                        write_jsonl):
    script(fp)
    out = tmp_path / "run"
    cfg = make_config(tmp_path / "c.yaml", fp)
    assert cli("run", "math", "-i", write_jsonl(PROBLEMS), "-o", out, "--config", cfg, "-q", "--k", 2,
               "--budget", 6).exit_code == 0
    before = {name: (out / name).read_bytes() for name in ("rows.jsonl", "rejected.jsonl")}
    fp.reset()

    same = cli("verify", out)
    assert same.exit_code == 0, same.output
    assert "verdicts that flipped: 0 of" in same.output and fp.requests == []  # no HTTP request at all
    assert {name: (out / name).read_bytes() for name in before} == before  # the same verifier changes nothing

    exact_only = cli("verify", out, "--verifier", "exact")  # a stricter checker: 0.75 is not 3/4 to it
    assert exact_only.exit_code == 0 and "verdicts that flipped: 0 of" not in exact_only.output
    assert "would be marked verified: false" in exact_only.output
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing written without --apply

    applied = cli("verify", out, "--verifier", "exact", "--apply")
    assert applied.exit_code == 0, applied.output
    slow = [r for r in read_jsonl(out / "rows.jsonl") if r["id"] == "slow"]
    assert slow and all(r["verified"] is False for r in slow)
    assert json.loads((out / "manifest.json").read_text())["recipe"] == "math"
    assert fp.requests == []


def test_the_system_prompt_is_an_option_and_trains_as_it_was_sent(fp, cli, tmp_path, write_jsonl):
    fp.script("20 + 22", "20 + 22 = 42", repeat_last=True)
    inp = write_jsonl(PROBLEMS[:1])
    config = make_config(tmp_path / "c.yaml", fp)
    for system, out in (("", tmp_path / "bare"), ("Be brief.", tmp_path / "brief")):
        done = cli("run", "math", "-i", inp, "-o", out, "--config", config, "-q", "--budget", 1, "--system", system)
        assert done.exit_code == 0, done.output
        sent = fp.requests[-1].body["messages"]
        assert [m["role"] for m in sent] == (["user"] if not system else ["system", "user"])
        sft = cli("export", "sft", out, "--format", "messages", "--out", out / "sft.jsonl", "--val-fraction", 0)
        assert sft.exit_code == 0, sft.output
        (example,) = read_jsonl(out / "sft.jsonl")
        roles = [m["role"] for m in example["messages"]]
        assert roles == (["user", "assistant"] if not system else ["system", "user", "assistant"])
        assert not system or example["messages"][0]["content"] == system
