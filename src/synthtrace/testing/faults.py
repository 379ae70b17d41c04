"""Faults the fake provider can inject: scripted one at a time (`Fault`) or at random rates (`FaultRates`).

A `Fault` is a value placed among scripted responses, e.g.
``fp.script("hello", Fault.status(429, retry_after=2), "fine now")``. `FaultRates` draws faults for
unscripted traffic from a seeded generator, e.g. ``{"500": 0.05, "malformed": 0.02}``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

STATUS, TIMEOUT, TRUNCATED, MALFORMED, DROP = "status", "timeout", "truncated", "malformed", "drop"


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure. Build with the class methods, not the constructor."""

    kind: str
    code: int = 200  # HTTP status for STATUS faults
    body: Any = None  # STATUS: dict/list sent as JSON, str/bytes sent as is, None for a provider-style error
    retry_after: float | str | None = None  # STATUS: Retry-After header (seconds or an HTTP date)
    seconds: float = 0.0  # TIMEOUT: how long to hold the request

    @classmethod
    def status(cls, code: int, body: Any = None, retry_after: float | str | None = None) -> Fault:
        """Answer with HTTP `code`; `body` defaults to the dialect's own error JSON."""
        return cls(STATUS, code=int(code), body=body, retry_after=retry_after)

    @classmethod
    def timeout(cls, seconds: float) -> Fault:
        """Hold the request `seconds` (cut short when the server stops), then answer normally."""
        return cls(TIMEOUT, seconds=float(seconds))

    @classmethod
    def truncated(cls) -> Fault:
        """Status 200, the JSON answer cut in half (Content-Length matches the cut body)."""
        return cls(TRUNCATED)

    @classmethod
    def malformed(cls) -> Fault:
        """Status 200 with a body that is not JSON at all."""
        return cls(MALFORMED)

    @classmethod
    def drop(cls) -> Fault:
        """Close the TCP connection without sending any response."""
        return cls(DROP)


def retry_after_header(value: float | str) -> str:
    """Header text for a Retry-After value: whole seconds as an integer, else as given."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class FaultRates:
    """Random faults for unscripted traffic: ``{"500": 0.05, "429": 0.01, "malformed": 0.02, ...}``.

    Keys are HTTP status codes (as str or int) or one of ``truncated``, ``malformed``, ``drop``.
    A 429 drawn here carries ``Retry-After: retry_after_s``. One draw per request, seeded.
    """

    def __init__(self, rates: dict[str | int, float] | None, seed: int = 0, retry_after_s: float = 1.0):
        self.rates = {str(k): float(v) for k, v in (rates or {}).items() if float(v) > 0}
        if sum(self.rates.values()) > 1.0:
            raise ValueError(f"fault rates add up to more than 1: {self.rates}")
        self._rng = random.Random(seed)
        self._table: list[tuple[float, Fault]] = []
        cumulative = 0.0
        for key, rate in self.rates.items():
            cumulative += rate
            self._table.append((cumulative, self._fault_for(key, retry_after_s)))

    @staticmethod
    def _fault_for(key: str, retry_after_s: float) -> Fault:
        if key.isdigit():
            code = int(key)
            return Fault.status(code, retry_after=retry_after_s if code == 429 else None)
        if key == TRUNCATED:
            return Fault.truncated()
        if key == MALFORMED:
            return Fault.malformed()
        if key == DROP:
            return Fault.drop()
        raise ValueError(f"unknown fault rate key {key!r} (use a status code, truncated, malformed or drop)")

    def draw(self) -> Fault | None:
        """The fault for the next request, or None (most of the time)."""
        if not self._table:
            return None
        roll = self._rng.random()
        for bound, fault in self._table:
            if roll < bound:
                return fault
        return None
