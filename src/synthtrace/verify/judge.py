"""The judge rung: a model compares the answer with the reference, asked in both orders.

A judge can favour whichever answer it reads first; so it is asked twice, the two answers
swapped, and only a verdict both orders agree on counts. Disagreement abstains (None): the ladder
does not call that either way. A model that fails is `error`, never `incorrect`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from synthtrace.recipe import LLM
from synthtrace.types import LLMError
from synthtrace.verify.verdict import Verdict, Verification

SAME = {"type": "object", "properties": {"same": {"type": "boolean"}, "why": {"type": "string"}},
        "required": ["same", "why"], "additionalProperties": False}
PROMPT = ("Two answers to the same question follow. Do they state the same final result (equal values, "
          "equivalent expressions, the same choice)? Ignore the working and the wording; judge only the "
          "final result.\n\nAnswer 1:\n{first}\n\nAnswer 2:\n{second}\n\n"
          'Reply with JSON: {{"same": true or false, "why": "one sentence"}}.')


class JudgeRung:
    """Ask `model` (an alias of the run's config) through `llm`; counted only when both orders agree."""

    name = "judge"

    def __init__(self, llm: LLM, model: str | None = None, **params: Any):
        self.llm = llm
        self.model = model
        self.params = {"temperature": 0.0, "max_tokens": 256, **params}

    async def check(self, answer: str, reference: Any) -> Verification | None:
        if not isinstance(reference, str) or not reference.strip():
            return None
        started = time.perf_counter()
        try:
            first, second = await asyncio.gather(self._ask(answer, reference), self._ask(reference, answer))
        except LLMError as e:
            return Verification(Verdict.ERROR, f"the judge failed: {e}", self.name, time.perf_counter() - started)
        seconds = time.perf_counter() - started
        if first["same"] != second["same"]:
            return None
        verdict = Verdict.CORRECT if first["same"] else Verdict.INCORRECT
        return Verification(verdict, f"both orders: {first['why']}", self.name, seconds)

    async def _ask(self, first: str, second: str) -> dict[str, Any]:
        reply = await self.llm.chat([{"role": "user", "content": PROMPT.format(first=first, second=second)}],
                                    model=self.model, schema=SAME, **self.params)
        parsed = reply.parsed if isinstance(reply.parsed, dict) else {}
        return {"same": bool(parsed.get("same")), "why": str(parsed.get("why", ""))}
