"""One adapter per recipe: a run-dir row in, a `ChatExample` out — or the reason it cannot be one.

The exporter picks the adapter by `row["provenance"]["recipe"]`. An adapter returns a string when
it skips a row; the string is the reason, counted in the export summary, so keep it free of
per-row details (ids, numbers) or every skipped row gets a reason of its own.

What an example must be, whatever the recipe: the exact system prompt and user turn the trained
model will see (never the teacher's instructions, never a bare note without its request), the
reasoning without its wrapping tags, and the final answer. The exporter adds the checks every
format needs (no empty turns, no chat-template tokens inside the text).

A recipe added later writes its adapter here and registers it in `ADAPTERS`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synthtrace.quality.similarity import containment, tokens
from synthtrace.recipes.medec import prompts as P
from synthtrace.recipes.medec.data import split_sentences

# The user turn must ask for something: at least this many words that are not the note's own.
MIN_REQUEST_WORDS = 5
# A critic's user turn must hold (nearly) every word of the note it asks about.
MIN_NOTE_CONTAINMENT = 0.9


@dataclass(slots=True)
class ChatExample:
    """One single-turn training example. `system` is None only when the source had none."""

    system: str | None
    user: str
    reasoning: str
    answer: str
    group: str  # examples of one group (one source note) always land in the same split
    kind: str = ""  # what the summary counts, e.g. "critic/assessment"
    meta: dict[str, Any] = field(default_factory=dict)
    rebuilt_prompt: bool = False  # the row had no stored prompt; it was rebuilt from the recipe's prompts


Adapter = Callable[[dict[str, Any]], "ChatExample | str"]


def unwrap(text: Any, tag: str) -> str:
    """The text inside `<tag>…</tag>` (the whole text when it carries no such tags), stripped."""
    if not isinstance(text, str):
        return ""
    m = re.search(rf"<{tag}>(.*)</{tag}>", text, re.DOTALL)
    return (m.group(1) if m else text).strip()


def _str(value: Any) -> str | None:
    """A non-blank string, or None."""
    return value if isinstance(value, str) and value.strip() else None


def _id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int)) and str(value).strip():
        return str(value)
    return None


def words_beyond(user: str, note: str | None) -> int:
    """How many words of `user` are not words of `note` (counted with multiplicity)."""
    return sum((Counter(tokens(user)) - Counter(tokens(note))).values())


# -- medec ----------------------------------------------------------------------------------------

# Openings of the teacher instructions and hints: a task prompt that holds one leaks the answer.
_TEACHER_MARKERS = tuple(s[:40] for s in (
    P.CRITIC_TEACHER, P.critic_hint(-1, None), P.critic_hint(0, "x"),
    P.generator_correct_teacher(""), P.generator_error_teacher("", "", ""),
))


def medec(row: dict[str, Any]) -> ChatExample | str:
    prov = row.get("provenance") or {}
    group = _id(prov.get("source_note_id")) or _id(prov.get("record_id"))
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
        built = _rebuild_medec_prompt(kind, row, note)
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

    meta = {"note_id": _id(row.get("note_id")), "recipe": "medec", "role": role, "task": _str(row.get("task")),
            "label": _str(row.get("label")), "error_type": _str(row.get("error_type")), "group": group,
            "verified": row.get("verified") if isinstance(row.get("verified"), bool) else None,
            "hinted": bool(row.get("hinted"))}
    return ChatExample(system, user, reasoning, answer, group, kind=f"{role}/{row.get('task') or '-'}", meta=meta,
                       rebuilt_prompt=rebuilt)


def _rebuild_medec_prompt(kind: str, row: dict[str, Any], note: str | None) -> tuple[str, str] | str:
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


# -- completions ----------------------------------------------------------------------------------

def completions(row: dict[str, Any]) -> ChatExample | str:
    """Rows of the generic recipe: `messages` (what was sent, one user turn with an optional system
    prompt) or a bare `prompt`, and the `completion`."""
    prov = row.get("provenance") or {}
    group = _id(prov.get("record_id")) or _id(row.get("id"))
    if group is None:
        return "completions row without provenance.record_id or id"
    answer = _str(row.get("completion"))
    if answer is None:
        return "empty completion"
    reasoning = row["reasoning"].strip() if isinstance(row.get("reasoning"), str) else ""

    system: str | None = None
    messages = row.get("messages")
    if isinstance(messages, list) and messages:
        roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
        if roles not in (["user"], ["system", "user"]) or not all(_str(m.get("content")) for m in messages):
            return "completions messages are not one user turn (with an optional system prompt)"
        if roles[0] == "system":
            system = messages[0]["content"]
        user = messages[-1]["content"]
    elif _str(row.get("prompt")):
        user, system = row["prompt"], _str(row.get("system"))
    else:
        return "completions row without its prompt or messages"

    meta = {"note_id": _id(row.get("id")), "recipe": "completions", "role": None, "task": None, "label": None,
            "error_type": None, "group": group, "verified": None, "hinted": False}
    return ChatExample(system, user, reasoning, answer, group, kind="completions", meta=meta)


# -- science --------------------------------------------------------------------------------------

def science(row: dict[str, Any]) -> ChatExample | str:
    """Traces of the science recipe: the self-contained question is the whole user turn (the trained
    model never sees the passage), `<thought>` becomes the think block, `final_answer` the answer.
    Traces of one source text share a group, so a paper never straddles the split."""
    prov = row.get("provenance") or {}
    group = _id(prov.get("source_id")) or _id(row.get("passage_id")) or _id(prov.get("record_id"))
    if group is None:
        return "science row without provenance.source_id or passage_id"
    ui = row.get("user_interaction") or {}
    question, answer = _str(ui.get("question")), _str(row.get("final_answer"))
    if question is None:
        return "science row without a question"
    if answer is None:
        return "empty final answer"
    reasoning = unwrap(row.get("reasoning_trace"), "thought")
    if not reasoning:
        return "empty reasoning trace"
    meta = {"note_id": _id(row.get("id")), "recipe": "science", "role": None, "task": _str(ui.get("question_type")),
            "label": _str(ui.get("difficulty_level")), "error_type": None, "group": group, "verified": None,
            "hinted": False}
    return ChatExample(None, question, reasoning, answer, group, kind=f"science/{meta['task']}", meta=meta)


ADAPTERS: dict[str, Adapter] = {"medec": medec, "completions": completions, "science": science}
