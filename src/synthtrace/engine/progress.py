"""Progress as a person watches it: rows done/total, requests in flight, tokens/s, $ so far, ETA.

A rich progress bar on a terminal; with --quiet (or no terminal) a plain log line every few seconds
on stderr. Either way the figures are read from the gateway's counters, never recomputed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

from synthtrace.engine.gateway import GatewayStats

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from synthtrace.console import LazyConsole


class Counters(Protocol):
    """What progress reads: a gateway's, or a Ray driver's sum over its workers."""

    stats: GatewayStats

    @property
    def in_flight(self) -> int: ...


def stats_line(gateway: Counters) -> str:
    st = gateway.stats
    elapsed = max(1e-6, time.monotonic() - st.started)
    tps = (st.prompt_tokens + st.completion_tokens) / elapsed
    extra = f" · {st.replayed} replayed" if st.replayed else ""
    if st.retries or st.throttled:
        extra += f" · {st.retries} retries · {st.throttled}×429"
    return f"{gateway.in_flight} in flight · {tps:,.0f} tok/s · ${st.cost_usd:.4f}{extra}"


class RunProgress:
    def __init__(self, gateway: Counters, total: int | None, quiet: bool, console: LazyConsole, label: str):
        self.gateway = gateway
        self.total = total
        self.done = 0
        self.rejected = 0
        self.skipped = 0
        self.resumed = 0  # records the run dir had finished when this run began
        self.quiet = quiet or not console.is_terminal
        self.console = console
        self.label = label
        self._progress: Progress | None = None
        self._task: Any = None
        self._logger: asyncio.Task[None] | None = None
        self.notice: str | None = None  # something the person watching must see (an endpoint stalled)

    def note(self, notice: str | None) -> None:
        """Show (or, with None, clear) a notice in the progress line."""
        self.notice = notice

    def __enter__(self) -> RunProgress:
        if self.quiet:
            self._logger = asyncio.get_running_loop().create_task(self._log_every(10.0))
        else:
            self._progress = _progress_bar(self.gateway, self.console.real, self)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def advance(self, rejected: bool = False) -> None:
        self.done += 1
        self.rejected += rejected
        if self._progress is not None:
            self._progress.advance(self._task)

    def skip(self, n: int) -> None:
        """Records already done in an earlier run: counted toward the total, not re-run."""
        self.skipped += n
        if self._progress is not None and n:
            self._progress.advance(self._task, n)

    def set_counts(self, done: int, rejected: int, skipped: int) -> None:
        """Counts summed elsewhere (a Ray driver's workers), replacing these."""
        self.done, self.rejected, self.skipped = done, rejected, skipped
        if self._progress is not None:
            self._progress.update(self._task, completed=done + skipped)

    async def _log_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            total = f"/{self.total}" if self.total else ""
            notice = f" · {self.notice.upper()}" if self.notice else ""
            print(f"[synthtrace] {self.label}: {self.done}{total} records · {stats_line(self.gateway)}{notice}",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._logger is not None:
            self._logger.cancel()
        if self._progress is not None:
            self._progress.stop()


def _progress_bar(gateway: Counters, console: Console, progress_owner: RunProgress) -> Progress:
    """The terminal bar; rich.progress is imported only when one is shown (logs need none of it)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class LiveStats(ProgressColumn):
        def render(self, task: Any) -> Text:
            notice = getattr(progress_owner, "notice", None)
            text = Text(stats_line(gateway), style="dim")
            if notice:
                text.append(f" · {notice}", style="bold yellow")
            return text

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                    TimeRemainingColumn(), LiveStats(), console=console, refresh_per_second=4, transient=False)
