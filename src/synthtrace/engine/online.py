"""An endpoint's calls sent one by one: a replica with room, its limiter, and bounded retries.

Exponential backoff with jitter for 5xx, timeouts, dropped connections and malformed bodies; 429s
wait their Retry-After and feed the limiter's AIMD; other 4xx fail at once with the provider's
message. A replica whose connections fail is taken out and its requests go to the others
(`engine.replicas`). Failures that cannot heal by retrying (a name that does not resolve, a
certificate not accepted, a key refused) stop the run. The endpoint's health — when it started
refusing, what it said last — is what the stall watch reads.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from synthtrace.engine.accounting import Accounting
from synthtrace.engine.replicas import Replica, Replicas
from synthtrace.types import (
    ChatRequest,
    ChatResult,
    Disconnected,
    EndpointRefused,
    FatalError,
    RateLimited,
    RetryableError,
    Struct,
    Unreachable,
)

if TYPE_CHECKING:
    from synthtrace.engine.gateway import Call

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
SPORADIC_FAILURE_RATE = 0.25


class _Tries(Struct):
    __slots__ = ("errors", "throttles")

    def __init__(self) -> None:
        self.errors = 0
        self.throttles = 0


class OnlineTransport:
    """One endpoint's replicas (each a client with its limiter), and its health as the run sees it."""

    journals = False  # the gateway journals what `send` returns

    def __init__(self, name: str, replicas: Replicas, accounting: Accounting, max_retries: int):
        self.name = name
        self.replicas = replicas
        self.accounting = accounting
        self.max_retries = max_retries
        self.local = bool(getattr(replicas.all[0].client, "in_process", False))  # free, and seeded per sample
        self.opened = time.monotonic()  # when the run first needed it
        self.answered_at: float | None = None  # monotonic time of its last answer
        self.failing_since: float | None = None  # when the first request refused since its last answer was sent
        self.last_failure = ""  # what it said last time it refused
        self.stalled = False  # the run has said it is stalled (and not yet that it recovered)
        self.refused: EndpointRefused | None = None  # a refusal of the whole run (bad key): nothing more is sent

    @property
    def slots(self) -> int:
        return self.replicas.slots

    @property
    def in_flight(self) -> int:
        return self.replicas.in_flight

    def refusing(self, e: BaseException, sent: float) -> None:
        """A 429 or a 5xx to a request sent at monotonic time `sent`: the endpoint has made no progress
        since then (or since its last answer, if that came later; since the run opened it, if it has
        never answered), until it answers again."""
        since = self.opened if self.answered_at is None else max(sent, self.answered_at)
        if self.failing_since is None or since < self.failing_since:
            self.failing_since = since
        self.last_failure = str(e)[:300]

    async def send(self, call: Call) -> tuple[ChatResult, float, int]:
        """The answer to `call`, its cost, and the attempts it took; its cost reserved and settled."""
        r, req = call.r, call.req
        estimate, tokens_est = await self.accounting.reserve(r, req, self.local)
        try:
            result, attempts = await self._attempts(req, tokens_est)
        except BaseException:
            self.accounting.settle(estimate, 0.0)
            raise
        cost = self.accounting.cost(r.model, result, local=self.local)
        self.accounting.settle(estimate, cost)
        self.accounting.count(r.model, result, cost)
        return result, cost, attempts

    async def _attempts(self, req: ChatRequest, tokens_est: int) -> tuple[ChatResult, int]:
        """Ask until answered or given up; a sporadic failure is asked again in the slot it holds."""
        tries = _Tries()
        holding = False  # a sporadic failure's retry keeps the slot it already has
        rep = self.replicas.all[0]
        while True:
            if not holding:
                rep = await self.replicas.acquire(tokens_est, first=tries.errors + tries.throttles > 0)
            sent = time.monotonic()
            try:
                if self.refused is not None:  # refused while this call waited for a slot
                    raise self.refused
                result = await rep.client.chat(req)
            except RateLimited as e:
                holding = False
                await self._throttled(rep, e, sent, tries)
                continue
            except RetryableError as e:
                holding = await self._failed(rep, e, sent, tries)
                continue
            except BaseException as e:
                self._gave_up(rep, e)
                raise
            self._answered(rep, result, tokens_est)
            return result, tries.errors + tries.throttles + 1

    async def _throttled(self, rep: Replica, e: RateLimited, sent: float, tries: _Tries) -> None:
        """A 429: the slot goes back with the server's wish; wait as asked unless another replica has room."""
        self.refusing(e, sent)
        rep.limiter.release_throttled(e.retry_after)
        tries.throttles += 1
        self.accounting.stats.throttled += 1
        if tries.throttles > self.max_retries * 5:
            raise e
        if not self.replicas.room_besides(rep):
            await asyncio.sleep(_jitter(e.retry_after) if e.retry_after is not None else _backoff(tries.throttles))

    async def _failed(self, rep: Replica, e: RetryableError, sent: float, tries: _Tries) -> bool:
        """A failure worth retrying: raise when no retry is left or none can help; else wait as fits
        and return whether the retry keeps this slot."""
        stats, limiter = self.accounting.stats, rep.limiter
        replicas = self.replicas
        hopeless = isinstance(e, Unreachable) and (e.cause in ("dns", "tls", "proxy")
                                                   or (e.cause == "refused" and not rep.answered))
        if isinstance(e, (Unreachable, Disconnected)) and replicas.take_out(rep, _gone_text(e), hopeless):
            limiter.release()  # the others are in service: send it to one of them at once
            tries.errors += 1
            if tries.errors > self.max_retries:
                stats.failures += 1
                raise e
            stats.retries += 1
            return False
        if hopeless and replicas.hopeless():
            # It cannot heal by retrying: stop here, leave every record for the next run.
            limiter.release()
            stats.failures += 1
            where = f"none of its {len(replicas.all)} servers answers: " if replicas.several else ""
            self.refused = EndpointRefused(f"endpoint {self.name!r}: {where}{_cause_text(e)}: {e}")
            raise self.refused from e
        self.refusing(e, sent)
        rep.observe(True)
        tries.errors += 1
        if tries.errors > self.max_retries:
            limiter.release()
            stats.failures += 1
            raise e
        stats.retries += 1
        if rep.failure_rate < SPORADIC_FAILURE_RATE and not isinstance(e, Unreachable) and limiter.unmetered:
            # A healthy endpoint's odd failure: ask again at once, in the same slot. Given back, the
            # slot went to a waiting request and the retry waited for the next one to free — near the
            # end of a burst of answers, a whole round.
            return True
        limiter.release()
        await asyncio.sleep(_backoff(tries.errors, rep.failure_rate))
        return False

    def _gave_up(self, rep: Replica, e: BaseException) -> None:
        """A failure no retry can help: a refusal of the whole run is remembered for every later call."""
        rep.limiter.release()
        self.accounting.stats.failures += 1
        if isinstance(e, FatalError) and e.run_level:
            self.refused = EndpointRefused(str(e), e.status)
            raise self.refused from e
        if isinstance(e, EndpointRefused):
            self.refused = e

    def _answered(self, rep: Replica, result: ChatResult, tokens_est: int) -> None:
        rep.limiter.release()
        rep.observe(False)
        self.replicas.answered(rep)
        self.failing_since, self.answered_at = None, time.monotonic()
        rep.limiter.on_success(tokens_est, result.usage.total_tokens)

    async def aclose(self) -> None:
        for rep in self.replicas.all:
            await rep.client.aclose()


def _backoff(attempt: int, failure_rate: float = 1.0) -> float:
    """Exponential backoff with jitter: ~0.25–0.5 s, then 0.5–1 s, 1–2 s … capped.

    While failures are sporadic (under 25 % of the endpoint's recent answers fail), retries go almost
    at once: the endpoint is healthy, and waiting would only stretch the run's tail (a request that
    fails twice near the end would otherwise add a second or more). Systematic failures get the full
    exponential backoff; max_retries bounds both.
    """
    import random  # only a retry needs it: kept off the start-up path

    if failure_rate < SPORADIC_FAILURE_RATE:
        return random.uniform(0.0, 0.01 * attempt)  # a few ms (with a rate budget; otherwise no wait)
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def _jitter(retry_after: float) -> float:
    """Honour Retry-After, spreading the retries over a further 10 % so they do not arrive as one wave."""
    import random

    return min(retry_after, 300.0) * random.uniform(1.0, 1.1)


def _cause_text(e: Unreachable) -> str:
    return {"dns": "the name does not resolve", "tls": "its TLS certificate is not accepted",
            "proxy": "the proxy does not let it through",
            "refused": "nothing listens there (connection refused) and it has not answered in this run"
            }.get(e.cause, "cannot connect")


def _gone_text(e: RetryableError) -> str:
    if isinstance(e, Disconnected):
        return "a connection dropped mid-answer"
    return {"dns": "the name does not resolve", "tls": "its TLS certificate is not accepted",
            "proxy": "the proxy does not let it through", "refused": "connection refused",
            "timeout": "connecting timed out"}.get(getattr(e, "cause", ""), "cannot connect")
