"""Output for a person: a rich console that imports rich only once something is printed.

Importing rich is slow, and a quiet run (logs, CI, benchmarks) never needs it:
its progress is plain log lines and its summary plain `key: value` lines. A terminal run pays it
on its first print.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """Stands in for `rich.console.Console(**options)`; the real one is made on first use."""

    def __init__(self, **options: Any):
        self._options = options
        self._console: Console | None = None

    @property
    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:  # print, is_terminal, width …
        return getattr(self.real, name)


def escape(text: str) -> str:
    """Text made safe to print as rich markup (brackets in file names, ids, messages)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)
