"""Sample until verified: draw answers until `k` pass the check, or the item's budget is spent.

Every pipeline that makes verified traces samples a fixed n per problem. `sample_until` stops an
easy item as soon as it has `k` verified answers and spends the rest of the budget only where it
is needed; `give_up_after` stops a hopeless one early. Samples are drawn in waves sized by the pass
rate seen so far, so an item's samples still go out together. Every sample keeps its verdict: the
pass rate per item is its difficulty.

    samples = await sample_until(llm, messages, check, k=2, budget=8, temperature=0.8)
    samples.verified, samples.pass_rate, samples.stopped       # [...], 0.5, "enough"
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from synthtrace.recipe import LLM
from synthtrace.types import Message, Reply
from synthtrace.verify.verdict import Verification


@dataclass
class Sample:
    index: int  # the `sample` index it was drawn with (its own journal entry)
    reply: Reply
    verification: Verification

    @property
    def correct(self) -> bool:
        return self.verification.correct


@dataclass
class Samples:
    """An item's samples, in the order drawn, and why the drawing stopped."""

    wanted: int
    budget: int
    samples: list[Sample] = field(default_factory=list)
    stopped: str = ""  # "enough" (k verified) | "budget" (all drawn) | "hopeless" (none verified after give_up_after)

    @property
    def verified(self) -> list[Sample]:
        return [s for s in self.samples if s.correct]

    @property
    def pass_rate(self) -> float:
        return len(self.verified) / len(self.samples) if self.samples else 0.0

    def as_dict(self) -> dict[str, Any]:
        """What a row keeps: each sample's index and verdict, the pass rate, why it stopped."""
        return {"wanted": self.wanted, "budget": self.budget, "drawn": len(self.samples),
                "verified": len(self.verified), "pass_rate": round(self.pass_rate, 4), "stopped": self.stopped,
                "samples": [{"index": s.index, **s.verification.as_dict()} for s in self.samples]}


Check = Callable[[Reply], Awaitable[Verification]]


async def sample_until(llm: LLM, messages: list[Message], check: Check, *, k: int = 1, budget: int = 8,
                       give_up_after: int | None = None, **chat: Any) -> Samples:
    """Draw samples of `messages` (sample indexes 0, 1, …) and `check` each, until `k` are verified,
    `budget` are drawn, or — with `give_up_after` — that many are drawn and none is verified."""
    if k < 1 or budget < 1:
        raise ValueError(f"sample_until needs k >= 1 and budget >= 1, got k={k}, budget={budget}")
    out = Samples(k, budget)
    wave = min(k, budget)
    while True:
        first = len(out.samples)
        replies = await asyncio.gather(*(llm.chat(messages, sample=i, **chat) for i in range(first, first + wave)))
        verdicts = await asyncio.gather(*(check(r) for r in replies))
        out.samples += [Sample(first + j, r, v) for j, (r, v) in enumerate(zip(replies, verdicts))]
        drawn, verified = len(out.samples), len(out.verified)
        if verified >= k:
            out.stopped = "enough"
            return out
        if drawn >= budget:
            out.stopped = "budget"
            return out
        if give_up_after is not None and verified == 0 and drawn >= give_up_after:
            out.stopped = "hopeless"
            return out
        rate = (verified + 1) / (drawn + 2)  # the pass rate so far, never 0 or 1
        wave = min(budget - drawn, max(1, math.ceil((k - verified) / rate)))
        if give_up_after is not None and verified == 0 and drawn < give_up_after:
            wave = min(wave, give_up_after - drawn)  # see whether it is hopeless before spending more
