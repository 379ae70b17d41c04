"""What the run's calls cost and count: the budget reserved before each call and settled after it,
the prices, and the counts of the run summary. Every transport (online or batch) goes through it.
"""

from __future__ import annotations

import time
from typing import Any

from synthtrace.engine.cost import Budget, PriceTable
from synthtrace.llm.providers import ResolvedModel
from synthtrace.types import BudgetExceeded, ChatRequest, ChatResult, Struct

DEFAULT_COMPLETION_GUESS = 512


class GatewayStats(Struct):
    """Counts for the run summary."""

    __slots__ = ("calls", "replayed", "retries", "throttled", "failures", "prompt_tokens", "completion_tokens",
                 "cost_usd", "started", "batch_calls", "batch_cost_usd")

    def __init__(self) -> None:
        self.calls = 0  # answered by a provider in this process
        self.replayed = 0  # answered from the journal
        self.retries = 0
        self.throttled = 0
        self.failures = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0  # paid in this process
        self.started = time.monotonic()
        self.batch_calls = 0  # of `calls`, answered in a provider batch
        self.batch_cost_usd = 0.0  # of `cost_usd`, paid at batch prices


class Accounting:
    """The budget, the prices and the counts, shared by every endpoint of a run."""

    def __init__(self, budget: Budget, prices: PriceTable):
        self.budget = budget
        self.prices = prices
        self.stats = GatewayStats()
        self._completion_avg: dict[str, float] = {}  # model → completion tokens, a moving average

    async def reserve(self, r: ResolvedModel, req: ChatRequest, local: bool, discount: float = 1.0
                      ) -> tuple[float, int]:
        """Reserve a call's estimated cost in the budget (waiting for calls in flight to settle when
        that makes it fit): (estimate, prompt + completion tokens as guessed)."""
        params: dict[str, Any] = req.params
        prompt_est = sum(len(str(m.get("content") or "")) for m in req.messages) // 4 + 1
        while True:
            completion_est = int(params.get("max_tokens")
                                 or self._completion_avg.get(r.model, DEFAULT_COMPLETION_GUESS))
            estimate = 0.0 if local else self.prices.cost(r.model, prompt_est, completion_est) * discount
            if self.budget.reserve(estimate):
                return estimate, prompt_est + completion_est
            if not self.budget.holds:  # it would not fit even with nothing else in flight
                raise BudgetExceeded(f"--max-usd {self.budget.max_usd} would be passed "
                                     f"(spent ${self.budget.spent:.4f}, next call ~${estimate:.4f})")
            await self.budget.wait_settled()  # calls in flight hold estimates; their real cost decides

    def settle(self, estimate: float, cost: float) -> None:
        self.budget.settle(estimate, cost)

    def cost(self, model: str, result: ChatResult, local: bool = False, discount: float = 1.0) -> float:
        u = result.usage
        return self.prices.cost(model, u.prompt_tokens, u.completion_tokens, local=local) * discount

    def count(self, model: str, result: ChatResult, cost: float, batch: bool = False) -> None:
        """One answer from a provider, in the summary's counts."""
        st, usage = self.stats, result.usage
        st.calls += 1
        st.prompt_tokens += usage.prompt_tokens
        st.completion_tokens += usage.completion_tokens
        st.cost_usd += cost
        if batch:
            st.batch_calls += 1
            st.batch_cost_usd += cost
        avg = self._completion_avg.get(model)
        self._completion_avg[model] = usage.completion_tokens if avg is None else 0.9 * avg + 0.1 * usage.completion_tokens
