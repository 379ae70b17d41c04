"""Batch mode for an endpoint: the calls a run makes go out as provider batches, at batch prices.

A recipe's `await llm.chat(...)` is unchanged; it simply takes longer. The gateway hands each call
that is not in the journal to the endpoint's `Batcher`, which gathers calls until none has come
for `batch_window_s` (or `batch_max` are waiting), then submits them as one batch. So a
multi-stage recipe runs stage after stage: each stage's requests form the next batch.

Nothing is paid twice, nothing is lost. Before anything is sent, the batch and its requests (the
journal key of each is its `custom_id`) are written to `batches.db` in the run dir, synchronously;
so is each id the provider gives back (the uploaded file, the batch), the moment it is known. Each
result is journaled as it is read. A run killed at any moment therefore resumes by polling and
reading the batches it had submitted, never by submitting them again: a batch whose creation was
cut off before its id was written is found at the provider (`find`) and adopted. A caller whose
request is in such a batch waits for it; results no caller is waiting for yet are journaled for
the caller to come.

Results are believed only whole (`_results`): a download cut short is downloaded again, never
paid again. Finishing: items that errored on the provider's side, expired, were cancelled or are
absent from the whole results are sent again — in a new batch, or online (`batch_retry: online`) —
up to `limits.max_retries` times; an item the provider refuses as a bad request fails its call with
the provider's message. Past the run's `--batch-deadline`, batches still running are cancelled,
what they answered is read, and everything else goes online. An answer cut by `max_tokens` is
kept and counted; with `--batch-retry-length` it is asked again, once, with twice the tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from synthtrace.engine.accounting import Accounting
from synthtrace.engine.cost import BATCH_DISCOUNT
from synthtrace.engine.journal import Journal
from synthtrace.engine.online import OnlineTransport
from synthtrace.llm.batches import FATAL, OK, BatchItem
from synthtrace.llm.providers import batch_api
from synthtrace.types import (
    ChatRequest,
    ChatResult,
    EndpointRefused,
    FatalError,
    LLMError,
    RateLimited,
    RetryableError,
    Struct,
)

if TYPE_CHECKING:
    from synthtrace.engine.gateway import Call

NOT_FOUND_GRACE_S = 120.0  # a batch read right after its creation may answer 404 for a while
LEDGER = "batches.db"
# No money left: asking again cannot help (OpenAI's insufficient_quota 429, Anthropic's credit balance 400).
_NO_CREDIT = re.compile(r"insufficient_quota|exceeded your current quota|credit balance", re.IGNORECASE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    local_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL,        -- prepared | uploaded | submitted | collected
    endpoint_config TEXT,       -- the endpoint as configured (no secrets: keys stay in the environment)
    file_id TEXT,
    batch_id TEXT,
    status TEXT,                -- the provider's word, as last read
    counts TEXT,
    note TEXT
);
CREATE TABLE IF NOT EXISTS items (
    local_id TEXT NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    line BLOB NOT NULL,         -- the request as the provider's batch takes it
    request BLOB NOT NULL,      -- what was asked, as the journal keeps it
    PRIMARY KEY (local_id, key)
);
"""


class BatchLedger:
    """`batches.db`: every batch of the run and its requests, written (and synced) before each step."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an id must survive anything, power cuts included
        self._db.executescript(_SCHEMA)

    def prepare(self, endpoint: str, kind: str, items: list[tuple[str, str, bytes, bytes]],
                config: dict[str, Any] | None = None) -> str:
        local_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(3).hex()}"
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO batches (local_id, endpoint, kind, created, state, endpoint_config) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (local_id, endpoint, kind, time.time(), "prepared",
                                                           orjson.dumps(config).decode() if config else None))
            self._db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?)",
                                 [(local_id, *item) for item in items])
        return local_id

    def set(self, local_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(f"UPDATE batches SET {cols} WHERE local_id = ?", (*fields.values(), local_id))

    def batches(self, endpoint: str | None = None, unfinished: bool = False) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM batches", []
        where = []
        if endpoint is not None:
            where.append("endpoint = ?")
            args.append(endpoint)
        if unfinished:
            where.append("state != 'collected'")
        if where:
            sql += " WHERE " + " AND ".join(where)
        cur = self._db.execute(sql + " ORDER BY created", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def batch(self, local_id: str) -> dict[str, Any]:
        cur = self._db.execute("SELECT * FROM batches WHERE local_id = ?", (local_id,))
        return dict(zip([d[0] for d in cur.description], cur.fetchone()))

    def items(self, local_id: str) -> list[tuple[str, str, bytes, bytes]]:
        return self._db.execute("SELECT key, model, line, request FROM items WHERE local_id = ?",
                                (local_id,)).fetchall()

    def claimed(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL")}

    def close(self) -> None:
        self._db.close()


class _Waiting(Struct):
    """A call waiting for its batch item: what to send again, and who waits."""

    __slots__ = ("call", "future", "tries", "cut_retried")

    def __init__(self, call: Call, future: asyncio.Future[tuple[ChatResult, float]]):
        self.call = call
        self.future = future
        self.tries = 0
        self.cut_retried = False

    @property
    def key(self) -> str:
        return self.call.key


class BatchStats(Struct):
    __slots__ = ("batches", "items", "answered", "resent", "online", "cut", "failed")

    def __init__(self) -> None:
        self.batches = 0  # batches submitted by this process
        self.items = 0  # requests in them
        self.answered = 0  # answers read from batches (this process)
        self.resent = 0  # items sent again (errored, expired, missing)
        self.online = 0  # items that went online instead (deadline, batch_retry: online)
        self.cut = 0  # answers cut by max_tokens
        self.failed = 0  # items the provider refused as bad requests


class Batcher:
    """The batches of one endpoint in one run: batch mode's transport. It journals each answer as it
    reads it (a result may come for a call of a later run), and asks online through the endpoint's
    `online` transport what must go online (past the deadline, `batch_retry: online`)."""

    journals = True

    def __init__(self, name: str, api: Any, ledger: BatchLedger, *, endpoint_config: dict[str, Any],
                 journal: Journal, accounting: Accounting, online: OnlineTransport, window_s: float, max_items: int,
                 poll_s: float, deadline: float | None, retry: str, retry_length: bool, max_retries: int,
                 say: Callable[[str], None]):
        self.name = name
        self.api = api
        self.endpoint_config = endpoint_config
        self.ledger = ledger
        self.journal = journal
        self.accounting = accounting
        self.online = online
        self.window_s = window_s
        self.max_items = min(max_items, api.max_items)
        self.poll_s = poll_s
        self.deadline = deadline  # monotonic time after which nothing new is batched
        self.retry = retry
        self.retry_length = retry_length
        self.max_retries = max_retries
        self.say = say
        self.stats = BatchStats()
        self.waiting: dict[str, _Waiting] = {}  # key → its caller
        self.pending: list[_Waiting] = []  # not yet in a batch
        self.in_batch: dict[str, str] = {}  # key → local id of the unfinished batch that holds it
        self.refused: EndpointRefused | None = None
        self.broken: dict[str, BaseException] = {}  # local id → why that batch could not finish in this run
        self._last_arrival = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._resumed = False

    @property
    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def resume(self) -> None:
        """Pick up the batches an earlier run submitted and did not finish: poll and read them."""
        if self._resumed:
            return
        self._resumed = True
        for b in self.ledger.batches(self.name, unfinished=True):
            keys = [row[0] for row in self.ledger.items(b["local_id"])]
            for key in keys:
                self.in_batch[key] = b["local_id"]
            self._spawn(self._follow(b, resumed=True))

    async def send(self, call: Call) -> tuple[ChatResult, float, int]:
        """The answer to `call` from a batch (or online), journaled; its cost reserved at batch prices."""
        estimate, _ = await self.accounting.reserve(call.r, call.req, False, BATCH_DISCOUNT)
        try:
            result, cost = await self.ask(call)
        except BaseException:
            self.accounting.settle(estimate, 0.0)
            raise
        self.accounting.settle(estimate, cost)
        return result, cost, 1

    async def ask(self, call: Call) -> tuple[ChatResult, float]:
        """The answer to one call, from a batch (or online past the deadline); journaled before it returns."""
        self.resume()
        if self.refused is not None:
            raise self.refused
        fut: asyncio.Future[tuple[ChatResult, float]] = asyncio.get_running_loop().create_future()
        key = call.key
        w = _Waiting(call, fut)
        self.waiting[key] = w
        try:
            held = self.in_batch.get(key)
            if held in self.broken:
                raise self.broken[held]
            if held is None:  # else: submitted earlier, its result is on its way
                if self.past_deadline:
                    return await self._online(w)
                self._enqueue(w)
            return await fut
        finally:
            if self.waiting.get(key) is w:
                del self.waiting[key]

    def _enqueue(self, w: _Waiting) -> None:
        """Put `w` in the next batch: at once when that fills it, else once no call has come for the window."""
        self.pending.append(w)
        self._last_arrival = time.monotonic()
        if len(self.pending) >= self.max_items:
            self._flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_when_quiet())

    async def _online(self, w: _Waiting) -> tuple[ChatResult, float]:
        """Ask `w` online, through the endpoint's online transport, and journal the answer."""
        self.stats.online += 1
        call = w.call
        result, cost, _ = await self.online.send(call)
        await self.journal.record(call.key, self.name, call.r.model, result, cost, request=call.request)
        return result, cost

    async def _flush_when_quiet(self) -> None:
        while self.pending:
            wait = self._last_arrival + self.window_s - time.monotonic()
            if wait > 0 and not self.past_deadline:
                await asyncio.sleep(wait)
                continue
            self._flush()

    def _flush(self) -> None:
        """Submit what is pending as one batch (online instead, past the deadline)."""
        todo, self.pending = self.pending[:self.max_items], self.pending[self.max_items:]
        todo = [w for w in todo if not w.future.done()]
        if not todo:
            return
        if self.past_deadline:
            for w in todo:
                self._spawn(self._answer_online(w))
            return
        items = [(w.key, w.call.r.model, self.api.line(w.key, w.call.req), orjson.dumps(w.call.request))
                 for w in todo]
        local_id = self.ledger.prepare(self.name, self.api.kind, items, self.endpoint_config)  # before anything is sent
        for w in todo:
            self.in_batch[w.key] = local_id
        self.stats.batches += 1
        self.stats.items += len(todo)
        self._spawn(self._follow(self.ledger.batch(local_id), resumed=False))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_online(self, w: _Waiting) -> None:
        try:
            result, cost = await self._online(w)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            if not w.future.done():
                w.future.set_exception(e)
            return
        if not w.future.done():
            w.future.set_result((result, cost))

    # -- one batch, from its upload to its last result ---------------------------------------------

    async def _follow(self, b: dict[str, Any], resumed: bool) -> None:
        """Take batch `b` from wherever it is (a `resumed` one: where an earlier run left it) to its end."""
        local_id = b["local_id"]
        rows = self.ledger.items(local_id)
        lines = [row[2] for row in rows]
        try:
            if b["batch_id"] is None:
                # An earlier run may have been cut off during the create: the batch would exist, unrecorded.
                cut_off = resumed and (b["state"] == "uploaded" or not self.api.uploads)
                if b["state"] == "prepared" and self.api.uploads:
                    b["file_id"] = await self._step(lambda: self.api.upload(lines))
                    self.ledger.set(local_id, state="uploaded", file_id=b["file_id"])
                found = None
                if cut_off:
                    found = await self._step(lambda: self.api.find(b["file_id"], b["created"], len(lines),
                                                                   self.ledger.claimed()))
                b["batch_id"] = found or await self._step(lambda: self.api.create(b["file_id"], lines, local_id))
                self.ledger.set(local_id, state="submitted", batch_id=b["batch_id"])
                self.say(f"batch {b['batch_id']}: found at the provider and adopted (its creation was cut off)"
                         if found else f"batch {b['batch_id']}: {len(lines):,} requests submitted at half price")
            elif resumed:
                self.say(f"batch {b['batch_id']} ({len(lines):,} requests), submitted earlier: reading it")
            status = await self._poll(b)
            items = await self._results(b, status)
            await self._collect(b, rows, items, status)
        except EndpointRefused as e:
            self.refused = e
            self._fail(local_id, rows, e)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a batch that cannot go on: its callers are told why
            self._fail(local_id, rows,
                       e if isinstance(e, LLMError) else RetryableError(f"{self.name}: batch {local_id}: {e}"))

    async def _step(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """One API call, retried on what retrying can mend; a refused key stops the run."""
        for attempt in itertools.count():
            try:
                return await call()
            except FatalError as e:
                if e.run_level or e.status == 402 or _NO_CREDIT.search(str(e)):
                    raise EndpointRefused(str(e), e.status) from e
                raise
            except RetryableError as e:
                if isinstance(e, RateLimited) and _NO_CREDIT.search(str(e)):  # OpenAI: 429 insufficient_quota
                    raise EndpointRefused(str(e), 429) from e
                if attempt >= self.max_retries:
                    raise
                await asyncio.sleep(min(30.0, 0.25 * 2 ** attempt))
        raise AssertionError("unreachable")

    async def _poll(self, b: dict[str, Any]) -> Any:
        """Read the batch's status until it has ended; cancel it once the deadline has passed."""
        created = time.monotonic()
        cancelled = False
        while True:
            try:
                status = await self._step(lambda: self.api.status(b["batch_id"]))
            except FatalError as e:
                if e.status == 404 and time.monotonic() - created < NOT_FOUND_GRACE_S:
                    await asyncio.sleep(self.poll_s)
                    continue
                raise
            self.ledger.set(b["local_id"], status=status.status, counts=orjson.dumps(status.counts).decode())
            if status.ended:
                return status
            if self.past_deadline and not cancelled:
                cancelled = True
                self.say(f"batch {b['batch_id']}: --batch-deadline passed: cancelled; what it has not answered "
                         "goes online")
                await self._step(lambda: self.api.cancel(b["batch_id"]))
            await asyncio.sleep(self.poll_s)

    async def _results(self, b: dict[str, Any], status: Any) -> list[BatchItem]:
        """Every result of an ended batch, read from whole files.

        A download that breaks off, stops mid-line or holds a line that does not parse is downloaded
        again, and so are all of the batch's files while together they hold fewer results than the
        batch counts (its status is read again then too): downloads are free, asking again is not.
        After `max_retries` downloads again (with backoff), files that came back the same twice are
        the provider's own: what they hold is believed and what they lack is asked again. Otherwise
        the batch stays on record unread, for the next run of the same command to read, and its
        callers are told so.
        """
        got: dict[str, tuple[bytes, list[BatchItem], str]] = {}  # url → its last download, items, problem
        same: dict[str, bool] = {}  # url → its last two downloads were byte for byte the same
        short = False
        for attempt in itertools.count():
            if short:
                status = await self._step(lambda: self.api.status(b["batch_id"]))
            urls = self.api.result_urls(status)
            for url in urls:
                if url in got and not got[url][2] and not short:
                    continue  # whole already
                try:
                    data = await self._step(lambda: self.api.download(url))  # noqa: B023 - awaited at once
                except RetryableError as e:
                    raise RetryableError(f"{self.name}: batch {b['batch_id']}: its results could not be downloaded "
                                         f"({e}); the next run of the same command reads them again") from e
                same[url] = url in got and got[url][0] == data
                got[url] = (data, *self.api.read_results(data))
            items = [item for url in urls for item in got[url][1]]
            problems = [f"{url.rsplit('/', 2)[-2]}: {got[url][2]}" for url in urls if got[url][2]]
            expected = self.api.expected_results(status)
            short = not problems and len(items) < expected
            if short:
                problems.append(f"{len(items):,} results where the batch counts {expected:,}")
            if not problems:
                return items
            what = "; ".join(problems)
            if attempt >= self.max_retries:
                suspect = urls if short else [url for url in urls if got[url][2]]
                if suspect and all(same[url] for url in suspect):
                    self.say(f"batch {b['batch_id']}: its results stay incomplete after {attempt + 1} downloads "
                             f"({what}): what they hold is kept, the rest is asked again")
                    return items
                raise RetryableError(f"{self.name}: batch {b['batch_id']}: its results did not come whole in "
                                     f"{attempt + 1} downloads ({what}); the next run of the same command "
                                     "reads them again")
            if attempt == 0:
                self.say(f"batch {b['batch_id']}: results not whole ({what}): downloading them again")
            await asyncio.sleep(min(30.0, min(self.poll_s, 1.0) * 2 ** attempt))
        raise AssertionError("unreachable")

    async def _collect(self, b: dict[str, Any], rows: list[tuple[str, str, bytes, bytes]], items: list[BatchItem],
                       status: Any) -> None:
        """Journal each answer, hand it to its caller; send again what did not come back."""
        by_key = {row[0]: row for row in rows}
        seen: dict[str, BatchItem] = {}
        for item in items:
            if item.custom_id in by_key:
                seen[item.custom_id] = item
        answers = [a for a in await asyncio.gather(*(self._answered(key, by_key[key], item.result)
                                                     for key, item in seen.items() if item.outcome == OK)) if a]
        self.ledger.set(b["local_id"], state="collected", note=status.problem or None)
        if status.problem:
            self.say(f"batch {b['batch_id']} failed as a whole ({status.problem}): its requests go online")
        for key, result, cost in answers:  # callers are looked up now: one may have come while the journal wrote
            w = self.waiting.get(key)
            if w is not None and not w.future.done():
                w.future.set_result((result, cost))
        for key in by_key:
            if self.in_batch.get(key) == b["local_id"]:
                del self.in_batch[key]
        again: list[_Waiting] = []
        for key in by_key:
            item = seen.get(key)
            w = self.waiting.get(key)
            if item is not None and item.outcome == OK or w is None or w.future.done():
                continue  # answered; or nobody waits (a later run asks it again, from the journal or anew)
            why = status.problem or (item.error if item is not None else "absent from the batch's whole results")
            if item is not None and item.outcome == FATAL:
                self.stats.failed += 1
                w.future.set_exception(FatalError(f"{self.name}: batch item refused: {why}"))
                continue
            w.tries += 1
            if w.tries > self.max_retries:
                w.future.set_exception(RetryableError(f"{self.name}: no batch answer after {w.tries} tries: {why}"))
                continue
            again.append(w)
        if again:
            self.stats.resent += len(again)
            if self.retry == "online" or self.past_deadline or status.problem:
                for w in again:
                    self._spawn(self._answer_online(w))
            else:
                self.pending.extend(again)
                self._flush()

    async def _answered(self, key: str, row: tuple[str, str, bytes, bytes], result: ChatResult | None
                        ) -> tuple[str, ChatResult, float] | None:
        """Journal one answer read from a batch; None when it is asked again instead."""
        assert result is not None
        model, request = row[1], orjson.loads(row[3])
        w = self.waiting.get(key)
        if result.finish_reason in ("length", "max_tokens"):
            self.stats.cut += 1
            if self.retry_length and w is not None and not w.cut_retried:
                # Asked again once with twice the tokens; the cut answer is not kept.
                w.cut_retried = True
                req = w.call.req
                tokens = int(req.params.get("max_tokens") or 1024) * 2
                w.call.req = ChatRequest(req.model, req.messages, {**req.params, "max_tokens": tokens}, req.schema,
                                         req.schema_name)
                self._enqueue(w)
                return None
        cost = self.accounting.cost(model, result, discount=BATCH_DISCOUNT)
        await self.journal.record(key, self.name, model, result, cost, request={**request, "via": "batch"})
        self.accounting.count(model, result, cost, batch=True)
        self.stats.answered += 1
        return key, result, cost

    def _fail(self, local_id: str, rows: list[tuple[str, str, bytes, bytes]], error: BaseException) -> None:
        """Tell the callers of batch `local_id` why it cannot finish; it stays on record for the next
        run, and a call of this run that would wait for it is told the same at once."""
        self.broken[local_id] = error
        for row in rows:
            w = self.waiting.get(row[0])
            if w is not None and not w.future.done():
                w.future.set_exception(error)

    async def aclose(self) -> None:
        for task in list(self._tasks) + ([self._flusher] if self._flusher else []):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.api.aclose()


# -- `synthtrace batch status|cancel RUN` ------------------------------------------------------------


def _api_for(row: dict[str, Any]) -> Any:
    """The batch API client for a ledger row, from the endpoint it stored (keys from the environment)."""
    from synthtrace.config import Endpoint

    endpoint = Endpoint(**orjson.loads(row["endpoint_config"] or "{}"))
    api_class = batch_api(endpoint.kind)
    if api_class is None:
        raise ValueError(f"endpoint {row['endpoint']!r}: provider kind {endpoint.kind!r} has no batch API")
    return api_class(row["endpoint"], endpoint)


async def run_batches(run: Path, cancel: bool = False) -> list[dict[str, Any]]:
    """The batches of run dir `run`, each with its status as the provider says it now (for those not
    yet read whole); with `cancel`, those still running are cancelled first (the next run of the same
    command reads what they answered and asks the rest again)."""
    path = run / LEDGER
    if not path.exists():
        raise FileNotFoundError(f"{run}: no {LEDGER} (this run sent no batches)")
    ledger = BatchLedger(path)
    apis: dict[str, Any] = {}
    out = []
    try:
        for b in ledger.batches():
            b = {**b, "requests": len(ledger.items(b["local_id"])), "live": None, "cancelled": False}
            if b["state"] != "collected":
                api = apis.get(b["endpoint"]) or apis.setdefault(b["endpoint"], _api_for(b))
                if b["batch_id"] is None:  # its creation may have been cut off: look for it
                    with contextlib.suppress(LLMError):
                        b["batch_id"] = await api.find(b["file_id"], b["created"], b["requests"], ledger.claimed())
                if b["batch_id"] is not None:
                    try:
                        status = await api.status(b["batch_id"])
                        if cancel and not status.ended:
                            await api.cancel(b["batch_id"])
                            b["cancelled"] = True
                            status = await api.status(b["batch_id"])
                        b["live"] = status
                        ledger.set(b["local_id"], status=status.status, counts=orjson.dumps(status.counts).decode())
                    except LLMError as e:
                        b["error"] = str(e)
            out.append(b)
    finally:
        for api in apis.values():
            await api.aclose()
        ledger.close()
    return out
