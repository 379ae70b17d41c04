"""MEDEC input: the official CSV (validation/test/training) and the pairs JSONL, as `MedecCase`s.

CSV: an error row (`Error Flag` 1) is a pair — `Text` is the note with the error, `Corrected Text`
the correct one; an error-free row is a single correct note. The files have CRLF line endings,
newlines inside fields, imperfect sentence splits and (the test CSV) empty trailing rows, which are
skipped. JSONL pairs (`incorrect_note`, `correct_note`, `error_type`, `error_sentence`,
`corrected_sentence`) carry no sentence split, so one is made here and the error sentence located.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synthtrace.inputs import BadInput, Record, read_records, record_id
from synthtrace.quality.similarity import containment

ERROR_TYPES = ("diagnosis", "management", "treatment", "pharmacotherapy", "causalOrganism")
_TYPE_BY_LOWER = {t.lower(): t for t in ERROR_TYPES}
CSV_COLUMNS = ("Text ID", "Text", "Error Flag")
# A sentence ends at . ! or ? followed by whitespace and a capital letter or digit — not inside
# "38.5 C" or "98/62 mm Hg.", and not after common abbreviations.
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")
_ABBREV = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|St|vs|e\.g|i\.e|approx|No|Fig)\.$")


@dataclass(slots=True)
class MedecCase:
    id: str
    correct_note: str | None
    error_note: str | None = None
    error_type: str | None = None
    error_sentence: str | None = None
    error_sentence_id: int = -1
    corrected_sentence: str | None = None
    error_sentences: list[str] | None = None  # the error note, one sentence per id
    correct_sentences: list[str] | None = None

    @property
    def has_error(self) -> bool:
        return self.error_note is not None

    def to_data(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> MedecCase:
        return cls(**data)


def split_sentences(text: str) -> list[str]:
    """Sentences of a note, best effort (MEDEC's own splits are imperfect too)."""
    out: list[str] = []
    for piece in _SPLIT.split(" ".join(text.split())):
        if out and _ABBREV.search(out[-1]):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return [s for s in out if s]


def parse_sentences_column(value: str) -> list[str]:
    """The CSV's `Sentences` column ("<id> <sentence>" per line) as a list indexed by id."""
    sentences: dict[int, str] = {}
    for line in value.replace("\r\n", "\n").split("\n"):
        line = line.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        head = head.rstrip("|")
        if head.isdigit():
            sentences[int(head)] = rest.lstrip("| ").strip()
        elif sentences:  # a sentence broken over two lines
            last = max(sentences)
            sentences[last] = f"{sentences[last]} {line}"
    return [sentences.get(i, "") for i in range(max(sentences) + 1)] if sentences else []


def locate_sentence(sentences: list[str], target: str) -> int:
    """Id of the sentence that best holds `target` (-1 when nothing overlaps)."""
    best, best_score = -1, 0.0
    for i, s in enumerate(sentences):
        score = containment(target, s) + 0.5 * containment(s, target)
        if score > best_score:
            best, best_score = i, score
    return best


def _swap(sentences: list[str], index: int, old: str | None, new: str | None) -> list[str] | None:
    """The correct note's sentences: the error note's, with the error sentence corrected."""
    if not (0 <= index < len(sentences)) or not old or not new:
        return None
    s = sentences[index]
    fixed = s.replace(old, new) if old in s else (new if containment(old, s) > 0.8 else None)
    if fixed is None:
        return None
    return [*sentences[:index], fixed, *sentences[index + 1:]]


def read_cases(path: Path) -> Iterator[Record | BadInput]:
    """Records whose `data` is a MedecCase dict, from a MEDEC CSV or a pairs JSONL."""
    if path.suffix.lower() in (".jsonl", ".json"):
        yield from _read_pairs_jsonl(path)
    else:
        yield from _read_csv(path)


def _read_csv(path: Path) -> Iterator[Record | BadInput]:
    source = str(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            yield BadInput(source, 1, f"not a MEDEC CSV: missing column(s) {', '.join(missing)}")
            return
        line = reader.line_num + 1  # where the next record starts (records span several lines)
        for row in reader:
            start, line = line, reader.line_num + 1
            if not any((v or "").strip() for v in row.values()):
                continue  # the test CSV's empty placeholder rows
            rid = (row.get("Text ID") or "").strip()
            text = (row.get("Text") or "").strip()
            flag = (row.get("Error Flag") or "").strip()
            if not rid or not text or flag not in ("0", "1"):
                yield BadInput(source, start, "needs `Text ID`, `Text` and `Error Flag` 0/1", id=rid or None)
                continue
            sentences = parse_sentences_column(row.get("Sentences") or "") or split_sentences(text)
            if flag == "0":
                yield Record(rid, MedecCase(rid, text, correct_sentences=sentences).to_data(), source, start)
                continue
            case, problem = _csv_error_case(rid, row, text, sentences)
            if problem:
                yield BadInput(source, start, problem, id=rid)
            else:
                yield Record(rid, case.to_data(), source, start)


def _csv_error_case(rid: str, row: dict[str, str], text: str, sentences: list[str]) -> tuple[MedecCase, str | None]:
    corrected_text = (row.get("Corrected Text") or "").strip()
    etype = _TYPE_BY_LOWER.get((row.get("Error Type") or "").strip().lower())
    err_sentence = (row.get("Error Sentence") or "").strip()
    corrected = (row.get("Corrected Sentence") or "").strip()
    try:
        sid = int((row.get("Error Sentence ID") or "").strip())
    except ValueError:
        sid = -2
    case = MedecCase(rid, corrected_text or None, text, etype, err_sentence, sid, corrected, error_sentences=sentences)
    if not corrected_text or corrected_text == "NA":
        return case, "error row without `Corrected Text`"
    if etype is None:
        return case, f"unknown `Error Type` {row.get('Error Type')!r} (expected one of {', '.join(ERROR_TYPES)})"
    if sid < 0 or not err_sentence or err_sentence == "NA" or not corrected or corrected == "NA":
        return case, "error row needs `Error Sentence ID`, `Error Sentence` and `Corrected Sentence`"
    if sid >= len(sentences):
        return case, f"`Error Sentence ID` {sid} is beyond the note's {len(sentences)} sentences"
    case.correct_sentences = _swap(sentences, sid, err_sentence, corrected) or split_sentences(corrected_text)
    return case, None


def _read_pairs_jsonl(path: Path) -> Iterator[Record | BadInput]:
    return read_records(path, _pair_record)


def _pair_record(source: str, n: int, obj: dict[str, Any]) -> Record | BadInput:
    rid = record_id(obj.get("note_id") or obj.get("id"))
    fields = ("incorrect_note", "correct_note", "error_type", "error_sentence", "corrected_sentence")
    missing = [k for k in fields if not isinstance(obj.get(k), str) or not obj[k].strip()]
    etype = _TYPE_BY_LOWER.get(str(obj.get("error_type") or "").strip().lower())
    if rid is None or missing:
        what = "`note_id`" if rid is None else ", ".join(f"`{k}`" for k in missing)
        return BadInput(source, n, f"missing or empty {what}", id=rid)
    if etype is None:
        return BadInput(source, n, f"unknown error_type {obj['error_type']!r}", id=rid)
    error_sentences = split_sentences(obj["incorrect_note"])
    sid = locate_sentence(error_sentences, obj["error_sentence"])
    if sid < 0:
        return BadInput(source, n, "`error_sentence` not found in `incorrect_note`", id=rid)
    case = MedecCase(rid, obj["correct_note"].strip(), obj["incorrect_note"].strip(), etype,
                     obj["error_sentence"].strip(), sid, obj["corrected_sentence"].strip(), error_sentences)
    case.correct_sentences = (_swap(error_sentences, sid, case.error_sentence, case.corrected_sentence)
                              or split_sentences(case.correct_note or ""))
    return Record(rid, case.to_data(), source, n)
