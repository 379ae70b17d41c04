"""Shards of a run, and merging run directories back into one.

`--shard I/N` takes the records whose id hashes to I of N (sha256 of the id: the same on every
machine and every run), into `OUTPUT/shard-I-of-N/`, so N processes of a job array share an input
file and never a record. A bad input line has no id to hash: its file and line decide its shard.

`merge` combines run directories (shards, or any runs of the same recipe, prompts and options):
rows (one copy of each record's rows, the first run's that has it), the rejected entries of records
that ended without rows, the journals (every answer, so the merged run resumes and views like any
other), and the accounting. It writes its output whole and atomically, so merging again gives the
same files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from synthtrace.engine.journal import Journal
from synthtrace.engine.store import JOURNAL, MANIFEST, REJECTED, ROWS, IdIndex, write_atomic
from synthtrace.inputs import BadInput, read_jsonl
from synthtrace.types import Struct
from synthtrace.version import __version__

SHARD_DIR = re.compile(r"^shard-(\d+)-of-(\d+)$")
MUST_AGREE = ("recipe", "recipe_ref", "prompt_version", "options")


class MergeError(ValueError):
    """Runs that cannot be merged; the message says which and why."""


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` as (I, N), with 0 <= I < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--shard: expected I/N with 0 <= I < N (as a job array's index and size), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_of(key: str, shards: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % shards


def shard_dir(output: Path, index: int, shards: int) -> Path:
    return output / f"shard-{index}-of-{shards}"


class MergeResult(Struct):
    __slots__ = ("output", "runs", "rows", "records", "rejected", "duplicates", "calls", "cost_usd", "missing",
                 "incomplete")

    def __init__(self, output: Path, runs: list[Path]):
        self.output = output
        self.runs = runs
        self.rows = 0
        self.records = 0
        self.rejected = 0
        self.duplicates = 0  # records found in more than one run (kept once)
        self.calls = 0
        self.cost_usd = 0.0
        self.missing: list[str] = []  # shards of a job array that are not among the runs
        self.incomplete: list[str] = []  # runs whose manifest does not say complete


def expand(paths: list[Path]) -> list[Path]:
    """Run directories: each path that is one, and the shard-I-of-N/ directories inside one that holds them."""
    runs: list[Path] = []
    for path in paths:
        if (path / ROWS).exists() or (path / MANIFEST).exists():
            runs.append(path)
            continue
        inner = sorted((p for p in path.iterdir() if p.is_dir() and SHARD_DIR.match(p.name)),
                       key=lambda p: int(SHARD_DIR.match(p.name).group(1)))  # type: ignore[union-attr]
        if not inner:
            raise MergeError(f"{path}: neither a run directory nor one that holds shard-I-of-N/ runs")
        runs.extend(inner)
    return runs


def merge(paths: list[Path], output: Path) -> MergeResult:
    runs = expand(paths)
    if output.resolve() in {r.resolve() for r in runs}:
        raise MergeError(f"{output} is one of the runs being merged: merge into a new directory")
    manifests = [_manifest(r) for r in runs]
    _check(runs, manifests)
    result = MergeResult(output, runs)
    result.missing = _missing_shards(runs)
    result.incomplete = [str(r) for r, m in zip(runs, manifests) if m.get("status") != "complete"]
    output.mkdir(parents=True, exist_ok=True)

    done = IdIndex()  # record ids with rows so far (on disk past 50,000: memory stays flat)
    try:
        with _replacing(output / ROWS) as out:
            for run in runs:
                for record_id, lines in _records(run / ROWS):
                    if done.is_done(record_id):
                        result.duplicates += 1
                        continue
                    done.mark_done([record_id])
                    result.records += 1
                    result.rows += len(lines)
                    out.write(b"".join(lines))
        seen: set[bytes] = set()
        with _replacing(output / REJECTED) as out:
            for run in runs:
                for raw, entry in _lines(run / REJECTED):
                    rid = entry.get("record_id")  # a record given up on (bad input lines have none)
                    if rid is not None and done.is_done(str(rid)):  # it has rows after all (in another run)
                        continue
                    digest = hashlib.sha256(raw).digest()
                    if digest not in seen:
                        seen.add(digest)
                        out.write(raw)
                        result.rejected += 1
    finally:
        done.close()
    result.calls, result.cost_usd = _merge_journals(runs, output / JOURNAL)
    write_atomic(output / MANIFEST, orjson.dumps(_merged_manifest(runs, manifests, result),
                                                 option=orjson.OPT_INDENT_2, default=str))
    return result


@contextlib.contextmanager
def _replacing(target: Path) -> Iterator[IO[bytes]]:
    """A file written beside `target` that replaces it whole when the block ends without an error."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _records(path: Path) -> Iterator[tuple[str, list[bytes]]]:
    """(record id, its row lines) for each record in a rows.jsonl, in order (a record's rows are one write)."""
    current: str | None = None
    lines: list[bytes] = []
    for raw, row in _lines(path):
        prov = row.get("provenance") if isinstance(row.get("provenance"), dict) else {}
        rid = prov.get("record_id")
        if rid is None:
            continue
        if rid != current and lines:
            yield str(current), lines
            lines = []
        current = rid
        lines.append(raw)
    if lines:
        yield str(current), lines


def _lines(path: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(the line as written, ending in a newline, and its object) for each readable line."""
    if not path.exists():
        return
    for item in read_jsonl(path):
        if isinstance(item, BadInput):
            continue
        yield orjson.dumps(item[1]) + b"\n", item[1]


def _manifest(run: Path) -> dict[str, Any]:
    try:
        return orjson.loads((run / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise MergeError(f"{run}: no {MANIFEST} (not a synthtrace run, or one that never started)") from None
    except orjson.JSONDecodeError as e:
        raise MergeError(f"{run / MANIFEST}: unreadable ({e})") from None


def _check(runs: list[Path], manifests: list[dict[str, Any]]) -> None:
    first = manifests[0]
    for run, m in zip(runs[1:], manifests[1:]):
        for key in MUST_AGREE:
            if m.get(key) != first.get(key):
                raise MergeError(f"the runs differ in {key}: {first.get(key)!r} in {runs[0]} but {m.get(key)!r} "
                                 f"in {run}; only runs of the same recipe, prompts and options merge")


def _missing_shards(runs: list[Path]) -> list[str]:
    found: dict[int, set[int]] = {}
    for run in runs:
        m = SHARD_DIR.match(run.name)
        if m:
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    return [f"shard-{i}-of-{n}" for n, have in found.items() for i in range(n) if i not in have]


def _merge_journals(runs: list[Path], target: Path) -> tuple[int, float]:
    """Every answer of every run's journal into one (keys are requests: the same answer merges once)."""
    Journal(target).close()  # creates it with the current schema
    db = sqlite3.connect(target)
    try:
        for run in runs:
            source = run / JOURNAL
            if not source.exists():
                continue
            db.execute("ATTACH DATABASE ? AS other", (str(source),))
            columns = {row[1] for row in db.execute("PRAGMA other.table_info(calls)")}
            request = "request" if "request" in columns else "NULL"
            with db:
                db.execute("INSERT OR IGNORE INTO calls (key, endpoint, model, created, prompt_tokens, "
                           f"completion_tokens, cost_usd, result, request) SELECT key, endpoint, model, created, "
                           f"prompt_tokens, completion_tokens, cost_usd, result, {request} FROM other.calls")
            db.execute("DETACH DATABASE other")
        calls, cost = db.execute("SELECT COUNT(*), COALESCE(SUM(cost_usd), 0) FROM calls").fetchone()
    finally:
        db.close()
    return calls, cost


def _merged_manifest(runs: list[Path], manifests: list[dict[str, Any]], r: MergeResult) -> dict[str, Any]:
    first = manifests[0]
    stats: dict[str, float] = {}
    for m in manifests:
        for k, v in ((m.get("result") or {}).get("stats") or {}).items():
            if isinstance(v, (int, float)):
                stats[k] = stats.get(k, 0) + v
    complete = not r.missing and not r.incomplete
    return {
        "synthtrace": __version__, **{k: first.get(k) for k in MUST_AGREE}, "model": first.get("model"),
        "status": "complete" if complete else "partial", "merged": time.time(),
        "merged_from": [str(p) for p in runs], "missing_shards": r.missing, "incomplete_runs": r.incomplete,
        "result": {"records_done": r.records, "rows_written": r.rows, "records_rejected": r.rejected,
                   "duplicates": r.duplicates, "stats": stats, "journal_calls": r.calls,
                   "journal_cost_usd": round(r.cost_usd, 6),
                   "recipe_by_run": [(m.get("result") or {}).get("recipe") for m in manifests]},
    }
