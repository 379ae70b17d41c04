"""What a reasoning trace does, read off its text: patterns, authenticity markers and complexity.

Cheap heuristics, no model calls. They describe a trace for filtering and analysis (which traces
self-correct, which only hedge); they are not a quality score — that is the judges' job.
"""

from __future__ import annotations

import re
from typing import Any

_PATTERNS = {
    "hypothesis_generation": r"\b(?:hypothes[ie]s|one possibility|could be (?:that|because)|my first (?:thought|guess)|"
                             r"perhaps it(?:'s| is)|suppose|what if)\b",
    "evidence_evaluation": r"\b(?:evidence|the data (?:show|suggest)|measured|observations?|supports?|consistent with)\b",
    "method_critique": r"\b(?:assumption|bias|confound|sample size|limitation|systematic|control(?:led)? for|"
                       r"method(?:ology)?)\b",
    "alternative_consideration": r"\b(?:alternatively|another (?:explanation|possibility|way)|on the other hand|"
                                 r"in contrast|or (?:maybe|perhaps))\b",
    "causal_reasoning": r"\b(?:because|therefore|which (?:means|implies|leads)|as a result|consequently|causes?)\b",
    "quantitative_reasoning": r"(?:\d+(?:\.\d+)?\s*(?:%|percent|times|orders? of magnitude)|\bscal(?:e|es|ing) (?:as|with)\b)",
    "analogy": r"\b(?:analog(?:y|ous)|similar to|just as|think of it (?:as|like)|like a)\b",
}
_MARKERS = {
    "uncertainty": r"\b(?:i(?:'?m| am) not (?:sure|certain)|uncertain|unclear|might|may not|probably|i suspect|it seems|"
                   r"hard to say|not obvious|i doubt)\b",
    "self_correction": r"\b(?:wait|actually|on second thought|let me reconsider|i was wrong|that'?s not (?:quite )?right|"
                       r"correction|no,|hmm|rather than what i said|i need to revise)\b",
    "metacognition": r"\b(?:let me think|i need to|step back|let me check|i should|the question (?:is|asks)|"
                     r"what (?:they|the asker|the person) (?:really )?(?:want|need)s?)\b",
    "verification": r"\b(?:check(?:ing)? (?:this|that|whether)|does (?:this|that) (?:hold|make sense)|sanity check|"
                    r"double-check|verify)\b",
}
_COMPILED_PATTERNS = {k: re.compile(v, re.IGNORECASE) for k, v in _PATTERNS.items()}
_COMPILED_MARKERS = {k: re.compile(v, re.IGNORECASE) for k, v in _MARKERS.items()}


def trace_traits(thought: str) -> dict[str, Any]:
    """reasoning_patterns (names found), authenticity_markers (counts per kind), complexity."""
    patterns = [name for name, rx in _COMPILED_PATTERNS.items() if rx.search(thought)]
    markers = {name: len(rx.findall(thought)) for name, rx in _COMPILED_MARKERS.items()}
    words = len(thought.split())
    sentences = max(1, len(re.findall(r"[.!?](?:\s|$)", thought)))
    score = len(patterns) + sum(1 for n in markers.values() if n) + (words >= 300) + (words >= 700)
    level = "high" if score >= 8 else "medium" if score >= 5 else "low"
    return {
        "reasoning_patterns": patterns,
        "authenticity_markers": markers,
        "complexity": {"level": level, "words": words, "sentences": sentences,
                       "words_per_sentence": round(words / sentences, 1)},
    }


def unwrap(text: Any, tag: str) -> str:
    """The text inside `<tag>…</tag>` (the whole text when it carries no such tags), stripped."""
    if not isinstance(text, str):
        return ""
    m = re.search(rf"<{tag}>(.*)</{tag}>", text, re.DOTALL)
    return (m.group(1) if m else text).strip()
