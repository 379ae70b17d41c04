"""medec: four examples per MEDEC pair, critic traces verified against the ground truth.

Per pair (an error note and its correct version):
  critic_correct    the critic assesses the correct note and must find nothing wrong;
  critic_error      the critic must flag the error, name its sentence and correct it;
  generator_correct how a clinician builds the correct note from its opening;
  generator_error   how the error was injected: why it is plausible, yet clinically wrong.
An error-free note gives the first and third. The critic never sees the answer: up to `samples`
independent attempts at rising temperature, each verified; only verified traces are kept unless
`hint_on_failure` allows one last attempt with the reference given (kept with `hinted: true`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from synthtrace.inputs import BadInput, Record
from synthtrace.options import option
from synthtrace.quality.similarity import novel_token_recall, tokens
from synthtrace.recipe import LLM, ChatExample, Recipe, ViewFields, gather_parts
from synthtrace.recipes.medec import prompts as P
from synthtrace.recipes.medec.data import MedecCase, read_cases
from synthtrace.recipes.medec.sft import medec_example
from synthtrace.recipes.medec.verify import DEFAULT_MIN_SIMILARITY, verify_critic_verdict
from synthtrace.types import LLMError, RecordOutcome, Rejected

TEMPERATURES = (0.3, 0.7, 1.0, 1.1, 1.2)
MIN_TRACE_WORDS = 40
LEAK_PHRASES = ("senior reviewer", "the reviewer", "ground truth", "reference answer", "i was told", "was given the answer")


class CriticVerdict(BaseModel):
    reasoning: str = Field(description="Your clinical reasoning, step by step, before the verdict.")
    error_found: bool
    error_sentence_id: int = Field(description="Number of the wrong sentence, or -1 when there is no error.")
    corrected_sentence: str = Field(description="The corrected sentence, or an empty string when there is no error.")


class MedecRecipe(Recipe):
    """Critic and generator traces from MEDEC notes (official CSV or pairs JSONL), critics verified."""

    name = "medec"
    prompt_version = P.PROMPT_VERSION
    view = ViewFields(source="note", question="prompt.user", trace="reasoning", answer="answer",
                      verdicts=("verification",), marks=(("error", "error_details.error_sentence"),
                                                         ("correction", "error_details.corrected_sentence")))

    @dataclass(frozen=True)
    class Options:
        samples: int = option(3, "Independent critic attempts per note (rising temperature), each verified.",
                              flags=("--samples", "-k"), min=1, max=10)
        hint_on_failure: bool = option(False, "One last critic attempt with the reference given (kept, hinted: true).")
        keep_unverified: bool = option(False, "Keep critic traces that failed verification (verified: false).")
        min_similarity: float = option(DEFAULT_MIN_SIMILARITY, "Minimum ROUGE-1 F of the critic's correction "
                                       "against the reference.", min=0, max=1)
        critic_model: str | None = option(None, "Model for critic traces (default: --model).")
        generator_model: str | None = option(None, "Model for generator traces (default: --model).")
        max_tokens: int = option(2048, "Max tokens of each answer.", min=16)

    def __init__(self, options: Any = None, /, **values: Any):
        super().__init__(options, **values)
        self._tally: dict[str, Counter[str]] = defaultdict(Counter)
        self._kept = self._calls = self._tokens = 0

    def records(self, path: Path) -> Iterator[Record | BadInput]:
        return read_cases(path)

    def count(self, path: Path) -> int | None:
        return None  # CSV records span several lines; counting would mean parsing twice

    def estimate(self, record: Record) -> tuple[int, int, int]:
        case = MedecCase.from_data(record.data)
        note_tokens = len(case.error_note or case.correct_note or "") // 4
        n = 4 if case.has_error else 2
        return n, n * (note_tokens + 300), n * 600

    # -- one record -----------------------------------------------------------------------------

    async def process(self, record: Record, llm: LLM) -> RecordOutcome:
        case = MedecCase.from_data(record.data)
        kinds = ["critic_correct", "generator_correct"]
        jobs = [self._critic(case, llm.fork(), on_error_note=False), self._generator_correct(case, llm.fork())]
        if case.has_error:
            kinds += ["critic_error", "generator_error"]
            jobs += [self._critic(case, llm.fork(), on_error_note=True), self._generator_error(case, llm.fork())]
        order = {"critic_correct": 0, "critic_error": 1, "generator_correct": 2, "generator_error": 3}
        rows, rejected = [], []
        for kind, outcome in zip(kinds, await gather_parts(*jobs)):
            if isinstance(outcome, Rejected):
                outcome.part = outcome.part or f"{case.id}_{kind}"
                rejected.append(outcome)
            else:
                rows.append(outcome)
        rows.sort(key=lambda r: order[r["note_id"][len(case.id) + 1:]])
        self._kept += len(rows)
        self._calls += len(llm.calls)
        self._tokens += sum(c["prompt_tokens"] + c["completion_tokens"] for c in llm.calls)
        return RecordOutcome(rows, rejected)

    async def _critic(self, case: MedecCase, llm: LLM, on_error_note: bool) -> dict[str, Any]:
        kind = "critic_error" if on_error_note else "critic_correct"
        tally = self._tally[case.error_type if on_error_note else "no error"]
        tally["attempted"] += 1
        sentences = (case.error_sentences if on_error_note else case.correct_sentences) or []
        task = P.critic_messages(sentences)
        attempts: list[dict[str, Any]] = []
        for i in range(self.options.samples):
            result = await self._ask_critic(llm, task, P.CRITIC_TEACHER, case, on_error_note, sample=i,
                                            temperature=TEMPERATURES[min(i, len(TEMPERATURES) - 1)])
            attempts.append(result["check"])
            if result["check"]["verified"]:
                tally["verified"] += 1
                tally[f"verified_on_{i + 1}"] += 1
                return self._critic_row(case, kind, task, result, attempts, llm, hinted=False)
        if self.options.hint_on_failure:
            truth_id = case.error_sentence_id if on_error_note else -1
            hint = P.critic_hint(truth_id, case.corrected_sentence if on_error_note else None)
            result = await self._ask_critic(llm, task, f"{P.CRITIC_TEACHER}\n\n{hint}", case, on_error_note,
                                            sample=self.options.samples, temperature=0.3)
            attempts.append(result["check"] | {"hinted": True})
            if result["check"]["verified"]:
                tally["hinted"] += 1
                return self._critic_row(case, kind, task, result, attempts, llm, hinted=True)
        tally["failed"] += 1
        last = attempts[-1]
        if self.options.keep_unverified and "verdict" in last:
            return self._critic_row(case, kind, task, result, attempts, llm, hinted=self.options.hint_on_failure)
        raise Rejected(f"critic not verified after {len(attempts)} attempt(s): {last.get('problem')}",
                       part=f"{case.id}_{kind}", attempts=attempts, calls=list(llm.calls))

    async def _ask_critic(self, llm: LLM, task: list[dict[str, str]], teacher: str, case: MedecCase,
                          on_error_note: bool, sample: int, temperature: float) -> dict[str, Any]:
        messages = [task[0], {"role": "user", "content": f"{task[1]['content']}\n\n{teacher}"}]
        try:
            reply = await llm.chat(messages, model=self.options.critic_model, schema=CriticVerdict, sample=sample,
                                   temperature=temperature, max_tokens=self.options.max_tokens)
        except LLMError as e:
            return {"check": {"verified": False, "problem": f"{type(e).__name__}: {e}", "sample": sample}}
        v: CriticVerdict = reply.parsed
        sentence_id = v.error_sentence_id if v.error_found else -1
        corrected = v.corrected_sentence.strip() or None
        check = verify_critic_verdict(v.error_found, sentence_id, corrected, case, on_error_note,
                                      self.options.min_similarity)
        trace = "\n\n".join(t for t in (reply.reasoning, v.reasoning.strip()) if t)
        if check.verified and not _trace_ok(trace):
            check.verified, check.problem = False, "reasoning too short or leaks the reference"
        verdict = {"error_found": v.error_found, "error_sentence_id": sentence_id, "corrected_sentence": corrected}
        return {"check": {**check.to_dict(), "sample": sample, "temperature": temperature, "verdict": verdict},
                "trace": trace, "verdict": verdict}

    def _critic_row(self, case: MedecCase, kind: str, task: list[dict[str, str]], result: dict[str, Any],
                    attempts: list[dict[str, Any]], llm: LLM, hinted: bool) -> dict[str, Any]:
        on_error_note = kind == "critic_error"
        v = result["verdict"]
        row = _row(case, kind, "critic", "assessment", case.error_note if on_error_note else case.correct_note,
                   result["trace"], on_error_note)
        row.update(answer=P.render_verdict(v["error_found"], v["error_sentence_id"], v["corrected_sentence"]),
                   prompt={"system": task[0]["content"], "user": task[1]["content"]},
                   verified=bool(result["check"]["verified"]), verification=result["check"],
                   attempts=len(attempts), hinted=hinted)
        _own_calls(row, llm)
        return row

    async def _generator_correct(self, case: MedecCase, llm: LLM) -> dict[str, Any]:
        note = case.correct_note or ""
        opening = (case.correct_sentences or [note])[0]
        user = P.generator_correct_user(opening)
        return await self._generate(case, llm, "generator_correct", P.GENERATOR_CORRECT_SYSTEM, user,
                                    P.generator_correct_teacher(note), note, must_mention=None)

    async def _generator_error(self, case: MedecCase, llm: LLM) -> dict[str, Any]:
        user = P.generator_error_user(case.correct_note or "", case.error_type or "medical")
        teacher = P.generator_error_teacher(case.corrected_sentence or "", case.error_sentence or "", case.error_type or "")
        return await self._generate(case, llm, "generator_error", P.GENERATOR_ERROR_SYSTEM, user, teacher,
                                    case.error_note or "", must_mention=(case.error_sentence, case.corrected_sentence))

    async def _generate(self, case: MedecCase, llm: LLM, kind: str, system: str, user: str, teacher: str,
                        answer: str, must_mention: tuple[str | None, str | None] | None) -> dict[str, Any]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": f"{user}\n\n{teacher}"}]
        problems: list[str] = []
        for i in range(self.options.samples):
            reply = await llm.chat(messages, model=self.options.generator_model, sample=i,
                                   temperature=TEMPERATURES[min(i, len(TEMPERATURES) - 1)],
                                   max_tokens=self.options.max_tokens)
            trace = "\n\n".join(t for t in (reply.reasoning, reply.text.strip()) if t)
            problem = None if _trace_ok(trace) else "reasoning too short or leaks the prompt"
            if problem is None and must_mention and novel_token_recall(trace, must_mention[0], must_mention[1]) < 0.5:
                problem = "reasoning does not name the injected change"
            if problem is None:
                row = _row(case, kind, "generator", "generation", answer, trace, kind == "generator_error")
                row.update(answer=answer, prompt={"system": system, "user": user}, verified=None,
                           verification={"checks": "length, no leak" + (", names the change" if must_mention else "")},
                           attempts=i + 1, hinted=False)
                _own_calls(row, llm)
                return row
            problems.append(problem)
        raise Rejected(f"generator trace failed its checks {len(problems)} time(s): {problems[-1]}",
                       part=f"{case.id}_{kind}", calls=list(llm.calls))

    def to_sft(self, row: dict[str, Any]) -> ChatExample | str:
        return medec_example(row)

    def summary(self) -> dict[str, Any]:
        rates = {}
        for etype, t in sorted(self._tally.items()):
            if t["attempted"]:
                hinted = f" (+{t['hinted']} hinted)" if t["hinted"] else ""
                rates[etype] = f"{t['verified']}/{t['attempted']} verified{hinted}"
        out: dict[str, Any] = {"critic verified": "; ".join(f"{k}: {v}" for k, v in rates.items()) or "-"}
        if self._kept:
            out["per kept example"] = f"{self._calls / self._kept:.2f} calls · {self._tokens / self._kept:,.0f} tokens"
        return out


def _row(case: MedecCase, kind: str, role: str, task: str, note: str | None, trace: str, error_row: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"note_id": f"{case.id}_{kind}", "role": role, "task": task, "note": note,
                           "reasoning": f"<reasoning>{trace}</reasoning>", "label": "ERROR" if error_row else "CORRECT"}
    if error_row:
        row["error_type"] = case.error_type
        row["error_details"] = {"error_sentence": case.error_sentence, "error_sentence_id": case.error_sentence_id,
                                "corrected_sentence": case.corrected_sentence}
    row["provenance"] = {"source_note_id": case.id}
    return row


def _own_calls(row: dict[str, Any], llm: LLM) -> None:
    """A row's provenance names the calls of its own example (its forked handle), not the whole record's."""
    prompt_tokens, completion_tokens = llm.tokens
    row["provenance"].update(calls=list(llm.calls), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                             cost_usd=round(llm.cost_usd, 8))


def _trace_ok(trace: str) -> bool:
    low = trace.lower()
    return len(tokens(trace)) >= MIN_TRACE_WORDS and not any(p in low for p in LEAK_PHRASES)
