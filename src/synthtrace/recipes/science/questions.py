"""Stage-1 questions: which to keep (self-contained, distinct) and which to trace (balanced by type)."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from typing import Any

from synthtrace.quality.similarity import rouge1_f
from synthtrace.recipes.science.prompts import LEVEL_OF, QUESTION_TYPES

MIN_QUESTION_WORDS = 8
NEAR_DUPLICATE_ROUGE1 = 0.7

# Phrases that lean on a text the asker of the question never saw.
_LEANS_ON_SOURCE = re.compile(
    r"\b(?:(?:this|the|that|above|given|present|current)\s+(?:paper|article|passage|text|study|work|manuscript|"
    r"thesis|excerpt|section|report|authors?)|the\s+authors?|these\s+(?:results|findings|authors|data|experiments)|"
    r"(?:as\s+)?(?:described|mentioned|shown|discussed|stated)\s+(?:above|earlier|here|in\s+the\s+(?:text|passage))|"
    r"in\s+this\s+(?:work|paper|study|research))\b",
    re.IGNORECASE,
)


def not_self_contained(question: str) -> str | None:
    """Why a question cannot stand on its own, or None when it can."""
    m = _LEANS_ON_SOURCE.search(question)
    if m:
        return f"not self-contained: refers to {m.group(0)!r}"
    if len(question.split()) < MIN_QUESTION_WORDS:
        return f"too short to be self-contained ({len(question.split())} words)"
    return None


def filter_questions(questions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, filtered): each filtered question carries its `reason`. The level follows the type."""
    kept: list[dict[str, Any]] = []
    filtered: list[dict[str, Any]] = []
    for q in questions:
        q = {**q, "question": " ".join(str(q.get("question", "")).split())}
        q["difficulty_level"] = LEVEL_OF.get(q.get("question_type", ""), q.get("difficulty_level"))
        reason = not_self_contained(q["question"])
        if reason is None:
            twin = next((k for k in kept if rouge1_f(q["question"], k["question"]) >= NEAR_DUPLICATE_ROUGE1), None)
            if twin is not None:
                reason = f"near-duplicate of {twin['question'][:80]!r}"
        if reason:
            filtered.append({**q, "reason": reason})
        else:
            kept.append(q)
    return kept, filtered


def select_questions(questions: list[dict[str, Any]], n: int, seed: str) -> list[dict[str, Any]]:
    """Up to `n` questions spread over as many types as possible.

    Types are visited in an order drawn from `seed` (the passage id), so that across passages every
    type is traced about equally often; within a type, questions keep the model's order.
    """
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for q in questions:
        by_type[q["question_type"]].append(q)
    order = sorted(QUESTION_TYPES, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).digest())
    chosen: list[dict[str, Any]] = []
    while len(chosen) < n and any(by_type.values()):
        for t in order:
            if by_type.get(t) and len(chosen) < n:
                chosen.append(by_type[t].pop(0))
    return chosen
