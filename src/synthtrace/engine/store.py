"""The run directory: rows.jsonl, rejected.jsonl, manifest.json and journal.db.

Rows are appended as records finish, all rows of one record in a single write, so a killed
process leaves at most one torn line at the end; reopening repairs it (truncates it) and never
counts it. Which records are done is read back from the rows themselves (`provenance.record_id`).
Ids seen and done live in a small on-disk SQLite index, so a million-line input runs in memory
that does not grow with its size.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

ROWS = "rows.jsonl"
REJECTED = "rejected.jsonl"
MANIFEST = "manifest.json"
JOURNAL = "journal.db"


class IdIndex:
    """Set-like index of ids: `seen` (input ids, with their line) and `done` (ids with rows).

    The latest `MEMORY_IDS` seen ids live in a dict, and go to SQLite's temporary database in one
    batch when it fills: a run of up to that many records asks SQLite nothing per record (an insert
    each was ~5 % of the CPU spent on a request), and a million-line input still runs in memory that
    does not grow with its size.
    """

    MEMORY_IDS = 50_000

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None  # opened when first needed: most runs never need it
        self._recent: dict[str, int] = {}  # seen ids not yet in SQLite → their line
        self._spilled = False  # some seen ids are in SQLite
        self.done_count = 0

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            # "" is SQLite's private temporary database: on disk once it outgrows its page cache, and
            # gone when the connection closes, or the process dies (the file is unlinked on open).
            db = self._conn = sqlite3.connect("", isolation_level=None)
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
            db.execute("CREATE TABLE done (id TEXT PRIMARY KEY) WITHOUT ROWID")
        return self._conn

    def mark_done(self, record_ids: Iterable[str]) -> None:
        self.done_count += self._db.executemany("INSERT OR IGNORE INTO done VALUES (?)",
                                                ((rid,) for rid in record_ids)).rowcount

    def is_done(self, record_id: str) -> bool:
        if not self.done_count:  # a fresh run: no query per record
            return False
        return self._db.execute("SELECT 1 FROM done WHERE id = ?", (record_id,)).fetchone() is not None

    def first_seen(self, record_id: str, line: int) -> int | None:
        """Record that `record_id` appears at `line`; return the earlier line if it was seen before."""
        recent = self._recent
        earlier = recent.get(record_id)
        if earlier is not None:
            return earlier
        if self._spilled:
            row = self._db.execute("SELECT line FROM seen WHERE id = ?", (record_id,)).fetchone()
            if row is not None:
                return row[0]
        recent[record_id] = line
        if len(recent) >= self.MEMORY_IDS:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO seen VALUES (?, ?)", recent.items())
            recent.clear()
            self._spilled = True
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class RunStore:
    def __init__(self, outdir: str | Path):
        self.dir = Path(outdir)
        self.rows_path = self.dir / ROWS
        self.rejected_path = self.dir / REJECTED
        self.manifest_path = self.dir / MANIFEST
        self.journal_path = self.dir / JOURNAL
        self.rows_written = 0
        self.resumed_records = 0
        self.repaired_bytes = 0
        self.unreadable_lines: list[int] = []

    def open(self, fresh: bool = False) -> None:
        """Create or reopen the run dir: repair a torn tail, index finished records."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index = IdIndex()
        if fresh:
            self.rows_path.unlink(missing_ok=True)
        self.repaired_bytes = repair_torn_tail(self.rows_path)
        if self.rows_path.exists():
            self._index_finished()
        self._keep_rejections_of_done_records()
        self._rows = open(self.rows_path, "ab", buffering=0)
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._rejected = open(self.rejected_path, "ab", buffering=0)

    def _index_finished(self) -> None:
        with open(self.rows_path, "rb") as f:
            self.index.mark_done(self._finished_ids(f))
        self.resumed_records = self.index.done_count

    def _finished_ids(self, rows: Iterable[bytes]) -> Iterator[str]:
        for n, line in enumerate(rows, 1):
            try:
                yield orjson.loads(line)["provenance"]["record_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.unreadable_lines.append(n)

    def _keep_rejections_of_done_records(self) -> None:
        """A rejection is not work done: records without rows are tried again (and re-rejected if they
        fail again), so only the entries of finished records — parts a recipe gave up on — stay."""
        if not self.rejected_path.exists():
            return
        repair_torn_tail(self.rejected_path)
        kept = []
        with open(self.rejected_path, "rb") as f:
            for line in f:
                try:
                    rid = orjson.loads(line).get("record_id")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if rid is not None and self.index.is_done(str(rid)):
                    kept.append(line)
        write_atomic(self.rejected_path, b"".join(kept))

    def is_done(self, record_id: str) -> bool:
        return self.index.is_done(record_id)

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append all rows of one record: a record is in rows.jsonl whole or not at all.

        Records finishing in the same event-loop tick go out in one write (one syscall per tick, not
        per record). A record whose write a kill pre-empts is simply redone on resume, its calls
        replayed from the journal. (The index of done records is not updated: it answers for
        earlier runs, and an id cannot come twice within one, since repeats are rejected.)
        """
        self._pending.append(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        self.rows_written += len(rows)
        if not self._flush_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
                self._flush_scheduled = True
            except RuntimeError:  # no loop: write now
                self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            view = memoryview(data)
            while view:  # a regular file takes it all at once; a short write (disk full) must not tear a record
                view = view[self._rows.write(view):]

    def reject(self, entry: dict[str, Any]) -> None:
        self._rejected.write(orjson.dumps(entry, default=str) + b"\n")

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Replace manifest.json, atomically but without an fsync. rows.jsonl is not synced either (the
        journal is, when it closes): after a power cut the same command repairs the rows, replays their
        calls from the journal and writes the manifest again, so syncing it alone would buy nothing."""
        write_atomic(self.manifest_path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2, default=str),
                     durable=False)

    def close(self) -> None:
        if getattr(self, "_pending", None):
            self.flush()
        for f in (getattr(self, "_rows", None), getattr(self, "_rejected", None)):
            if f is not None:
                f.close()
        if hasattr(self, "index"):
            self.index.close()


def repair_torn_tail(path: Path) -> int:
    """Cut a last line that a killed process left unfinished; return the bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        step = 1 << 16
        end = size
        while end > 0:
            start = max(0, end - step)
            f.seek(start)
            chunk = f.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
        return size - keep


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data` so that readers see the old file or the new one, never half.

    `durable` also syncs the data to disk before the rename, so that a power cut leaves the old or
    the new file too (a process that dies leaves one or the other either way)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
