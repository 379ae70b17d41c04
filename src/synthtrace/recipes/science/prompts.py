"""science prompts and structured outputs, versioned: PROMPT_VERSION goes into every row's provenance.

Every prompt is [SYSTEM, user], and every user turn starts with the passage, once, in the same
wrapping; the stage's instructions follow it. All calls about one passage therefore share a long
common prefix, which provider prefix caches (OpenAI, Anthropic, vLLM, SGLang) serve at a discount.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

PROMPT_VERSION = "science-1"

QUESTION_TYPES = ("clarification", "critical", "interpretation", "application", "comparison", "mechanism",
                  "limitation")
LEVEL_OF = {"clarification": "beginner", "critical": "intermediate", "interpretation": "intermediate",
            "application": "intermediate", "comparison": "advanced", "mechanism": "advanced",
            "limitation": "advanced"}
FRAGMENTS = ("hypotheses", "evidence", "method_critique", "user_perspective")

QuestionType = Literal["clarification", "critical", "interpretation", "application", "comparison", "mechanism",
                       "limitation"]
Level = Literal["beginner", "intermediate", "advanced"]
Audience = Literal["student", "researcher", "practitioner"]

SYSTEM = (
    "You are a senior scientist who reads research closely and explains it honestly. You reason the way "
    "experts do: you form hypotheses, weigh evidence, notice what a method can and cannot show, admit "
    "uncertainty where it is real, and correct yourself when you find a mistake."
)


def with_passage(passage: str, task: str) -> list[dict[str, str]]:
    """The messages of every science call: the passage first (a shared prefix), then the task."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"<passage>\n{passage}\n</passage>\n\n{task}"}]


# -- stage 1: questions --------------------------------------------------------------------------

class Question(BaseModel):
    question: str = Field(description="The question as the user would ask it, self-contained.")
    question_type: QuestionType
    difficulty_level: Level
    target_audience: Audience


class Questions(BaseModel):
    questions: list[Question] = Field(min_length=1, max_length=12)


def questions_task(title: str, domain: str) -> str:
    about = ", ".join(x for x in (f"from \"{title}\"" if title else "", f"field: {domain}" if domain else "") if x)
    return (
        f"TASK: QUESTIONS. The passage above{' (' + about + ')' if about else ''} is source material. Write 6 to 8 "
        "questions that real people would ask an expert about its science, spread over these types and levels:\n"
        "- clarification (beginner): what a concept or method means and why it is used\n"
        "- critical, interpretation, application (intermediate): challenging an assumption or conclusion; what a "
        "result means or implies; how it could be used or extended\n"
        "- comparison, mechanism, limitation (advanced): relating it to other approaches; how the underlying "
        "process works; where it breaks down\n"
        "Give each a target audience: student, researcher or practitioner.\n"
        "Every question must stand on its own for someone who has never seen the passage: state the setting, "
        "define its terms, and never refer to \"the paper\", \"the passage\", \"the authors\", \"this study\", "
        "\"these results\" or anything else the reader cannot see. Ask naturally, as a person would."
    )


# -- stage 2: context analysis -------------------------------------------------------------------

class ContextAnalysis(BaseModel):
    relevant_parts: list[str] = Field(description="Facts, claims or methods from the passage that bear on the question.")
    reasoning_types: list[str] = Field(description="Kinds of reasoning the answer needs (causal, statistical, …).")
    misconceptions: list[str] = Field(description="Misunderstandings a person at this level is likely to hold.")
    missing_background: list[str] = Field(description="Background a person at this level probably lacks.")


def question_block(q: dict[str, str]) -> str:
    return (f"QUESTION ({q['question_type']}, {q['difficulty_level']}, asked by a {q['target_audience']}):\n"
            f"{q['question']}")


def context_task(q: dict[str, str]) -> str:
    return (f"TASK: CONTEXT ANALYSIS.\n{question_block(q)}\n\n"
            "Before anyone answers, analyse what this question needs: the parts of the passage that bear on it, "
            "the kinds of reasoning required, the misconceptions a person at this level is likely to hold, and "
            "the background they probably lack.")


def _context_block(ctx: dict[str, list[str]]) -> str:
    def items(xs: list[str]) -> str:
        return "; ".join(xs) if xs else "(none noted)"
    return (f"Analysis so far: relevant parts: {items(ctx.get('relevant_parts', []))}. Reasoning needed: "
            f"{items(ctx.get('reasoning_types', []))}. Likely misconceptions: {items(ctx.get('misconceptions', []))}. "
            f"Missing background: {items(ctx.get('missing_background', []))}.")


# -- stage 3: reasoning fragments ----------------------------------------------------------------

_FRAGMENT_ASKS = {
    "hypotheses": ("HYPOTHESES", "Think aloud about what could answer this question: two or three candidate "
                   "explanations or answers, what each predicts, and which the passage supports. Say where you "
                   "are unsure."),
    "evidence": ("EVIDENCE", "Weigh the evidence in the passage that bears on the question: what it shows, how "
                 "strongly, and what it leaves open. Separate what is measured from what is inferred."),
    "method_critique": ("METHOD CRITIQUE", "Critique the methods or assumptions behind the relevant claims: what "
                        "could bias or limit them, and how much that matters for this question."),
    "user_perspective": ("USER PERSPECTIVE", "Think about the person asking: what they most need, what they may "
                         "misunderstand, and how deep and technical the answer should be."),
}


def fragment_task(kind: str, q: dict[str, str], ctx: dict[str, list[str]]) -> str:
    title, ask = _FRAGMENT_ASKS[kind]
    return (f"TASK: REASONING FRAGMENT: {title}.\n{question_block(q)}\n\n{_context_block(ctx)}\n\n{ask} "
            "Write plain first-person notes, a few paragraphs, no headings.")


# -- stage 4: assembly ---------------------------------------------------------------------------

def assembly_task(q: dict[str, str], ctx: dict[str, list[str]], fragments: dict[str, str],
                  feedback: str | None = None) -> str:
    notes = "\n\n".join(f"[{_FRAGMENT_ASKS[k][0]}]\n{fragments[k].strip()}" for k in FRAGMENTS if fragments.get(k))
    redo = f"\n\nAn earlier attempt was judged weak: {feedback}\nDo better on exactly those points." if feedback else ""
    return (
        f"TASK: ASSEMBLE THE TRACE.\n{question_block(q)}\n\n{_context_block(ctx)}\n\nYour working notes:\n{notes}\n\n"
        "Now write the thinking of an expert answering this person, as one continuous inner monologue grounded "
        "in the science above: start from the question, try hypotheses, check them against the evidence, "
        "question the methods, notice and correct at least one real mistake or oversimplification in your own "
        "reasoning, state what remains uncertain and why, and decide how to answer at the asker's level. "
        "Uncertainty and self-correction must be genuine steps of the argument, not decoration. Present the "
        "knowledge as your own: never mention a passage, paper, notes or fragments. Then give the final answer "
        "to the person, complete and self-contained.\n"
        "Format exactly:\n<thought>\n…your thinking…\n</thought>\n<answer>\n…the final answer…\n</answer>"
        f"{redo}"
    )


FORMAT_REMINDER = ("Your answer did not follow the format. Reply again with the whole trace inside "
                   "<thought>…</thought> followed by the final answer inside <answer>…</answer>, nothing else.")


# -- stage 5: judge panel ------------------------------------------------------------------------

class JudgeScores(BaseModel):
    reasoning_quality: int = Field(ge=1, le=10)
    answer_accuracy: int = Field(ge=1, le=10)
    coherence: int = Field(ge=1, le=10)
    overall: int = Field(ge=1, le=10)
    feedback: str = Field(description="The main weaknesses, in one or two sentences.")


def judge_task(question: str, thought: str, answer: str) -> str:
    return (
        "TASK: JUDGE. An expert was asked the question below without seeing the passage; judge their thinking "
        "and answer against the passage and sound science. Score 1-10: reasoning_quality (real hypotheses, "
        "evidence weighing, genuine self-correction and calibrated uncertainty, not decoration), "
        "answer_accuracy (correct and faithful to the science), coherence (one natural line of thought that "
        "leads to the answer), overall. Be strict: 8+ only for traces worth training a model on.\n\n"
        f"QUESTION:\n{question}\n\nTHINKING:\n{thought}\n\nANSWER:\n{answer}"
    )


# -- stage 6: answer grades ----------------------------------------------------------------------

class AnswerGrades(BaseModel):
    question_alignment: float = Field(ge=0, le=1)
    scientific_accuracy: float = Field(ge=0, le=1)
    completeness: float = Field(ge=0, le=1)
    uncertainty_calibration: float = Field(ge=0, le=1)
    clarity_structure: float = Field(ge=0, le=1)
    evidence_usage: float = Field(ge=0, le=1)
    overall: float = Field(ge=0, le=1)
    justification: str = ""


def grade_task(question: str, answer: str) -> str:
    return (
        "TASK: GRADE THE ANSWER. Grade this final answer to the question, against the passage and sound "
        "science, each from 0 to 1: question_alignment (answers what was asked), scientific_accuracy, "
        "completeness, uncertainty_calibration (confidence matches the evidence), clarity_structure, "
        "evidence_usage (grounded in the evidence, not hand-waving); then overall, and a short justification."
        f"\n\nQUESTION:\n{question}\n\nANSWER:\n{answer}"
    )
