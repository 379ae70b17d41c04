"""The math rung: Math-Verify's equivalence check, in worker processes that can be killed.

Math-Verify parses LaTeX and expressions into SymPy and compares them; a SymPy call can hang on an
expression, and its own timeouts use SIGALRM, which works only on a process's main thread. So each
check runs in a worker process (its main thread, Math-Verify's own timeouts off), and the parent
waits for the answer with a wall-clock limit that starts when that worker takes the check — never
while the check waits for a free worker, nor while the event loop is busy elsewhere. A worker past
its limit is killed and replaced; the check is `timeout`. Workers start on first use (importing
SymPy takes a second or two, not counted either) and are stopped by `close()` or at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import os
import threading
import time
from typing import Any

from synthtrace.verify.rules import final_span
from synthtrace.verify.verdict import Verdict, Verification

INSTALL_HINT = "pip install 'synthtrace[verify]'"


def _serve(conn: Any) -> None:
    """A worker's loop: (answer, reference) in, (verdict, reason) out, until the pipe closes."""
    import logging
    import warnings

    logging.disable(logging.WARNING)  # Math-Verify warns that its timeouts are off: they are, on purpose
    warnings.simplefilter("ignore")
    try:
        from math_verify import parse, verify
    except ImportError as e:
        conn.send(("error", f"math-verify is not installed ({e}); {INSTALL_HINT}"))
        return
    conn.send(("ready", ""))
    while True:
        try:
            answer, reference = conn.recv()
        except (EOFError, OSError):
            return
        try:
            gold = parse(_as_latex(reference), parsing_timeout=None)
            if not gold:
                conn.send(("unparseable_reference", f"Math-Verify reads no expression in {reference[:80]!r}"))
                continue
            got = parse(_as_latex(answer), parsing_timeout=None)
            if not got:
                conn.send(("unparseable_answer", f"Math-Verify reads no expression in {answer[:80]!r}"))
                continue
            same = verify(gold, got, timeout_seconds=None)
            conn.send(("correct" if same else "incorrect", f"{got[-1]} {'=' if same else '≠'} {gold[-1]}"))
        except Exception as e:  # noqa: BLE001 - reported as the check's error, the worker lives on
            conn.send(("error", f"{type(e).__name__}: {e}"[:300]))


def _as_latex(text: str) -> str:
    """`text` in math delimiters when it has none: Math-Verify reads LaTeX only between them."""
    if "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


class _Worker:
    def __init__(self, ctx: Any):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        child.close()
        kind, message = self.conn.recv()  # blocks while SymPy imports: not a check's time
        if kind != "ready":
            self.kill()
            raise RuntimeError(message)

    def ask(self, answer: str, reference: str, limit_s: float) -> tuple[str, str] | None:
        """The worker's (verdict, reason), or None past `limit_s` (then it must be killed)."""
        self.conn.send((answer, reference))
        if not self.conn.poll(limit_s):
            return None
        return self.conn.recv()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class MathRung:
    """Mathematical equivalence by Math-Verify, each check limited to `time_limit_s` of its own time."""

    name = "math"

    def __init__(self, time_limit_s: float = 5.0, workers: int | None = None):
        self.time_limit_s = time_limit_s
        self.size = workers or max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                          else (os.cpu_count() or 1)))
        self._ctx = multiprocessing.get_context("spawn")  # no copy of the caller's threads or event loop
        self._idle: list[_Worker] = []
        self._started = 0
        self._lock = threading.Lock()
        self._free: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        atexit.register(self.close)

    async def check(self, answer: str, reference: Any) -> Verification | None:
        if not isinstance(reference, str) or not reference.strip():
            return None
        loop = asyncio.get_running_loop()
        if self._free is None or self._loop is not loop:
            self._free, self._loop = asyncio.Semaphore(self.size), loop
        async with self._free:  # waiting here is not the check's time
            worker = await loop.run_in_executor(None, self._take)
            started = time.perf_counter()
            span = (final_span(answer) or answer).rstrip(" .!;,")  # "The answer is 3/4." states 3/4
            outcome = await loop.run_in_executor(None, worker.ask, span, reference, self.time_limit_s)
            seconds = time.perf_counter() - started
            if outcome is None:
                await loop.run_in_executor(None, worker.kill)
                with self._lock:
                    self._started -= 1
                return Verification(Verdict.TIMEOUT, f"no verdict within {self.time_limit_s:g} s", self.name, seconds)
            with self._lock:
                self._idle.append(worker)
        kind, reason = outcome
        return Verification(Verdict(kind), reason, self.name, seconds)

    def _take(self) -> _Worker:
        """An idle worker, or a new one (the semaphore keeps the count at `size`)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return _Worker(self._ctx)
        except Exception:
            with self._lock:
                self._started -= 1
            raise

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()
