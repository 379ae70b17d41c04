"""`synthtrace eval medec`: the prompt, the MEDIQA-CORR metrics against hand-computed values,
the submission format, and the command end to end against the fake provider (with resume).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl

from synthtrace.eval import medec as E
from synthtrace.eval.medec import Prediction, Reference, note_sentences, score, submission_line
from synthtrace.inputs import BadInput
from synthtrace.recipes.medec import prompts as P
from synthtrace.recipes.medec.data import MedecCase, read_cases
from synthtrace.testing import Fault
from synthtrace.testing.fake_answers import last_user_text

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "medec" / "medec-ms-val-sample.csv"
# The official scorer's check of a submission line (MEDIQA-CORR 2024 evaluation script).
OFFICIAL_LINE = re.compile(r"[a-z0-9\-]+\s[0-9]+\s\-?[0-9]+\s.+")


def sample_case(rid: str) -> MedecCase:
    for item in read_cases(SAMPLE):
        if not isinstance(item, BadInput) and item.id == rid:
            return MedecCase.from_data(item.data)
    raise KeyError(rid)


# =================================================================================================
# the prompt: the trained critic's


def test_the_eval_prompt_is_the_trained_critic_prompt():
    case = sample_case("ms-val-108")
    sentences = note_sentences(case)
    assert sentences[3] == "Colonic atresia is confirmed when dark green discharge is coming out of the vulva."
    assert E.MedecEvalRecipe().messages(case) == P.critic_messages(sentences) == [
        {"role": "system", "content": P.CRITIC_SYSTEM}, {"role": "user", "content": P.critic_user(sentences)}]
    explained = E.MedecEvalRecipe(explain_format=True).messages(case)
    assert explained[1]["content"] == f"{P.critic_user(sentences)}\n\n{P.ANSWER_FORMAT}"
    correct = sample_case("ms-val-458")  # an error-free note: its own sentences
    assert note_sentences(correct) == correct.correct_sentences and len(note_sentences(correct)) == 3
    assert Reference.of(case) == Reference("ms-val-108", 1, 3, case.corrected_sentence, "diagnosis")
    assert Reference.of(correct) == Reference("ms-val-458", 0, -1, None, "none")


# =================================================================================================
# the metrics, checked against values computed by hand


REFERENCES = [
    Reference("d1", 1, 2, "The patient has acute appendicitis.", "diagnosis"),
    Reference("d2", 1, 4, "Suspected of pulmonary embolism.", "diagnosis"),
    Reference("m1", 1, 1, "Radical inguinal orchiectomy is required.", "management"),
    Reference("p1", 1, 3, "Start oral amoxicillin for ten days.", "pharmacotherapy"),
    Reference("n1", 0, -1, None),
    Reference("n2", 0, -1, None),
    Reference("n3", 0, -1, None),
    Reference("c1", 1, 5, "The causal organism is Escherichia coli.", "causalOrganism"),
]
PREDICTIONS: dict[str, Prediction | None] = {
    "d1": Prediction(1, 2, "The patient has acute cholecystitis."),  # flag ✓ sentence ✓, ROUGE-1 4/5 = 0.8
    "d2": Prediction(1, 3, "Suspected of pulmonary embolism."),  # flag ✓ sentence ✗ (3 ≠ 4), ROUGE-1 1.0
    "m1": None,  # unparseable: wrong everywhere, correction 0
    "p1": Prediction(0, -1, None),  # missed: flag ✗ sentence ✗ (-1 ≠ 3), NA vs a reference: 0
    # flag ✓ sentence ✓ (-1 = -1), both NA: 1 (a "no error" verdict has no correction, whatever text it carries)
    "n1": Prediction(0, -1, "Nothing to fix."),
    "n2": Prediction(1, 2, "Give aspirin now."),  # false alarm: flag ✗ sentence ✗, a correction vs NA: 0
    # n3: no prediction at all (its request failed): wrong everywhere, correction 0
    "c1": Prediction(1, 5, None),  # flag ✓ sentence ✓, but no correction: NA vs a reference: 0
}


def test_score_matches_the_hand_computation():
    # A second metric, to check clipping and the aggregate: d1 0.4, d2 1.7 → clipped to 1.0.
    def fake(predictions: list[str], references: list[str]) -> list[float]:
        assert predictions == ["The patient has acute cholecystitis.", "Suspected of pulmonary embolism."]
        assert references == ["The patient has acute appendicitis.", "Suspected of pulmonary embolism."]
        return [0.4, 1.7]

    def broken(predictions: list[str], references: list[str]) -> list[float]:
        raise RuntimeError("model weights not found")

    m = score(REFERENCES, PREDICTIONS, {"rouge1_f": E.rouge1_scores, "fake": fake, "broken": broken})
    assert (m["notes"], m["parsed"], m["unparseable"], m["missing"]) == (8, 6, 1, 1)
    assert m["unparseable_ids"] == ["m1"] and m["missing_ids"] == ["n3"]
    # flag right: d1 d2 n1 c1 → 4/8
    assert m["error_flag_accuracy"] == 0.5
    # sentence right: d1 n1 c1 → 3/8
    assert m["error_sentence_accuracy"] == 0.375
    # pairs (both give a sentence): d1, d2
    assert m["correction_pairs"] == 2 and m["both_na"] == 1
    c = m["correction"]
    # ROUGE-1 composite: d1 0.8 + d2 1.0 + n1 1 (both NA) + five zeros = 2.8 / 8; subset (0.8 + 1.0) / 2
    assert c["rouge1_f"] == {"composite": pytest.approx(0.35), "subset": pytest.approx(0.9)}
    # fake composite: 0.4 + 1.0 + 1 = 2.4 / 8; subset (0.4 + 1.0) / 2
    assert c["fake"] == {"composite": pytest.approx(0.3), "subset": pytest.approx(0.7)}
    # aggregate per pair: d1 (0.8 + 0.4) / 2 = 0.6, d2 (1.0 + 1.0) / 2 = 1.0; composite (0.6 + 1.0 + 1) / 8
    assert c["aggregate"] == {"composite": pytest.approx(0.325), "subset": pytest.approx(0.8)}
    assert set(c) == {"rouge1_f", "fake", "aggregate"}
    assert m["correction_metrics"] == ["rouge1_f", "fake"]
    assert m["skipped_metrics"] == {"broken": "failed: RuntimeError: model weights not found"}

    t = m["by_error_type"]
    assert list(t) == ["diagnosis", "management", "pharmacotherapy", "causalOrganism", "none"]  # no treatment note
    # diagnosis (d1, d2): flags 2/2, sentences 1/2, ROUGE (0.8 + 1.0) / 2
    assert (t["diagnosis"]["notes"], t["diagnosis"]["error_flag_accuracy"], t["diagnosis"]["error_sentence_accuracy"]) \
        == (2, 1.0, 0.5)
    assert t["diagnosis"]["correction"]["rouge1_f"] == {"composite": pytest.approx(0.9), "subset": pytest.approx(0.9)}
    # management (m1, unparseable): all zero, no pair
    assert t["management"]["unparseable"] == 1 and t["management"]["error_flag_accuracy"] == 0.0
    assert t["management"]["correction"]["rouge1_f"] == {"composite": 0.0, "subset": None}
    # pharmacotherapy (p1, missed) and causalOrganism (c1, found but not corrected)
    assert (t["pharmacotherapy"]["error_flag_accuracy"], t["pharmacotherapy"]["error_sentence_accuracy"]) == (0.0, 0.0)
    assert (t["causalOrganism"]["error_flag_accuracy"], t["causalOrganism"]["error_sentence_accuracy"]) == (1.0, 1.0)
    assert t["causalOrganism"]["correction"]["rouge1_f"]["composite"] == 0.0
    # none (n1 right, n2 false alarm, n3 missing): 1/3 everywhere
    none = t["none"]
    assert (none["notes"], none["missing"], none["both_na"]) == (3, 1, 1)
    assert none["error_flag_accuracy"] == none["error_sentence_accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    assert none["correction"]["aggregate"] == {"composite": pytest.approx(1 / 3, abs=1e-6), "subset": None}


def test_score_with_rouge_alone_makes_the_aggregate_rouge():
    m = score(REFERENCES, PREDICTIONS)
    assert m["correction_metrics"] == ["rouge1_f"] and m["skipped_metrics"] == {}
    assert m["correction"]["aggregate"] == m["correction"]["rouge1_f"] == {"composite": 0.35, "subset": 0.9}
    # nothing predicted at all: every figure is 0, the subset has nothing to average
    empty = score(REFERENCES[:2], {})
    assert empty["error_flag_accuracy"] == 0.0 and empty["correction"]["rouge1_f"] == {"composite": 0.0, "subset": None}


def test_optional_metrics_are_skipped_cleanly_when_not_installed(monkeypatch):
    monkeypatch.setattr(E.importlib.util, "find_spec", lambda name: None)
    scorers, skipped = E.correction_scorers()
    assert scorers == {}
    assert set(skipped) == {"rouge1_f", "bertscore", "bleurt"} and all("not installed" in w for w in skipped.values())
    assert "synthtrace[eval]" in skipped["rouge1_f"]
    monkeypatch.setattr(E.importlib.util, "find_spec", lambda name: object())  # installed: offered, not run here
    scorers, skipped = E.correction_scorers("/models/BLEURT-20")
    assert list(scorers) == ["rouge1_f", "bertscore", "bleurt"] and skipped == {}
    assert scorers["bleurt"].keywords == {"checkpoint": "/models/BLEURT-20"}


def test_submission_lines_follow_the_mediqa_corr_format():
    lines = [
        submission_line("ms-val-1", Prediction(0, -1, None)),
        submission_line("ms-val-2", Prediction(1, 8, 'He is given "IV" fluids\n  now.')),
        submission_line("ms-val-3", Prediction(1, 3, None)),
        submission_line("ms-val-4", Prediction(0, -1, "ignored: a correct note has no correction")),
    ]
    assert lines == ["ms-val-1 0 -1 NA", 'ms-val-2 1 8 "He is given "IV" fluids now."', "ms-val-3 1 3 NA",
                     "ms-val-4 0 -1 NA"]
    assert all(OFFICIAL_LINE.fullmatch(line) for line in lines)


# =================================================================================================
# the command, end to end against the fake provider


def note_line(sid: int, sentence: str) -> Any:
    """Matches the request about the note whose numbered sentences include `sid sentence`."""
    numbered = re.compile(rf"^{sid} {re.escape(sentence)}$", re.MULTILINE)
    return lambda body: bool(numbered.search(last_user_text(body)))


N219 = note_line(1, "Scrotal orchiectomy is required.")
N108 = note_line(3, "Colonic atresia is confirmed when dark green discharge is coming out of the vulva.")
N458 = note_line(0, "An excisional biopsy is performed and the diagnosis of superficial spreading melanoma is confirmed.")


@pytest.fixture
def no_optional_metrics(monkeypatch):
    """The figures must not depend on whether BERTScore or BLEURT happen to be installed."""
    real = E.importlib.util.find_spec
    monkeypatch.setattr(E.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("bert_score", "bleurt") else real(name, *a))


def eval_medec(cli: Any, inp: Path, out: Path, cfg: Path, *extra: Any) -> Any:
    return cli("eval", "medec", "-i", inp, "-o", out, "--config", cfg, "-q", *extra, env={"COLUMNS": "200"})


def without_provenance(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "provenance"} for r in rows]


def test_eval_medec_end_to_end_then_resumes_without_new_requests(fp, cli, tmp_path, config_file, no_optional_metrics):
    fp.script(N219, {"text": P.render_verdict(True, 1, "Radical inguinal orchiectomy is required."),
                     "reasoning": "THINK-219"})
    fp.script(N108, {"text": "Let me weigh the findings one by one: the perineum", "finish_reason": "length"})
    fp.script(N458, "<think>the plan fits the melanoma</think>\nVerdict: CORRECT\nError sentence: -1\nCorrection: NA")
    out, cfg = tmp_path / "eval", config_file()
    result = eval_medec(cli, SAMPLE, out, cfg)
    assert result.exit_code == 0, result.output

    # one request per note, exactly the trained critic's prompt, greedy, with the answer budget
    assert len(fp.requests) == 3
    for rid, match in (("ms-val-219", N219), ("ms-val-108", N108), ("ms-val-458", N458)):
        (body,) = [r.body for r in fp.requests if match(r.body)]
        assert body["messages"] == P.critic_messages(note_sentences(sample_case(rid)))
        assert body["temperature"] == 0.0 and body["max_tokens"] == 4096

    rows = {r["id"]: r for r in read_jsonl(out / "rows.jsonl")}
    assert set(rows) == {"ms-val-219", "ms-val-108", "ms-val-458"}  # one row per note
    r219, r108, r458 = rows["ms-val-219"], rows["ms-val-108"], rows["ms-val-458"]
    assert r219["text_id"] == "ms-val-219" and r219["error_type"] == "management" and r219["parseable"] is True
    assert r219["prediction"] == {"error_flag": 1, "error_sentence_id": 1,
                                  "corrected_sentence": "Radical inguinal orchiectomy is required."}
    assert r219["reference"] == {"error_flag": 1, "error_sentence_id": 1,
                                 "error_sentence": "Scrotal orchiectomy is required.",
                                 "corrected_sentence": "Radical inguinal orchiectomy is required."}
    assert r219["reasoning"] == "THINK-219" and r219["answer"].startswith("Verdict: ERROR")
    assert r219["provenance"]["recipe"] == "medec-eval" and len(r219["provenance"]["calls"]) == 1
    assert r108["parseable"] is False and r108["prediction"] is None and r108["finish_reason"] == "length"
    assert r458["prediction"] == {"error_flag": 0, "error_sentence_id": -1, "corrected_sentence": None}
    assert r458["reasoning"] == "the plan fits the melanoma"
    assert r458["reference"] == {"error_flag": 0, "error_sentence_id": -1, "error_sentence": None,
                                 "corrected_sentence": None} and r458["error_type"] == "none"

    metrics = json.loads((out / "metrics.json").read_text())
    # 219 right on all counts, 108 unparseable, 458 right (both NA)
    assert (metrics["notes"], metrics["parsed"], metrics["unparseable"], metrics["missing"]) == (3, 2, 1, 0)
    assert metrics["complete"] is True and metrics["unparseable_ids"] == ["ms-val-108"]
    assert metrics["unparseable_truncated"] == 1
    assert metrics["error_flag_accuracy"] == metrics["error_sentence_accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["correction"]["rouge1_f"] == {"composite": pytest.approx(2 / 3, abs=1e-6), "subset": 1.0}
    assert metrics["correction_metrics"] == ["rouge1_f"] and set(metrics["skipped_metrics"]) == {"bertscore", "bleurt"}
    by_type = metrics["by_error_type"]
    assert {t: f["error_flag_accuracy"] for t, f in by_type.items()} == {"diagnosis": 0.0, "management": 1.0,
                                                                         "none": 1.0}
    assert "arXiv:2412.19260" in metrics["published"]["source"]
    assert metrics["model"]["alias"] == "fake" and metrics["model"]["base_url"] == fp.openai_base

    assert (out / "submission.txt").read_text() == (
        'ms-val-219 1 1 "Radical inguinal orchiectomy is required."\n'
        "ms-val-458 0 -1 NA\n")

    text = " ".join(result.stdout.split())
    assert "MEDEC: error detection and correction" in text and "arXiv:2412.19260" in text
    assert "medical doctors" in text and "best LLMs evaluated" in text
    assert re.search(r"fake │ 3 │ 0\.667 │ 0\.667 │ 0\.667 │ 0\.667 │ 1", text), result.stdout
    assert re.search(r"none \(no error\) │ 1 │ 1\.000 │ 1\.000", text), result.stdout
    assert "1 unparseable answer(s), 1 of them cut off by --max-tokens" in result.stderr
    assert "ms-val-108" in result.stderr and "BERTScore skipped: not installed" in result.stderr

    # the same command again: every note is done, nothing is sent, the figures are the same
    again = eval_medec(cli, SAMPLE, out, cfg)
    assert again.exit_code == 0, again.output
    assert len(fp.requests) == 3 and "from earlier runs" in again.stdout
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # … and with the rows gone, every answer replays from the journal
    first_rows = read_jsonl(out / "rows.jsonl")
    (out / "rows.jsonl").unlink()
    replayed = eval_medec(cli, SAMPLE, out, cfg)
    assert replayed.exit_code == 0, replayed.output
    assert len(fp.requests) == 3 and "3 replayed from the journal" in " ".join(replayed.stdout.split())
    assert sorted(without_provenance(read_jsonl(out / "rows.jsonl")), key=lambda r: r["id"]) == \
        sorted(without_provenance(first_rows), key=lambda r: r["id"])
    assert json.loads((out / "metrics.json").read_text()) == metrics


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(SAMPLE, newline="", encoding="utf-8") as f:
        header = csv.DictReader(f).fieldnames or []
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, header, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buf.getvalue().encode())


def test_failed_requests_and_bad_rows_are_counted_and_a_rerun_finishes(fp, cli, tmp_path, config_file,
                                                                       no_optional_metrics):
    with open(SAMPLE, newline="", encoding="utf-8") as f:
        r219, r108, r458 = csv.DictReader(f)
    inp = tmp_path / "medec.csv"
    write_csv(inp, [r219, r108 | {"Text ID": "bad-type", "Error Type": "surgery"}, r108, r458])
    answer_format = f"\n\n{P.ANSWER_FORMAT}"
    fp.script(lambda body: last_user_text(body).endswith(answer_format) and N219(body),
              P.render_verdict(True, 1, "Inguinal orchiectomy is required."))
    fp.script(N108, Fault.status(400, body={"error": {"message": "context too long"}}))
    out, cfg = tmp_path / "eval", config_file()
    first = eval_medec(cli, inp, out, cfg, "--max-records", 3, "--explain-format")
    assert first.exit_code == 0, first.output
    assert f"{inp}:5: unknown `Error Type` 'surgery'" in first.stderr  # ms-val-219 spans lines 2-4

    metrics = json.loads((out / "metrics.json").read_text())
    # the first three input items: 219, the bad row (not a note), 108 (its request refused)
    assert (metrics["notes"], metrics["parsed"], metrics["missing"]) == (2, 1, 1)
    assert metrics["complete"] is False and metrics["missing_ids"] == ["ms-val-108"]
    assert metrics["error_flag_accuracy"] == metrics["error_sentence_accuracy"] == 0.5
    # "Inguinal orchiectomy is required." vs "Radical inguinal orchiectomy is required.", case-sensitive as
    # the official ROUGE is: "Inguinal" is not "inguinal", so P 3/4, R 3/5 → F 2/3
    assert metrics["correction"]["rouge1_f"] == {"composite": pytest.approx(1 / 3, abs=1e-6),
                                                 "subset": pytest.approx(2 / 3, abs=1e-6)}
    assert (out / "submission.txt").read_text() == 'ms-val-219 1 1 "Inguinal orchiectomy is required."\n'
    assert "1 note(s) without a prediction" in first.stderr
    assert {e["id"] for e in read_jsonl(out / "rejected.jsonl")} == {"bad-type", "ms-val-108"}

    fp.reset()  # the provider recovers: the re-run asks only about the note without a row
    fp.script(N108, P.render_verdict(False, -1, None))
    second = eval_medec(cli, inp, out, cfg, "--max-records", 3, "--explain-format")
    assert second.exit_code == 0, second.output
    assert len(fp.requests) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] is True and metrics["missing"] == 0
    assert metrics["error_flag_accuracy"] == 0.5 and metrics["by_error_type"]["diagnosis"]["error_flag_accuracy"] == 0.0
