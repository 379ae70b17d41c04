"""The stall watch: says when an endpoint answers nothing but refusals for the stall window.

Under `--on-stall stop` it then stops the run (what was finished is kept; the rest waits for the
next run); under `wait` it says so and says again when the endpoint answers. It also passes on
what the gateway has to say as it happens (replicas out of or back in service, batches).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from synthtrace.console import LazyConsole, escape
from synthtrace.engine.gateway import Gateway
from synthtrace.engine.progress import RunProgress


class StallWatch:
    def __init__(self, gateway: Gateway, console: LazyConsole, window: float, policy: str):
        self.gateway = gateway
        self.console = console
        self.window = window
        self.policy = policy  # "wait" | "stop"

    def say_news(self, progress: RunProgress) -> None:
        """What the gateway has to say, and endpoints that answer again after a stall."""
        for notice in self.gateway.notices():
            self.console.print(f"[yellow]{escape(notice)}[/yellow]", soft_wrap=True)
        for name in self.gateway.recovered():
            self.console.print(f"[green]endpoint {escape(repr(name))} answers again[/green]", soft_wrap=True)
            progress.note(None)

    async def watch(self, progress: RunProgress, stop_run: Callable[[str], None]) -> None:
        """Until cancelled: wake when a stall is due (not a poll after it), say it once, and under
        the stop policy call `stop_run` with what was said, then return."""
        gateway, window = self.gateway, self.window
        while True:
            due = gateway.next_stall_in(window)
            if due is not None:
                self.console.real  # noqa: B018 - an endpoint refuses: make the console now, not when a stall is said
            await asyncio.sleep(min(1.0, window / 4) if due is None else min(1.0, window / 4, due))
            self.say_news(progress)
            for name, seconds, said in gateway.stalls(window):
                since = time.strftime("%H:%M:%S", time.localtime(time.time() - seconds))
                text = (f"endpoint {name!r} has answered nothing but refusals for "
                        f"{seconds:.{0 if seconds >= 10 else 1}f} s (since {since}): {said}")
                if gateway.mark_stalled(name):
                    then = (" — waiting (--on-stall stop stops the run instead)" if self.policy == "wait"
                            else " — stopping (--on-stall stop)")
                    self.console.print(f"[bold yellow]stalled:[/bold yellow] {escape(text)}{then}", soft_wrap=True)
                    progress.note(f"stalled: {name} for {seconds:.0f} s")
                if self.policy == "stop":
                    stop_run(text)
                    return
