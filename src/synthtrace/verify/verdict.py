"""Verdicts and the ladder that runs the rungs.

A check never ends in a bare bool: a `Verification` says `correct`, `incorrect`,
`unparseable_answer`, `unparseable_reference`, `timeout` or `error`, why, which rung decided, and
how long the check itself took. A rung that cannot judge a pair (the reference is no number, no
letter, no expression) abstains with None and the ladder asks the next one. The first rung that
decides `correct` or `incorrect` settles it; a rung that times out or fails is remembered, so that
a ladder whose other rungs all abstain says `timeout` or `error` — an infrastructure failure is
never reported as `incorrect`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Protocol


class Verdict(str, Enum):
    CORRECT = "correct"
    INCORRECT = "incorrect"
    UNPARSEABLE_ANSWER = "unparseable_answer"
    UNPARSEABLE_REFERENCE = "unparseable_reference"
    TIMEOUT = "timeout"
    ERROR = "error"


DECISIVE = (Verdict.CORRECT, Verdict.INCORRECT)


@dataclass(frozen=True)
class Verification:
    """One check's outcome: the verdict, why, the rung that decided, and the seconds it took."""

    verdict: Verdict
    reason: str
    rung: str
    seconds: float = 0.0

    @property
    def correct(self) -> bool:
        return self.verdict is Verdict.CORRECT

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value, "seconds": round(self.seconds, 4)}

    @classmethod
    def of(cls, data: dict[str, Any]) -> Verification:
        return cls(Verdict(data["verdict"]), str(data.get("reason", "")), str(data.get("rung", "")),
                   float(data.get("seconds") or 0.0))


class Rung(Protocol):
    """One way of checking an answer against a reference."""

    name: str

    async def check(self, answer: str, reference: Any) -> Verification | None:
        """A verdict, or None when this rung cannot judge the pair (the ladder asks the next)."""
        ...


class Ladder:
    """Rungs asked in order until one decides (see the module's docstring)."""

    name = "ladder"

    def __init__(self, rungs: Sequence[Rung]):
        self.rungs = list(rungs)

    async def check(self, answer: str, reference: Any) -> Verification:
        started = time.perf_counter()
        trouble: Verification | None = None  # a timeout or an error, kept unless a later rung decides
        unparseable: Verification | None = None
        for rung in self.rungs:
            try:
                v = await rung.check(answer, reference)
            except Exception as e:  # noqa: BLE001 - a rung's own failure is a verdict too
                v = Verification(Verdict.ERROR, f"{type(e).__name__}: {e}", rung.name)
            if v is None:
                continue
            if v.verdict in DECISIVE:
                return v
            if v.verdict in (Verdict.TIMEOUT, Verdict.ERROR):
                trouble = trouble or v
            else:
                unparseable = unparseable or v
        spent = time.perf_counter() - started
        if trouble is not None:
            return trouble
        if unparseable is not None:
            return unparseable
        return Verification(Verdict.UNPARSEABLE_ANSWER, "no rung could judge this answer against its reference",
                            self.name, spent)
