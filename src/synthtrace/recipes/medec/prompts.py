"""medec prompts and the answer format, versioned: PROMPT_VERSION goes into every row's provenance.

Two kinds of prompt live here. *Task* prompts (system + user) are what the trained model will
see: they go into the SFT export unchanged. *Teacher* instructions are added only when asking the
LLM to write a trace. The critic's teacher sees no answer; the generators' teachers must be told
the target, and are asked to reason forward, as the author of the note would.
"""

from __future__ import annotations

import re

PROMPT_VERSION = "medec-1"

CRITIC_SYSTEM = (
    "You are an experienced attending physician reviewing clinical notes for medical errors. A note "
    "contains either no error or exactly one error in diagnosis, management, treatment, pharmacotherapy "
    "or causal organism. Reason through the case carefully, then give your verdict."
)
GENERATOR_CORRECT_SYSTEM = (
    "You are an experienced clinician who writes accurate, complete clinical notes. Every diagnosis, "
    "test, treatment and drug choice in your notes follows from the findings of the case."
)
GENERATOR_ERROR_SYSTEM = (
    "You are a clinical educator who builds training cases for error-detection practice. You introduce "
    "exactly one medical error into a correct note: plausible enough to be missed, yet clearly wrong to an "
    "expert who reasons from the findings."
)
SYSTEM = {"critic": CRITIC_SYSTEM, "generator_correct": GENERATOR_CORRECT_SYSTEM,
          "generator_error": GENERATOR_ERROR_SYSTEM}


def numbered(sentences: list[str]) -> str:
    return "\n".join(f"{i} {s}" for i, s in enumerate(sentences))


def critic_user(sentences: list[str]) -> str:
    return (
        "Review this clinical note for a medical error. Its sentences are numbered.\n\n"
        f"{numbered(sentences)}\n\n"
        "Does the note contain a medical error? If it does, give the number of the wrong sentence and "
        "the corrected sentence; if it does not, say so."
    )


def critic_messages(sentences: list[str]) -> list[dict[str, str]]:
    """The critic's task as the trained model sees it: what the SFT export holds and what
    `synthtrace eval medec` sends, so training and evaluation ask the same question."""
    return [{"role": "system", "content": CRITIC_SYSTEM}, {"role": "user", "content": critic_user(sentences)}]


def generator_correct_user(opening: str) -> str:
    return (
        "Write the complete clinical note for this case: history, examination, investigations, and the "
        "assessment and plan that follow from them.\n\n"
        f"The note begins: {opening}"
    )


def generator_error_user(note: str, error_type: str) -> str:
    return (
        f"Here is a correct clinical note. Introduce exactly one {error_type} error: change a single "
        "sentence so that it stays plausible but becomes clinically wrong. Return the whole note with the "
        f"error in place.\n\n{note}"
    )


CRITIC_TEACHER = (
    "Think as you would at the bedside: summarise the presentation, weigh the findings, form your own "
    "expectation of the diagnosis and plan, then check each sentence against it. Be honest about "
    "uncertainty and revisit a judgement when the evidence says so. Write this thinking in `reasoning`, "
    "then fill in the verdict fields: `error_found`, `error_sentence_id` (-1 when there is no error) and "
    "`corrected_sentence` (an empty string when there is no error)."
)


def critic_hint(error_sentence_id: int, corrected_sentence: str | None) -> str:
    if error_sentence_id < 0:
        return ("A senior reviewer has confirmed that this note contains no medical error. Reason through "
                "the case yourself and reach that verdict from the evidence; do not mention the reviewer.")
    return (f"A senior reviewer has established that sentence {error_sentence_id} is wrong and should read: "
            f"\"{corrected_sentence}\". Reason through the case yourself and reach this verdict from the "
            "evidence, as if on your own; do not mention the reviewer.")


def generator_correct_teacher(note: str) -> str:
    return (
        "You wrote the note below. Write the reasoning you followed while writing it, in the first person "
        "and in order: what the presentation suggested, which findings and tests you chose to document and "
        "why, how they led to the diagnosis, and why the management and drugs are the right ones for this "
        "patient. Consider and rule out at least one alternative. Write only the reasoning, as your own "
        f"thinking before writing; do not quote the note as given to you.\n\nThe note:\n{note}"
    )


def generator_error_teacher(correct_sentence: str, error_sentence: str, error_type: str) -> str:
    return (
        f"To build this training case you decided to change the sentence \"{correct_sentence}\" into "
        f"\"{error_sentence}\" (a {error_type} error). Write the reasoning you followed, in the first person, "
        "as you look for a place to put the error: what the case's findings establish, why this sentence is a "
        "good place, why the new version is plausible (what makes it tempting), and exactly which findings "
        "make it clinically wrong. Write only the reasoning, as your thinking before making the change."
    )


# -- the answer format (shared with `synthtrace eval medec`) --------------------------------------

# For models never trained on this format (e.g. a baseline in `synthtrace eval medec --explain-format`):
# appended to the critic's user turn, it asks for exactly what `render_verdict` writes.
ANSWER_FORMAT = (
    "End your answer with these three lines and nothing after them:\n"
    "Verdict: CORRECT or ERROR\n"
    "Error sentence: the number of the wrong sentence, or -1 when there is no error\n"
    "Correction: the corrected sentence, or NA when there is no error"
)


def render_verdict(error_found: bool, sentence_id: int, corrected: str | None) -> str:
    """The answer in the format above. A blank line ends the correction when it is read back
    (`parse_verdict`), so a correction of several paragraphs is written with single line breaks."""
    if not error_found:
        return "Verdict: CORRECT\nError sentence: -1\nCorrection: NA"
    fix = _BLANK_LINES.sub("\n", (corrected or "").strip()) or "NA"
    return f"Verdict: ERROR\nError sentence: {sentence_id}\nCorrection: {fix}"


# A label's end: "Verdict:", "**Verdict:**", "**Verdict**:", "Verdict - " (a dash needs spaces
# around it, so "Error sentence -1" is not read as sentence 1).
_END = r"\s*\**\s*(?::|\s-\s)\s*\**\s*"
_VERDICT = re.compile(rf"verdict{_END}(correct|error)\b", re.IGNORECASE)
_SENTENCE = re.compile(rf"error\s+sentence(?:\s+(?:id|number))?{_END}(-?\d+)", re.IGNORECASE)
# The correction runs to the end of the answer, or to a blank line: some span several lines.
_CORRECTION = re.compile(rf"correct(?:ion|ed\s+sentence){_END}(.+?)(?:\n\s*\n|\Z)", re.IGNORECASE | re.DOTALL)
_NO_CORRECTION = {"", "na", "n/a", "none"}
_BLANK_LINES = re.compile(r"\n\s*\n")


def parse_verdict(text: str) -> tuple[bool, int, str | None] | None:
    """(error found, sentence id, correction) from an answer in the format above; None if unparseable.

    Reads what follows any `<think>` block (an unclosed one means the model never reached its
    answer); when the verdict line appears more than once (a model that reasons in the open),
    the last one is the answer, and its sentence and correction are the lines after it.
    """
    if "<think>" in text and "</think>" not in text:
        return None
    body = text.rsplit("</think>", 1)[-1]
    verdicts = list(_VERDICT.finditer(body))
    if not verdicts:
        return None
    verdict = verdicts[-1]
    if verdict.group(1).lower() == "correct":
        return False, -1, None
    sentence = _SENTENCE.search(body, verdict.end())
    if sentence is None:
        return None
    correction = _CORRECTION.search(body, verdict.end())
    fix = correction.group(1).strip().strip('"*').strip() if correction else ""
    return True, int(sentence.group(1)), (None if fix.lower() in _NO_CORRECTION else fix)
