"""`synthtrace run medec` as a user runs it: four verified rows per MEDEC pair, retries, hints, resume.

Every run goes through the CLI (click's CliRunner, in-process) against the fake provider on
127.0.0.1, with each request scripted by what is in its prompt: the critic on the error note and on
the correct note are told apart by the numbered sentence only that note has; the generators by
their teacher instructions. The data layer is also checked against the real MEDEC files when they
are there (../shared/data/medec).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl

from synthtrace.inputs import BadInput
from synthtrace.recipes.medec.data import MedecCase, read_cases
from synthtrace.recipes.medec.prompts import parse_verdict, render_verdict
from synthtrace.recipes.medec.verify import sentence_matches, verify_critic_verdict
from synthtrace.testing import Fault
from synthtrace.testing.fake_answers import last_user_text

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "medec" / "medec-ms-val-sample.csv"
MEDEC_DIR = ROOT.parent / "shared" / "data" / "medec"

CRITIC = "Review this clinical note for a medical error"
HINT = "A senior reviewer"
GEN_CORRECT = "You wrote the note below"
GEN_ERROR = "To build this training case"

FILLER = ("First I summarise the presentation and the key findings, then I weigh each finding against the "
          "diagnosis and plan I would expect, consider at least one alternative explanation, and check every "
          "sentence of the note in order against what the evidence supports before I settle on my judgement "
          "of the whole case and write it down plainly.")
assert len(FILLER.split()) >= 45


@dataclass(frozen=True)
class Pair:
    """One sample record, and the text that picks out each of its prompts."""

    rid: str
    etype: str | None
    sid: int  # the error sentence's id in the note as the critic sees it (-1: no error)
    error_sentence: str | None
    corrected: str | None
    topic: str  # in every prompt about this record, in none about the others
    correct_line: str  # starts a numbered sentence of the correct note only
    error_line: str | None  # starts a numbered sentence of the error note only

    @property
    def has_error(self) -> bool:
        return self.etype is not None


P219 = Pair("ms-val-219", "management", 1, "Scrotal orchiectomy is required.",
            "Radical inguinal orchiectomy is required.", "orchiectomy", "Radical inguinal", "Scrotal orchiectomy")
P108 = Pair("ms-val-108", "diagnosis", 3,
            "Colonic atresia is confirmed when dark green discharge is coming out of the vulva.",
            "Imperforate anus is confirmed when dark green discharge is coming out of the vulva.",
            "dark green discharge", "Imperforate anus", "Colonic atresia")
P458 = Pair("ms-val-458", None, -1, None, None, "melanoma", "An excisional biopsy", None)
SAMPLE_PAIRS = (P219, P108, P458)

KINDS = ("critic_correct", "critic_error", "generator_correct", "generator_error")
ROW_KEYS = {"note_id", "role", "task", "note", "reasoning", "label", "answer", "prompt", "verified", "verification",
            "attempts", "hinted", "provenance"}


# --- matching requests ---------------------------------------------------------------------------


def critic_of(pair: Pair, on_error: bool, hinted: bool | None = False) -> Any:
    """Matches the critic's requests on the pair's error note (or correct note); hinted=None: either."""
    line = pair.error_line if on_error else pair.correct_line
    numbered = re.compile(rf"^\d+ {re.escape(line)}", re.MULTILINE)

    def match(body: Any) -> bool:
        text = last_user_text(body)
        if CRITIC not in text or not numbered.search(text):
            return False
        return hinted is None or (HINT in text) == hinted
    return match


def generator_of(pair: Pair, kind: str) -> Any:
    marker = GEN_CORRECT if kind == "generator_correct" else GEN_ERROR

    def match(body: Any) -> bool:
        text = last_user_text(body)
        return marker in text and pair.topic in text
    return match


def about(pair: Pair) -> Any:
    return lambda body: pair.topic in last_user_text(body)


def sent(fp: Any, match: Any) -> list[dict[str, Any]]:
    """Bodies of the requests the server saw that `match`."""
    return [r.body for r in fp.requests if match(r.body)]


# --- answers -------------------------------------------------------------------------------------


def tag(pair: Pair, kind: str) -> str:
    return f"TRACE-{kind}-{pair.rid}"


def verdict(reasoning: str, error_found: bool, sid: int = -1, corrected: str = "") -> dict[str, Any]:
    return {"reasoning": reasoning, "error_found": error_found, "error_sentence_id": sid,
            "corrected_sentence": corrected}


def right_verdict(pair: Pair, on_error: bool) -> dict[str, Any]:
    kind = "critic_error" if on_error else "critic_correct"
    text = f"{tag(pair, kind)} {FILLER}"
    return verdict(text, True, pair.sid, pair.corrected or "") if on_error else verdict(text, False)


def generator_text(pair: Pair, kind: str) -> str:
    if kind == "generator_error":
        return f"{tag(pair, kind)} I change \"{pair.corrected}\" into \"{pair.error_sentence}\". {FILLER}"
    return f"{tag(pair, kind)} {FILLER}"


def served(answer: Any, usage: dict[str, int] | None) -> Any:
    return {"json": answer, "usage": usage} if usage and isinstance(answer, dict) else (
        {"text": answer, "usage": usage} if usage else answer)


def script_right(fp: Any, pair: Pair, skip: tuple[str, ...] = (), usage: dict[str, int] | None = None) -> None:
    """Right answers for every example of `pair` (except `skip`), for as many requests as come."""
    for kind in KINDS:
        if kind in skip or (kind.endswith("_error") and not pair.has_error):
            continue
        if kind.startswith("critic"):
            on_error = kind == "critic_error"
            fp.script(critic_of(pair, on_error, hinted=None), served(right_verdict(pair, on_error), usage),
                      repeat_last=True)
        else:
            fp.script(generator_of(pair, kind), served(generator_text(pair, kind), usage), repeat_last=True)


# --- running -------------------------------------------------------------------------------------


def run_medec(cli: Any, inp: Path, out: Path, cfg: Path, *extra: Any, env: dict[str, str] | None = None) -> Any:
    return cli("run", "medec", "-i", inp, "-o", out, "--config", cfg, "-q", *extra, env=env)


def by_note_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ids = [r["note_id"] for r in rows]
    assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
    return {r["note_id"]: r for r in rows}


def rejected_by_note_id(out: Path) -> dict[str, dict[str, Any]]:
    return {e.get("part", e.get("id")): e for e in read_jsonl(out / "rejected.jsonl")}


def sample_case(rid: str) -> MedecCase:
    for item in read_cases(SAMPLE):
        if not isinstance(item, BadInput) and item.id == rid:
            return MedecCase.from_data(item.data)
    raise KeyError(rid)


def sample_rows() -> list[dict[str, str]]:
    with open(SAMPLE, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pairs_jsonl_line(row: dict[str, str], note_id: str | None = None) -> dict[str, Any]:
    """A sample CSV error row as a pairs-JSONL object."""
    return {"note_id": note_id or row["Text ID"], "incorrect_note": row["Text"].strip(),
            "correct_note": row["Corrected Text"].strip(), "error_type": row["Error Type"],
            "error_sentence": row["Error Sentence"], "corrected_sentence": row["Corrected Sentence"]}


# =================================================================================================
# 1. four rows per pair, the row schema


def test_sample_gives_four_rows_per_pair_two_per_error_free_note_with_the_row_schema(fp, cli, tmp_path, config_file):
    fp.script(critic_of(P219, True), {"json": right_verdict(P219, True), "reasoning": "THINKING-219"})
    for pair in SAMPLE_PAIRS:
        script_right(fp, pair)
    out = tmp_path / "run"
    result = run_medec(cli, SAMPLE, out, config_file())
    assert result.exit_code == 0, result.output
    rows = by_note_id(read_jsonl(out / "rows.jsonl"))
    expected = {f"{p.rid}_{k}" for p in (P219, P108) for k in KINDS}
    expected |= {"ms-val-458_critic_correct", "ms-val-458_generator_correct"}
    assert set(rows) == expected
    assert not read_jsonl(out / "rejected.jsonl")

    notes = {rid: sample_case(rid) for rid in ("ms-val-219", "ms-val-108", "ms-val-458")}
    for pair in SAMPLE_PAIRS:
        case = notes[pair.rid]
        for kind in KINDS:
            note_id = f"{pair.rid}_{kind}"
            if note_id not in expected:
                continue
            row = rows[note_id]
            error_row = kind.endswith("_error")
            assert set(row) == ROW_KEYS | ({"error_type", "error_details"} if error_row else set()), note_id
            assert row["role"] == kind.split("_")[0]
            assert row["task"] == ("assessment" if kind.startswith("critic") else "generation")
            assert row["note"] == (case.error_note if error_row else case.correct_note)
            assert row["label"] == ("ERROR" if error_row else "CORRECT")
            reasoning = row["reasoning"]
            assert reasoning.startswith("<reasoning>") and reasoning.endswith("</reasoning>")
            assert tag(pair, kind) in reasoning and FILLER in reasoning
            if error_row:
                assert row["error_type"] == pair.etype
                assert row["error_details"] == {"error_sentence": pair.error_sentence, "error_sentence_id": pair.sid,
                                                "corrected_sentence": pair.corrected}
            assert row["attempts"] == 1 and row["hinted"] is False
            prov = row["provenance"]
            assert prov["record_id"] == pair.rid and prov["source_note_id"] == pair.rid
            assert prov["recipe"] == "medec" and prov["source"]["file"] == str(SAMPLE)
            assert len(prov["calls"]) == 1, (note_id, prov["calls"])  # this example's own call
            assert prov["prompt_tokens"] == prov["calls"][0]["prompt_tokens"] > 0

    # critics: verified, with the verdict as the answer
    crit = rows["ms-val-219_critic_error"]
    assert crit["verified"] is True and crit["verification"]["sentence_ok"] is True
    assert crit["verification"]["correction_rouge1"] == 1.0 and crit["verification"]["sample"] == 0
    assert crit["answer"] == "Verdict: ERROR\nError sentence: 1\nCorrection: Radical inguinal orchiectomy is required."
    assert "THINKING-219" in crit["reasoning"]  # the model's own reasoning channel is part of the trace
    assert "1 Scrotal orchiectomy is required." in crit["prompt"]["user"] and HINT not in crit["prompt"]["user"]
    assert rows["ms-val-108_critic_error"]["answer"].startswith("Verdict: ERROR\nError sentence: 3\n")
    for rid in ("ms-val-219", "ms-val-108", "ms-val-458"):
        ok = rows[f"{rid}_critic_correct"]
        assert ok["verified"] is True and ok["answer"] == "Verdict: CORRECT\nError sentence: -1\nCorrection: NA"
    # generators: the answer is the note, checked lightly (no verification against a reference)
    gen = rows["ms-val-108_generator_error"]
    assert gen["answer"] == notes["ms-val-108"].error_note and gen["verified"] is None
    assert rows["ms-val-458_generator_correct"]["answer"] == notes["ms-val-458"].correct_note

    # every call is attributed to exactly one row, and each reached the server once
    keys = [c["key"] for r in rows.values() for c in r["provenance"]["calls"]]
    assert len(keys) == len(set(keys)) == len(fp.requests) == 10


# =================================================================================================
# 2. verification


WRONG_VERDICTS = {
    "missed-error": (True, verdict(f"MISSED {FILLER}", False), "critic_error", "missed the error"),
    "flags-correct-note": (False, verdict(f"FLAGGED {FILLER}", True, 1, "Scrotal orchiectomy is required."),
                           "critic_correct", "flagged sentence 1 in a correct note"),
    "wrong-sentence": (True, verdict(f"WRONG {FILLER}", True, 0, "Radical inguinal orchiectomy is required."),
                       "critic_error", "wrong sentence: 0, expected 1"),
    "error-copied-back": (True, verdict(f"COPIED {FILLER}", True, 1, "Scrotal orchiectomy is required."),
                          "critic_error", "poor correction"),
    "unrelated-correction": (True, verdict(f"UNRELATED {FILLER}", True, 1, "Start intravenous ceftriaxone now."),
                             "critic_error", "poor correction"),
}


@pytest.mark.parametrize("case", list(WRONG_VERDICTS), ids=list(WRONG_VERDICTS))
def test_a_wrong_verdict_is_not_verified_and_its_row_is_rejected(case, fp, cli, tmp_path, config_file):
    on_error, answer, kind, problem = WRONG_VERDICTS[case]
    fp.script(critic_of(P219, on_error), answer, repeat_last=True)
    script_right(fp, P219)
    out = tmp_path / "run"
    result = run_medec(cli, SAMPLE, out, config_file(), "--max-records", 1, "-k", 1)
    assert result.exit_code == 0, result.output
    rows = by_note_id(read_jsonl(out / "rows.jsonl"))
    assert set(rows) == {f"ms-val-219_{k}" for k in KINDS if k != kind}
    entry = rejected_by_note_id(out)[f"ms-val-219_{kind}"]
    assert problem in entry["reason"], entry
    (attempt,) = entry["attempts"]
    assert attempt["verified"] is False and problem in attempt["problem"]
    assert attempt["verdict"]["error_found"] is answer["error_found"]
    assert f"ms-val-219_{kind}: critic not verified" in result.stderr
    if case == "error-copied-back":  # most words are shared, none of those the correction introduced
        assert attempt["correction_rouge1"] >= 0.5 and attempt["correction_novel_recall"] == 0
        assert "0% of the corrected words" in entry["reason"]


def test_verify_critic_verdict_against_the_reference():
    case = sample_case("ms-val-219")
    ok = verify_critic_verdict(True, 1, "Radical inguinal orchiectomy is required.", case, on_error_note=True)
    assert ok.verified and ok.flag_ok and ok.sentence_ok and ok.correction_rouge1 == 1.0 and ok.problem is None
    paraphrase = verify_critic_verdict(True, 1, "Radical inguinal orchiectomy is needed.", case, True)
    assert paraphrase.verified and paraphrase.correction_rouge1 == pytest.approx(0.8)
    strict = verify_critic_verdict(True, 1, "Radical inguinal orchiectomy is needed.", case, True, min_similarity=0.9)
    assert not strict.verified and "ROUGE-1 0.80 (min 0.9)" in strict.problem
    copied = verify_critic_verdict(True, 1, "Scrotal orchiectomy is required.", case, True)
    assert not copied.verified and copied.sentence_ok and copied.correction_novel_recall == 0
    # half of the new words (radical, inguinal) is enough, none is not
    assert verify_critic_verdict(True, 1, "Inguinal orchiectomy is required.", case, True).verified
    assert not verify_critic_verdict(True, 1, "Orchiectomy is required.", case, True).verified
    missing = verify_critic_verdict(True, 1, None, case, True)
    assert not missing.verified and "poor correction" in missing.problem
    missed = verify_critic_verdict(False, -1, None, case, True)
    assert not missed.verified and not missed.flag_ok and "missed" in missed.problem
    wrong = verify_critic_verdict(True, 2, "Radical inguinal orchiectomy is required.", case, True)
    assert not wrong.verified and wrong.flag_ok and wrong.sentence_ok is False
    # on the correct note only "no error" passes, whatever the rest says
    assert verify_critic_verdict(False, -1, None, case, on_error_note=False).verified
    flagged = verify_critic_verdict(True, 1, "Radical inguinal orchiectomy is required.", case, on_error_note=False)
    assert not flagged.verified and not flagged.flag_ok
    assert flagged.to_dict() == {"verified": False, "flag_ok": False, "problem": "flagged sentence 1 in a correct note",
                                 "verdict": "incorrect", "rung": "medec"}  # the verdict every verifier gives
    assert flagged.verdict.verdict.value == "incorrect" and flagged.verdict.rung == "medec"
    assert "flagged sentence 1" in flagged.verdict.reason


def straddling_case() -> MedecCase:
    """A reference error sentence that MEDEC's split cut in two: its id points at the first half."""
    sentences = ["A 24-year-old woman has a sore throat and fever.", "She was started on",
                 "oral amoxicillin for ten days for presumed streptococcal pharyngitis despite a severe "
                 "penicillin allergy.",
                 "She returns in a week."]
    return MedecCase("split", "correct note", " ".join(sentences), "pharmacotherapy",
                     "She was started on oral amoxicillin for ten days for presumed streptococcal pharyngitis "
                     "despite a severe penicillin allergy.", 1,
                     "She was started on oral azithromycin for five days for presumed streptococcal pharyngitis "
                     "given a severe penicillin allergy.", sentences)


def test_sentence_matches_tolerates_a_bad_split_but_not_a_wrong_sentence():
    case = straddling_case()
    assert sentence_matches(1, case)
    assert sentence_matches(2, case)  # the neighbour holding most of the reference error sentence
    assert not sentence_matches(0, case)  # a neighbour, but it holds none of it
    assert not sentence_matches(3, case)  # two away
    assert not sentence_matches(-1, case) and not sentence_matches(9, case)
    # a neighbour that is only a fragment of the error sentence counts when it holds the changed words
    frag = replace(case, error_sentences=["A 24-year-old woman has a sore throat and fever.",
                                          "She was started on oral amoxicillin for ten days",
                                          "for presumed streptococcal pharyngitis despite a severe penicillin allergy.",
                                          "She returns in a week."], error_sentence_id=2)
    assert sentence_matches(1, frag)
    # … and does not when it holds none of them (here the change is all in the first fragment)
    other_half = replace(frag, error_sentence_id=1, corrected_sentence=(
        "She was started on oral azithromycin for five days for presumed streptococcal pharyngitis "
        "despite a severe penicillin allergy."))
    assert sentence_matches(1, other_half) and not sentence_matches(2, other_half)
    verdict_on_neighbour = verify_critic_verdict(True, 2, case.corrected_sentence, case, on_error_note=True)
    assert verdict_on_neighbour.verified and verdict_on_neighbour.sentence_ok


def test_parse_verdict_reads_back_what_render_verdict_writes():
    for error_found, sid, fix in ((True, 3, "Imperforate anus is confirmed."), (False, -1, None), (True, 0, None)):
        assert parse_verdict(render_verdict(error_found, sid, fix)) == (error_found, sid, fix)
    assert render_verdict(False, 4, "ignored") == "Verdict: CORRECT\nError sentence: -1\nCorrection: NA"
    assert parse_verdict("<think>Verdict: CORRECT, surely?</think>\n**Verdict:** ERROR\nError sentence ID: 2\n"
                         "Corrected sentence: \"Give penicillin.\"") == (True, 2, "Give penicillin.")
    assert parse_verdict("I think the note is fine.") is None
    assert parse_verdict("Verdict: ERROR\nCorrection: something") is None  # no sentence id


@pytest.mark.parametrize("text, expected", [
    (render_verdict(True, 3, "Give penicillin."), (True, 3, "Give penicillin.")),
    (render_verdict(False, -1, None), (False, -1, None)),
    # markdown around the labels, the colon inside or outside the bold
    ("**Verdict**: ERROR\n**Error sentence**: 4\n**Correction**: Start heparin.", (True, 4, "Start heparin.")),
    ("**Verdict:** error\n**Error sentence ID:** 0\n**Corrected sentence:** \"Start heparin.\"", (True, 0, "Start heparin.")),
    # the correction on the line after its label; N/A and none mean no correction
    ("Verdict: ERROR\nError sentence: 2\nCorrection:\nStart heparin.", (True, 2, "Start heparin.")),
    ("Verdict: ERROR\nError sentence: 2\nCorrection: N/A", (True, 2, None)),
    # a model that reasons in the open: the last verdict is the answer, its lines follow it
    ("Error sentence: 7 looks odd. A verdict: correct would be premature.\nVerdict: ERROR\nError sentence: 2\n"
     "Correction: Start heparin.", (True, 2, "Start heparin.")),
    ("At first sight, Verdict: ERROR in sentence 2? No.\nVerdict: CORRECT\nError sentence: -1\nCorrection: NA",
     (False, -1, None)),
    # a think block is skipped; an unclosed one means the answer was never reached
    ("<think>Verdict: CORRECT</think>\nVerdict: ERROR\nError sentence: 1\nCorrection: X.", (True, 1, "X.")),
    ("<think>Sentence 1 is wrong. Verdict: ERROR\nError sentence: 1\nCorrection: X.", None),
    # a dash separates only with spaces around it: "-1" is never read as sentence 1
    ("Verdict - ERROR\nError sentence - 5\nCorrection - X.", (True, 5, "X.")),
    ("Verdict: ERROR\nError sentence -1\nCorrection: X.", None),
    ("The note looks fine to me.", None),
])
def test_parse_verdict_reads_the_answer_format_and_common_variants(text, expected):
    assert parse_verdict(text) == expected


# =================================================================================================
# 3. retries, then rejection


def test_k_wrong_verdicts_are_k_distinct_requests_then_the_row_is_rejected(fp, cli, tmp_path, config_file):
    on_error = critic_of(P219, True)
    fp.script(on_error, verdict(f"A {FILLER}", False), verdict(f"B {FILLER}", True, 2, P219.corrected),
              verdict(f"C {FILLER}", True, 1, "Scrotal orchiectomy is required."))
    fp.script(on_error, right_verdict(P219, True))  # a 4th attempt would pass: there must be none
    script_right(fp, P219, skip=("critic_error",))
    out = tmp_path / "run"
    result = run_medec(cli, SAMPLE, out, config_file(), "--max-records", 1, "--samples", 3)
    assert result.exit_code == 0, result.output

    asked = sent(fp, on_error)
    assert [b["temperature"] for b in asked] == [0.3, 0.7, 1.0]
    assert len({json.dumps(b, sort_keys=True) for b in asked}) == 3
    rows = by_note_id(read_jsonl(out / "rows.jsonl"))
    assert set(rows) == {"ms-val-219_critic_correct", "ms-val-219_generator_correct", "ms-val-219_generator_error"}
    entry = rejected_by_note_id(out)["ms-val-219_critic_error"]
    assert entry["record_id"] == "ms-val-219" and entry["line"] == 2 and entry["source"] == str(SAMPLE)
    assert entry["reason"].startswith("critic not verified after 3 attempt(s): poor correction")
    assert [a["sample"] for a in entry["attempts"]] == [0, 1, 2]
    assert [a["temperature"] for a in entry["attempts"]] == [0.3, 0.7, 1.0]
    assert ["missed" in a["problem"] for a in entry["attempts"]] == [True, False, False]
    assert "wrong sentence: 2" in entry["attempts"][1]["problem"]
    # the calls spent on the rejected row are on record, in the kept rows' record
    assert len(rows["ms-val-219_critic_correct"]["provenance"]["calls"]) == 1


# =================================================================================================
# 4. hint on failure


def test_hint_on_failure_keeps_a_hinted_verified_row(fp, cli, tmp_path, config_file):
    fp.script(critic_of(P219, True, hinted=False), verdict(f"NOHINT {FILLER}", False), repeat_last=True)
    fp.script(critic_of(P219, True, hinted=True), verdict(f"HINTED {FILLER}", True, 1, P219.corrected))
    script_right(fp, P219, skip=("critic_error",))
    out = tmp_path / "run"
    result = run_medec(cli, SAMPLE, out, config_file(), "--max-records", 1, "-k", 2, "--hint-on-failure",
                       env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output

    rows = by_note_id(read_jsonl(out / "rows.jsonl"))
    assert len(rows) == 4 and not read_jsonl(out / "rejected.jsonl")
    row = rows["ms-val-219_critic_error"]
    assert row["hinted"] is True and row["verified"] is True and row["attempts"] == 3
    assert "HINTED" in row["reasoning"] and "NOHINT" not in row["reasoning"]
    assert HINT not in row["prompt"]["user"]  # the training prompt never carries the hint
    assert rows["ms-val-219_critic_correct"]["hinted"] is False
    (hinted_request,) = sent(fp, critic_of(P219, True, hinted=True))
    text = last_user_text(hinted_request)
    assert "sentence 1 is wrong" in text and '"Radical inguinal orchiectomy is required."' in text
    assert len(sent(fp, critic_of(P219, True, hinted=False))) == 2
    # the rate counts unaided successes; hinted ones are shown apart
    assert "management: 0/1 verified (+1 hinted)" in " ".join(result.stdout.split()), result.stdout


def test_a_hinted_trace_that_mentions_the_reviewer_is_rejected(fp, cli, tmp_path, config_file):
    fp.script(critic_of(P219, True, hinted=False), verdict(f"NOHINT {FILLER}", False), repeat_last=True)
    fp.script(critic_of(P219, True, hinted=True),
              verdict(f"As the senior reviewer established, sentence 1 is wrong. {FILLER}", True, 1, P219.corrected))
    script_right(fp, P219, skip=("critic_error",))
    out = tmp_path / "run"
    result = run_medec(cli, SAMPLE, out, config_file(), "--max-records", 1, "-k", 1, "--hint-on-failure")
    assert result.exit_code == 0, result.output
    assert "ms-val-219_critic_error" not in by_note_id(read_jsonl(out / "rows.jsonl"))
    entry = rejected_by_note_id(out)["ms-val-219_critic_error"]
    assert "leaks the reference" in entry["reason"] and entry["attempts"][-1]["hinted"] is True


# =================================================================================================
# 5. resume


def test_rerun_after_a_record_failed_redoes_only_that_record(fp, cli, tmp_path, config_file, fast_backoff):
    fp.script(about(P108), Fault.status(500), repeat_last=True)  # the provider fails every call about 108
    fp.script(critic_of(P219, True), verdict(f"MISSED {FILLER}", False), repeat_last=True)  # a partial rejection
    for pair in SAMPLE_PAIRS:
        script_right(fp, pair)
    out, cfg = tmp_path / "run", config_file(max_retries=1)
    first = run_medec(cli, SAMPLE, out, cfg, "-k", 2)
    assert first.exit_code == 0, first.output
    rows = by_note_id(read_jsonl(out / "rows.jsonl"))
    assert not any(n.startswith("ms-val-108") for n in rows) and len(rows) == 5
    rejected = rejected_by_note_id(out)
    assert {f"ms-val-108_{k}" for k in KINDS} | {"ms-val-219_critic_error"} == set(rejected)
    assert "500" in rejected["ms-val-108_generator_correct"]["reason"]
    assert "ms-val-108_critic_error: critic not verified" in first.stderr
    assert len(sent(fp, about(P108))) == 2 * (2 + 2 + 1 + 1)  # k=2 per critic, 1 per generator, each tried twice

    fp.reset()  # the provider recovers
    for pair in SAMPLE_PAIRS:
        script_right(fp, pair)
    second = run_medec(cli, SAMPLE, out, cfg, "-k", 2)
    assert second.exit_code == 0, second.output
    assert len(fp.requests) == 4 and len(sent(fp, about(P108))) == 4
    rows = by_note_id(read_jsonl(out / "rows.jsonl"))  # no duplicate note ids
    assert len(rows) == 9 and {f"ms-val-108_{k}" for k in KINDS} <= set(rows)
    assert set(rejected_by_note_id(out)) == {"ms-val-219_critic_error"}  # the finished record's part stays
    assert "from earlier runs" in second.stdout

    third = run_medec(cli, SAMPLE, out, cfg, "-k", 2)
    assert third.exit_code == 0 and len(fp.requests) == 4
    assert len(read_jsonl(out / "rows.jsonl")) == 9


# =================================================================================================
# 6. both input formats


def test_pairs_jsonl_gives_the_same_rows_as_the_csv(fp, cli, tmp_path, config_file, write_jsonl):
    jsonl_108 = replace(P108, sid=2)  # no `Sentences` column: "A 3175-g (7-lb) …" stays one sentence
    for pair in (P219, P108):
        script_right(fp, pair)
    cfg = config_file()
    csv_run = run_medec(cli, SAMPLE, tmp_path / "csv", cfg, "--max-records", 2)
    assert csv_run.exit_code == 0, csv_run.output
    fp.reset()
    for pair in (P219, jsonl_108):
        script_right(fp, pair)
    inp = write_jsonl([pairs_jsonl_line(r) for r in sample_rows()[:2]], name="pairs.jsonl")
    jsonl_run = run_medec(cli, inp, tmp_path / "jsonl", cfg)
    assert jsonl_run.exit_code == 0, jsonl_run.output

    from_csv = by_note_id(read_jsonl(tmp_path / "csv" / "rows.jsonl"))
    from_jsonl = by_note_id(read_jsonl(tmp_path / "jsonl" / "rows.jsonl"))
    assert set(from_csv) == set(from_jsonl) == {f"{p.rid}_{k}" for p in (P219, P108) for k in KINDS}
    for note_id, row in from_jsonl.items():
        twin = from_csv[note_id]
        assert set(row) == set(twin)
        for key in ("role", "task", "label", "note", "answer", "error_type", "verified", "hinted", "attempts"):
            if note_id == "ms-val-108_critic_error" and key == "answer":
                continue
            assert row.get(key) == twin.get(key), (note_id, key)
        assert row["provenance"]["source"] == {"file": str(inp), "line": 1 if "219" in note_id else 2}
    # the JSONL carries no sentence split: the error sentence is found in one made here
    assert from_jsonl["ms-val-219_critic_error"]["error_details"]["error_sentence_id"] == 1
    assert from_jsonl["ms-val-108_critic_error"]["error_details"]["error_sentence_id"] == 2
    assert from_csv["ms-val-108_critic_error"]["error_details"]["error_sentence_id"] == 3
    user = from_jsonl["ms-val-108_critic_error"]["prompt"]["user"]
    assert "\n0 A 3175-g (7-lb) female newborn is delivered at term.\n" in user
    assert "\n2 Colonic atresia is confirmed" in user
    assert from_jsonl["ms-val-108_critic_error"]["verified"] is True


# =================================================================================================
# 7. malformed input


def write_csv(path: Path, rows: list[dict[str, str] | str]) -> dict[str, int]:
    """Write a MEDEC-style CSV (CRLF, newlines inside fields); return each row's first line by id."""
    header = list(sample_rows()[0])
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    starts: dict[str, int] = {}
    for row in rows:
        line = buf.getvalue().count("\n") + 1
        if isinstance(row, str):
            buf.write(row + "\r\n")
            continue
        starts[row["Text ID"]] = line
        writer.writerow([row[h] for h in header])
    path.write_bytes(buf.getvalue().encode())
    return starts


def test_malformed_csv_rows_are_named_and_rejected_and_good_rows_still_run(fp, cli, tmp_path, config_file):
    r219, r108, r458 = sample_rows()
    bad = {
        "bad-no-corrected-text": (r108 | {"Text ID": "bad-no-corrected-text", "Corrected Text": ""}, "Corrected Text"),
        "bad-error-type": (r108 | {"Text ID": "bad-error-type", "Error Type": "surgery"}, "unknown `Error Type`"),
        "bad-sentence-id": (r108 | {"Text ID": "bad-sentence-id", "Error Sentence ID": "three"}, "Error Sentence ID"),
    }
    inp = tmp_path / "medec.csv"
    starts = write_csv(inp, [r219, *(row for row, _ in bad.values()), r458, ",,,,,,,,", ",,,,,,,,", ",,,,,,,,"])
    for pair in (P219, P458):
        script_right(fp, pair)
    out = tmp_path / "run"
    result = run_medec(cli, inp, out, config_file())
    assert result.exit_code == 0, result.output

    assert len(by_note_id(read_jsonl(out / "rows.jsonl"))) == 6  # 219 (4) and 458 (2)
    assert sent(fp, about(P108)) == []
    rejected = read_jsonl(out / "rejected.jsonl")
    assert sorted(e["id"] for e in rejected) == sorted(bad)  # the empty trailing rows are skipped silently
    for entry in rejected:
        row, what = bad[entry["id"]]
        assert entry["source"] == str(inp) and entry["line"] == starts[entry["id"]]
        assert what in entry["reason"]
        assert f"{inp}:{entry['line']}: {entry['reason']}" in result.stderr
    assert starts["bad-no-corrected-text"] == 5  # ms-val-219 spans lines 2-4: a record is named by its first line
    assert "3 bad input lines" in result.stdout


def test_malformed_jsonl_lines_are_named_and_rejected_and_good_lines_still_run(fp, cli, tmp_path, config_file,
                                                                                write_jsonl):
    r219, r108, _ = sample_rows()
    no_field = pairs_jsonl_line(r108, "no-field")
    del no_field["corrected_sentence"]
    inp = write_jsonl([pairs_jsonl_line(r219), no_field, '{"note_id": "broken", "incorrect_note": ',
                       pairs_jsonl_line(r108) | {"note_id": "odd-type", "error_type": "surgery"}], name="pairs.jsonl")
    script_right(fp, P219)
    out = tmp_path / "run"
    result = run_medec(cli, inp, out, config_file())
    assert result.exit_code == 0, result.output
    assert set(by_note_id(read_jsonl(out / "rows.jsonl"))) == {f"ms-val-219_{k}" for k in KINDS}
    rejected = {e["line"]: e for e in read_jsonl(out / "rejected.jsonl")}
    assert sorted(rejected) == [2, 3, 4]
    expected = {2: "missing or empty `corrected_sentence`", 3: "invalid JSON", 4: "unknown error_type 'surgery'"}
    for line, what in expected.items():
        assert what in rejected[line]["reason"] and rejected[line]["source"] == str(inp)
        assert f"{inp}:{line}: {what}" in result.stderr, result.stderr
    assert rejected[2]["id"] == "no-field" and rejected[4]["id"] == "odd-type"


# =================================================================================================
# 8. the run summary


def test_summary_shows_verified_rates_per_error_type_and_cost_per_kept_example(fp, cli, tmp_path, config_file):
    usage = {"prompt_tokens": 100, "completion_tokens": 20}
    fp.script(critic_of(P108, True), served(verdict(f"MISSED {FILLER}", False), usage), repeat_last=True)
    for pair in SAMPLE_PAIRS:
        script_right(fp, pair, usage=usage)
    out = tmp_path / "run"
    result = run_medec(cli, SAMPLE, out, config_file(), "-k", 2, env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(out / "rows.jsonl")) == 9 and len(fp.requests) == 11
    text = " ".join(result.stdout.split())
    assert re.search(r"critic verified(?: │|:) diagnosis: 0/1 verified; management: 1/1 verified; "
                     r"no error: 3/3 verified", text), result.stdout
    # 11 calls of 120 tokens for 9 kept examples
    assert re.search(r"per kept example(?: │|:) 1\.22 calls · 147 tokens", text), result.stdout


# =================================================================================================
# the data layer against the real MEDEC files


REAL_FILES = {
    "validation": ("MEDEC-MS-ValidationSet-with-GroundTruth-and-ErrorType.csv", 319, 255),
    "test": ("MEDEC-MS-TestSet-with-GroundTruth-and-ErrorType.csv", 311, 286),
    "train-pairs": ("derived-third-party/medec_ms_train_error_pairs.jsonl", 1219, 0),
}


@pytest.mark.parametrize("split", list(REAL_FILES))
def test_real_medec_files_parse_completely(split):
    name, pairs, singles = REAL_FILES[split]
    path = MEDEC_DIR / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    counts: Counter[str] = Counter()
    bad = []
    for item in read_cases(path):
        if isinstance(item, BadInput):
            bad.append(item.message())
            continue
        case = MedecCase.from_data(item.data)
        counts["pair" if case.has_error else "single"] += 1
        if case.has_error:
            assert case.error_type and 0 <= case.error_sentence_id < len(case.error_sentences or [])
            assert case.correct_sentences and len(case.correct_sentences) == len(case.error_sentences or [])
    assert bad == []
    assert (counts["pair"], counts["single"]) == (pairs, singles)


# =================================================================================================
# stopping: the budget, a bad key


def test_budget_stop_leaves_records_whole_or_untouched_and_a_rerun_finishes(fp, cli, tmp_path, config_file):
    usage = {"prompt_tokens": 100, "completion_tokens": 20}  # $0.12 a call at $1000 per million tokens
    for pair in SAMPLE_PAIRS:
        script_right(fp, pair, usage=usage)
    out, cfg = tmp_path / "run", config_file(prices={"fake": {"input": 1000.0, "output": 1000.0}})
    args = ("-k", 1, "--max-tokens", 100, "--concurrency", 1)
    first = run_medec(cli, SAMPLE, out, cfg, *args, "--max-usd", 0.9)
    assert first.exit_code == 3, first.output
    assert not read_jsonl(out / "rejected.jsonl")  # a part stopped by the budget is not a rejection
    rows = read_jsonl(out / "rows.jsonl")
    assert 0 < len(fp.requests) < 10
    per_record = Counter(r["provenance"]["record_id"] for r in rows)
    assert all(n == (2 if rid == "ms-val-458" else 4) for rid, n in per_record.items()), per_record

    second = run_medec(cli, SAMPLE, out, cfg, *args, "--max-usd", 100)
    assert second.exit_code == 0, second.output
    assert len(by_note_id(read_jsonl(out / "rows.jsonl"))) == 10 and not read_jsonl(out / "rejected.jsonl")


def test_a_rejected_api_key_stops_the_run_instead_of_rejecting_every_example(fp, cli, tmp_path, config_file):
    fp.script(lambda body: True, Fault.status(401, body={"error": {"message": "invalid api key"}}), repeat_last=True)
    out, cfg = tmp_path / "run", config_file()
    first = run_medec(cli, SAMPLE, out, cfg)
    assert "stopped" in first.stderr and "401" in first.stderr, first.output
    assert not read_jsonl(out / "rows.jsonl") and not read_jsonl(out / "rejected.jsonl")
    assert json.loads((out / "manifest.json").read_text())["status"] == "error"
    assert len(fp.requests) <= 4 * 4  # no critic retried a refused key k times per record

    fp.reset()
    for pair in SAMPLE_PAIRS:
        script_right(fp, pair)
    second = run_medec(cli, SAMPLE, out, cfg)
    assert second.exit_code == 0, second.output
    assert len(by_note_id(read_jsonl(out / "rows.jsonl"))) == 10
