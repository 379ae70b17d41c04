"""The request journal: every successful response, durably recorded before its caller sees it.

SQLite in WAL mode, keyed by a hash of the canonical request (resolved model and endpoint,
messages, params, schema, sample index), never by code. A re-run with the same requests replays
from here and pays nothing; `kill -9` loses at most the calls that were still in flight. WAL with
synchronous=NORMAL survives a killed process (the OS holds the written pages); it trades the last
transactions of a power cut for a commit that costs microseconds instead of an fsync.

`record` is group commit: answers that arrive in the same event-loop tick share one transaction
(a commit per answer cost 40 µs, most of the engine's own CPU at thousands of requests a second),
and each caller resumes only after the transaction holding its answer has committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from synthtrace.types import ChatResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    result BLOB NOT NULL
);
"""

_INSERT = "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def request_key(model_id: str, messages: list[dict[str, Any]], params: dict[str, Any],
                schema: dict[str, Any] | None, sample: int) -> str:
    """Hash of the canonical request. Same request → same key, in any process, any code version."""
    canonical = orjson.dumps(
        {"model": model_id, "messages": messages, "params": params, "schema": schema, "sample": sample},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()[:32]


class KeyFilter:
    """A Bloom filter over journal keys (2 MiB, ~1 % false positives at a million keys): most lookups
    in a run are misses, and this answers them without touching SQLite. Keys are hex digests already,
    so their slices serve as the hash functions."""

    BITS = 1 << 24

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS // 8)

    def _positions(self, key: str) -> tuple[int, int, int]:
        mask = self.BITS - 1
        return int(key[0:8], 16) & mask, int(key[8:16], 16) & mask, int(key[16:24], 16) & mask

    def add(self, key: str) -> None:
        for p in self._positions(key):
            self._bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, key: str) -> bool:
        return all(self._bits[p >> 3] & (1 << (p & 7)) for p in self._positions(key))


@dataclass(slots=True)
class JournalEntry:
    result: ChatResult
    cost_usd: float


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._batch: list[tuple[Any, ...]] = []
        self._batch_done: asyncio.Future[None] | None = None
        self._filter = KeyFilter()
        for (key,) in self._db.execute("SELECT key FROM calls"):
            self._filter.add(key)

    def get(self, key: str, since: float | None = None) -> JournalEntry | None:
        """The recorded answer for `key` (only one recorded at or after `since`, when given)."""
        if key not in self._filter:
            return None
        if since is None:
            row = self._db.execute("SELECT result, cost_usd FROM calls WHERE key = ?", (key,)).fetchone()
        else:
            row = self._db.execute("SELECT result, cost_usd FROM calls WHERE key = ? AND created >= ?",
                                   (key, since)).fetchone()
        if row is None:
            return None
        return JournalEntry(ChatResult.from_dict(orjson.loads(row[0])), row[1])

    def _row(self, key: str, endpoint: str, model: str, result: ChatResult, cost_usd: float) -> tuple[Any, ...]:
        self._filter.add(key)
        return (key, endpoint, model, time.time(), result.usage.prompt_tokens, result.usage.completion_tokens,
                cost_usd, orjson.dumps(result.to_dict()))

    async def record(self, key: str, endpoint: str, model: str, result: ChatResult, cost_usd: float) -> None:
        """Record a response; returns once the transaction holding it has committed."""
        self._batch.append(self._row(key, endpoint, model, result, cost_usd))
        if self._batch_done is None:
            loop = asyncio.get_running_loop()
            self._batch_done = loop.create_future()
            loop.call_soon(self._commit_batch)
        await asyncio.shield(self._batch_done)

    def _commit_batch(self) -> None:
        batch, done = self._batch, self._batch_done
        self._batch, self._batch_done = [], None
        assert done is not None
        try:
            with self._db:  # one transaction
                self._db.execute("BEGIN")
                self._db.executemany(_INSERT, batch)
        except BaseException as e:
            done.set_exception(e)
            done.exception()
            return
        done.set_result(None)

    def total_cost(self) -> float:
        return self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM calls").fetchone()[0]

    def stats(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT endpoint, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd), "
            "SUM(LENGTH(result)), MIN(created), MAX(created) FROM calls GROUP BY endpoint, model ORDER BY 3 DESC"
        ).fetchall()
        keys = ("endpoint", "model", "calls", "prompt_tokens", "completion_tokens", "cost_usd", "bytes", "first", "last")
        return [dict(zip(keys, r)) for r in rows]

    def prune(self, older_than_s: float | None = None, model: str | None = None) -> int:
        clauses, args = [], []
        if older_than_s is not None:
            clauses.append("created < ?")
            args.append(time.time() - older_than_s)
        if model is not None:
            clauses.append("model = ?")
            args.append(model)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        n = self._db.execute(f"DELETE FROM calls{where}", args).rowcount
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        return n

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            self._db.close()
