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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthtrace.inputs import BadInput, Record, record_id
from synthtrace.options import option
from synthtrace.quality.traits import trace_traits, unwrap
from synthtrace.recipe import LLM, ChatExample, Recipe, ViewFields, gather_parts
from synthtrace.recipes.science import prompts as P
from synthtrace.recipes.science.data import DEFAULT_PASSAGE_TOKENS, estimate_tokens, read_passages
from synthtrace.recipes.science.output import SUFFIXES, TraceFile, run_dir_for
from synthtrace.recipes.science.questions import filter_questions, select_questions
from synthtrace.types import LLMError, RecordOutcome, Rejected

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
    """Questions, multi-stage reasoning traces and answers from scientific passages (JSONL with `text`).

    --output DIR keeps the run there; --output FILE.json or FILE.jsonl also writes the traces in the
    science tool's format (kept in step while the run goes), with the run in FILE.json.run/.
    """

    name = "science"
    prompt_version = P.PROMPT_VERSION
    view = ViewFields(source="provenance.passage", question="user_interaction.question", trace="reasoning_trace",
                      answer="final_answer", verdicts=("quality", "answer_grades", "metadata"))

    @dataclass(frozen=True)
    class Options:
        traces_per_sample: int = option(2, "Questions traced per passage, spread over the question types.",
                                        min=1, max=8)
        traces_per_question: int = option(1, "Traces per question, each a different sample (own sample index "
                                             "and temperature).", min=1, max=8)
        max_traces: int | None = option(None, "Stop after about this many traces (whole passages).", min=1)
        resume: bool = option(True, "--no-resume is --fresh.")
        quality_check: bool = option(False, "A judge panel scores each trace; weak ones are redone.")
        min_quality_score: float = option(7.0, "Accept a trace when the judges' mean overall score (1-10) "
                                               "reaches this.", min=1, max=10)
        max_regenerations: int = option(2, "Redos of a trace the judges reject.", min=0, max=5)
        judges: list[str] = option([], "A judge (repeat for a panel; default: --model).", flags=("--judge-model",))
        grade_answers: bool = option(False, "Six 0-1 answer grades plus overall per trace, for RL.")
        grader: str | None = option(None, "Model for answer grades (default: --model).", flags=("--grader-model",))
        passage_tokens: int = option(DEFAULT_PASSAGE_TOKENS, "Longer texts are split on paragraph boundaries into "
                                                             "passages of at most this many tokens.", min=200)
        max_tokens: int = option(4096, "Max tokens of the assembled trace (and the cap of every other stage).",
                                 min=64)

    def __init__(self, options: Any = None, /, **values: Any):
        super().__init__(options, **values)
        self.judges: list[str | None] = list(self.options.judges) or [None]
        self._tally: Counter[str] = Counter()

    def prepare(self, settings: Any) -> None:
        """The science tool's run options: --no-resume, --max-traces, and --output FILE.json|.jsonl."""
        o = self.options
        settings.fresh = settings.fresh or not o.resume
        if o.max_traces is not None:
            per_passage = o.traces_per_sample * o.traces_per_question
            settings.max_records = min(settings.max_records or o.max_traces, -(-o.max_traces // per_passage))
        target: Path = settings.output
        if target.suffix in SUFFIXES:
            info = {"model": settings.model or "default", "input_file": str(settings.input),
                    "traces_per_sample": o.traces_per_sample, "traces_per_question": o.traces_per_question,
                    "quality_check": o.quality_check,
                    "min_quality_score": o.min_quality_score if o.quality_check else None,
                    "grade_answers": o.grade_answers, "run_dir": str(run_dir_for(target))}
            settings.publish = TraceFile(target, info, o.max_traces).publish
            settings.output = run_dir_for(target)
            settings.outputs["traces"] = target

    def _cap(self, stage_max: int) -> int:
        """A stage's own token limit, never above the trace's: a small --max-tokens bounds every call."""
        return min(stage_max, self.options.max_tokens)

    def records(self, path: Path) -> Iterator[Record | BadInput]:
        return read_passages(path, self.options.passage_tokens)

    def count(self, path: Path) -> int | None:
        return None  # a long text becomes several passages: the total is known only once read

    def estimate(self, record: Record) -> tuple[int, int, int]:
        passage = estimate_tokens(record.data["text"]) + 250
        traces = self.options.traces_per_sample * self.options.traces_per_question
        per_trace = 5 + (len(self.judges) if self.options.quality_check else 0) + self.options.grade_answers
        calls = 1 + self.options.traces_per_sample + traces * per_trace
        completion = 600 + self.options.traces_per_sample * 300 + traces * (4 * 400 + 1200 + 150 * (per_trace - 5))
        return calls, calls * passage + traces * 2500, completion

    # -- one passage ----------------------------------------------------------------------------

    async def process(self, record: Record, llm: LLM) -> RecordOutcome:
        p = record.data
        reply = await llm.chat(P.with_passage(p["text"], P.questions_task(p["title"], p["domain"])),
                               schema=P.Questions, temperature=0.8, max_tokens=self._cap(2048))
        asked = [q.model_dump() for q in reply.parsed.questions]
        kept, filtered = filter_questions(asked)
        self._tally["questions_asked"] += len(asked)
        self._tally["questions_filtered"] += len(filtered)
        if not kept:
            raise Rejected(f"no usable question: {len(asked)} asked, all filtered", filtered=filtered)  # min 1 asked
        selected = select_questions(kept, self.options.traces_per_sample, record.id)
        stage1 = {"questions": asked, "filtered": filtered, "selected": [q["question"] for q in selected]}
        outcomes = await gather_parts(*(self._question(p, q, i, llm.fork(), stage1) for i, q in enumerate(selected)))
        rows: list[dict[str, Any]] = []
        rejected: list[Rejected] = []
        for qi, outcome in enumerate(outcomes):
            if isinstance(outcome, Rejected):
                outcome.reason = f"context analysis failed: {outcome.reason}"
                outcome.part = f"{p['id']}/q{qi}"
                rejected.append(outcome)
                continue
            for item in outcome:
                (rejected if isinstance(item, Rejected) else rows).append(item)
        self._tally["traces_accepted"] += len(rows)
        self._tally["traces_rejected"] += len(rejected)
        self._tally["calls"] += len(llm.calls)
        self._tally["prompt_tokens"] += llm.tokens[0]
        return RecordOutcome(rows, rejected)

    async def _question(self, p: dict[str, Any], q: dict[str, Any], qi: int, llm: LLM,
                        stage1: dict[str, Any]) -> list[dict[str, Any]]:
        reply = await llm.chat(P.with_passage(p["text"], P.context_task(q)), schema=P.ContextAnalysis,
                               temperature=0.4, max_tokens=self._cap(1024))
        ctx = reply.parsed.model_dump()
        shared = len(llm.calls)  # this question's context call, shared by its traces
        outcomes = await gather_parts(*(self._trace(p, q, qi, k, ctx, llm.fork(), stage1)
                                        for k in range(self.options.traces_per_question)))
        for k, outcome in enumerate(outcomes):
            if isinstance(outcome, Rejected):
                outcome.part = outcome.part or f"{p['id']}/q{qi}/t{k}"
            else:
                outcome["provenance"]["shared_calls"] = shared + 1  # + the passage's question call
        return outcomes

    async def _trace(self, p: dict[str, Any], q: dict[str, Any], qi: int, k: int, ctx: dict[str, Any],
                     llm: LLM, stage1: dict[str, Any]) -> dict[str, Any]:
        trace_id = f"{p['id']}/q{qi}/t{k}"
        temperature = round(min(MAX_TEMPERATURE, BASE_TEMPERATURE + TEMPERATURE_STEP * k), 2)
        texts = await asyncio.gather(*(
            llm.chat(P.with_passage(p["text"], P.fragment_task(kind, q, ctx)), sample=k, temperature=temperature,
                     max_tokens=self._cap(1024)) for kind in P.FRAGMENTS))
        fragments = {kind: reply.text for kind, reply in zip(P.FRAGMENTS, texts)}
        attempts: list[dict[str, Any]] = []
        feedback = None
        tries = 1 + (self.options.max_regenerations if self.options.quality_check else 0)
        for a in range(tries):
            sample = k + a * self.options.traces_per_question  # a redo is a new sample, never one of a sibling's
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
            if self.options.quality_check:
                verdict = await self._judge(llm, p["text"], q["question"], thought, answer)
                attempt["judges"] = verdict
                if verdict["mean_overall"] is None or verdict["mean_overall"] < self.options.min_quality_score:
                    attempt["problem"] = _below(verdict, self.options.min_quality_score)
                    feedback = verdict["feedback"] or attempt["problem"]
                    continue
            grades = await self._grade(llm, p["text"], q["question"], answer) if self.options.grade_answers else None
            return self._row(p, q, trace_id, k, temperature, thought, answer, grades, attempts, ctx, fragments, raw,
                             stage1, llm)
        raise Rejected(f"no acceptable trace after {len(attempts)} attempt(s): {attempts[-1]['problem']}",
                       part=trace_id, question=q["question"], question_type=q["question_type"], attempts=attempts,
                       calls=list(llm.calls))

    async def _assemble(self, llm: LLM, passage: str, task: str, sample: int,
                        temperature: float) -> tuple[tuple[str, str] | None, str]:
        messages = P.with_passage(passage, task)
        reply = await llm.chat(messages, sample=sample, temperature=temperature, max_tokens=self.options.max_tokens)
        parsed = split_trace(reply.text)
        if parsed is None:  # one re-ask, in the same conversation, about the format alone
            messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": P.FORMAT_REMINDER}]
            reply = await llm.chat(messages, sample=sample, temperature=temperature, max_tokens=self.options.max_tokens)
            parsed = split_trace(reply.text)
        return parsed, reply.text

    async def _judge(self, llm: LLM, passage: str, question: str, thought: str, answer: str) -> dict[str, Any]:
        task = P.judge_task(question, thought, answer)
        replies = await gather_parts(*(llm.chat(P.with_passage(passage, task), model=judge, schema=P.JudgeScores,
                                                temperature=0.0, max_tokens=self._cap(1024)) for judge in self.judges))
        scores, failures = [], []
        for judge, reply in zip(self.judges, replies):
            if isinstance(reply, Rejected):
                failures.append({"judge": judge or "default", "error": reply.reason})
            else:
                scores.append({"judge": reply.model, **reply.parsed.model_dump()})
        overall = [s["overall"] for s in scores]
        return {"scores": scores, "failures": failures,
                "mean_overall": round(sum(overall) / len(overall), 3) if overall else None,
                "feedback": " ".join(s["feedback"] for s in scores if s.get("feedback"))}

    async def _grade(self, llm: LLM, passage: str, question: str, answer: str) -> dict[str, Any] | None:
        try:
            reply = await llm.chat(P.with_passage(passage, P.grade_task(question, answer)), model=self.options.grader,
                                   schema=P.AnswerGrades, temperature=0.0, max_tokens=self._cap(1024))
        except LLMError as e:
            self._tally["grading_failed"] += 1
            return {"error": str(e)}  # the trace stands; its grades are missing, and say why
        return reply.parsed.model_dump()

    def _row(self, p: dict[str, Any], q: dict[str, Any], trace_id: str, k: int, temperature: float, thought: str,
             answer: str, grades: dict[str, Any] | None, attempts: list[dict[str, Any]], ctx: dict[str, Any],
             fragments: dict[str, str], raw: str, stage1: dict[str, Any], llm: LLM) -> dict[str, Any]:
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

    def to_sft(self, row: dict[str, Any]) -> ChatExample | str:
        """The self-contained question is the whole user turn (the trained model never sees the passage),
        `<thought>` becomes the think block, `final_answer` the answer. Traces of one source text share
        a group, so a paper never straddles the split."""
        prov = row.get("provenance") or {}
        group = record_id(prov.get("source_id")) or record_id(row.get("passage_id")) or record_id(prov.get("record_id"))
        if group is None:
            return "science row without provenance.source_id or passage_id"
        ui = row.get("user_interaction") or {}
        question, answer = ui.get("question"), row.get("final_answer")
        if not isinstance(question, str) or not question.strip():
            return "science row without a question"
        if not isinstance(answer, str) or not answer.strip():
            return "empty final answer"
        reasoning = unwrap(row.get("reasoning_trace"), "thought")
        if not reasoning:
            return "empty reasoning trace"
        meta = {"id": record_id(row.get("id")), "question_type": ui.get("question_type"),
                "difficulty_level": ui.get("difficulty_level")}
        return ChatExample(question, answer, reasoning, group=group, kind=f"science/{ui.get('question_type')}",
                           meta=meta)

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
