"""The fake provider's batch APIs: OpenAI's Batch API and Anthropic's Message Batches, with injectable faults.

Routes (served by `FakeProvider` next to the online ones, same port)::

    OpenAI      POST /v1/files                   multipart upload (purpose=batch, file=<JSONL>)
                GET  /v1/files/{id}              file object;  DELETE /v1/files/{id}
                GET  /v1/files/{id}/content      raw bytes of an input, output or error file
                POST /v1/batches                 create from an uploaded file
                GET  /v1/batches/{id}            the batch object
                POST /v1/batches/{id}/cancel
                GET  /v1/batches?limit=&after=   newest first
    Anthropic   POST /v1/messages/batches        create from {"requests": [{custom_id, params}]}
                GET  /v1/messages/batches/{id}
                GET  /v1/messages/batches/{id}/results   JSONL, once the batch has ended
                POST /v1/messages/batches/{id}/cancel
                GET  /v1/messages/batches?limit=&after_id=

A batch's state is computed lazily from the clock whenever it is read (no background tasks). OpenAI:
``validating`` (for `BatchFaults.validating_s`) → ``in_progress`` (until `complete_after_s` after
creation) → ``finalizing`` (for `finalizing_s`) → ``completed``, or ``expired`` when any item expired,
or ``failed`` when the input file did not validate. Anthropic: ``in_progress`` over the same span, then
``ended``. A cancel gives ``cancelling``/``canceling`` for `cancel_s`, then ``cancelled``/``ended``.

Every item is answered once, when its batch passes to finalizing (or to cancelled), by exactly the
online logic: scripts from `FakeProvider.script` (a scripted `Fault.status` makes the item errored
with that status; other faults except `Fault.timeout` make it errored with 500), else the default
answer, built by the same `answer_for` and `BODY_BUILDERS` as an online answer. The online random
`fault_rates` do not apply; batches have their own faults in `BatchFaults` (``fp.batch_faults``), and
their own ledger (``fp.batch_items``, ``fp.batch_succeeded()``, ...): the online ledger counts only
online requests. In tests::

    fp.batch_faults.complete_after_s = 0.2          # in progress for 200 ms, then answered
    fp.batch_faults.errored_ids = {"r3"}            # r3 errors the first time it is answered
    fp.batch_faults.truncate_outputs = 1            # the next batch's output is cut mid-line
    fp.batch_faults.cut_downloads = "drop"          # every results file's first download breaks off
    ...  # point a batch client at fp.openai_base / fp.anthropic_base
    assert set(fp.batch_succeeded().values()) == {1}   # every custom_id answered exactly once
    assert fp.batch_creates() == 1 and fp.requests == []
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import email.message
import email.parser
import email.policy
import itertools
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from synthtrace.testing.fake_answers import (
    ANTHROPIC,
    BODY_BUILDERS,
    OPENAI,
    answer_for,
    error_body,
    last_user_text,
    request_error,
)
from synthtrace.testing.faults import STATUS, TIMEOUT, Fault

if TYPE_CHECKING:
    from synthtrace.testing.fake_provider import FakeProvider, _Exchange

BATCH_PREFIXES = ("/v1/files", "/v1/batches", "/v1/messages/batches")  # checked only when no online route matched
CHAT_ENDPOINT = "/v1/chat/completions"
WINDOW_S = 24 * 3600.0  # the completion window / Anthropic's expiry: 24 hours
ANTHROPIC_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
OCTET = "application/octet-stream"
JSONL = "application/x-jsonl"
JSON = "application/json"

SUCCEEDED, ERRORED, EXPIRED, CANCELED = "succeeded", "errored", "expired", "canceled"
TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})

Reply = tuple[int, bytes, str]  # status, body, content type


@dataclass
class BatchFaults:
    """Timing and faults of the batch APIs (``fp.batch_faults``). Plain attributes: a test may set
    them at any time, from any thread; they are read when a batch is created or read.

    Timings are read live, so e.g. ``complete_after_s = 3600`` holds batches in progress until a
    test sets it back to 0. A phase once reached is never left again.
    """

    validating_s: float = 0.0  # OpenAI only: how long a new batch says "validating"
    complete_after_s: float = 0.0  # from creation until the items are answered (→ finalizing)
    finalizing_s: float = 0.0  # finalizing (Anthropic: still "in_progress") before completed/ended
    cancel_s: float = 0.0  # cancelling/canceling before cancelled/ended
    errored: float = 0.0  # fraction of items answered errored (HTTP 500 / api_error), seeded draw per item
    expired: float = 0.0  # fraction of items expired, same draw (errored takes the low end of it)
    errored_ids: set[str] = field(default_factory=set)  # custom_ids errored the first time they are answered
    expired_ids: set[str] = field(default_factory=set)  # custom_ids expired the first time they are answered
    done_before_cancel: float = 0.0  # fraction of items (the first ones) answered before a cancel lands
    not_found_reads: int = 0  # a new batch's first N GETs answer 404 (eventual consistency)
    truncate_outputs: int = 0  # the next N batches' output file / results are cut short (counts down)
    # The first `cut_downloads_per_file` downloads of every output, error or results file break:
    # "short" answers a complete HTTP response whose body stops mid-line; "drop" sends the whole
    # Content-Length header, half the body, and closes the connection. Later downloads are whole.
    cut_downloads: str = ""
    cut_downloads_per_file: int = 1
    hold_s: dict[str, float] = field(default_factory=dict)  # "upload" | "create" | "poll" | "download" → s
    fail_create: int | None = None  # answer every create with this HTTP status (no batch is created)
    fail_create_message: str = "injected batch create failure"  # … and this message
    seed: int = 0  # of the per-batch generator that draws `errored` / `expired`


@dataclass(slots=True)
class BatchItem:
    """One batch item's outcome, recorded when the server answered (or canceled) it."""

    batch_id: str
    custom_id: str
    outcome: str  # succeeded | errored | expired | canceled
    prompt: str  # last user message of the item's request
    status: int | None = None  # the item's HTTP status (200, 500, a scripted one); None: expired/canceled
    truncated: bool = False  # its result line was cut or left out of a truncated output


@dataclass(slots=True)
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: float


@dataclass(eq=False)
class Batch:
    """One batch as the server keeps it (``fp.batches[id]``). `status` is the wire status, up to date."""

    id: str
    dialect: str  # "openai" | "anthropic"
    custom_ids: list[str]
    params: list[Any]  # each item's request body, in input order
    created_at: float
    store: BatchStore = field(repr=False)
    input_file_id: str | None = None
    endpoint: str = CHAT_ENDPOINT
    completion_window: str = "24h"
    metadata: Any = None
    errors: dict[str, Any] | None = None  # OpenAI input validation errors: the batch goes to "failed"
    phase: str = "validating"  # validating in_progress finalizing completed expired failed cancelling cancelled
    times: dict[str, float] = field(default_factory=dict)  # phase → when the batch entered it
    outcomes: dict[str, str] = field(default_factory=dict)  # custom_id → outcome, once answered
    output_file_id: str | None = None
    error_file_id: str | None = None
    results: bytes | None = None  # Anthropic results JSONL
    not_found_left: int = 0

    @property
    def status(self) -> str:
        """The status as the API would report it now (OpenAI ``status`` / Anthropic ``processing_status``)."""
        with self.store.lock:
            self.store.advance(self)
            return self.wire_status()

    def __getitem__(self, key: str) -> Any:
        """``batch["status"]``, ``batch["custom_ids"]``, ...: the attributes, read like a dict."""
        if key == "status" or key in _BATCH_FIELDS:
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def wire_status(self) -> str:
        if self.dialect == OPENAI:
            return self.phase
        if self.phase in TERMINAL:
            return "ended"
        return "canceling" if self.phase == "cancelling" else "in_progress"

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)


_BATCH_FIELDS = frozenset(Batch.__dataclass_fields__) - {"store"}


class BatchStore:
    """Files, batches and the batch ledger of one `FakeProvider`; handles every batch route."""

    def __init__(self, fp: FakeProvider):
        self.fp = fp
        self.lock = threading.RLock()  # the server thread and test threads (reading `status`) both advance
        self.batches: dict[str, Batch] = {}
        self.files: dict[str, _File] = {}
        self.items: list[BatchItem] = []
        self.creates: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.downloads: collections.Counter[str] = collections.Counter()  # file or batch id → downloads served
        self._forced_used: set[tuple[str, str]] = set()  # (outcome, custom_id) already forced once
        # ids keep counting across `clear`, so an id from before a reset is unknown, never reused
        self._file_ids, self._batch_ids, self._req_ids = itertools.count(1), itertools.count(1), itertools.count(1)

    def clear(self) -> None:
        with self.lock:
            self.batches.clear()
            self.files.clear()
            self.items.clear()
            self.creates.clear()
            self.calls.clear()
            self.downloads.clear()
            self._forced_used.clear()

    # --- routing -------------------------------------------------------------------------------

    def handle(self, ex: _Exchange, path: str) -> None:
        """Answer one request under `BATCH_PREFIXES` (on the server's loop)."""
        try:
            with self.lock:  # creates happen here, and the counters are read from other threads
                hold, make = self._route(ex, path)
        except Exception as e:  # noqa: BLE001 - a bug here must answer, not hang the connection
            hold, make = None, _const((500, orjson.dumps({"error": {"message": f"fake batch API: {e!r}"}}), JSON))
        seconds = float(self.fp.batch_faults.hold_s.get(hold, 0.0) or 0.0) if hold else 0.0
        if seconds > 0 and not self.fp._stopped:
            asyncio.get_running_loop().call_later(seconds, self._deliver, ex, make)
        else:
            self._deliver(ex, make)

    def _deliver(self, ex: _Exchange, make: Callable[[], Reply]) -> None:
        if ex.conn.closed:  # the client left during a hold
            return
        cut = ""
        try:
            with self.lock:
                status, data, content_type, *rest = make()
                cut = rest[0] if rest else ""
        except Exception as e:  # noqa: BLE001 - as in `handle`
            status, data, content_type = 500, orjson.dumps({"error": {"message": f"fake batch API: {e!r}"}}), JSON
        if cut == "short":  # a whole HTTP answer whose body stops in the middle of a line
            data = data[:_mid_line(data)]
        ex.conn.reply(ex, status, data, content_type, drop_after=_mid_line(data) if cut == "drop" else None)

    def _download(self, name: str, make: Callable[[], Reply]) -> Callable[[], Reply]:
        """`make` for a download of file or batch `name`, cut as `cut_downloads` says (the cut mode
        rides along as a fourth item)."""

        def download() -> Reply:
            reply = make()
            if reply[0] != 200 or not reply[1]:
                return reply
            self.downloads[name] += 1
            faults = self.fp.batch_faults
            cut = faults.cut_downloads if self.downloads[name] <= faults.cut_downloads_per_file else ""
            return (*reply, cut) if cut else reply  # type: ignore[return-value]

        return download

    def _route(self, ex: _Exchange, path: str) -> tuple[str | None, Callable[[], Reply]]:
        """(hold phase, a function making the answer) for this request. Creates happen here, on arrival."""
        parts = path.strip("/").split("/")[1:]  # without the leading "v1"
        method = ex.method
        query = urllib.parse.parse_qs(ex.path.partition("?")[2])
        if parts[:2] == ["messages", "batches"]:
            rest = parts[2:]
            if not rest:
                if method == "POST":
                    self.calls["anthropic:create"] += 1
                    return "create", _const(self._anthropic_create(ex.body))
                if method == "GET":
                    self.calls["anthropic:list"] += 1
                    return None, lambda: self._list(ANTHROPIC, query)
            elif len(rest) == 1 and method == "GET":
                self.calls["anthropic:poll"] += 1
                return "poll", lambda: self._poll(ANTHROPIC, rest[0])
            elif len(rest) == 2 and rest[1] == "results" and method == "GET":
                self.calls["anthropic:download"] += 1
                return "download", self._download(rest[0], lambda: self._anthropic_results(rest[0]))
            elif len(rest) == 2 and rest[1] == "cancel" and method == "POST":
                self.calls["anthropic:cancel"] += 1
                return None, lambda: self._cancel(ANTHROPIC, rest[0])
            return None, _const(_not_found(ANTHROPIC, f"no route for {method} {path}"))
        if parts[:1] == ["files"]:
            rest = parts[1:]
            if not rest and method == "POST":
                self.calls["openai:upload"] += 1
                return "upload", _const(self._upload(ex))
            if len(rest) == 1 and method == "GET":
                return None, lambda: self._file_object(rest[0])
            if len(rest) == 1 and method == "DELETE":
                return None, lambda: self._file_delete(rest[0])
            if len(rest) == 2 and rest[1] == "content" and method == "GET":
                self.calls["openai:download"] += 1
                return "download", self._download(rest[0], lambda: self._file_content(rest[0]))
        elif parts[:1] == ["batches"]:
            rest = parts[1:]
            if not rest and method == "POST":
                self.calls["openai:create"] += 1
                return "create", _const(self._openai_create(ex.body))
            if not rest and method == "GET":
                self.calls["openai:list"] += 1
                return None, lambda: self._list(OPENAI, query)
            if len(rest) == 1 and method == "GET":
                self.calls["openai:poll"] += 1
                return "poll", lambda: self._poll(OPENAI, rest[0])
            if len(rest) == 2 and rest[1] == "cancel" and method == "POST":
                self.calls["openai:cancel"] += 1
                return None, lambda: self._cancel(OPENAI, rest[0])
        return None, _const(_not_found(OPENAI, f"no route for {method} {path}"))

    # --- OpenAI files ----------------------------------------------------------------------------

    def _upload(self, ex: _Exchange) -> Reply:
        try:
            fields = parse_multipart(ex.headers.get("content-type", ""), ex.body)
        except ValueError as e:
            return _openai_error(400, str(e))
        if "file" not in fields:
            return _openai_error(400, "Missing required parameter: 'file'.", param="file")
        if "purpose" not in fields:
            return _openai_error(400, "Missing required parameter: 'purpose'.", param="purpose")
        filename, data = fields["file"]
        with self.lock:
            rec = self._add_file(filename or "upload.jsonl", fields["purpose"][1].decode("utf-8", "replace"), data)
            return 200, orjson.dumps(_file_json(rec)), JSON

    def _add_file(self, filename: str, purpose: str, data: bytes) -> _File:
        rec = _File(f"file-{next(self._file_ids)}", filename, purpose, data, time.time())
        self.files[rec.id] = rec
        return rec

    def _file_object(self, file_id: str) -> Reply:
        rec = self.files.get(file_id)
        if rec is None:
            return _not_found(OPENAI, f"No such File object: {file_id}")
        return 200, orjson.dumps(_file_json(rec)), JSON

    def _file_delete(self, file_id: str) -> Reply:
        if self.files.pop(file_id, None) is None:
            return _not_found(OPENAI, f"No such File object: {file_id}")
        return 200, orjson.dumps({"id": file_id, "object": "file", "deleted": True}), JSON

    def _file_content(self, file_id: str) -> Reply:
        rec = self.files.get(file_id)
        if rec is None:
            return _not_found(OPENAI, f"No such File object: {file_id}")
        return 200, rec.data, OCTET

    # --- creating batches ------------------------------------------------------------------------

    def _openai_create(self, raw: bytes) -> Reply:
        with self.lock:
            self.creates[OPENAI] += 1
            faults = self.fp.batch_faults
            if faults.fail_create is not None:
                return faults.fail_create, orjson.dumps(error_body(OPENAI, faults.fail_create,
                                                                   faults.fail_create_message)), JSON
            body = _loads(raw)
            if not isinstance(body, dict):
                return _openai_error(400, "request body is not a JSON object")
            file_id = body.get("input_file_id")
            if not isinstance(file_id, str) or not file_id:
                return _openai_error(400, "Missing required parameter: 'input_file_id'.", param="input_file_id")
            rec = self.files.get(file_id)
            if rec is None:
                return _not_found(OPENAI, f"No such File object: {file_id}")
            if body.get("endpoint") != CHAT_ENDPOINT:
                return _openai_error(400, f"endpoint must be {CHAT_ENDPOINT!r} (the only one this fake serves)",
                                     param="endpoint")
            if body.get("completion_window") != "24h":
                return _openai_error(400, "completion_window must be '24h'", param="completion_window")
            custom_ids, params, problems = parse_openai_input(rec.data, CHAT_ENDPOINT)
            batch = Batch(f"batch_{next(self._batch_ids)}", OPENAI, custom_ids, params, time.time(), self,
                          input_file_id=file_id, metadata=body.get("metadata"),
                          errors={"object": "list", "data": problems} if problems else None,
                          not_found_left=int(faults.not_found_reads))
            self.batches[batch.id] = batch
            return 200, orjson.dumps(self._openai_json(batch)), JSON

    def _anthropic_create(self, raw: bytes) -> Reply:
        with self.lock:
            self.creates[ANTHROPIC] += 1
            faults = self.fp.batch_faults
            if faults.fail_create is not None:
                return faults.fail_create, orjson.dumps(error_body(ANTHROPIC, faults.fail_create,
                                                                   faults.fail_create_message)), JSON
            body = _loads(raw)
            requests = body.get("requests") if isinstance(body, dict) else None
            if not isinstance(requests, list) or not requests:
                return _anthropic_error(400, "invalid_request_error", "requests: Field required (a non-empty list)")
            custom_ids: list[str] = []
            params: list[Any] = []
            seen: set[str] = set()
            for k, req in enumerate(requests):
                cid = req.get("custom_id") if isinstance(req, dict) else None
                if not isinstance(cid, str) or not ANTHROPIC_CUSTOM_ID.match(cid):
                    return _anthropic_error(400, "invalid_request_error",
                                            f"requests.{k}.custom_id: String should match pattern "
                                            f"'^[a-zA-Z0-9_-]{{1,64}}$'")
                if cid in seen:
                    return _anthropic_error(400, "invalid_request_error",
                                            f"requests.{k}.custom_id: Duplicate custom_id {cid!r}; "
                                            "custom_ids must be unique within a batch")
                if not isinstance(req.get("params"), dict):
                    return _anthropic_error(400, "invalid_request_error", f"requests.{k}.params: Field required")
                seen.add(cid)
                custom_ids.append(cid)
                params.append(req["params"])
            batch = Batch(f"msgbatch_{next(self._batch_ids)}", ANTHROPIC, custom_ids, params, time.time(), self,
                          not_found_left=int(faults.not_found_reads))
            self.batches[batch.id] = batch
            return 200, orjson.dumps(self._anthropic_json(batch)), JSON

    # --- reading, listing, cancelling ------------------------------------------------------------

    def _get(self, dialect: str, batch_id: str) -> Batch | None:
        batch = self.batches.get(batch_id)
        return batch if batch is not None and batch.dialect == dialect else None

    def _render(self, batch: Batch) -> dict[str, Any]:
        self.advance(batch)
        return self._openai_json(batch) if batch.dialect == OPENAI else self._anthropic_json(batch)

    def _poll(self, dialect: str, batch_id: str) -> Reply:
        batch = self._get(dialect, batch_id)
        if batch is None or batch.not_found_left > 0:
            if batch is not None:
                batch.not_found_left -= 1
            return _not_found(dialect, f"No batch found with id '{batch_id}'.")
        return 200, orjson.dumps(self._render(batch)), JSON

    def _list(self, dialect: str, query: dict[str, list[str]]) -> Reply:
        newest_first = [b for b in reversed(self.batches.values()) if b.dialect == dialect]
        after = (query.get("after") or query.get("after_id") or [None])[0]
        if after is not None:
            ids = [b.id for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1:] if after in ids else []
        try:
            limit = int((query.get("limit") or ["20"])[0])
        except ValueError:
            limit = 20
        limit = max(1, min(limit, 100 if dialect == OPENAI else 1000))
        page = newest_first[:limit]
        data = [self._render(b) for b in page]
        out: dict[str, Any] = {"data": data, "has_more": len(newest_first) > limit,
                               "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None}
        if dialect == OPENAI:
            out = {"object": "list", **out}
        return 200, orjson.dumps(out), JSON

    def _cancel(self, dialect: str, batch_id: str) -> Reply:
        batch = self._get(dialect, batch_id)
        if batch is None:
            return _not_found(dialect, f"No batch found with id '{batch_id}'.")
        self.advance(batch)
        if batch.phase in TERMINAL:
            message = f"Cannot cancel a batch with status '{batch.wire_status()}'."
            if dialect == OPENAI:
                return _openai_error(409, message)
            return _anthropic_error(409, "invalid_request_error", message)
        if batch.phase in ("validating", "in_progress"):
            batch.phase = "cancelling"
            batch.times["cancelling"] = time.time()
            self.advance(batch)  # cancel_s == 0: cancelled at once
        # finalizing (answers exist already) or cancelling: nothing changes, the object is returned as is
        return 200, orjson.dumps(self._render(batch)), JSON

    # --- the clock ---------------------------------------------------------------------------------

    def advance(self, batch: Batch, now: float | None = None) -> None:
        """Move `batch` through every phase the clock has passed since it was last read (under the lock)."""
        now = time.time() if now is None else now
        faults = self.fp.batch_faults
        times = batch.times
        if batch.phase == "validating":
            at = batch.created_at + (faults.validating_s if batch.dialect == OPENAI else 0.0)
            if now < at:
                return
            if batch.errors is not None:
                batch.phase, times["failed"] = "failed", at
                return
            batch.phase, times["in_progress"] = "in_progress", at
        if batch.phase == "in_progress":
            at = max(batch.created_at + faults.complete_after_s, times["in_progress"])
            if now < at:
                return
            self._resolve(batch, len(batch.custom_ids))
            batch.phase, times["finalizing"] = "finalizing", at
        if batch.phase == "finalizing":
            at = times["finalizing"] + faults.finalizing_s
            if now < at:
                return
            final = "expired" if EXPIRED in batch.outcomes.values() and batch.dialect == OPENAI else "completed"
            batch.phase, times[final] = final, at
        if batch.phase == "cancelling":
            at = times["cancelling"] + faults.cancel_s
            if now < at:
                return
            done = round(max(0.0, min(1.0, faults.done_before_cancel)) * len(batch.custom_ids))
            self._resolve(batch, done)
            batch.phase, times["cancelled"] = "cancelled", at

    # --- answering the items -----------------------------------------------------------------------

    def _resolve(self, batch: Batch, answered: int) -> None:
        """Answer the batch's first `answered` items, cancel the rest, and write its output."""
        rng = random.Random(f"{self.fp.batch_faults.seed}:{batch.id}")  # a str seed hashes deterministically
        results: list[tuple[str, str, int | None, Any]] = []  # custom_id, outcome, status, body
        records: dict[str, BatchItem] = {}
        for i, cid in enumerate(batch.custom_ids):
            prompt = last_user_text(batch.params[i])
            if i < answered:
                outcome, status, body = self._answer_item(batch, batch.params[i], cid, prompt, rng.random())
            else:
                outcome, status, body = CANCELED, None, None
            batch.outcomes[cid] = outcome
            results.append((cid, outcome, status, body))
            records[cid] = BatchItem(batch.id, cid, outcome, prompt, status)
        self.items.extend(records.values())
        if batch.dialect == OPENAI:
            self._write_openai_files(batch, results, records)
        else:
            self._write_anthropic_results(batch, results, records)

    def _answer_item(self, batch: Batch, body: Any, cid: str, prompt: str,
                     roll: float) -> tuple[str, int | None, Any]:
        """(outcome, HTTP status, body) of one item: forced ids, then the seeded draw, then the online logic."""
        dialect, faults = batch.dialect, self.fp.batch_faults
        for outcome, ids in ((ERRORED, faults.errored_ids), (EXPIRED, faults.expired_ids)):
            if cid in ids and (outcome, cid) not in self._forced_used:
                self._forced_used.add((outcome, cid))
                if outcome == EXPIRED:
                    return EXPIRED, None, None
                return ERRORED, 500, error_body(dialect, 500, "injected batch item error")
        if roll < faults.errored:
            return ERRORED, 500, error_body(dialect, 500, "injected batch item error")
        if roll < faults.errored + faults.expired:
            return EXPIRED, None, None
        problem = request_error(dialect, body)
        if problem is not None:
            return ERRORED, 400, error_body(dialect, 400, problem)
        item = self.fp._scripted(body, prompt)
        if isinstance(item, Fault):
            if item.kind == STATUS:
                if isinstance(item.body, dict):
                    return ERRORED, item.code, item.body
                return ERRORED, item.code, error_body(dialect, item.code, f"injected HTTP {item.code}")
            if item.kind != TIMEOUT:  # drop, malformed, truncated: no such thing inside a batch
                return ERRORED, 500, error_body(dialect, 500, f"injected {item.kind}")
            item = None  # a timeout only delays: answer normally
        answer = answer_for(item, dialect, body, self.fp.reasoning)
        return SUCCEEDED, 200, BODY_BUILDERS[dialect](answer, body)

    def _truncate(self, lines: list[bytes], owners: list[BatchItem]) -> bytes:
        """The JSONL of `lines`, cut short when `truncate_outputs` asks for it (then counted down)."""
        faults = self.fp.batch_faults
        if not lines or faults.truncate_outputs <= 0:
            return b"".join(line + b"\n" for line in lines)
        faults.truncate_outputs -= 1
        keep = max(1, (len(lines) + 1) // 2)  # whole lines before the cut one; the rest is missing
        for item in owners[keep - 1:]:
            item.truncated = True
        cut = lines[keep - 1]
        return b"".join(line + b"\n" for line in lines[:keep - 1]) + cut[:len(cut) // 2]

    def _write_openai_files(self, batch: Batch, results: list[tuple[str, str, int | None, Any]],
                            records: dict[str, BatchItem]) -> None:
        out: list[bytes] = []
        out_items: list[BatchItem] = []
        err: list[bytes] = []
        for cid, outcome, status, body in results:
            if outcome == CANCELED:
                continue  # never ran: in neither file
            n = next(self._req_ids)
            line: dict[str, Any] = {"id": f"batch_req_{n}", "custom_id": cid}
            if outcome == EXPIRED:
                line["response"] = None
                line["error"] = {"code": "batch_expired", "message": EXPIRED_MESSAGE}
            else:
                line["response"] = {"status_code": status, "request_id": f"req_fake_{n}", "body": body}
                line["error"] = None
            if outcome == SUCCEEDED:
                out.append(orjson.dumps(line))
                out_items.append(records[cid])
            else:
                err.append(orjson.dumps(line))
        if out:
            batch.output_file_id = self._add_file(f"{batch.id}_output.jsonl", "batch_output",
                                                  self._truncate(out, out_items)).id
        if err:
            batch.error_file_id = self._add_file(f"{batch.id}_error.jsonl", "batch_output",
                                                 b"".join(line + b"\n" for line in err)).id

    def _write_anthropic_results(self, batch: Batch, results: list[tuple[str, str, int | None, Any]],
                                 records: dict[str, BatchItem]) -> None:
        lines: list[bytes] = []
        for cid, outcome, _status, body in results:
            if outcome == SUCCEEDED:
                result: dict[str, Any] = {"type": SUCCEEDED, "message": body}
            elif outcome == ERRORED:
                result = {"type": ERRORED, "error": body}
            else:
                result = {"type": outcome}
            lines.append(orjson.dumps({"custom_id": cid, "result": result}))
        batch.results = self._truncate(lines, [records[cid] for cid, *_ in results])

    def _anthropic_results(self, batch_id: str) -> Reply:
        batch = self._get(ANTHROPIC, batch_id)
        if batch is None:
            return _not_found(ANTHROPIC, f"No batch found with id '{batch_id}'.")
        self.advance(batch)
        if batch.phase not in TERMINAL or batch.results is None:
            return _not_found(ANTHROPIC, f"Batch '{batch_id}' has not ended yet; its results are not available.")
        return 200, batch.results, JSONL

    # --- wire objects ------------------------------------------------------------------------------

    def _openai_json(self, batch: Batch) -> dict[str, Any]:
        times = batch.times

        def at(phase: str) -> int | None:
            return int(times[phase]) if phase in times else None

        answered = batch.phase in ("finalizing", "completed", "expired", "cancelled")
        failed = batch.count(ERRORED) + batch.count(EXPIRED)
        return {
            "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": batch.errors,
            "input_file_id": batch.input_file_id, "completion_window": batch.completion_window,
            "status": batch.wire_status(), "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id, "created_at": int(batch.created_at),
            "in_progress_at": at("in_progress"), "expires_at": int(batch.created_at + WINDOW_S),
            "finalizing_at": at("finalizing"), "completed_at": at("completed"), "failed_at": at("failed"),
            "expired_at": at("expired"), "cancelling_at": at("cancelling"), "cancelled_at": at("cancelled"),
            "request_counts": {"total": 0 if batch.errors else len(batch.custom_ids),
                               "completed": batch.count(SUCCEEDED) if answered else 0,
                               "failed": failed if answered else 0},
            "metadata": batch.metadata,
        }

    def _anthropic_json(self, batch: Batch) -> dict[str, Any]:
        ended = batch.phase in TERMINAL
        ended_at = next((batch.times[p] for p in ("completed", "expired", "cancelled") if p in batch.times), None)
        counts = {"processing": 0 if ended else len(batch.custom_ids),
                  "succeeded": batch.count(SUCCEEDED) if ended else 0,
                  "errored": batch.count(ERRORED) if ended else 0,
                  "canceled": batch.count(CANCELED) if ended else 0,
                  "expired": batch.count(EXPIRED) if ended else 0}
        return {
            "id": batch.id, "type": "message_batch", "processing_status": batch.wire_status(),
            "request_counts": counts, "ended_at": _rfc3339(ended_at) if ended else None,
            "created_at": _rfc3339(batch.created_at), "expires_at": _rfc3339(batch.created_at + WINDOW_S),
            "cancel_initiated_at": _rfc3339(batch.times.get("cancelling")), "archived_at": None,
            "results_url": f"{self.fp.url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }


class BatchAPI:
    """Mixed into `FakeProvider`: the batch knobs (``batch_faults``) and the batch ledger."""

    batch_faults: BatchFaults
    _batch_store: BatchStore

    def _init_batches(self) -> None:
        self.batch_faults = BatchFaults()
        self._batch_store = BatchStore(self)  # type: ignore[arg-type]

    @property
    def batches(self) -> dict[str, Batch]:
        """Batch id → `Batch` (dialect, custom_ids, an up-to-date `status`, ...), oldest first."""
        with self._batch_store.lock:
            return dict(self._batch_store.batches)

    @property
    def batch_items(self) -> list[BatchItem]:
        """Every batch item's outcome so far, in the order the server produced them."""
        with self._batch_store.lock:
            return list(self._batch_store.items)

    def batch_succeeded(self, include_truncated: bool = False) -> collections.Counter[str]:
        """custom_id → how many times it succeeded, over all batches. Items whose result line a truncated
        output cut or left out do not count unless `include_truncated` (the client never saw them)."""
        return collections.Counter(i.custom_id for i in self.batch_items
                                   if i.outcome == SUCCEEDED and (include_truncated or not i.truncated))

    def batch_count_by_prompt(self, include_truncated: bool = False) -> collections.Counter[str]:
        """Last user message → how many times a batch answered it successfully (as `batch_succeeded`)."""
        return collections.Counter(i.prompt for i in self.batch_items
                                   if i.outcome == SUCCEEDED and (include_truncated or not i.truncated))

    def batch_requests(self) -> collections.Counter[str]:
        """Dialect ("openai" / "anthropic") → batch create calls received, failed ones included."""
        with self._batch_store.lock:
            return collections.Counter(self._batch_store.creates)

    def batch_creates(self) -> int:
        """Batch create calls received, both APIs, failed ones included (counted on arrival, before any hold)."""
        return sum(self.batch_requests().values())

    def batch_uploads(self) -> int:
        """``POST /v1/files`` calls received (counted on arrival)."""
        return self.batch_calls()["openai:upload"]

    def batch_status_reads(self) -> int:
        """GETs of one batch (not of the list), both APIs, 404s included (counted on arrival)."""
        calls = self.batch_calls()
        return calls["openai:poll"] + calls["anthropic:poll"]

    def batch_downloads_started(self) -> int:
        """Downloads asked for: OpenAI file contents and Anthropic results (counted on arrival, before any hold)."""
        calls = self.batch_calls()
        return calls["openai:download"] + calls["anthropic:download"]

    def batch_downloads(self) -> collections.Counter[str]:
        """File id (OpenAI) or batch id (Anthropic) → downloads of its results served whole or cut (not 404s)."""
        with self._batch_store.lock:
            return collections.Counter(self._batch_store.downloads)

    def batch_calls(self) -> collections.Counter[str]:
        """"<dialect>:<kind>" → calls to the batch routes; kind is upload, create, poll, list, cancel, download."""
        with self._batch_store.lock:
            return collections.Counter(self._batch_store.calls)


# --- wire helpers ------------------------------------------------------------------------------------


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form field name → (filename or None, raw bytes) of a multipart/form-data body (bytes kept exact)."""
    header = email.message.Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise ValueError("expected a multipart/form-data body with a boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)  # [preamble, part, part, ..., "--" epilogue]
    fields: dict[str, tuple[str | None, bytes]] = {}
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):  # the closing delimiter
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("malformed multipart part (no blank line after its headers)")
        headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(head.lstrip(b" \t\r\n"))
        disposition = headers.get("content-disposition")
        if disposition is None:
            continue
        name = disposition.params.get("name")
        if name:
            fields[name] = (disposition.params.get("filename"), data)
    else:
        raise ValueError("multipart body has no closing boundary")
    return fields


def parse_openai_input(data: bytes, endpoint: str) -> tuple[list[str], list[Any], list[dict[str, Any]]]:
    """(custom_ids, request bodies, validation errors) of a batch input JSONL file. Lines count from 1."""
    custom_ids: list[str] = []
    params: list[Any] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()

    def problem(code: str, message: str, line: int, param: str | None = None) -> None:
        problems.append({"code": code, "message": message, "param": param, "line": line})

    for k, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            problem("invalid_json_line", "This line is not parseable as valid JSON.", k)
            continue
        if not isinstance(entry, dict):
            problem("invalid_json_line", "This line is not a JSON object.", k)
            continue
        cid = entry.get("custom_id")
        if not isinstance(cid, str) or not cid:
            problem("missing_required_parameter", "Missing required parameter: 'custom_id'.", k, "custom_id")
        elif cid in seen:
            problem("duplicate_custom_id", "The custom_id for this request is a duplicate of another request. "
                    "The custom_id parameter must be unique for each request in a batch.", k, "custom_id")
        elif entry.get("method") != "POST":
            problem("invalid_method", "The method must be 'POST'.", k, "method")
        elif entry.get("url") != endpoint:
            problem("mismatched_endpoint", f"The url of this request does not match the batch's endpoint "
                    f"{endpoint!r}.", k, "url")
        elif not isinstance(entry.get("body"), dict):
            problem("missing_required_parameter", "Missing required parameter: 'body'.", k, "body")
        else:
            seen.add(cid)
            custom_ids.append(cid)
            params.append(entry["body"])
    if not custom_ids and not problems:
        problem("empty_file", "The input file contains no requests.", 1)
    return custom_ids, params, problems


def _file_json(rec: _File) -> dict[str, Any]:
    return {"id": rec.id, "object": "file", "bytes": len(rec.data), "created_at": int(rec.created_at),
            "filename": rec.filename, "purpose": rec.purpose, "status": "processed"}


def _rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _mid_line(data: bytes) -> int:
    """Where to cut `data` so that it stops in the middle of a line (halfway through its last line)."""
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    return start + max(1, (len(data) - start) // 2) if data else 0


def _const(reply: Reply) -> Callable[[], Reply]:
    return lambda: reply


def _openai_error(status: int, message: str, param: str | None = None,
                  kind: str = "invalid_request_error", code: str | None = None) -> Reply:
    return status, orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}), JSON


def _anthropic_error(status: int, kind: str, message: str) -> Reply:
    return status, orjson.dumps({"type": "error", "error": {"type": kind, "message": message}}), JSON


def _not_found(dialect: str, message: str) -> Reply:
    if dialect == ANTHROPIC:
        return _anthropic_error(404, "not_found_error", message)
    return _openai_error(404, message)
