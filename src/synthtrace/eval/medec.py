"""`synthtrace eval medec`: how well a model finds and corrects the error in MEDEC notes.

Three parts:

- `MedecEvalRecipe` asks the model about each note through the engine, so the journal, resume,
  the limiter and every backend come for free: one request per note, the critic's task exactly as
  the SFT export holds it (`prompts.critic_messages`), one prediction row per note in rows.jsonl.
- `score` is pure: references and predictions in, figures out.
- `evaluate` is the I/O around it: reads the input and the rows, writes `submission.txt` (the
  MEDIQA-CORR 2024 submission format) and `metrics.json`.

Each CSV row is one note, as in the benchmark: the `Text` of an error row (with its error) or of an
error-free row; the `Corrected Text` of an error row is never asked about.

The metrics are those of the MEDIQA-CORR 2024 evaluation script (github.com/abachaa/MEDIQA-CORR-2024):

- error flag accuracy: the predicted flag equals the reference flag, over all notes;
- error sentence accuracy: the predicted sentence id equals the reference id (-1 for a correct
  note; a "no error" verdict predicts -1), over all notes;
- correction, `composite` (the script's R1FC, BERTC, BLEURTC, AggregateC): per note 1 when the
  reference and the prediction are both NA (no error, no correction), 0 when exactly one is NA,
  otherwise the metric of the predicted against the reference sentence; the mean over all notes;
- correction, `subset`: the metric's mean over the notes where both sides give a sentence (the
  script's `*_subset_check`);
- `aggregate`: per note, the mean of the metrics available — ROUGE-1 F (the `rouge` package, as the
  official script computes it), BERTScore (microsoft/deberta-xlarge-mnli, rescaled with baseline)
  and BLEURT-20, each when its package is installed — each clipped to [0, 1]. With all three it is
  the shared task's Aggregate score.

A note whose answer cannot be parsed, or that has no row (its request failed), is wrong on every
count and scores 0 for its correction; both are counted and named. Such notes are left out of the
submission file, which the official script also counts as wrong. Corrections are scored in the
form the official script reads back from `submission.txt` (`submission_form`), so its figures for
that file equal these; corrections that had to change for it are counted and named (`altered_ids`).
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from synthtrace.engine.store import MANIFEST, ROWS, write_atomic
from synthtrace.inputs import BadInput, Record, read_jsonl
from synthtrace.options import option
from synthtrace.recipe import LLM, Recipe
from synthtrace.recipes.medec import prompts as P
from synthtrace.recipes.medec.data import ERROR_TYPES, MedecCase, read_cases

NO_ERROR = "none"  # the error type of a correct note
MS_TEST_NOTES = 597  # notes in the public MEDEC-MS test set (its CSV ends with empty rows, which are skipped)
SUBMISSION = "submission.txt"
METRICS = "metrics.json"

SOURCE = ("Ben Abacha et al., 2024. MEDEC: A Benchmark for Medical Error Detection and Correction in Clinical "
          "Notes. arXiv:2412.19260 (Findings of ACL 2025)")
# Published figures to read a run against, as approximate ranges: reported on the MEDEC test set
# (MS and UW notes), and not checked here against the paper's own tables.
PUBLISHED = (
    {"who": "medical doctors", "error_flag_accuracy": "≈ 0.72–0.80", "error_sentence_accuracy": None},
    {"who": "best LLMs evaluated", "error_flag_accuracy": "≈ 0.70", "error_sentence_accuracy": "≈ 0.66"},
)

Scorer = Callable[[list[str], list[str]], Sequence[float]]  # (predictions, references) → one score per pair


# -- asking the model ---------------------------------------------------------------------------

class MedecEvalRecipe(Recipe):
    """One request per MEDEC note with the critic's task prompt; the verdict parsed into one row."""

    name = "medec-eval"
    prompt_version = P.PROMPT_VERSION

    @dataclass(frozen=True)
    class Options:
        max_tokens: int = option(4096, "Answer budget per note, reasoning included.", min=16)
        temperature: float = option(0.0, "Sampling temperature (0: greedy).", min=0)
        explain_format: bool = option(False, "Append the answer format to the task prompt, for models not trained "
                                             "on it (baselines). Use a fresh output dir when changing it.")

    def __init__(self, options: Any = None, /, **values: Any):
        super().__init__(options, **values)
        self._answers: Counter[str] = Counter()

    def records(self, path: Path) -> Iterator[Record | BadInput]:
        return read_cases(path)

    def count(self, path: Path) -> int | None:
        return None  # CSV records span several lines; counting would mean parsing twice

    def messages(self, case: MedecCase) -> list[dict[str, str]]:
        messages = P.critic_messages(note_sentences(case))
        if self.options.explain_format:
            messages[1]["content"] += f"\n\n{P.ANSWER_FORMAT}"
        return messages

    def estimate(self, record: Record) -> tuple[int, int, int]:
        chars = sum(len(m["content"]) for m in self.messages(MedecCase.from_data(record.data)))
        return 1, chars // 4 + 1, self.options.max_tokens

    async def process(self, record: Record, llm: LLM) -> list[dict[str, Any]]:
        case = MedecCase.from_data(record.data)
        reply = await llm.chat(self.messages(case), temperature=self.options.temperature,
                               max_tokens=self.options.max_tokens)
        verdict = P.parse_verdict(reply.text)
        self._answers["parsed" if verdict else "unparseable"] += 1
        ref = Reference.of(case)
        prediction = None if verdict is None else {
            "error_flag": int(verdict[0]), "error_sentence_id": verdict[1], "corrected_sentence": verdict[2]}
        return [{"id": case.id, "text_id": case.id, "error_type": ref.error_type,
                 "reference": {"error_flag": ref.error_flag, "error_sentence_id": ref.error_sentence_id,
                               "error_sentence": case.error_sentence if case.has_error else None,
                               "corrected_sentence": ref.corrected_sentence},
                 "answer": reply.text, "reasoning": reply.reasoning, "finish_reason": reply.finish_reason,
                 "parseable": verdict is not None, "prediction": prediction}]

    def summary(self) -> dict[str, Any]:
        if not self._answers:
            return {}
        return {"answers": f"{self._answers['parsed']:,} parsed · {self._answers['unparseable']:,} unparseable"}


def note_sentences(case: MedecCase) -> list[str]:
    """The sentences of the note the benchmark asks about, numbered as its `Error Sentence ID`."""
    return (case.error_sentences if case.has_error else case.correct_sentences) or []


# -- scoring (pure) -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reference:
    text_id: str
    error_flag: int
    error_sentence_id: int  # -1 for a correct note
    corrected_sentence: str | None  # None: NA (a correct note)
    error_type: str = NO_ERROR

    @classmethod
    def of(cls, case: MedecCase, raw_correction: str | None = None) -> Reference:
        """`raw_correction`: the reference correction exactly as the CSV holds it (line ends and all),
        which is what the official ROUGE compares with; default, the case's own."""
        if not case.has_error:
            return cls(case.id, 0, -1, None)
        return cls(case.id, 1, case.error_sentence_id, raw_correction or case.corrected_sentence,
                   case.error_type or NO_ERROR)


@dataclass(frozen=True, slots=True)
class Prediction:
    error_flag: int
    error_sentence_id: int
    corrected_sentence: str | None = None  # None: NA

    @property
    def correction(self) -> str | None:
        """The correction that is scored: what the official scorer reads back from this prediction's
        line in submission.txt (`submission_form`); NA when the note is called correct."""
        if not self.error_flag or not self.corrected_sentence:
            return None
        return submission_form(self.corrected_sentence)

    @property
    def altered(self) -> bool:
        """The correction had to change to survive the official scorer's reading (see `submission_form`)."""
        if not self.error_flag or not self.corrected_sentence:
            return False
        return submission_form(self.corrected_sentence) != " ".join(self.corrected_sentence.split())


@dataclass(slots=True)
class _Note:
    ref: Reference
    status: str  # parsed | unparseable | missing
    flag_ok: bool = False
    sentence_ok: bool = False
    both_na: bool = False
    paired: bool = False  # both sides give a sentence: the metrics compare them
    correction: dict[str, float] = field(default_factory=dict)  # per metric, the composite score


def rouge1_scores(predictions: list[str], references: list[str]) -> list[float]:
    """ROUGE-1 F as the official scorer computes it: the `rouge` package (case-sensitive, words split
    at spaces and full stops, each distinct word counted once)."""
    from rouge import Rouge  # the evaluation extra: pip install 'synthtrace[eval]'

    return [s["rouge-1"]["f"] for s in Rouge(metrics=["rouge-1"]).get_scores(predictions, references)]


def submission_form(correction: str) -> str | None:
    """A correction as the official scorer reads it back from a submission line, or None (NA).

    Its parser splits the line on whitespace (so newlines and runs of spaces become one space),
    strips every quote from both ends, and hands the whole line to `re.sub` as a replacement
    string (so a backslash either changes the text or stops the scorer); its ROUGE stops on a
    correction with no word between the full stops. Here backslashes become slashes and a
    correction with no word becomes NA; the figures synthtrace reports are computed on this form.
    """
    text = " ".join(correction.replace("\\", "/").split())
    while text.startswith('"') and len(text) > 1:
        text = text[1:]
    while text.endswith('"') and len(text) > 1:
        text = text[:-1]
    text = text.strip()
    if not text or text == '"' or not any(piece.strip() for piece in text.split(".")):
        return None
    return text


def score(references: Sequence[Reference], predictions: Mapping[str, Prediction | None],
          scorers: Mapping[str, Scorer] | None = None) -> dict[str, Any]:
    """The MEDIQA-CORR figures, overall and per error type (module docstring: definitions).

    `predictions` maps a text id to its parsed prediction, or to None when the answer could not be
    parsed; a note absent from it has no prediction. `scorers` default to ROUGE-1 F alone; one that
    fails is left out and named in `skipped_metrics`.
    """
    scorers = {"rouge1_f": rouge1_scores} if scorers is None else scorers
    pairs = [ref for ref in references
             if ref.corrected_sentence and (p := predictions.get(ref.text_id)) is not None and p.correction]
    candidates = [predictions[ref.text_id].correction or "" for ref in pairs]
    gold = [ref.corrected_sentence or "" for ref in pairs]
    per_metric: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    for name, scorer in scorers.items():
        try:
            values = list(scorer(candidates, gold)) if pairs else []
            if len(values) != len(pairs):
                raise ValueError(f"{len(values)} scores for {len(pairs)} sentence pairs")
        except Exception as e:  # an optional metric (a model that cannot load) must not sink the evaluation
            skipped[name] = f"failed: {type(e).__name__}: {e}"
            continue
        per_metric[name] = [min(1.0, max(0.0, float(v))) for v in values]
    available = list(per_metric)
    if available:
        per_metric["aggregate"] = [sum(v) / len(available) for v in zip(*per_metric.values())]
    metrics = list(per_metric)
    pair_scores = {ref.text_id: {m: per_metric[m][k] for m in metrics} for k, ref in enumerate(pairs)}
    notes = [_judge(ref, predictions, pair_scores.get(ref.text_id), metrics) for ref in references]

    result = _figures(notes, metrics)
    by_type = {}
    for etype in (*ERROR_TYPES, NO_ERROR):
        group = [n for n in notes if n.ref.error_type == etype]
        if group:
            by_type[etype] = _figures(group, metrics)
    result.update(by_error_type=by_type, correction_metrics=available, skipped_metrics=skipped,
                  unparseable_ids=[n.ref.text_id for n in notes if n.status == "unparseable"],
                  missing_ids=[n.ref.text_id for n in notes if n.status == "missing"],
                  altered_ids=[r.text_id for r in references
                               if (p := predictions.get(r.text_id)) is not None and p.altered])
    return result


def _judge(ref: Reference, predictions: Mapping[str, Prediction | None], pair: dict[str, float] | None,
           metrics: list[str]) -> _Note:
    if ref.text_id not in predictions:
        return _Note(ref, "missing", correction=dict.fromkeys(metrics, 0.0))
    p = predictions[ref.text_id]
    if p is None:
        return _Note(ref, "unparseable", correction=dict.fromkeys(metrics, 0.0))
    both_na = ref.corrected_sentence is None and p.correction is None
    if pair is not None:
        correction = pair
    else:  # 1 when both are NA, 0 when only one is
        correction = dict.fromkeys(metrics, 1.0 if both_na else 0.0)
    sentence = p.error_sentence_id if p.error_flag else -1
    return _Note(ref, "parsed", flag_ok=p.error_flag == ref.error_flag, sentence_ok=sentence == ref.error_sentence_id,
                 both_na=both_na, paired=pair is not None, correction=correction)


def _figures(notes: list[_Note], metrics: list[str]) -> dict[str, Any]:
    status = Counter(n.status for n in notes)
    paired = [n for n in notes if n.paired]
    return {
        "notes": len(notes), "parsed": status["parsed"], "unparseable": status["unparseable"],
        "missing": status["missing"],
        "error_flag_accuracy": _mean([n.flag_ok for n in notes]),
        "error_sentence_accuracy": _mean([n.sentence_ok for n in notes]),
        "correction": {m: {"composite": _mean([n.correction[m] for n in notes]),
                           "subset": _mean([n.correction[m] for n in paired])} for m in metrics},
        "correction_pairs": len(paired), "both_na": sum(n.both_na for n in notes),
    }


def _comparable(references: Sequence[Reference]) -> str:
    """How far this input's figures can be set beside the published ones."""
    ids = [r.text_id for r in references]
    if ids and all(i.startswith("ms-test") for i in ids):
        whole = " (all of it)" if len(ids) == MS_TEST_NOTES else f" ({len(ids):,} of its {MS_TEST_NOTES:,} notes)"
        return (f"the public MEDEC-MS test set{whole}; the published test figures also count the UW notes, "
                "so they are close to, not the same as, these")
    return "not the MEDEC test set: the published rows are for orientation only"


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def correction_scorers(bleurt_checkpoint: str = "BLEURT-20") -> tuple[dict[str, Scorer], dict[str, str]]:
    """ROUGE-1 F, BERTScore and BLEURT, each when its package is installed (otherwise named, with why)."""
    scorers: dict[str, Scorer] = {}
    skipped: dict[str, str] = {}
    if importlib.util.find_spec("rouge") is not None:
        scorers["rouge1_f"] = rouge1_scores
    else:
        skipped["rouge1_f"] = "not installed (pip install 'synthtrace[eval]')"
    if importlib.util.find_spec("bert_score") is not None:
        scorers["bertscore"] = _bertscore
    else:
        skipped["bertscore"] = "not installed (pip install bert-score)"
    if importlib.util.find_spec("bleurt") is not None:
        scorers["bleurt"] = partial(_bleurt, checkpoint=bleurt_checkpoint)
    else:
        skipped["bleurt"] = "not installed (pip install git+https://github.com/google-research/bleurt)"
    return scorers, skipped


def _bertscore(predictions: list[str], references: list[str]) -> list[float]:
    from bert_score import score as bert_score  # optional; fetches its model on first use

    # the official scorer's arguments (it also pins device="cpu", which changes nothing but speed)
    _, _, f1 = bert_score(predictions, references, model_type="microsoft/deberta-xlarge-mnli", lang="en",
                          rescale_with_baseline=True)
    return [float(v) for v in f1.tolist()]


def _bleurt(predictions: list[str], references: list[str], checkpoint: str) -> list[float]:
    from bleurt import score as bleurt_score  # optional; `checkpoint` is a downloaded BLEURT-20 directory

    # batch_size as the official scorer passes it: without one, BLEURT parses the command line as flags
    return [float(v) for v in bleurt_score.BleurtScorer(checkpoint).score(references=references,
                                                                          candidates=predictions, batch_size=1)]


def submission_line(text_id: str, p: Prediction) -> str:
    """`text_id error_flag error_sentence_id "corrected sentence"`, or `text_id 0 -1 NA` (MEDIQA-CORR 2024);
    the correction in the form the official scorer reads back as it is (`submission_form`)."""
    if not p.error_flag:
        return f"{text_id} 0 -1 NA"
    fix = p.correction
    return f"{text_id} 1 {p.error_sentence_id} " + (f'"{fix}"' if fix else "NA")


# -- reading and writing ------------------------------------------------------------------------

def read_references(path: Path, max_records: int | None = None) -> list[Reference]:
    """The notes a run over `path` asks about, in input order: the items the runner takes (the first
    `max_records`, bad rows included), less bad rows and repeated ids (the runner rejects those)."""
    refs: list[Reference] = []
    seen: set[str] = set()
    raw = _raw_corrections(path)
    for taken, item in enumerate(read_cases(path)):
        if max_records is not None and taken >= max_records:
            break
        if isinstance(item, BadInput) or item.id in seen:
            continue
        seen.add(item.id)
        refs.append(Reference.of(MedecCase.from_data(item.data), raw.get(item.id)))
    return refs


def _raw_corrections(path: Path) -> dict[str, str]:
    """Text id → `Corrected Sentence` untouched, for an official CSV (the ROUGE package counts even the
    empty piece after a final full stop and a line end as a word, so trimming would change figures)."""
    if path.suffix.lower() != ".csv":
        return {}
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:
        return {row["Text ID"]: row["Corrected Sentence"] for row in csv.DictReader(f)
                if row.get("Text ID") and (row.get("Corrected Sentence") or "").strip()}


def read_predictions(rows_path: Path) -> tuple[dict[str, Prediction | None], set[str], list[str]]:
    """(text id → prediction, or None when unparseable; ids whose unparseable answer hit the token
    limit; warnings naming rows that could not be read)."""
    predictions: dict[str, Prediction | None] = {}
    truncated: set[str] = set()
    warnings: list[str] = []
    if not rows_path.exists():
        return predictions, truncated, warnings
    for item in read_jsonl(rows_path):
        if isinstance(item, BadInput):
            warnings.append(f"{item.message()}: unreadable prediction row; its note counts as missing")
            continue
        n, row = item
        try:
            text_id, p = str(row["text_id"]), row["prediction"]
            predictions[text_id] = None if p is None else Prediction(
                int(p["error_flag"]), int(p["error_sentence_id"]), p.get("corrected_sentence"))
        except (KeyError, TypeError, ValueError) as e:
            warnings.append(f"{rows_path}:{n}: unreadable prediction row ({type(e).__name__}: {e}); "
                            "its note counts as missing")
            continue
        if p is None and row.get("finish_reason") == "length":
            truncated.add(text_id)
    return predictions, truncated, warnings


def evaluate(input_path: Path, outdir: Path, *, max_records: int | None = None,
             scorers: Mapping[str, Scorer] | None = None, skipped: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Score the prediction rows of `outdir` against `input_path`; write submission.txt and metrics.json.

    Without `scorers`, the ones installed are used (`correction_scorers`). The model is the one the
    run's manifest names."""
    references = read_references(input_path, max_records)
    predictions, truncated, warnings = read_predictions(outdir / ROWS)
    foreign = len(predictions.keys() - {r.text_id for r in references})
    if foreign:
        warnings.append(f"{foreign:,} row(s) in {outdir / ROWS} are about notes outside this input; not scored")
    if scorers is None:
        scorers, skipped = correction_scorers()
    figures = score(references, predictions, scorers)
    figures["skipped_metrics"] = {**(skipped or {}), **figures["skipped_metrics"]}
    manifest = outdir / MANIFEST
    model = orjson.loads(manifest.read_bytes()).get("model") if manifest.exists() else None
    metrics = {"benchmark": "MEDEC, scored as in MEDIQA-CORR 2024", "input": str(input_path), "model": model,
               "complete": not figures["missing"], **figures,
               "unparseable_truncated": len(truncated & set(figures["unparseable_ids"])), "warnings": warnings,
               "published": {"source": SOURCE, "rows": list(PUBLISHED), "comparable": _comparable(references),
                             "note": "approximate; MEDEC test set (MS and UW notes)"}}
    lines = [submission_line(r.text_id, p) for r in references if (p := predictions.get(r.text_id)) is not None]
    write_atomic(outdir / SUBMISSION, "".join(f"{line}\n" for line in lines).encode())
    write_atomic(outdir / METRICS, orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
    return metrics
