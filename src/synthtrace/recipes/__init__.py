"""Recipes: one module per recipe. A recipe is an async function of one record (plus how to read
its input); concurrency, retries, caching, cost and progress are the engine's business.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from synthtrace.engine.gateway import RecordLLM
from synthtrace.engine.inputs import BadInput, Record, count_lines
from synthtrace.types import RecordOutcome


class Recipe:
    """Base for recipes. Subclasses set `name`, `prompt_version` and implement `records`/`process`."""

    name: ClassVar[str] = ""
    prompt_version: ClassVar[str] = "1"

    def records(self, path: Path) -> Iterator[Record | BadInput]:
        raise NotImplementedError

    def count(self, path: Path) -> int | None:
        """How many records the input holds, for progress (None when unknown)."""
        return count_lines(path)

    async def process(self, record: Record, llm: RecordLLM) -> list[dict[str, Any]] | RecordOutcome:
        """Rows for one record; raise `Rejected(reason, **details)` to give up on it with a reason, or
        return a `RecordOutcome` to keep some rows and give up on other parts of the record."""
        raise NotImplementedError

    def estimate(self, record: Record) -> tuple[int, int, int]:
        """(calls, prompt tokens, completion tokens) this record will probably cost, for --dry-run."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """Recipe-specific figures for the run summary and manifest."""
        return {}

