"""A run's input: records read in order, each either queued for the workers or accounted for.

Bad lines and repeated ids become rejected entries that name the file and line; records another
shard owns are left alone; records already in rows.jsonl are skipped. `strict_check` is the
`--strict` pass over the whole input before anything runs (`bad_lines`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthtrace.console import LazyConsole, escape
from synthtrace.engine.progress import RunProgress
from synthtrace.engine.settings import RunSettings
from synthtrace.engine.shards import shard_of
from synthtrace.engine.store import IdIndex, RunStore
from synthtrace.inputs import BadInput, Record
from synthtrace.recipe import Recipe


class RunInput:
    """Reads the recipe's records into `queue`, then one `None` per worker to end them."""

    def __init__(self, recipe: Recipe, settings: RunSettings, store: RunStore, shard: tuple[int, int] | None,
                 reject: Callable[[dict[str, Any], str], None], stop: asyncio.Event):
        self.recipe = recipe
        self.settings = settings
        self.store = store
        self.shard = shard
        self.reject = reject
        self.stop = stop
        self.bad_input = 0
        self.skipped = 0

    async def feed(self, queue: asyncio.Queue[Record | None], workers: int, slots: int,
                   progress: RunProgress) -> None:
        taken = 0
        max_records = self.settings.max_records
        for item in self.recipe.records(self.settings.input):
            if self.stop.is_set() or (max_records is not None and taken >= max_records):
                break
            taken += 1
            if not self._ours(item):
                continue
            bad = item if isinstance(item, BadInput) else self._repeated(item)
            if bad is not None:
                self.bad_input += 1
                self.reject(bad.to_entry(), bad.message())
                progress.advance(rejected=True)
                continue
            assert isinstance(item, Record)
            if self.store.is_done(item.id):
                self.skipped += 1
                progress.skip(1)
                continue
            await queue.put(item)
            if taken <= slots:  # let a worker start each of the first requests before reading on
                await asyncio.sleep(0)
        for _ in range(workers):
            await queue.put(None)

    def _ours(self, item: Record | BadInput) -> bool:
        """Whether this shard owns `item` (every item, without --shard)."""
        if self.shard is None:
            return True
        key = item.id if isinstance(item, Record) else f"{item.source}:{item.line}"
        return shard_of(key, self.shard[1]) == self.shard[0]

    def _repeated(self, record: Record) -> BadInput | None:
        earlier = self.store.index.first_seen(record.id, record.line)
        return None if earlier is None else duplicate(record, earlier)


def duplicate(record: Record, earlier: int) -> BadInput:
    return BadInput(record.source, record.line, f"duplicate id {record.id!r} (first at line {earlier})", id=record.id)


def input_problems(recipe: Recipe, path: Path) -> list[BadInput]:
    """Every bad input line, duplicate ids included (for --strict), without holding the ids in memory."""
    problems: list[BadInput] = []
    index = IdIndex()
    try:
        for item in recipe.records(path):
            if isinstance(item, BadInput):
                problems.append(item)
            elif (earlier := index.first_seen(item.id, item.line)) is not None:
                problems.append(duplicate(item, earlier))
    finally:
        index.close()
    return problems


def bad_lines(recipe: Recipe, settings: RunSettings, console: LazyConsole) -> list[BadInput] | None:
    """Under --strict, the bad lines of the input (each said, the first 20); None when there are none."""
    if not settings.strict:
        return None
    problems = input_problems(recipe, settings.input)
    if not problems:
        return None
    for p in problems[:20]:
        console.print(f"[red]{escape(p.message())}[/red]", soft_wrap=True)
    return problems
