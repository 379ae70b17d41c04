"""Token prices and the run's budget.

Prices are USD per million tokens, for common models; a config's `prices:` overrides or extends
them. A model with no known price costs 0 and is reported once as unpriced, so a budget is never
silently meaningless. The budget reserves an estimate for every call in flight, so `--max-usd`
stops the run *before* the limit is passed, not after.
"""

from __future__ import annotations

import asyncio
import re

from synthtrace.config import Price

# USD per 1M tokens (input, output), list prices as published by the providers.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00), "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00), "gpt-5-mini": (0.25, 2.00), "gpt-5-nano": (0.05, 0.40),
    "o1": (15.00, 60.00), "o3": (2.00, 8.00), "o3-mini": (1.10, 4.40), "o4-mini": (1.10, 4.40),
    "claude-opus-4": (15.00, 75.00), "claude-opus-4-1": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00), "claude-sonnet-4-5": (3.00, 15.00), "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00), "claude-haiku-4-5": (1.00, 5.00),
    "gemini-2.5-pro": (1.25, 10.00), "gemini-2.5-flash": (0.30, 2.50),
    "deepseek-chat": (0.27, 1.10), "deepseek-reasoner": (0.55, 2.19),
    # Argo's ids for the same models
    "gpt4o": (2.50, 10.00), "gpt4olatest": (2.50, 10.00), "gpt41": (2.00, 8.00), "gpt41mini": (0.40, 1.60),
    "gpto3": (2.00, 8.00), "gpto4mini": (1.10, 4.40), "gpt5": (1.25, 10.00),
    "claudesonnet4": (3.00, 15.00), "claudesonnet45": (3.00, 15.00), "claudeopus4": (15.00, 75.00),
}
_DATED = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-latest)$")


# OpenAI and Anthropic charge half for batch requests (`engine.batches`).
BATCH_DISCOUNT = 0.5


class PriceTable:
    def __init__(self, overrides: dict[str, Price] | None = None):
        self._prices = {k: Price(input=i, output=o) for k, (i, o) in DEFAULT_PRICES.items()}
        self._prices.update(overrides or {})
        self._cache: dict[str, Price | None] = {}
        self.unpriced: set[str] = set()

    def lookup(self, model: str) -> Price | None:
        if model in self._cache:
            return self._cache[model]
        key = model.rsplit("/", 1)[-1]  # openrouter-style vendor/model
        price = self._prices.get(model) or self._prices.get(key) or self._prices.get(_DATED.sub("", key))
        self._cache[model] = price
        return price

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, local: bool = False) -> float:
        if local:
            return 0.0
        price = self.lookup(model)
        if price is None:
            self.unpriced.add(model)
            return 0.0
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


class Budget:
    """Spent + reserved must stay within `max_usd`; a call that would pass it is not sent.

    A call whose estimate does not fit *only because* other calls hold reservations waits for them
    to settle (their actual cost is usually below the estimate); only a call that cannot fit with
    nothing else in flight means the budget is spent.
    """

    def __init__(self, max_usd: float | None, already_spent: float = 0.0):
        self.max_usd = max_usd
        self.spent = already_spent
        self.reserved = 0.0
        self.holds = 0  # reservations not yet settled
        self.exhausted = False
        self._settled: asyncio.Event | None = None

    def reserve(self, estimate: float) -> bool:
        if self.max_usd is None:
            return True
        if self.spent + self.reserved + estimate > self.max_usd:
            if not self.holds:
                self.exhausted = True
            return False
        self.reserved += estimate
        self.holds += 1
        return True

    async def wait_settled(self) -> None:
        """Return once some reservation has settled."""
        if self._settled is None:
            self._settled = asyncio.Event()
        await self._settled.wait()

    def settle(self, estimate: float, actual: float) -> None:
        if self.max_usd is not None:
            self.reserved = max(0.0, self.reserved - estimate)
            self.holds -= 1
            if not self.holds:
                self.reserved = 0.0  # no float residue once nothing is reserved
        self.spent += actual
        if self._settled is not None:
            self._settled.set()
            self._settled = None
