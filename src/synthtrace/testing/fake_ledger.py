"""What the fake provider remembers: each request it saw (for tests) and running counts (for benchmarks).

Credentials are never stored: a `RecordedRequest` notes only whether an ``Authorization`` or
``x-api-key`` header was sent. Benchmarks turn per-request records off and keep only the counters.
"""

from __future__ import annotations

import collections
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any

RECORDED_HEADERS = ("Content-Type", "User-Agent", "anthropic-version", "anthropic-beta", "X-Request-Id")


@dataclass(slots=True)
class RecordedRequest:
    """One request as the server saw it."""

    path: str
    body: Any  # parsed JSON, or None when the body was not JSON
    headers: dict[str, str]  # only RECORDED_HEADERS
    has_authorization: bool
    has_api_key: bool  # an ``x-api-key`` header (Anthropic)
    time: float  # time.time() on arrival
    prompt: str  # last user message
    status: int | None = None  # HTTP status sent; None while pending or when no response was sent
    outcome: str = "pending"  # ok | status | capped | invalid | truncated | malformed | drop
    # | aborted (server stopped while holding it) | client_gone (client left while it was held)


class Ledger:
    """Records and counters, safe to read from another thread while the server writes them."""

    def __init__(self, record: bool = True):
        self.record = record  # keep every request in `requests`
        self.requests: list[RecordedRequest] = []
        self.first_request_at: float | None = None
        self.last_answer_at: float | None = None
        self._lock = threading.Lock()
        self._answered: collections.Counter[str] = collections.Counter()
        self._by_status: collections.Counter[int] = collections.Counter()
        self._by_outcome: collections.Counter[str] = collections.Counter()

    def arrive(self, path: str, body: Any, headers: Any, prompt: str) -> RecordedRequest:
        """Note a request as it comes in (`headers`: the request's header mapping)."""
        rec = RecordedRequest(
            path=path, body=body,
            headers={h: headers[h] for h in RECORDED_HEADERS if h in headers} if self.record else {},
            has_authorization="Authorization" in headers, has_api_key="x-api-key" in headers,
            time=time.time(), prompt=prompt)
        if self.first_request_at is None:
            self.first_request_at = rec.time
        if self.record:
            with self._lock:
                self.requests.append(rec)
        return rec

    def finish(self, rec: RecordedRequest, status: int | None, outcome: str) -> None:
        """Note what the request got: `status` (None when nothing was sent) and the outcome name."""
        rec.status, rec.outcome = status, outcome
        self.last_answer_at = time.time()
        with self._lock:
            self._by_outcome[outcome] += 1
            if status is not None:
                self._by_status[status] += 1
            if outcome == "ok":
                self._answered[rec.prompt] += 1

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self._answered.clear()
            self._by_status.clear()
            self._by_outcome.clear()
            self.first_request_at = self.last_answer_at = None

    def count_by_prompt(self) -> collections.Counter[str]:
        """Last user message → how many times it got a genuine answer (200 with a valid body)."""
        with self._lock:
            return collections.Counter(self._answered)

    def stats(self) -> dict[str, Any]:
        """Totals for benchmarks: requests by status and outcome, how often prompts were re-answered,
        this process's CPU time."""
        with self._lock:
            answered = collections.Counter(self._answered)
            by_status = dict(self._by_status)
            by_outcome = dict(self._by_outcome)
        histogram = collections.Counter(answered.values())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "requests_total": sum(by_outcome.values()),
            "by_status": {str(k): v for k, v in sorted(by_status.items())},
            "by_outcome": by_outcome,
            "prompts_answered": len(answered),
            "prompts_answered_more_than_once": sum(1 for n in answered.values() if n > 1),
            "answers_per_prompt_histogram": {str(k): v for k, v in sorted(histogram.items())},
            "first_request_at": self.first_request_at,
            "last_answer_at": self.last_answer_at,
            "cpu_user_s": usage.ru_utime,
            "cpu_sys_s": usage.ru_stime,
        }
