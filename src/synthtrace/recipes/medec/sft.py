"""medec rows as training examples: the task the trained model will see, the trace, the answer.

The user turn must be the exact task prompt the recipe stored (`prompt`): never the teacher's
instructions, never the bare note. Rows written before prompts were stored get the recipe's prompt
rebuilt from their note. A skip returns a short reason, free of per-row details, so the export
summary counts rows per reason.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from synthtrace.inputs import record_id
from synthtrace.quality.similarity import containment, tokens
from synthtrace.quality.traits import unwrap
from synthtrace.recipe import ChatExample
from synthtrace.recipes.medec import prompts as P
from synthtrace.recipes.medec.data import split_sentences

# The user turn must ask for something: at least this many words that are not the note's own.
MIN_REQUEST_WORDS = 5
# A critic's user turn must hold (nearly) every word of the note it asks about.
MIN_NOTE_CONTAINMENT = 0.9
# Openings of the teacher instructions and hints: a task prompt that holds one leaks the answer.
_TEACHER_MARKERS = tuple(s[:40] for s in (
    P.CRITIC_TEACHER, P.critic_hint(-1, None), P.critic_hint(0, "x"),
    P.generator_correct_teacher(""), P.generator_error_teacher("", "", ""),
))


def medec_example(row: dict[str, Any]) -> ChatExample | str:
    prov = row.get("provenance") or {}
    group = record_id(prov.get("source_note_id")) or record_id(prov.get("record_id"))
    if group is None:
        return "medec row without provenance.source_note_id or record_id"
    role = row.get("role")
    if role not in ("critic", "generator"):
        return "medec row with an unknown role"
    kind = "critic" if role == "critic" else ("generator_error" if row.get("label") == "ERROR" else "generator_correct")
    reasoning = unwrap(row.get("reasoning"), "reasoning")
    if not reasoning:
        return "empty reasoning"
    answer = _str(row.get("answer"))
    if answer is None:
        return "empty answer"
    note = _str(row.get("note"))

    prompt = row.get("prompt")
    rebuilt = False
    if isinstance(prompt, dict) and _str(prompt.get("system")) and _str(prompt.get("user")):
        system, user = prompt["system"], prompt["user"]
    else:
        built = _rebuild_prompt(kind, row, note)
        if isinstance(built, str):
            return built
        (system, user), rebuilt = built, True

    if any(m in system or m in user for m in _TEACHER_MARKERS):
        return "prompt holds the teacher's instructions"
    if words_beyond(user, note) < MIN_REQUEST_WORDS:
        return "user turn is the bare note, without a request"
    if kind == "critic":
        if note is None:
            return "critic row without its note"
        if len(user) <= len(note) or containment(note, user) < MIN_NOTE_CONTAINMENT:
            return "critic user turn does not hold the note"

    meta = {"note_id": record_id(row.get("note_id")), "role": role, "task": _str(row.get("task")),
            "label": _str(row.get("label")), "error_type": _str(row.get("error_type")),
            "verified": row.get("verified") if isinstance(row.get("verified"), bool) else None,
            "hinted": bool(row.get("hinted"))}
    return ChatExample(user, answer, reasoning, system, group=group, kind=f"{role}/{row.get('task') or '-'}",
                       meta=meta, rebuilt_prompt=rebuilt)


def words_beyond(user: str, note: str | None) -> int:
    """How many words of `user` are not words of `note` (counted with multiplicity)."""
    return sum((Counter(tokens(user)) - Counter(tokens(note))).values())


def _rebuild_prompt(kind: str, row: dict[str, Any], note: str | None) -> tuple[str, str] | str:
    """The task prompt the recipe would have stored, from the row's note (rows written before prompts
    were stored). Sentence splits may differ slightly from the ones the recipe used."""
    if note is None:
        return "no stored prompt and no note to rebuild it from"
    sentences = split_sentences(note)
    if not sentences:
        return "no stored prompt and no note to rebuild it from"
    if kind == "critic":
        return P.CRITIC_SYSTEM, P.critic_user(sentences)
    if kind == "generator_correct":
        return P.GENERATOR_CORRECT_SYSTEM, P.generator_correct_user(sentences[0])
    details = row.get("error_details") or {}
    wrong, right, etype = _str(details.get("error_sentence")), _str(details.get("corrected_sentence")), \
        _str(row.get("error_type"))
    if wrong and right and etype and note.count(wrong) == 1:
        return P.GENERATOR_ERROR_SYSTEM, P.generator_error_user(note.replace(wrong, right), etype)
    return "no stored prompt, and the generator_error prompt cannot be rebuilt"


def _str(value: Any) -> str | None:
    """A non-blank string, or None."""
    return value if isinstance(value, str) and value.strip() else None
