"""`synthtrace verify RUN`: check every stored sample again, from the journal, with no model call.

A recipe that samples until verified (`math`, or any that stores `sampling` the same way) keeps,
on each row and each rejected entry, every sample's journal key and verdict, and the `reference`.
This reads each sample's answer back from the run's journal, asks the verifier again — the same
rungs, or others (`--verifier`) — and lists the verdicts that flipped. With `apply`, rows.jsonl
and rejected.jsonl are rewritten with the new verdicts: a row whose own answer no longer verifies
gets `verified: false` (which `export sft` leaves out); a rejected problem that now has a verified
sample is named, for a fresh run to turn into rows.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from synthtrace.engine.journal import Journal
from synthtrace.engine.store import JOURNAL, REJECTED, ROWS, write_atomic
from synthtrace.verify import DEFAULT_RUNGS, Ladder, Verification, ladder_of

DEFAULT = DEFAULT_RUNGS


@dataclass
class Flip:
    where: str  # rows.jsonl:LINE or rejected.jsonl:LINE
    record: str
    sample: int
    before: str
    after: Verification


@dataclass
class Reverified:
    samples: int = 0
    missing: int = 0  # samples whose answer the journal no longer holds
    flips: list[Flip] = field(default_factory=list)
    unverified_rows: int = 0  # rows whose own answer no longer verifies
    rescued: list[str] = field(default_factory=list)  # rejected records that now have a verified sample
    by_verdict: Counter[str] = field(default_factory=Counter)


async def reverify(run: Path, verifier: list[str] | tuple[str, ...] = DEFAULT, apply: bool = False) -> Reverified:
    """Check the stored samples of run dir `run` again (see the module's docstring)."""
    journal_path = run / JOURNAL
    if not journal_path.exists():
        raise FileNotFoundError(f"{run}: no {JOURNAL}: not a run directory")
    ladder = ladder_of(verifier)
    journal = Journal(journal_path)
    out = Reverified()
    try:
        files = {name: _read(run / name) for name in (ROWS, REJECTED)}
        for name, entries in files.items():
            for n, entry in entries:
                await _entry(ladder, journal, name, n, entry, out)
    finally:
        journal.close()
        for rung in ladder.rungs:
            close = getattr(rung, "close", None)
            if close is not None:
                close()
    if apply and out.flips:
        for name, entries in files.items():
            write_atomic(run / name, b"".join(orjson.dumps(e) + b"\n" for _, e in entries))
    return out


def _read(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.exists():
        return []
    return [(n, orjson.loads(line)) for n, line in enumerate(path.read_bytes().splitlines(), 1) if line.strip()]


async def _entry(ladder: Ladder, journal: Journal, name: str, n: int, entry: dict[str, Any], out: Reverified) -> None:
    """Check the samples of one row or rejected entry again, updating them in place."""
    sampling, reference = entry.get("sampling"), entry.get("reference")
    if not isinstance(sampling, dict) or not isinstance(reference, str):
        return
    samples = [s for s in sampling.get("samples") or [] if isinstance(s, dict) and s.get("key")]
    texts = []
    for s in samples:
        found = journal.get(str(s["key"]))
        texts.append(None if found is None else found.result.text)
    verdicts = await asyncio.gather(*(ladder.check(t, reference) for t in texts if t is not None))
    record = str(entry.get("record_id") or entry.get("id"))
    it = iter(verdicts)
    for s, text in zip(samples, texts):
        if text is None:
            out.missing += 1
            continue
        v = next(it)
        out.samples += 1
        out.by_verdict[v.verdict.value] += 1
        if v.verdict.value != s.get("verdict"):
            out.flips.append(Flip(f"{name}:{n}", record, int(s.get("index", -1)), str(s.get("verdict")), v))
        s.update(v.as_dict())
    sampling["verified"] = sum(s.get("verdict") == "correct" for s in samples)
    own = next((s for s in samples if s.get("index") == entry.get("sample")), None)
    if name == ROWS and own is not None:
        entry["verification"] = {k: own[k] for k in ("verdict", "reason", "rung", "seconds")}
        if own.get("verdict") != "correct" and entry.get("verified") is not False:
            entry["verified"] = False
            out.unverified_rows += 1
    if name == REJECTED and sampling["verified"]:
        out.rescued.append(record)
