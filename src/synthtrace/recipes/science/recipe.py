"""science: passage → questions → context → four reasoning fragments → one natural trace → answer.

Per passage (one record):
  1 questions   6–8 self-contained questions of seven types (structured); those that lean on the
                passage or repeat another are filtered, with the reason kept in provenance
    selection   `traces_per_sample` of them, spread over the types
  2 context     per question: relevant parts, reasoning needed, misconceptions, missing background
  3 fragments   per trace, concurrently: hypotheses, evidence, method critique, user perspective
  4 assembly    per trace: one `<thought>…</thought>` monologue and the final answer, in one call
  5 judges      optional: a panel scores the trace; below `min_quality_score` the assembly is redone
                with the judges' feedback, up to `max_regenerations` times, else rejected with scores
  6 grades      optional: six 0–1 answer grades and an overall, for RL
With one trace per passage that is 1 + 1 + 4 + 1 = 7 calls; the question and context calls are
shared by the traces that use them, so more traces per passage cost less each. Traces of one
question are different samples: each has its own sample index and temperature.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthtrace.engine.gateway import RecordLLM
from synthtrace.engine.inputs import BadInput, Record
from synthtrace.quality.traits import trace_traits
from synthtrace.recipes import Recipe
from synthtrace.recipes.science import prompts as P
from synthtrace.recipes.science.data import DEFAULT_PASSAGE_TOKENS, estimate_tokens, read_passages
from synthtrace.recipes.science.questions import filter_questions, select_questions
from synthtrace.types import LLMError, RecordOutcome, Rejected, stops_run

MIN_THOUGHT_WORDS = 60
MIN_ANSWER_WORDS = 10
BASE_TEMPERATURE = 0.7
TEMPERATURE_STEP = 0.15  # trace k of a question samples at BASE + k·STEP (capped), so samples differ
MAX_TEMPERATURE = 1.2
# What a trace must never say: the model being trained will see the question, not the source.
_MENTIONS_SOURCE = re.compile(r"\b(?:the|this|my)\s+(?:passage|excerpt|working notes|notes above|fragments?)\b|"
                              r"\bthe\s+(?:paper|authors?)\b", re.IGNORECASE)
_THOUGHT = re.compile(r"<thought>(.*?)(?:</thought>|(?=<answer>)|$)", re.DOTALL | re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)


class ScienceRecipe(Recipe):
    name = "science"
    prompt_version = P.PROMPT_VERSION

    def __init__(self, traces_per_sample: int = 2, traces_per_question: int = 1,
                 passage_tokens: int = DEFAULT_PASSAGE_TOKENS, quality_check: bool = False,
                 min_quality_score: float = 7.0, max_regenerations: int = 2, judges: list[str] | None = None,
                 grade_answers: bool = False, grader_model: str | None = None, max_tokens: int = 4096):
        self.traces_per_sample = max(1, traces_per_sample)
        self.traces_per_question = max(1, traces_per_question)
        self.passage_tokens = passage_tokens
        self.quality_check = quality_check
        self.min_quality_score = min_quality_score
        self.max_regenerations = max(0, max_regenerations)
        self.judges: list[str | None] = list(judges) if judges else [None]
        self.grade_answers = grade_answers
        self.grader_model = grader_model
        self.max_tokens = max_tokens
        self._tally: Counter[str] = Counter()

    def _cap(self, stage_max: int) -> int:
        """A stage's own token limit, never above the trace's: a small --max-tokens bounds every call."""
        return min(stage_max, self.max_tokens)

    def records(self, path: Path) -> Iterator[Record | BadInput]:
        return read_passages(path, self.passage_tokens)

    def count(self, path: Path) -> int | None:
        return None  # a long text becomes several passages: the total is known only once read

    def estimate(self, record: Record) -> tuple[int, int, int]:
        passage = estimate_tokens(record.data["text"]) + 250
        traces = self.traces_per_sample * self.traces_per_question
        per_trace = 5 + (len(self.judges) if self.quality_check else 0) + self.grade_answers
        calls = 1 + self.traces_per_sample + traces * per_trace
        completion = 600 + self.traces_per_sample * 300 + traces * (4 * 400 + 1200 + 150 * (per_trace - 5))
        return calls, calls * passage + traces * 2500, completion

    # -- one passage ----------------------------------------------------------------------------

    async def process(self, record: Record, llm: RecordLLM) -> RecordOutcome:
        p = record.data
        reply = await llm.chat(P.with_passage(p["text"], P.questions_task(p["title"], p["domain"])),
                               schema=P.Questions, temperature=0.8, max_tokens=self._cap(2048))
        asked = [q.model_dump() for q in reply.parsed.questions]
        kept, filtered = filter_questions(asked)
        self._tally["questions_asked"] += len(asked)
        self._tally["questions_filtered"] += len(filtered)
        if not kept:
            raise Rejected(f"no usable question: {len(asked)} asked, all filtered", filtered=filtered)  # min 1 asked
        selected = select_questions(kept, self.traces_per_sample, record.id)
        stage1 = {"questions": asked, "filtered": filtered, "selected": [q["question"] for q in selected]}
        outcomes = await asyncio.gather(*(self._question(p, q, i, llm.fork(), stage1) for i, q in enumerate(selected)),
                                        return_exceptions=True)
        rows: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                _raise_unless_partial(outcome)
                rejected.append({"trace_id": record.id, "reason": f"context analysis failed: {outcome}",
                                 "error": type(outcome).__name__})
                continue
            for item in outcome:
                (rejected if "reason" in item else rows).append(item)
        self._tally["traces_accepted"] += len(rows)
        self._tally["traces_rejected"] += len(rejected)
        self._tally["calls"] += len(llm.calls)
        self._tally["prompt_tokens"] += llm.tokens[0]
        return RecordOutcome(rows, rejected)

    async def _question(self, p: dict[str, Any], q: dict[str, Any], qi: int, llm: RecordLLM,
                        stage1: dict[str, Any]) -> list[dict[str, Any]]:
        reply = await llm.chat(P.with_passage(p["text"], P.context_task(q)), schema=P.ContextAnalysis,
                               temperature=0.4, max_tokens=self._cap(1024))
        ctx = reply.parsed.model_dump()
        shared = len(llm.calls)  # this question's context call, shared by its traces
        outcomes = await asyncio.gather(*(self._trace(p, q, qi, k, ctx, llm.fork(), stage1)
                                          for k in range(self.traces_per_question)), return_exceptions=True)
        results = []
        for k, outcome in enumerate(outcomes):
            trace_id = f"{p['id']}/q{qi}/t{k}"
            if isinstance(outcome, BaseException):
                _raise_unless_partial(outcome)
                outcome = {"trace_id": trace_id, "reason": str(outcome), "error": type(outcome).__name__}
            if "reason" not in outcome:
                outcome["provenance"]["shared_calls"] = shared + 1  # + the passage's question call
            results.append(outcome)
        return results

    async def _trace(self, p: dict[str, Any], q: dict[str, Any], qi: int, k: int, ctx: dict[str, Any],
                     llm: RecordLLM, stage1: dict[str, Any]) -> dict[str, Any]:
        trace_id = f"{p['id']}/q{qi}/t{k}"
        temperature = round(min(MAX_TEMPERATURE, BASE_TEMPERATURE + TEMPERATURE_STEP * k), 2)
        texts = await asyncio.gather(*(
            llm.chat(P.with_passage(p["text"], P.fragment_task(kind, q, ctx)), sample=k, temperature=temperature,
                     max_tokens=self._cap(1024)) for kind in P.FRAGMENTS))
        fragments = {kind: reply.text for kind, reply in zip(P.FRAGMENTS, texts)}
        attempts: list[dict[str, Any]] = []
        feedback = None
        tries = 1 + (self.max_regenerations if self.quality_check else 0)
        for a in range(tries):
            sample = k + a * self.traces_per_question  # a redo is a new sample, never one of a sibling's
            task = P.assembly_task(q, ctx, fragments, feedback)
            parsed, raw = await self._assemble(llm, p["text"], task, sample, temperature)
            attempt: dict[str, Any] = {"attempt": a + 1, "sample": sample}
            attempts.append(attempt)
            problem = _trace_problem(parsed)
            if problem:
                attempt["problem"] = problem
                feedback = f"the trace was unusable ({problem})"
                continue
            thought, answer = parsed  # type: ignore[misc]
            if self.quality_check:
                verdict = await self._judge(llm, p["text"], q["question"], thought, answer)
                attempt["judges"] = verdict
                if verdict["mean_overall"] is None or verdict["mean_overall"] < self.min_quality_score:
                    attempt["problem"] = _below(verdict, self.min_quality_score)
                    feedback = verdict["feedback"] or attempt["problem"]
                    continue
            grades = await self._grade(llm, p["text"], q["question"], answer) if self.grade_answers else None
            return self._row(p, q, trace_id, k, temperature, thought, answer, grades, attempts, ctx, fragments, raw,
                             stage1, llm)
        return {"trace_id": trace_id, "question": q["question"], "question_type": q["question_type"],
                "reason": f"no acceptable trace after {len(attempts)} attempt(s): {attempts[-1]['problem']}",
                "attempts": attempts}

    async def _assemble(self, llm: RecordLLM, passage: str, task: str, sample: int,
                        temperature: float) -> tuple[tuple[str, str] | None, str]:
        messages = P.with_passage(passage, task)
        reply = await llm.chat(messages, sample=sample, temperature=temperature, max_tokens=self.max_tokens)
        parsed = split_trace(reply.text)
        if parsed is None:  # one re-ask, in the same conversation, about the format alone
            messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": P.FORMAT_REMINDER}]
            reply = await llm.chat(messages, sample=sample, temperature=temperature, max_tokens=self.max_tokens)
            parsed = split_trace(reply.text)
        return parsed, reply.text

    async def _judge(self, llm: RecordLLM, passage: str, question: str, thought: str, answer: str) -> dict[str, Any]:
        task = P.judge_task(question, thought, answer)
        replies = await asyncio.gather(*(llm.chat(P.with_passage(passage, task), model=judge, schema=P.JudgeScores,
                                                  temperature=0.0, max_tokens=self._cap(1024)) for judge in self.judges),
                                       return_exceptions=True)
        scores, failures = [], []
        for judge, reply in zip(self.judges, replies):
            if isinstance(reply, BaseException):
                _raise_unless_partial(reply)
                failures.append({"judge": judge or "default", "error": str(reply)})
            else:
                scores.append({"judge": reply.model, **reply.parsed.model_dump()})
        overall = [s["overall"] for s in scores]
        return {"scores": scores, "failures": failures,
                "mean_overall": round(sum(overall) / len(overall), 3) if overall else None,
                "feedback": " ".join(s["feedback"] for s in scores if s.get("feedback"))}

    async def _grade(self, llm: RecordLLM, passage: str, question: str, answer: str) -> dict[str, Any] | None:
        try:
            reply = await llm.chat(P.with_passage(passage, P.grade_task(question, answer)), model=self.grader_model,
                                   schema=P.AnswerGrades, temperature=0.0, max_tokens=self._cap(1024))
        except LLMError as e:
            if stops_run(e):
                raise
            self._tally["grading_failed"] += 1
            return {"error": str(e)}  # the trace stands; its grades are missing, and say why
        return reply.parsed.model_dump()

    def _row(self, p: dict[str, Any], q: dict[str, Any], trace_id: str, k: int, temperature: float, thought: str,
             answer: str, grades: dict[str, Any] | None, attempts: list[dict[str, Any]], ctx: dict[str, Any],
             fragments: dict[str, str], raw: str, stage1: dict[str, Any], llm: RecordLLM) -> dict[str, Any]:
        accepted = attempts[-1]
        prompt_tokens, completion_tokens = llm.tokens
        return {
            "id": trace_id,
            "passage_id": p["id"],
            "source_paper": {"title": p["title"], "domain": p["domain"], "section": p["section"]},
            "user_interaction": {"question": q["question"], "question_type": q["question_type"],
                                 "difficulty_level": q["difficulty_level"], "target_audience": q["target_audience"]},
            "reasoning_trace": f"<thought>\n{thought}\n</thought>",
            "final_answer": answer,
            "answer_grades": grades,
            "quality": accepted.get("judges"),
            "metadata": {**trace_traits(thought), "sample": k, "temperature": temperature,
                         "attempts": len(attempts)},
            "provenance": {
                "passage": p["text"], "source_id": p["source_id"], "part": p["part"], "parts": p["parts"],
                "stages": {"questions": stage1, "context": ctx, "fragments": fragments, "assembly_raw": raw,
                           "attempts": attempts},
                "calls": list(llm.calls), "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "cost_usd": round(llm.cost_usd, 8),
            },
        }

    def summary(self) -> dict[str, Any]:
        t = self._tally
        out: dict[str, Any] = {"traces accepted": t["traces_accepted"], "traces rejected": t["traces_rejected"],
                               "questions": f"{t['questions_asked']} asked · {t['questions_filtered']} filtered"}
        if t["traces_accepted"]:
            n = t["traces_accepted"]
            out["per accepted trace"] = (f"{t['calls'] / n:.2f} calls · {t['prompt_tokens'] / n:,.0f} prompt tokens "
                                         f"(passage sent once per call, first)")
        if t["grading_failed"]:
            out["grading failed"] = t["grading_failed"]
        return out


def split_trace(text: str) -> tuple[str, str] | None:
    """(thought, answer) from `<thought>…</thought><answer>…</answer>`, forgiving a missing closing tag
    or a missing `<answer>` wrapper around text after the thought; None when either part is absent."""
    m = _THOUGHT.search(text)
    if m is None:
        return None
    thought = m.group(1).strip()
    a = _ANSWER.search(text, m.end())
    answer = a.group(1).strip() if a else text[m.end():].strip()
    return (thought, answer) if thought and answer else None


def _raise_unless_partial(e: BaseException) -> None:
    """A part of a passage may fail alone (an LLM error, kept as a rejection); a bug, the budget or a
    refused key goes up to the runner."""
    if stops_run(e) or not isinstance(e, LLMError):
        raise e


def _trace_problem(parsed: tuple[str, str] | None) -> str | None:
    if parsed is None:
        return "assembly did not give <thought>…</thought> and <answer>…</answer>"
    thought, answer = parsed
    if len(thought.split()) < MIN_THOUGHT_WORDS:
        return f"thought too short ({len(thought.split())} words, at least {MIN_THOUGHT_WORDS})"
    if len(answer.split()) < MIN_ANSWER_WORDS:
        return f"answer too short ({len(answer.split())} words, at least {MIN_ANSWER_WORDS})"
    m = _MENTIONS_SOURCE.search(thought) or _MENTIONS_SOURCE.search(answer)
    if m:
        return f"mentions a source the asker cannot see ({m.group(0)!r})"
    return None


def _below(verdict: dict[str, Any], threshold: float) -> str:
    if verdict["mean_overall"] is None:
        return "no judge gave a usable score"
    return f"judges' mean overall {verdict['mean_overall']} < {threshold}"
