"""Text similarity for verification and evaluation: ROUGE-1 F over normalised word tokens.

The same tokenisation as rouge-score's default (lower-case, runs of letters and digits), without
stemming; a few lines serve here, so no dependency. `novel_token_recall` asks the sharper question
for a correction: of the words the reference correction introduced, how many did a prediction get?
"""

from __future__ import annotations

import re
from collections import Counter

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str | None) -> list[str]:
    return _TOKEN.findall((text or "").lower())


def rouge1_f(prediction: str | None, reference: str | None) -> float:
    """Unigram-overlap F1 (ROUGE-1 F); 0.0 when either side has no tokens."""
    p, r = Counter(tokens(prediction)), Counter(tokens(reference))
    if not p or not r:
        return 0.0
    overlap = sum((p & r).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(p.values()), overlap / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def novel_token_recall(prediction: str | None, reference: str | None, original: str | None) -> float:
    """Share of the words `reference` adds over `original` that appear in `prediction` (1.0 if none added)."""
    added = set(tokens(reference)) - set(tokens(original))
    if not added:
        return 1.0
    return len(added & set(tokens(prediction))) / len(added)


def containment(part: str | None, whole: str | None) -> float:
    """Share of `part`'s distinct tokens found in `whole`."""
    a = set(tokens(part))
    return len(a & set(tokens(whole))) / len(a) if a else 0.0
