"""`eval medec`'s figures equal the official MEDIQA-CORR 2024 definition, on the real MEDEC-MS test set.

Planted predictions (right, wrong, corrections that differ from the reference only in case or
punctuation, that span lines, that hold a backslash or quotes, that have no word at all) are scored
by synthtrace; then `submission.txt` is read back the way the organisers' script reads a run
(its line pattern, its whitespace split, its quote stripping, its quirk of passing the line to
`re.sub` as the replacement) and scored by the official definition with the `rouge` package, as
that script does. The two must agree to 1e-6. The official definition is restated here from its
description, not copied.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

from synthtrace.eval import medec as E
from synthtrace.recipes.medec.prompts import parse_verdict, render_verdict

pytest.importorskip("rouge")
from rouge import Rouge

ROOT = Path(__file__).resolve().parents[1]
TEST_SET = ROOT.parent / "shared" / "data" / "medec" / "MEDEC-MS-TestSet-with-GroundTruth-and-ErrorType.csv"
needs_test_set = pytest.mark.skipif(not TEST_SET.exists(), reason=f"{TEST_SET} is not here")
OFFICIAL_LINE = re.compile(r"[a-z0-9\-]+\s[0-9]+\s\-?[0-9]+\s.+")


def plant(i: int, ref: E.Reference) -> dict[str, Any]:
    """The i-th note's prediction: one of a dozen kinds, chosen by its position."""
    fix = ref.corrected_sentence
    kind = i % 12
    if ref.error_flag == 0:
        if kind in (0, 5):  # an error where there is none
            return {"error_flag": 1, "error_sentence_id": 2, "corrected_sentence": "Nothing was wrong here."}
        return {"error_flag": 0, "error_sentence_id": -1, "corrected_sentence": None}
    variants = {
        0: fix,  # exactly right
        1: fix.lower(),  # case differs (the official ROUGE is case-sensitive)
        2: fix.replace(".", "").replace(",", " ,"),  # punctuation differs
        3: fix.replace(" ", "\n", 2),  # spans three lines
        4: fix + " (dose \\d, see \\1 and \\\\)",  # backslashes
        5: "...",  # no word at all
        6: f'"{fix}"',  # in quotes
        7: "  " + fix + "   \r\n  ",  # surrounded by whitespace
    }
    if kind in variants:
        return {"error_flag": 1, "error_sentence_id": ref.error_sentence_id, "corrected_sentence": variants[kind]}
    if kind == 8:  # the right sentence, no correction
        return {"error_flag": 1, "error_sentence_id": ref.error_sentence_id, "corrected_sentence": None}
    if kind == 9:  # the wrong sentence, the right correction
        return {"error_flag": 1, "error_sentence_id": ref.error_sentence_id + 1, "corrected_sentence": fix}
    return {"error_flag": 0, "error_sentence_id": -1, "corrected_sentence": None}  # missed


def official_figures(reference_csv: Path, submission: Path) -> dict[str, float]:
    """Accuracy and ROUGE-1 F figures by the MEDIQA-CORR 2024 definition, for a submission file."""
    refs: dict[str, tuple[str, str, str]] = {}  # text id → (flag, sentence id, correction or "NA")
    with open(reference_csv, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            if not row["Text ID"].strip():  # the public CSV's empty trailing rows are cut, as its users must
                continue
            correction = row["Corrected Sentence"] if row["Corrected Sentence"].strip() else "NA"
            refs[row["Text ID"]] = (row["Error Flag"], row["Error Sentence ID"], correction)
    flags, sentences, corrections = {}, {}, {}
    for line in submission.read_text().splitlines():
        line = line.strip()
        if not line or not OFFICIAL_LINE.fullmatch(line):
            continue
        line = re.sub(r"\s+", line, " ")  # the official parser's call: the line is the replacement string
        items = line.split()
        text_id, flag, sentence = items[:3]
        fix = " ".join(items[3:]).strip()
        while fix.startswith('"') and len(fix) > 1:
            fix = fix[1:]
        while fix.endswith('"') and len(fix) > 1:
            fix = fix[:-1]
        flags[text_id], sentences[text_id] = flag, sentence
        corrections[text_id] = "NA" if flag == "0" else fix
    total = len(refs)
    flag_acc = sum(flags.get(t) == r[0] for t, r in refs.items()) / total
    sentence_acc = sum(sentences.get(t) == r[1] for t, r in refs.items()) / total
    both_na, hyps, golds = 0, [], []
    for text_id, (_, _, gold) in refs.items():
        if text_id not in corrections:
            continue
        hyp = corrections[text_id]
        if gold == "NA" and hyp == "NA":
            both_na += 1
        elif gold != "NA" and hyp != "NA":
            hyps.append(hyp)
            golds.append(gold)
    scores = [s["rouge-1"]["f"] for s in Rouge().get_scores(hyps, golds)]
    return {"flag": flag_acc, "sentence": sentence_acc, "composite": (sum(scores) + both_na) / total,
            "subset": sum(scores) / len(scores)}


@needs_test_set
def test_the_figures_equal_the_official_definition_on_the_medec_ms_test_set(tmp_path):
    refs = E.read_references(TEST_SET)
    assert len(refs) == E.MS_TEST_NOTES
    out = tmp_path / "eval"
    out.mkdir()
    planted = {ref.text_id: plant(i, ref) for i, ref in enumerate(refs)}
    with open(out / "rows.jsonl", "w") as f:
        for text_id, prediction in planted.items():
            f.write(json.dumps({"id": text_id, "text_id": text_id, "prediction": prediction}) + "\n")
    ours = E.evaluate(TEST_SET, out, scorers={"rouge1_f": E.rouge1_scores}, skipped={})
    official = official_figures(TEST_SET, out / "submission.txt")
    assert ours["error_flag_accuracy"] == pytest.approx(official["flag"], abs=1e-6)
    assert ours["error_sentence_accuracy"] == pytest.approx(official["sentence"], abs=1e-6)
    assert ours["correction"]["rouge1_f"]["composite"] == pytest.approx(official["composite"], abs=1e-6)
    assert ours["correction"]["rouge1_f"]["subset"] == pytest.approx(official["subset"], abs=1e-6)
    # backslashes, quotes and the word-less corrections were altered for the official reader, and say so
    altered = set(ours["altered_ids"])
    assert altered and all(planted[t]["corrected_sentence"] for t in altered)
    assert {t for t in altered if "\\" in planted[t]["corrected_sentence"]} == \
        {t for t, p in planted.items() if p["error_flag"] and "\\" in (p["corrected_sentence"] or "")}


def test_multi_line_and_backslash_corrections_round_trip_through_submission_txt(tmp_path):
    answer = render_verdict(True, 3, "The patient is started on\nintravenous fluids\r\nand potassium \\ magnesium.")
    found, sentence, fix = parse_verdict(answer + "\n\nAnything after a blank line is not the correction.")
    assert (found, sentence) == (True, 3) and fix.count("\n") == 2  # the whole correction, not its first line
    p = E.Prediction(1, 3, fix)
    line = E.submission_line("ms-test-7", p)
    assert OFFICIAL_LINE.fullmatch(line) and "\n" not in line
    read_back = " ".join(re.sub(r"\s+", line, " ").split()[3:]).strip('"')  # would raise on a backslash
    assert read_back == p.correction == "The patient is started on intravenous fluids and potassium / magnesium."
    assert p.altered
    assert E.Prediction(1, 3, "...").correction is None and E.submission_line("x", E.Prediction(1, 3, "...")) == \
        "x 1 3 NA"


def read_back(line: str) -> str:
    """The correction of one submission line as the official scorer reads it."""
    assert OFFICIAL_LINE.fullmatch(line) and "\n" not in line
    return " ".join(re.sub(r"\s+", line, " ").split()[3:]).strip('"')


def test_a_correction_of_several_paragraphs_is_read_back_whole():
    fix = "3%\n\nPatient is diagnosed with erythroblastosis fetalis."  # as ms-test-171's reference is
    found, sentence, parsed = parse_verdict(render_verdict(True, 5, fix) + "\n\nA remark after the answer.")
    assert (found, sentence) == (True, 5)
    assert read_back(E.submission_line("ms-test-171", E.Prediction(1, 5, parsed))) == \
        "3% Patient is diagnosed with erythroblastosis fetalis."


@needs_test_set
def test_every_multi_line_reference_of_the_test_set_survives_render_parse_and_submission():
    refs = [r for r in E.read_references(TEST_SET) if r.corrected_sentence and "\n" in r.corrected_sentence.strip()]
    assert any(r.text_id == "ms-test-171" for r in refs)
    for ref in refs:
        _, _, parsed = parse_verdict(render_verdict(True, ref.error_sentence_id, ref.corrected_sentence))
        line = E.submission_line(ref.text_id, E.Prediction(1, ref.error_sentence_id, parsed))
        assert read_back(line) == " ".join(ref.corrected_sentence.split()), ref.text_id
