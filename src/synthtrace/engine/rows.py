"""What a run writes for one record: its rows with provenance, or rejected entries with reasons.

`Rejections` writes each rejected entry and says the first few of each reason on the console
(the rest are counted for the summary); decontamination against evaluation sets turns an
overlapping row into a rejected entry with its evidence.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from synthtrace.console import LazyConsole, escape
from synthtrace.engine.gateway import RecordLLM
from synthtrace.engine.store import RunStore
from synthtrace.inputs import Record
from synthtrace.recipe import Recipe
from synthtrace.types import Rejected
from synthtrace.version import __version__

SAME_REASON_SHOWN = 3  # rejections printed per reason; rejected.jsonl has them all
_NUMBERS = re.compile(r"\d+")


class Rejections:
    """Rejected entries: written to the store, the first `SAME_REASON_SHOWN` of a reason printed."""

    def __init__(self, store: RunStore, console: LazyConsole):
        self.store = store
        self.console = console
        self.said: Counter[str] = Counter()  # reasons printed, numbers taken out

    def __call__(self, entry: dict[str, Any], message: str | None = None) -> None:
        self.store.reject(entry)
        if message:
            same = _NUMBERS.sub("#", str(entry.get("reason", message)))
            self.said[same] += 1
            if self.said[same] <= SAME_REASON_SHOWN:  # after a few, the rest of the same kind are counted
                self.console.print(f"[yellow]{escape(message)}[/yellow]", highlight=False, soft_wrap=True)

    def record(self, record: Record, e: Rejected, llm: RecordLLM) -> None:
        """The whole record, with the calls it made."""
        entry = {"id": record.id, "record_id": record.id, "source": record.source, "line": record.line,
                 "calls": llm.calls, **e.to_entry()}
        self(entry, f"{record.source}:{record.line}: {e.part or record.id}: {e.reason}")

    def part(self, record: Record, part: Rejected) -> None:
        """One part of a record a recipe gave up on (its other parts may have rows)."""
        if not isinstance(part, Rejected):
            raise TypeError(f"RecordOutcome.rejected holds Rejected(reason, part=…, **details), got {part!r}")
        entry = {"id": record.id, "record_id": record.id, "source": record.source, "line": record.line,
                 **part.to_entry()}
        self(entry, f"{record.source}:{record.line}: {part.part or record.id}: {part.reason}")

    def summary(self) -> list[str]:
        return [f"… and {n - SAME_REASON_SHOWN:,} more rejected for the same reason: {reason}"
                for reason, n in self.said.items() if n > SAME_REASON_SHOWN]


def decontaminated(index: Any, rejections: Rejections, record: Record,
                   rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` without those that overlap an evaluation set; each of those is rejected with its evidence."""
    kept = []
    for row in rows:
        hit = next(((path, m) for path, text in _texts(row) if (m := index.find(text)) is not None), None)
        if hit is None:
            kept.append(row)
            continue
        path, m = hit
        part = str(row.get("note_id") or row.get("id") or record.id)
        rejections.part(record, Rejected(f"overlap with {m.eval_set}", part=part, field=path,
                                         method=f"word {m.n}-gram overlap", threshold=index.min_overlap,
                                         evidence=m.as_dict()))
    return kept


def _texts(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, text) of each string in a row, its provenance aside."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            if not (k == "provenance" and not path):
                yield from _texts(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _texts(v, f"{path}[{i}]")


def provenance(recipe: Recipe, record: Record, llm: RecordLLM, extra: dict[str, Any] | None) -> dict[str, Any]:
    prompt_tokens, completion_tokens = llm.tokens
    prov = {"recipe": recipe.name, "prompt_version": recipe.prompt_version, "record_id": record.id,
            "source": {"file": record.source, "line": record.line}, "calls": llm.calls,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "cost_usd": round(llm.cost_usd, 8), "synthtrace": __version__}
    if extra:
        prov.update(extra)
    return prov
