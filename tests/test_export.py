"""`synthtrace export sft`: a hand-built run dir → chat-format SFT files, checked line by line and
rendered through a Qwen3-style chat template (tests/fixtures/) the way transformers renders one."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from synthtrace.export.sft import ExportError, ExportOptions, export_sft, render, split_of, val_path_for
from synthtrace.recipe import ChatExample
from synthtrace.recipes.medec import prompts as P
from synthtrace.recipes.medec.data import split_sentences
from synthtrace.recipes.medec.sft import medec_example as medec

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATE = FIXTURES / "qwen3_style_chat_template.jinja"

# (complaint, finding, investigation, diagnosis, right drug, wrong drug)
CASES = [
    ("fever and dysuria", "costovertebral angle tenderness", "Urinalysis", "acute pyelonephritis",
     "ceftriaxone", "nitrofurantoin"),
    ("crushing chest pain", "diaphoresis and a new murmur", "An electrocardiogram", "an inferior myocardial infarction",
     "aspirin and heparin", "sumatriptan"),
    ("polyuria and weight loss", "dry mucous membranes", "A fasting glucose of 310 mg/dL", "type 1 diabetes mellitus",
     "basal-bolus insulin", "glipizide"),
    ("a productive cough", "crackles at the right base", "A chest radiograph", "community-acquired pneumonia",
     "amoxicillin", "oseltamivir"),
    ("palpitations", "an irregularly irregular pulse", "An electrocardiogram", "atrial fibrillation",
     "apixaban", "clopidogrel alone"),
    ("a painful swollen big toe", "a red hot first metatarsophalangeal joint", "Joint aspiration",
     "acute gout", "colchicine", "allopurinol at a full dose"),
    ("fatigue and pallor", "koilonychia", "A ferritin of 6 ng/mL", "iron deficiency anemia",
     "oral ferrous sulfate", "vitamin B12 injections"),
    ("wheezing at night", "diffuse expiratory wheeze", "Spirometry with reversibility", "asthma",
     "an inhaled corticosteroid", "propranolol"),
    ("a severe unilateral headache", "a tender nodular temporal artery", "An ESR of 96 mm/h", "giant cell arteritis",
     "high-dose prednisone", "ibuprofen alone"),
    ("tremor and heat intolerance", "a diffuse goiter with a bruit", "A suppressed TSH", "Graves disease",
     "methimazole", "levothyroxine"),
]


def _notes(i: int) -> tuple[str, str, str, str]:
    complaint, finding, test, dx, right, wrong = CASES[i]
    head = (f"A {30 + i}-year-old patient presents with {complaint}. Examination shows {finding}. "
            f"{test} supports {dx}.")
    correct, error = f"The patient is treated with {right}.", f"The patient is treated with {wrong}."
    return f"{head} {correct}", f"{head} {error}", error, correct


def _reasoning(kind: str, rid: str) -> str:
    return (f"<reasoning>Working through {kind} for {rid}. The presentation points one way; I weigh each finding, "
            "form my own expectation of the diagnosis and the plan, and then check every sentence of the note "
            f"against it, revisiting anything that does not fit.\n\nConclusion for {rid} follows.</reasoning>")


def _prov(rid: str, line: int) -> dict[str, Any]:
    return {"recipe": "medec", "prompt_version": P.PROMPT_VERSION, "record_id": rid, "source_note_id": rid,
            "source": {"file": "medec.csv", "line": line}, "calls": [], "synthtrace": "0.1.0"}


def medec_rows(i: int) -> list[dict[str, Any]]:
    """The four rows the medec recipe writes for one error pair (as `recipe.py` builds them)."""
    rid = f"ms-val-{i}"
    correct, error, wrong, right = _notes(i)
    etype = "pharmacotherapy"
    details = {"error_sentence": wrong, "error_sentence_id": 3, "corrected_sentence": right}
    base = {"provenance": _prov(rid, i + 2)}
    return [
        {"note_id": f"{rid}_critic_correct", "role": "critic", "task": "assessment", "note": correct,
         "reasoning": _reasoning("critic_correct", rid), "label": "CORRECT",
         "answer": P.render_verdict(False, -1, None),
         "prompt": {"system": P.CRITIC_SYSTEM, "user": P.critic_user(split_sentences(correct))},
         "verified": True, "verification": {"verified": True}, "attempts": 1, "hinted": False, **base},
        {"note_id": f"{rid}_critic_error", "role": "critic", "task": "assessment", "note": error,
         "reasoning": _reasoning("critic_error", rid), "label": "ERROR", "error_type": etype,
         "error_details": details, "answer": P.render_verdict(True, 3, right),
         "prompt": {"system": P.CRITIC_SYSTEM, "user": P.critic_user(split_sentences(error))},
         "verified": True, "verification": {"verified": True}, "attempts": 2, "hinted": False, **base},
        {"note_id": f"{rid}_generator_correct", "role": "generator", "task": "generation", "note": correct,
         "reasoning": _reasoning("generator_correct", rid), "label": "CORRECT", "answer": correct,
         "prompt": {"system": P.GENERATOR_CORRECT_SYSTEM,
                    "user": P.generator_correct_user(split_sentences(correct)[0])},
         "verified": None, "verification": {"checks": "length, no leak"}, "attempts": 1, "hinted": False, **base},
        {"note_id": f"{rid}_generator_error", "role": "generator", "task": "generation", "note": error,
         "reasoning": _reasoning("generator_error", rid), "label": "ERROR", "error_type": etype,
         "error_details": details, "answer": error,
         "prompt": {"system": P.GENERATOR_ERROR_SYSTEM, "user": P.generator_error_user(correct, etype)},
         "verified": None, "verification": {"checks": "length, no leak, names the change"}, "attempts": 1,
         "hinted": False, **base},
    ]


def build_rows() -> list[Any]:
    rows: list[Any] = []
    for i in range(len(CASES)):
        rows += medec_rows(i)
    by_id = {r["note_id"]: r for r in rows if isinstance(r, dict)}
    by_id["ms-val-1_critic_error"].update(verified=False, verification={"verified": False, "problem": "wrong id"})
    by_id["ms-val-2_critic_correct"]["verified"] = False
    by_id["ms-val-3_critic_error"]["hinted"] = True
    del by_id["ms-val-4_generator_correct"]["prompt"]  # an older row: its prompt is rebuilt
    by_id["ms-val-5_critic_correct"]["prompt"]["user"] = by_id["ms-val-5_critic_correct"]["note"]  # a bare note
    rows.insert(7, "{not json")  # an unreadable line: line 8 of rows.jsonl
    rows.append({"id": "tr-1", "source": "Bonjour.", "translation": "Hello.",  # a recipe with no exporter
                 "provenance": {"recipe": "translation", "record_id": "tr-1"}})
    rows.append({"id": "c1", "prompt": "Name three prime numbers.", "completion": "2, 3 and 5.",
                 "reasoning": "Small primes: 2, 3, 5.", "provenance": {"recipe": "completions", "record_id": "c1"}})
    rows.append({"id": "c2", "completion": "Hello.", "provenance": {"recipe": "completions", "record_id": "c2"}})
    return rows


MEDEC_ROWS = 4 * len(CASES)
UNVERIFIED = {"ms-val-1_critic_error", "ms-val-2_critic_correct"}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "rows.jsonl", "w", encoding="utf-8") as f:
        f.writelines((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in build_rows())
    return run


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def export(run: Path, out: Path, **options: Any) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    result = export_sft(run, out, ExportOptions(**options))
    val = read_lines(result.val_path) if result.val_path else []
    return result, read_lines(out), val


def source_rows() -> dict[str, dict[str, Any]]:
    return {r["note_id"]: r for r in build_rows() if isinstance(r, dict) and "note_id" in r}


@functools.cache
def _template() -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    return env.from_string(TEMPLATE.read_text(encoding="utf-8"))


def render_template(messages: list[dict[str, Any]], add_generation_prompt: bool = False, **kwargs: Any) -> str:
    """As transformers renders a chat template: a sandboxed, immutable jinja2 environment."""
    return _template().render(messages=messages, add_generation_prompt=add_generation_prompt, **kwargs)


# -- every format ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["qwen3", "messages", "chatml"])
def test_every_format_parses_with_system_user_assistant_in_order(run_dir: Path, tmp_path: Path, fmt: str) -> None:
    result, train, val = export(run_dir, tmp_path / "sft.jsonl", format=fmt, val_fraction=0.3)
    lines = train + val
    assert len(lines) == MEDEC_ROWS - len(UNVERIFIED) - 1 + 1  # minus unverified and the bare note, plus c1
    for line in lines:
        if fmt == "chatml":
            text = line["text"]
            starts = [text.find(f"<|im_start|>{role}\n") for role in ("system", "user", "assistant")]
            if line["metadata"]["recipe"] == "completions":  # no system prompt in its source: none is made up
                assert starts[0] == -1 and 0 == starts[1] < starts[2]
            else:
                assert 0 == starts[0] < starts[1] < starts[2]
                assert not text.startswith("<|im_start|>system\n<|im_end|>")
            assert text.endswith("<|im_end|>\n") and text.count("<|im_end|>") == text.count("<|im_start|>")
            continue
        roles = [m["role"] for m in line["messages"]]
        if line["metadata"]["recipe"] == "completions":
            assert roles == ["user", "assistant"]
        else:
            assert roles == ["system", "user", "assistant"]
            assert line["messages"][0]["content"].strip()
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in line["messages"])


def test_user_turn_holds_the_note_and_a_request(run_dir: Path, tmp_path: Path) -> None:
    _, train, val = export(run_dir, tmp_path / "sft.jsonl", format="messages", val_fraction=0.3)
    rows = source_rows()
    seen = set()
    for line in train + val:
        meta = line["metadata"]
        if meta["recipe"] != "medec":
            continue
        row = rows[meta["note_id"]]
        system, user = line["messages"][0]["content"], line["messages"][1]["content"]
        note = row["note"]
        assert user != note and system
        assert P.CRITIC_TEACHER[:30] not in user  # the teacher's instructions never reach the trained model
        if meta["role"] == "critic":  # the note under review, sentence by sentence, plus the request
            assert len(user) > len(note)
            assert all(s in user for s in split_sentences(note))
            assert "Does the note contain a medical error?" in user
        elif meta["label"] == "ERROR":  # the correct note it must corrupt
            right, wrong = row["error_details"]["corrected_sentence"], row["error_details"]["error_sentence"]
            assert note.replace(wrong, right) in user and "Introduce exactly one" in user
        else:  # the opening it must continue
            assert f"The note begins: {split_sentences(note)[0]}" in user
        seen.add((meta["role"], meta["label"]))
    assert seen == {("critic", "CORRECT"), ("critic", "ERROR"), ("generator", "CORRECT"), ("generator", "ERROR")}


def test_qwen3_assistant_is_a_think_block_then_the_answer(run_dir: Path, tmp_path: Path) -> None:
    _, train, _ = export(run_dir, tmp_path / "sft.jsonl", format="qwen3", val_fraction=0)
    rows = source_rows()
    checked = 0
    for line in train:
        meta, content = line["metadata"], line["messages"][-1]["content"]
        assert content.startswith("<think>\n")
        head, sep, answer = content.partition("\n</think>\n\n")
        assert sep and "<think>" not in answer and "</think>" not in answer
        if meta["recipe"] == "medec":
            row = rows[meta["note_id"]]
            assert answer == row["answer"]
            assert head == "<think>\n" + row["reasoning"].removeprefix("<reasoning>").removesuffix("</reasoning>")
            assert "<reasoning>" not in content
            checked += 1
    assert checked == MEDEC_ROWS - len(UNVERIFIED) - 1


def test_messages_format_keeps_the_reasoning_in_reasoning_content(run_dir: Path, tmp_path: Path) -> None:
    _, train, _ = export(run_dir, tmp_path / "sft.jsonl", format="messages", val_fraction=0)
    rows = source_rows()
    for line in train:
        assistant = line["messages"][-1]
        assert set(assistant) == {"role", "content", "reasoning_content"}
        assert "<think>" not in assistant["content"] and assistant["reasoning_content"].strip()
        if line["metadata"]["recipe"] == "medec":
            row = rows[line["metadata"]["note_id"]]
            assert assistant["content"] == row["answer"]
            assert assistant["reasoning_content"].startswith("Working through ")
            assert assistant["reasoning_content"].endswith("follows.")
        assert all("reasoning_content" not in m for m in line["messages"][:-1])


# -- what is kept ---------------------------------------------------------------------------------

def _ids(lines: list[dict[str, Any]]) -> set[str]:
    return {line["metadata"].get("note_id") or line["metadata"]["id"] for line in lines}


def test_unverified_rows_are_skipped_unless_asked_for(run_dir: Path, tmp_path: Path) -> None:
    result, train, _ = export(run_dir, tmp_path / "a.jsonl", val_fraction=0)
    assert not UNVERIFIED & _ids(train)
    assert result.skipped["unverified (--include-unverified keeps it)"] == len(UNVERIFIED)
    result, train, _ = export(run_dir, tmp_path / "b.jsonl", val_fraction=0, include_unverified=True)
    assert UNVERIFIED <= _ids(train)
    assert "unverified (--include-unverified keeps it)" not in result.skipped


def test_hinted_rows_are_kept_by_default_and_dropped_on_request(run_dir: Path, tmp_path: Path) -> None:
    _, train, _ = export(run_dir, tmp_path / "a.jsonl", val_fraction=0)
    assert "ms-val-3_critic_error" in _ids(train)
    assert next(line for line in train if line["metadata"]["note_id"] == "ms-val-3_critic_error")["metadata"]["hinted"]
    result, train, _ = export(run_dir, tmp_path / "b.jsonl", val_fraction=0, include_hinted=False)
    assert "ms-val-3_critic_error" not in _ids(train)
    assert result.skipped["hinted (--no-include-hinted drops it)"] == 1


def test_skips_are_counted_with_their_reasons(run_dir: Path, tmp_path: Path) -> None:
    result, train, _ = export(run_dir, tmp_path / "sft.jsonl", val_fraction=0)
    assert dict(result.skipped) == {
        "unverified (--include-unverified keeps it)": 2,
        "user turn is the bare note, without a request": 1,
        "unknown recipe 'translation'": 1,
        "completions row without its prompt or messages": 1,
    }
    assert result.bad_line_count == 1 and result.bad_lines[0].startswith(f"{run_dir / 'rows.jsonl'}:8: invalid JSON")
    assert result.rows_read == MEDEC_ROWS + 3
    assert len(train) == result.rows_read - sum(result.skipped.values())
    assert "ms-val-5_critic_correct" not in _ids(train)


def test_a_row_without_its_prompt_gets_the_recipes_prompt_back(run_dir: Path, tmp_path: Path) -> None:
    result, train, _ = export(run_dir, tmp_path / "sft.jsonl", format="messages", val_fraction=0)
    assert result.rebuilt_prompts == 1
    line = next(line for line in train if line["metadata"]["note_id"] == "ms-val-4_generator_correct")
    original = medec_rows(4)[2]["prompt"]
    assert [m["content"] for m in line["messages"][:2]] == [original["system"], original["user"]]


def test_a_prompt_that_cannot_be_rebuilt_or_leaks_the_teacher_is_skipped() -> None:
    row = medec_rows(0)[0]
    assert isinstance(medec(row), ChatExample)
    assert medec({**row, "prompt": None, "note": None}) == "no stored prompt and no note to rebuild it from"
    leaked = {**row, "prompt": {"system": P.CRITIC_SYSTEM, "user": f"{row['prompt']['user']}\n\n{P.CRITIC_TEACHER}"}}
    assert medec(leaked) == "prompt holds the teacher's instructions"
    only_request = {**row, "prompt": {"system": P.CRITIC_SYSTEM, "user": P.critic_user([])}}
    assert medec(only_request) == "critic user turn does not hold the note"
    gen_error = medec_rows(0)[3]
    unfindable = {**gen_error, "prompt": None, "error_details": {**gen_error["error_details"], "error_sentence": "?"}}
    assert medec(unfindable) == "no stored prompt, and the generator_error prompt cannot be rebuilt"
    rebuilt = medec({**gen_error, "prompt": None})
    assert isinstance(rebuilt, ChatExample) and rebuilt.user == gen_error["prompt"]["user"]


def test_completions_rows_with_their_prompt_are_exported(run_dir: Path, tmp_path: Path) -> None:
    _, train, _ = export(run_dir, tmp_path / "sft.jsonl", format="messages", val_fraction=0)
    (line,) = [line for line in train if line["metadata"]["recipe"] == "completions"]
    assert line["messages"] == [
        {"role": "user", "content": "Name three prime numbers."},
        {"role": "assistant", "content": "2, 3 and 5.", "reasoning_content": "Small primes: 2, 3, 5."}]


def test_metadata_can_be_left_out(run_dir: Path, tmp_path: Path) -> None:
    _, train, _ = export(run_dir, tmp_path / "sft.jsonl", format="chatml", val_fraction=0, with_metadata=False)
    assert train and all(set(line) == {"text"} for line in train)


# -- the split ------------------------------------------------------------------------------------

def _groups(lines: list[dict[str, Any]]) -> set[str]:
    return {line["metadata"]["group"] for line in lines}


def test_split_is_by_source_deterministic_and_seeded(run_dir: Path, tmp_path: Path) -> None:
    out1, out2 = tmp_path / "one" / "sft.jsonl", tmp_path / "two" / "sft.jsonl"
    r1, train, val = export(run_dir, out1, val_fraction=0.3, seed=0)
    r2, _, _ = export(run_dir, out2, val_fraction=0.3, seed=0)
    assert r1.val_path == out1.parent / "sft.val.jsonl"
    assert out1.read_bytes() == out2.read_bytes() and r1.val_path.read_bytes() == r2.val_path.read_bytes()
    assert train and val and not _groups(train) & _groups(val)
    assert _groups(train) | _groups(val) == {f"ms-val-{i}" for i in range(len(CASES))} | {"c1"}
    for line in val:  # the group is the source note: all its rows sit on one side
        assert line["metadata"]["note_id"].startswith(line["metadata"]["group"])
    assert (r1.groups["train"], r1.groups["val"]) == (len(_groups(train)), len(_groups(val)))

    _, _, val_other_seed = export(run_dir, tmp_path / "three" / "sft.jsonl", val_fraction=0.3, seed=1)
    assert _groups(val_other_seed) != _groups(val)


def test_split_of_follows_the_fraction() -> None:
    groups = [f"note-{i}" for i in range(2000)]
    share = sum(split_of(g, 0, 0.1) == "val" for g in groups) / len(groups)
    assert 0.07 < share < 0.13
    assert all(split_of(g, 0, 0.0) == "train" for g in groups[:100])


def test_val_fraction_zero_writes_no_validation_file(run_dir: Path, tmp_path: Path) -> None:
    result, train, _ = export(run_dir, tmp_path / "sft.jsonl", val_fraction=0)
    assert result.val_path is None and not (tmp_path / "sft.val.jsonl").exists()
    assert len(train) == MEDEC_ROWS - len(UNVERIFIED) - 1 + 1
    assert val_path_for(tmp_path / "x" / "data.jsonl") == tmp_path / "x" / "data.val.jsonl"


def test_the_rows_are_never_overwritten(run_dir: Path) -> None:
    before = (run_dir / "rows.jsonl").read_bytes()
    with pytest.raises(ExportError, match="refusing"):
        export_sft(run_dir, run_dir / "rows.jsonl", ExportOptions())
    assert (run_dir / "rows.jsonl").read_bytes() == before


# -- through a Qwen3-style chat template ----------------------------------------------------------

def test_exports_render_through_a_qwen3_style_chat_template(run_dir: Path, tmp_path: Path) -> None:
    _, qwen3, _ = export(run_dir, tmp_path / "q.jsonl", format="qwen3", val_fraction=0)
    _, messages, _ = export(run_dir, tmp_path / "m.jsonl", format="messages", val_fraction=0)
    _, chatml, _ = export(run_dir, tmp_path / "c.jsonl", format="chatml", val_fraction=0)
    assert len(qwen3) == len(messages) == len(chatml)
    for q, m, c in zip(qwen3, messages, chatml):
        text = render_template(m["messages"])
        if m["metadata"]["recipe"] == "medec":
            heads = [text.index(f"<|im_start|>{r}\n") for r in ("system", "user", "assistant")]
            assert heads == sorted(heads) and heads[0] == 0
        assistant = text[text.index("<|im_start|>assistant\n"):]
        answer = m["messages"][-1]["content"]
        assert assistant.startswith("<|im_start|>assistant\n<think>\n" + m["messages"][-1]["reasoning_content"])
        assert assistant.endswith(f"\n</think>\n\n{answer}<|im_end|>\n")
        assert text.count("<think>") == 1 and text.index("<think>") > text.index("<|im_start|>assistant\n")
        # the same conversation whichever way the reasoning travels, and the same as the pre-rendered text
        assert render_template(q["messages"]) == text
        assert c["text"] == text
        # what the model is trained on begins with exactly what it is prompted with at inference
        prompt = render_template(m["messages"][:-1], add_generation_prompt=True)
        assert text.startswith(prompt) and prompt.endswith("<|im_start|>assistant\n")


def test_the_template_drops_reasoning_of_earlier_turns_like_qwen3() -> None:
    ex = ChatExample("Q1", "A1", "thinking one", "Be brief.", group="g")
    first = render(ex, "messages")["messages"]
    text = render_template([*first, {"role": "user", "content": "Q2"},
                            {"role": "assistant", "content": "A2", "reasoning_content": "thinking two"}])
    assert "thinking one" not in text and "<|im_start|>assistant\nA1<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n<think>\nthinking two\n</think>\n\nA2<|im_end|>\n")
    assert render_template(first[:2], add_generation_prompt=True, enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")


# -- the command ----------------------------------------------------------------------------------

def test_cli_export_sft_prints_the_summary_and_both_paths(run_dir: Path, tmp_path: Path, cli: Any) -> None:
    out = tmp_path / "data" / "sft.jsonl"
    result = cli("export", "sft", run_dir, "--format", "chatml", "--out", out, "--val-fraction", "0.3",
                 "--seed", "0")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "critic/assessment" in text and "generator/generation" in text
    assert "unknown recipe 'translation'" in text and "unverified" in text
    assert "rows.jsonl:8: invalid JSON" in text
    assert str(out) in result.output.replace("\n", "") and str(val_path_for(out)) in result.output.replace("\n", "")
    assert len(read_lines(out)) + len(read_lines(val_path_for(out))) == MEDEC_ROWS - len(UNVERIFIED)
    assert {"text", "metadata"} == set(read_lines(out)[0])


def test_cli_names_a_missing_rows_file(tmp_path: Path, cli: Any) -> None:
    (tmp_path / "empty").mkdir()
    result = cli("export", "sft", tmp_path / "empty", "--out", tmp_path / "sft.jsonl")
    assert result.exit_code != 0 and "no rows.jsonl" in result.output


# -- end to end: rows the medec recipe really writes ----------------------------------------------

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "medec" / "medec-ms-val-sample.csv"
TRACE = ("First I summarise the presentation and the key findings, then I weigh each finding against the diagnosis "
         "and plan I would expect, consider at least one alternative explanation, and check every sentence of the "
         "note in order against what the evidence supports before I settle on my judgement of the whole case.")
# rid: (topic in every prompt about it, text only in its error note, error id, error sentence, correction)
SAMPLE_CASES = {
    "ms-val-219": ("orchiectomy", "Scrotal orchiectomy", 1, "Scrotal orchiectomy is required.",
                   "Radical inguinal orchiectomy is required."),
    "ms-val-108": ("dark green discharge", "Colonic atresia", 3,
                   "Colonic atresia is confirmed when dark green discharge is coming out of the vulva.",
                   "Imperforate anus is confirmed when dark green discharge is coming out of the vulva."),
    "ms-val-458": ("melanoma", None, -1, None, None),
}


def _script_right_answers(fp: Any) -> None:
    from synthtrace.testing.fake_answers import last_user_text

    critic = "Review this clinical note for a medical error"
    for rid, (topic, error_text, sid, wrong, right) in SAMPLE_CASES.items():
        def on(body: Any, topic: str = topic, want_critic: bool = True, error_text: str | None = error_text,
               on_error: bool | None = None) -> bool:
            text = last_user_text(body)
            if topic not in text or (critic in text) != want_critic:
                return False
            return on_error is None or (error_text is not None and error_text in text) == on_error
        fp.script(lambda b, on=on: on(b, on_error=False), {"reasoning": f"{rid} {TRACE}", "error_found": False,
                                                           "error_sentence_id": -1, "corrected_sentence": ""},
                  repeat_last=True)
        if wrong:
            fp.script(lambda b, on=on: on(b, on_error=True), {"reasoning": f"{rid} {TRACE}", "error_found": True,
                                                              "error_sentence_id": sid, "corrected_sentence": right},
                      repeat_last=True)
        fp.script(lambda b, on=on: on(b, want_critic=False),
                  f"{rid}: I change \"{right}\" into \"{wrong}\". {TRACE}" if wrong else f"{rid}: {TRACE}",
                  repeat_last=True)


def test_rows_written_by_the_medec_recipe_export_and_render(fp: Any, cli: Any, tmp_path: Path,
                                                            config_file: Any) -> None:
    run = tmp_path / "run"
    _script_right_answers(fp)
    result = cli("run", "medec", "-i", SAMPLE, "-o", run, "--config", config_file(), "-q")
    assert result.exit_code == 0, result.output
    rows = {r["note_id"]: r for r in read_lines(run / "rows.jsonl")}
    assert len(rows) == 10 and all(r["verified"] is not False for r in rows.values())

    exported, train, val = export(run, tmp_path / "sft.jsonl", format="messages", val_fraction=0.5, seed=1)
    assert not exported.skipped and not exported.bad_line_count and len(train) + len(val) == 10
    assert train and val and not _groups(train) & _groups(val)
    for line in train + val:
        row = rows[line["metadata"]["note_id"]]
        system, user, assistant = line["messages"]
        assert (system["content"], user["content"]) == (row["prompt"]["system"], row["prompt"]["user"])
        assert assistant["content"] == row["answer"] and TRACE in assistant["reasoning_content"]
        assert "<reasoning>" not in assistant["reasoning_content"]
        text = render_template(line["messages"])
        assert text.startswith(f"<|im_start|>system\n{row['prompt']['system']}<|im_end|>\n<|im_start|>user\n")
        assert text.endswith(f"\n</think>\n\n{row['answer']}<|im_end|>\n")


def test_a_real_completions_run_exports_as_chat(fp, cli, tmp_path, write_jsonl, config_file):
    """Rows written by `run completions` carry the messages sent, so they export without extra input."""
    inp = write_jsonl([{"id": f"c{i}", "prompt": f"question {i}"} for i in range(6)])
    run = tmp_path / "run"
    assert cli("run", "completions", "-i", inp, "-o", run, "--config", config_file(), "--system", "Be brief.").exit_code == 0
    out = tmp_path / "sft.jsonl"
    res = cli("export", "sft", run, "--format", "qwen3", "--out", out, "--val-fraction", "0")
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6
    for ex in lines:
        roles = [m["role"] for m in ex["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert ex["messages"][0]["content"] == "Be brief."
        assert ex["messages"][2]["content"].endswith("echo: " + ex["messages"][1]["content"])
