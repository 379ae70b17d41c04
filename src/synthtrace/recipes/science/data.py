"""Passages in: JSONL with `text` (optional `id`, `title`, `domain`, `section`), long texts split.

A text longer than the passage budget is cut on paragraph boundaries (blank lines) into passages
that fit it; a single paragraph longer than the budget is cut on sentence ends. Each passage is a
record of its own, `ID` for a text that fits and `ID#p1`, `ID#p2` … for the parts of one that does
not, so a re-run resumes passage by passage. Tokens are estimated at four characters each.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthtrace.inputs import BadInput, Record, read_jsonl, record_id

CHARS_PER_TOKEN = 4
DEFAULT_PASSAGE_TOKENS = 1500
MIN_PASSAGE_WORDS = 40
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\[$(])")


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def split_passages(text: str, max_tokens: int = DEFAULT_PASSAGE_TOKENS) -> list[str]:
    """Consecutive paragraphs packed into passages of at most `max_tokens` (estimated)."""
    limit = max(200, max_tokens * CHARS_PER_TOKEN)
    pieces: list[str] = []
    for para in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not para:
            continue
        if len(para) <= limit:
            pieces.append(para)
            continue
        chunk = ""
        for sentence in _SENTENCE_END.split(para):
            if chunk and len(chunk) + 1 + len(sentence) > limit:
                pieces.append(chunk)
                chunk = ""
            chunk = f"{chunk} {sentence}".strip() if chunk else sentence
            while len(chunk) > limit:  # one "sentence" longer than the budget: a hard cut is all that is left
                pieces.append(chunk[:limit])
                chunk = chunk[limit:]
        if chunk:
            pieces.append(chunk)
    passages: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 2 + len(piece) > limit:
            passages.append(current)
            current = ""
        current = f"{current}\n\n{piece}" if current else piece
    if current:
        if passages and len(current.split()) < MIN_PASSAGE_WORDS:  # a scrap is better read with what precedes it
            passages[-1] = f"{passages[-1]}\n\n{current}"
        else:
            passages.append(current)
    return passages


def read_passages(path: Path, max_tokens: int = DEFAULT_PASSAGE_TOKENS) -> Iterator[Record | BadInput]:
    source = str(path)
    for item in read_jsonl(path):
        if isinstance(item, BadInput):
            yield item
            continue
        n, obj = item
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            yield BadInput(source, n, "needs a non-empty `text` string", id=record_id(obj.get("id")))
            continue
        base = record_id(obj.get("id")) or f"line{n}"
        parts = split_passages(text, max_tokens)
        for i, passage in enumerate(parts, 1):
            if len(passage.split()) < MIN_PASSAGE_WORDS and len(parts) == 1:
                yield BadInput(source, n, f"text too short for questions ({len(passage.split())} words; "
                                          f"at least {MIN_PASSAGE_WORDS})", id=base)
                break
            rid = base if len(parts) == 1 else f"{base}#p{i}"
            yield Record(rid, {"id": rid, "text": passage, "part": i, "parts": len(parts), **_meta(obj)}, source, n)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    title = obj.get("title") or obj.get("source_title") or ""
    domain = obj.get("domain") or obj.get("discipline") or ""
    return {"source_id": obj.get("id"), "title": str(title), "domain": str(domain),
            "section": str(obj.get("section") or "")}
