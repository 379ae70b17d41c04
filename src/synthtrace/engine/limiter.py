"""Admission control for one endpoint: concurrency (AIMD), requests/min and tokens/min.

Concurrency starts at the configured ceiling. A 429 cuts it to what the server was actually
holding (the requests still in flight) and, once per cool-down, by a further 5 % unless the 429 came
at the level that drew the last one (a steady cap: holding is what it takes); successes add it
back slowly (about one slot per window of successes), and more slowly still near the level that
last drew a 429. A throttled request waits its Retry-After and then queues again like any other:
retries never bypass admission, so they cannot turn into a 429 storm. When a 429 leaves nothing of
ours in flight, the server is refusing everything: its Retry-After pauses the whole endpoint.
Retries that gave their slot back queue ahead of first attempts (still through admission): with a
queue as deep as the concurrency, a retry at the back would wait a whole round, and a run's tail is
its last retries. (The gateway retries a healthy endpoint's odd failure in the slot it holds.)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time


class TokenBucket:
    """Smooth rate: `rate` units per second, bursts of at most `capacity`; debt allowed."""

    def __init__(self, per_minute: float, burst_seconds: float = 6.0):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` can be taken (0 when it can be now)."""
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


class Limiter:
    def __init__(self, concurrency: int, rpm: float | None = None, tpm: float | None = None,
                 hard_cap: int | None = None):
        self.ceiling = max(1, min(concurrency, hard_cap) if hard_cap else concurrency)
        self.limit = float(self.ceiling)
        self.in_flight = 0
        self.rpm = TokenBucket(rpm) if rpm else None
        self.tpm = TokenBucket(tpm) if tpm else None
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._paused_until = 0.0
        self._cooldown_until = 0.0
        self._last_throttle_level = float("inf")
        self.throttled = 0

    # -- admission ------------------------------------------------------------------------------

    async def acquire(self, tokens: int = 0, first: bool = False) -> None:
        """Wait for a slot (and the rate budgets). `first`: queue ahead of the requests waiting for
        their first attempt — for a retry, whose record has already waited its turn once.

        A freed slot is handed to the first waiter and counted as taken the moment it is handed over,
        so a burst of answers wakes exactly as many waiters as it frees, in the order they came."""
        while True:
            now = time.monotonic()
            if now < self._paused_until:
                await asyncio.sleep(self._paused_until - now)
                continue
            if self.in_flight < int(self.limit) and not self._waiters:
                self.in_flight += 1
            else:
                await self._handed_a_slot(first)
            wait = max(self._paused_until - time.monotonic(),
                       self.rpm.wait_time(1) if self.rpm else 0.0, self.tpm.wait_time(tokens) if self.tpm else 0.0)
            if wait > 0:  # a slot is of no use until then: pass it on meanwhile
                self.release()
                await asyncio.sleep(wait)
                first = True
                continue
            if self.rpm:
                self.rpm.take(1)
            if self.tpm:
                self.tpm.take(tokens)
            return

    async def _handed_a_slot(self, first: bool) -> None:
        fut = asyncio.get_running_loop().create_future()
        if first:
            self._waiters.appendleft(fut)
        else:
            self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot as it was cancelled: pass it on
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    @property
    def room(self) -> float:
        """Free slots less the requests queued for one (negative with a queue); while paused, less
        a further ceiling, so that a replica refusing everything is chosen last."""
        room = float(int(self.limit) - self.in_flight - len(self._waiters))
        return room - self.ceiling if time.monotonic() < self._paused_until else room

    @property
    def unmetered(self) -> bool:
        """No requests- or tokens-per-minute budget: only the concurrency limits admission."""
        return self.rpm is None and self.tpm is None

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to the waiters, first come first served (none while paused)."""
        if self._paused_until and time.monotonic() < self._paused_until:
            return
        while self._waiters and self.in_flight < int(self.limit):
            fut = self._waiters.popleft()
            if not fut.done():  # a cancelled waiter's future is done; it removes itself
                self.in_flight += 1
                fut.set_result(None)

    # -- feedback -------------------------------------------------------------------------------

    def on_success(self, estimated_tokens: int = 0, actual_tokens: int = 0) -> None:
        if self.tpm and actual_tokens < estimated_tokens:
            self.tpm.give_back(estimated_tokens - actual_tokens)
        elif self.tpm and actual_tokens > estimated_tokens:
            self.tpm.take(actual_tokens - estimated_tokens)
        if self.limit >= self.ceiling or time.monotonic() < self._cooldown_until:
            return
        step = 1.0 / self.limit
        if self.limit + 1 >= self._last_throttle_level:
            step /= 8  # probe gently near the level that was refused last time
        self.limit = min(float(self.ceiling), self.limit + step)
        self._wake()

    def release_throttled(self, retry_after: float | None) -> None:
        """A 429 came back: give its slot back, and cut concurrency (or pause) before anyone else
        is handed it."""
        self.in_flight -= 1
        self.throttled += 1
        now = time.monotonic()
        wait = retry_after if retry_after is not None else 1.0
        holding = max(1.0, float(self.in_flight))  # what the server still holds of ours
        if now >= self._cooldown_until:
            # A 429 right at the level that drew the last one is the server's steady cap: holding is
            # what it takes. Anywhere else the cap is unknown or moving: back off 5 % below it too.
            steady = holding + 1 >= self._last_throttle_level
            self._last_throttle_level = min(self.limit, holding + 1)
            self.limit = max(1.0, min(self.limit, holding) * (1.0 if steady else 0.95))
        else:  # more 429s of the same burst: the cap is at most what the server holds now
            self._last_throttle_level = min(self._last_throttle_level, holding + 1)
            self.limit = max(1.0, min(self.limit, holding))
        self._cooldown_until = now + wait
        if self.in_flight == 0:  # the server is holding nothing of ours: it is refusing everything
            self._paused_until = max(self._paused_until, now + wait)
            asyncio.get_running_loop().call_later(wait, self._wake_after_pause)
        self._wake()

    def _wake_after_pause(self) -> None:
        left = self._paused_until - time.monotonic()
        if left > 0:  # a later 429 extended the pause (or the timer fired a hair early)
            asyncio.get_running_loop().call_later(left, self._wake_after_pause)
        else:
            self._wake()
