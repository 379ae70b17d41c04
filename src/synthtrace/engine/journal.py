"""The request journal: every successful response, durably recorded before its caller sees it.

SQLite in WAL mode, keyed by a hash of the canonical request (resolved model and endpoint,
messages, params, schema, sample index), never by code. A re-run with the same requests replays
from here and pays nothing; `kill -9` loses at most the answers not yet committed. WAL with
synchronous=NORMAL survives a killed process (the OS holds the written pages); it trades the last
transactions of a power cut for a commit that costs microseconds instead of an fsync.

`record` is group commit on a writer thread: while answers stream in, an answer waits
GROUP_COMMIT_S (5 ms) for others; answers that arrive while the previous transaction is being
written share the next one; and each caller resumes (its own future is set) only after the
transaction holding its answer has committed. The event loop never waits on SQLite: every thousand
pages SQLite checkpoints the WAL inside a commit (copying pages and two fsyncs), which on the loop
would stall every request in flight. The writer has a connection of its own; reads stay on the loop's
connection (WAL lets them run beside a write). Closing starts with `begin_close`: answers still
waiting for a transaction (a cancelled caller's too) are committed, and the writer checkpoints the
WAL (its fsyncs) while the run writes its manifest and closes its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from synthtrace.types import ChatResult, Struct

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    result BLOB NOT NULL,
    request BLOB  -- what was asked (messages, params, schema name), for `synthtrace view`
);
"""

_INSERT = ("INSERT OR REPLACE INTO calls (key, endpoint, model, created, prompt_tokens, completion_tokens, "
           "cost_usd, result, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
WAL_SIZE_LIMIT = 1 << 20  # bytes a checkpointed WAL file is cut back to
IDLE_CHECKPOINT_S = 0.05  # the writer checkpoints once no answer has come for this long
# While answers stream in (the last commit ended less than this ago), an answer waits this long for
# others to share its transaction: a burst then makes a few large commits, not many small ones that
# each take the GIL from the loop mid-burst. After a pause an answer goes at once.
GROUP_COMMIT_S = 0.005  # (the caller says when nothing else is in flight: that answer goes at once)

# rows for one transaction, their callers, and the loop those callers wait on
_Batch = tuple[list[tuple[Any, ...]], list[asyncio.Future[None]], asyncio.AbstractEventLoop]


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

    BITS = 1 << 24  # positions are 24-bit slices of the key

    def __init__(self) -> None:
        self._bits = bytearray()  # allocated on the first add, off the start-up path

    def add(self, key: str) -> None:
        if not self._bits:
            self._bits = bytearray(self.BITS // 8)
        v, bits = int(key[:24], 16), self._bits
        for p in (v & 0xFFFFFF, (v >> 32) & 0xFFFFFF, (v >> 64) & 0xFFFFFF):
            bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, key: str) -> bool:
        # three 24-bit slices of the key's first 96 bits; most lookups miss at the first
        v, bits = int(key[:24], 16), self._bits
        if not bits:
            return False
        p = v & 0xFFFFFF
        if not bits[p >> 3] >> (p & 7) & 1:
            return False
        p = (v >> 32) & 0xFFFFFF
        if not bits[p >> 3] >> (p & 7) & 1:
            return False
        p = (v >> 64) & 0xFFFFFF
        return bool(bits[p >> 3] >> (p & 7) & 1)


class JournalEntry(Struct):
    """A recorded answer and what it cost."""

    __slots__ = ("result", "cost_usd")

    def __init__(self, result: ChatResult, cost_usd: float):
        self.result = result
        self.cost_usd = cost_usd


class Journal:
    def __init__(self, path: str | Path, replay_earlier: bool = True):
        """`replay_earlier=False` (a --fresh run) skips reading earlier keys: none of them will be replayed."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()
        self._db.executescript(_SCHEMA)
        if "request" not in {row[1] for row in self._db.execute("PRAGMA table_info(calls)")}:
            self._db.execute("ALTER TABLE calls ADD COLUMN request BLOB")  # a journal from before requests were kept
        self._batch: list[tuple[Any, ...]] = []  # answers waiting for the next transaction
        self._waiters: list[asyncio.Future[None]] = []  # their callers
        self._scheduled = False  # _write_batch is due on the loop
        self._timer: asyncio.TimerHandle | None = None  # when it is due after GROUP_COMMIT_S
        self._writing = False  # a batch is on the writer thread
        self._last_commit = 0.0  # when the writer last finished a transaction (monotonic)
        self._inbox: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()  # to the writer thread
        self._writer: threading.Thread | None = None  # owns a connection of its own
        self._closing = False  # begin_close has sent the writer its last batch
        self._filter = KeyFilter()
        if replay_earlier:  # a million keys take a second or two to read
            for (key,) in self._db.execute("SELECT key FROM calls"):
                self._filter.add(key)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=NORMAL")  # before the switch to WAL: creating the file syncs less
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=5000")
        # A checkpointed WAL is cut back to this size rather than kept at its high-water mark (4 MB at
        # SQLite's default of 1,000 pages): deleting it at close costs less, and so does the disk.
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return db

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

    def _row(self, key: str, endpoint: str, model: str, result: ChatResult, cost_usd: float,
             request: dict[str, Any] | None) -> tuple[Any, ...]:
        self._filter.add(key)
        return (key, endpoint, model, time.time(), result.usage.prompt_tokens, result.usage.completion_tokens,
                cost_usd, orjson.dumps(result.to_dict()), None if request is None else orjson.dumps(request))

    async def record(self, key: str, endpoint: str, model: str, result: ChatResult, cost_usd: float,
                     more_coming: bool = True, request: dict[str, Any] | None = None) -> None:
        """Record a response (and the request it answers); returns once the transaction holding it has
        committed.

        `more_coming=False` says no other answer is on its way (nothing else in flight): the
        transaction then goes at once instead of waiting for company."""
        if self._closing:
            raise RuntimeError(f"journal {self.path} is closing")
        self._batch.append(self._row(key, endpoint, model, result, cost_usd, request))
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        if not self._writing:
            if not more_coming and self._timer is not None:  # the last of a burst: stop waiting for company
                self._timer.cancel()
                self._timer = None
                self._scheduled = False
            if not self._scheduled:
                self._scheduled = True
                if more_coming and time.monotonic() - self._last_commit < GROUP_COMMIT_S:  # streaming: gather
                    self._timer = loop.call_later(GROUP_COMMIT_S, self._write_batch)
                else:  # the first after a pause, or the last of a burst, goes at once with this tick's
                    loop.call_soon(self._write_batch)
        await waiter

    def _write_batch(self) -> None:
        """Hand the waiting answers to the writer thread (on the loop; the writer is idle)."""
        self._scheduled = False
        self._timer = None
        if not self._batch:
            return
        batch, waiters = self._batch, self._waiters
        self._batch, self._waiters = [], []
        self._writing = True
        self._start_writer()
        self._inbox.put((batch, waiters, waiters[0].get_loop()))

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="synthtrace-journal", daemon=True)
            self._writer.start()

    def _write_loop(self) -> None:
        """The writer thread: one transaction per batch, then the batch's callers are woken on the loop.

        A plain thread and queue, and one wake-up future per caller: the cheapest hand-off there is
        (executor futures, or one shared future behind asyncio.shield, cost far more per request).
        """
        db: sqlite3.Connection | None = None
        unsynced = False  # answers written since the last checkpoint
        try:
            while True:
                try:
                    item = self._inbox.get(timeout=IDLE_CHECKPOINT_S) if unsynced else self._inbox.get()
                except queue.Empty:
                    # A pause in the answers (between rounds of slow requests, say): fold the WAL into
                    # the database now, while nobody waits, so that close has little left to sync.
                    unsynced = False
                    with contextlib.suppress(sqlite3.Error):  # e.g. busy: the next pause tries again
                        assert db is not None
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    continue
                if item is None:  # closing: fold the WAL into the database here, beside the loop's own winding down
                    if db is not None and unsynced:
                        with contextlib.suppress(sqlite3.Error):
                            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    break
                batch, waiters, loop = item
                error: BaseException | None = None
                try:
                    if db is None:
                        db = self._connect()
                    with db:
                        db.execute("BEGIN")
                        db.executemany(_INSERT, batch)
                    unsynced = True
                except BaseException as e:  # noqa: BLE001 - handed to the callers on the loop
                    error = e
                try:
                    loop.call_soon_threadsafe(self._written, waiters, error)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    pass
        finally:
            if db is not None:
                db.close()

    def _written(self, waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
        """Back on the loop: wake the batch's callers, and send the answers that came in meanwhile."""
        self._writing = False
        self._last_commit = time.monotonic()
        for waiter in waiters:
            if not waiter.done():  # a cancelled caller's answer is committed all the same
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        self._write_batch()

    def begin_close(self) -> None:
        """Start closing: answers still waiting for a transaction go to the writer, which commits them,
        checkpoints the WAL (two fsyncs) and stops, while the caller goes on winding down; `close` waits."""
        if self._closing:
            return
        self._closing = True
        if self._batch:  # e.g. an interrupted run: a cancelled caller's answer is committed all the same
            batch, waiters = self._batch, self._waiters
            self._batch, self._waiters = [], []
            self._start_writer()
            self._inbox.put((batch, waiters, waiters[0].get_loop()))
        if self._writer is not None:
            self._inbox.put(None)

    def _stop_writer(self) -> None:
        self.begin_close()
        if self._writer is None:
            return
        self._writer.join()
        self._writer = None

    def call(self, key: str) -> dict[str, Any] | None:
        """Everything recorded about one call: model, time, tokens, cost, the answer and the request."""
        row = self._db.execute("SELECT endpoint, model, created, prompt_tokens, completion_tokens, cost_usd, result, "
                               "request FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        names = ("endpoint", "model", "created", "prompt_tokens", "completion_tokens", "cost_usd")
        return {"key": key, **dict(zip(names, row[:6])), "result": orjson.loads(row[6]),
                "request": orjson.loads(row[7]) if row[7] else None}

    def spending(self) -> list[tuple[float, int, float]]:
        """(when, tokens, cost) of every call, oldest first."""
        return self._db.execute("SELECT created, prompt_tokens + completion_tokens, cost_usd FROM calls "
                                "ORDER BY created").fetchall()

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
            self._stop_writer()
        finally:
            self._db.close()  # the last connection: SQLite checkpoints what is left and removes the WAL
