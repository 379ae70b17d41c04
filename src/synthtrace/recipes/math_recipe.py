"""The `math` recipe: problems with reference answers → reasoning traces whose answer is verified.

Input: JSON lines, CSV or Parquet, one problem each, in the shapes the common sets use:
`{"question", "answer": "… #### 72"}` (GSM8K), `{"problem", "solution": "… \\boxed{72}"}` or
`{"problem", "answer": "72"}` (MATH), with an optional `id` (else `unique_id`, else the file and
line). Each problem is sampled until `--k` answers are verified by the verifier ladder or
`--budget` samples are drawn (`synthtrace.verify.sample_until`); one row per verified answer, each
with its verdict and the verdicts of every sample drawn for the problem (its pass rate is its
difficulty). A problem with no verified answer is rejected with those verdicts.

    synthtrace run math -i examples/math/problems.jsonl -o runs/math --k 2 --budget 8
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from synthtrace.inputs import BadInput, Record, read_table, record_id
from synthtrace.options import option
from synthtrace.recipe import LLM, ChatExample, Recipe, ViewFields
from synthtrace.types import Rejected, Reply
from synthtrace.verify import Verification, boxed, ladder_of, sample_until

SYSTEM = "Solve the problem step by step. Put the final answer alone in \\boxed{} on the last line."
_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)

def reference_of(data: dict[str, Any]) -> str | None:
    """The reference answer of a problem, from the fields GSM8K and MATH use."""
    answer = data.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        return str(answer)
    if isinstance(answer, str) and answer.strip():
        m = _GSM8K_ANSWER.search(answer)
        return (m.group(1) if m else boxed(answer) or answer).strip()
    solution = data.get("solution")
    if isinstance(solution, str):
        inner = boxed(solution)
        return inner.strip() if inner else None
    return None


class MathRecipe(Recipe):
    """Math problems with reference answers: traces sampled until their final answer is verified."""

    name = "math"
    prompt_version = "1"
    view = ViewFields(question="problem", trace="reasoning", answer="answer", verdicts=("verification", "sampling"))

    @dataclass(frozen=True)
    class Options:
        k: int = option(1, "Verified answers wanted per problem.", flags=("--k",), min=1, max=64)
        budget: int = option(8, "Samples drawn per problem at most.", min=1, max=256)
        give_up_after: int | None = option(None, "Stop a problem once this many samples are drawn and none "
                                                 "is verified.", min=1)
        temperature: float = option(0.8, "Sampling temperature.", min=0)
        max_tokens: int = option(2048, "Max tokens of each answer.", min=16)
        verifier: list[Literal["exact", "number", "choice", "math"]] = option(
            ["exact", "number", "choice", "math"], "The verifier's rungs, in order (repeat the flag).")
        system: str = option(SYSTEM, "The system prompt; an empty string sends none (small models often "
                                     "answer better without one).")

    def __init__(self, options: Any = None, /, **values: Any):
        super().__init__(options, **values)
        self.ladder = ladder_of(list(self.options.verifier))

    def records(self, path: Path) -> Iterator[Record | BadInput]:
        return read_table(path, _build_record)

    async def process(self, record: Record, llm: LLM) -> list[dict[str, Any]]:
        data, o = record.data, self.options
        problem, reference = str(data.get("problem") or data.get("question")), str(data["reference"])
        messages = self.messages(problem)

        async def check(reply: Reply) -> Verification:
            return await self.ladder.check(reply.text, reference)

        samples = await sample_until(llm, messages, check, k=o.k, budget=o.budget, give_up_after=o.give_up_after,
                                     temperature=o.temperature, max_tokens=o.max_tokens)
        drawn = {**samples.as_dict(), "samples": [{**s, "key": x.reply.key} for s, x in
                                                  zip(samples.as_dict()["samples"], samples.samples)]}
        if not samples.verified:
            raise Rejected(f"no verified answer in {len(samples.samples)} samples ({samples.stopped})",
                           reference=reference, sampling=drawn)
        rows = []
        for s in samples.verified[:o.k]:
            reasoning, answer = split_answer(s.reply)
            rows.append({"id": record.id, "system": o.system, "problem": problem, "reference": reference,
                         "reasoning": reasoning, "answer": answer, "sample": s.index, "verified": True,
                         "verification": s.verification.as_dict(), "sampling": drawn})
        return rows

    async def evaluate(self, record: Record, llm: LLM) -> list[Verification]:
        """For `synthtrace eval math`: the greedy answer's verdict, then those of `budget - 1` samples."""
        o = self.options
        problem, reference = str(record.data.get("problem") or record.data.get("question")), record.data["reference"]
        messages = self.messages(problem)
        replies = await asyncio.gather(
            llm.chat(messages, temperature=0.0, max_tokens=o.max_tokens),
            *(llm.chat(messages, sample=i, temperature=o.temperature, max_tokens=o.max_tokens)
              for i in range(1, o.budget)))
        return list(await asyncio.gather(*(self.ladder.check(r.text, str(reference)) for r in replies)))

    def messages(self, problem: str) -> list[dict[str, str]]:
        system = self.options.system
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": problem}]

    def to_sft(self, row: dict[str, Any]) -> ChatExample:
        return ChatExample(user=row["problem"], answer=row["answer"], reasoning=row["reasoning"],
                           system=row.get("system", SYSTEM) or None)


def split_answer(reply: Reply) -> tuple[str, str]:
    """(reasoning, final answer) of a reply: the exposed reasoning and the working, then its last line."""
    lines = reply.text.strip().splitlines()
    answer = lines[-1].strip() if lines else ""
    work = "\n".join(lines[:-1]).strip()
    return "\n\n".join(t for t in (reply.reasoning or "", work) if t), answer


def _build_record(source: str, n: int, obj: dict[str, Any]) -> Record | BadInput:
    problem = obj.get("problem") or obj.get("question")
    if not isinstance(problem, str) or not problem.strip():
        return BadInput(source, n, "no `problem` or `question` text")
    reference = reference_of(obj)
    if reference is None:
        return BadInput(source, n, "no reference answer: give `answer` (GSM8K's `#### N` or a value) or a "
                                   "`solution` with \\boxed{}")
    rid = record_id(obj.get("id")) or record_id(obj.get("unique_id")) or f"{Path(source).stem}:{n}"
    return Record(rid, {**obj, "reference": reference}, source, n)
