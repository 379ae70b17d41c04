"""A real HTTP server on 127.0.0.1 that plays LLM provider APIs, with scripted answers and injected faults.

Routes: ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/messages`` (Anthropic),
``POST /argo/chat[/]`` (Argo), ``GET /v1/models``. Unscripted requests get a deterministic answer,
``"echo: " + <last user message>`` (see `fake_answers`). The batch APIs, answered by the same logic:
OpenAI's ``/v1/files[/{id}[/content]]`` and ``/v1/batches[/{id}[/cancel]]``, Anthropic's
``/v1/messages/batches[/{id}[/results|/cancel]]``, with their own faults in ``fp.batch_faults`` and
their own ledger (``fp.batch_items``, ``fp.batch_succeeded()``; see `fake_batches`).

In tests::

    with FakeProvider(latency=0.01) as fp:                  # background thread, own event loop
        fp.script("hello", Fault.status(429, retry_after=1), "hi!")
        ...  # point a client (or a CLI subprocess) at fp.openai_base
        assert fp.count_by_prompt()["hello"] == 1

    async with FakeProvider() as fp:                        # inside an already running loop
        ...

The server is asyncio protocols plus httptools, not a web framework: about 0.1 ms of CPU per request
(aiohttp's server took 0.25 ms), so that under a benchmark's 4,000 requests/s it stays well below a
core and what is measured is the client. For benchmarks, run it as its own process (uvloop when
available)::

    python -m synthtrace.testing.fake_provider --port 0 --latency 0.05 --stats-file stats.json

It prints ``READY http://127.0.0.1:PORT`` once listening and writes the stats file on SIGTERM
(the command line itself lives in `fake_provider_cli`).
"""

from __future__ import annotations

import asyncio
import collections
import http
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
import orjson

from synthtrace.testing.fake_answers import (
    ANTHROPIC,
    ARGO,
    BODY_BUILDERS,
    OPENAI,
    answer_for,
    error_body,
    last_user_text,
    request_error,
)
from synthtrace.testing.fake_batches import BATCH_PREFIXES, BatchAPI
from synthtrace.testing.fake_ledger import Ledger, RecordedRequest
from synthtrace.testing.faults import DROP, MALFORMED, STATUS, TIMEOUT, TRUNCATED, Fault, FaultRates, retry_after_header

ROUTES = {"/v1/chat/completions": OPENAI, "/v1/messages": ANTHROPIC, "/argo/chat/": ARGO, "/argo/chat": ARGO}
OK_JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
MAX_BODY = 64 * 1024 * 1024
MALFORMED_BODY = b"<html><body><h1>502 Bad Gateway</h1>upstream sent garbage</body></html>"

Match = str | Callable[[Any], bool]


@dataclass(slots=True)
class Script:
    """Responses for requests that `match`, served in order. Returned by `FakeProvider.script`."""

    match: Match
    responses: list[Any]
    repeat_last: bool = False
    served: int = 0

    def matches(self, body: Any, prompt: str) -> bool:
        if callable(self.match):
            return bool(self.match(body))
        return self.match in prompt

    @property
    def exhausted(self) -> bool:
        return self.served >= len(self.responses) and not (self.repeat_last and self.responses)

    def take(self) -> Any:
        item = self.responses[min(self.served, len(self.responses) - 1)]
        self.served += 1
        return item


class _Exchange:
    """One request on a connection, from its last byte in to its answer out."""

    __slots__ = ("conn", "method", "path", "headers", "body", "keep_alive", "rec", "timer", "counted", "out")

    def __init__(self, conn: _Connection, method: str, path: str, headers: _Headers, body: bytes,
                 keep_alive: bool):
        self.conn, self.method, self.path, self.headers, self.body = conn, method, path, headers, body
        self.keep_alive = keep_alive
        self.rec: RecordedRequest | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False  # holds a place in `FakeProvider.in_flight`
        self.out: bytes | None = None  # the answer, once there is one


class _Headers(dict):  # type: ignore[type-arg]
    """Request headers, looked up without regard to case (stored lower-cased)."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())


class _Connection(asyncio.Protocol):
    """One client connection: httptools parses the requests, answers go out in request order.

    Built on asyncio's protocol layer rather than a web framework so that the server's own CPU per
    request stays far below the clients' it measures (benchmarks drive thousands of requests a second
    through one core).
    """

    def __init__(self, provider: FakeProvider):
        self.provider = provider
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.waiting: collections.deque[_Exchange] = collections.deque()  # answers owed, oldest first
        self._url = b""
        self._headers = _Headers()
        self._body: list[bytes] = []
        self._size = 0

    # asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.provider._connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:  # a callback's own exception arrives wrapped in one
            if self._size > MAX_BODY:
                self._write_now(413, orjson.dumps({"error": {"message": "request body too large"}}), close=True)
            else:
                self._write_now(400, orjson.dumps({"error": {"message": f"bad HTTP request: {e}"}}), close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.provider._connections.discard(self)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", _Headers(), [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits a second for this

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            raise _TooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        ex = _Exchange(self, self.parser.get_method().decode("ascii"), self._url.decode("latin-1"), self._headers,
                       b"".join(self._body), self.parser.should_keep_alive())
        self.waiting.append(ex)
        self.provider._dispatch(ex)

    # answers
    def reply(self, ex: _Exchange, status: int, data: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None, drop_after: int | None = None) -> None:
        """Queue `ex`'s answer and send every answer that is now due, in request order. `drop_after`:
        send the headers (Content-Length promising all of `data`) and that many body bytes, then close."""
        out = _response(status, data, content_type, headers, close=not ex.keep_alive)
        if drop_after is not None:
            out = out[:len(out) - len(data) + drop_after]
            ex.keep_alive = False
        ex.out = out
        waiting = self.waiting
        while waiting and waiting[0].out is not None:
            done = waiting.popleft()
            if self.closed or self.transport is None:
                continue
            self.transport.write(done.out)  # type: ignore[arg-type]
            if not done.keep_alive:
                self.transport.close()
                self.closed = True

    def _write_now(self, status: int, data: bytes, close: bool) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(_response(status, data, "application/json", None, close))
            if close:
                self.transport.close()
                self.closed = True

    def abort(self) -> None:
        """Close at once, unanswered: everything still waiting on this connection is lost with it."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _TooLarge(Exception):
    """Raised from the body callback to stop parsing a body over MAX_BODY."""


def _response(status: int, data: bytes, content_type: str, headers: dict[str, str] | None, close: bool) -> bytes:
    if status == 200 and content_type == "application/json" and not headers and not close:
        return b"%s%d\r\n\r\n%s" % (OK_JSON_HEAD, len(data), data)  # the common case, prepared
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


class FakeProvider(BatchAPI):
    """The fake LLM provider server. See the module docstring for use."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 max_in_flight: int | None = None, retry_after_s: float = 1.0,
                 fault_rates: dict[str | int, float] | None = None, seed: int = 0, reasoning: bool = False,
                 record: bool = True, models: tuple[str, ...] = ("fake", "fake-large")):
        self.host = host
        self.port = port
        self.latency = latency  # seconds added before every answer (not before a capped 429)
        self.max_in_flight = max_in_flight  # beyond this many concurrent requests: immediate 429
        self.retry_after_s = retry_after_s  # Retry-After sent with those 429s and with random 429s
        self.reasoning = reasoning  # add reasoning_content / a thinking block to every answer
        self.models = models
        self._seed = seed
        self.fault_rates = fault_rates  # property: rebuilds the seeded generator
        self.ledger = Ledger(record)  # record=False (benchmarks): counters only, no per-request records
        self._scripts: list[Script] = []
        self._lock = threading.Lock()  # guards the scripts, which tests edit from their own thread
        self.in_flight = 0
        self.peak_in_flight = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopped = False
        self._holds: set[_Exchange] = set()  # requests waiting out latency or a timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._init_batches()  # fp.batch_faults and the batch routes' state (fake_batches)

    # --- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base(self) -> str:
        return self.url

    @property
    def argo_url(self) -> str:
        return self.url + "/argo/chat/"

    # --- knobs and scripting ---------------------------------------------------------------------

    @property
    def fault_rates(self) -> dict[str, float]:
        return self._fault_rates.rates

    @fault_rates.setter
    def fault_rates(self, rates: dict[str | int, float] | None) -> None:
        self._fault_rates = FaultRates(rates, seed=self._seed, retry_after_s=self.retry_after_s)

    def script(self, match: Match, *responses: Any, repeat_last: bool = False) -> Script:
        """Serve `responses` in order to requests whose last user message contains `match`
        (or for which ``match(request_json)`` is true). When they run out, the last one repeats if
        `repeat_last`, else the next matching script or the default answer takes over.

        A response is a str (answer text), ``{"text"|"json": …, "reasoning": …, "usage": {…},
        "finish_reason": …}``, any other dict/list (a structured answer: JSON text for OpenAI/Argo,
        the ``tool_use`` input for a forced Anthropic tool), or a `Fault`.
        """
        if not responses:
            raise ValueError("script() needs at least one response")
        entry = Script(match, list(responses), repeat_last)
        with self._lock:
            self._scripts.append(entry)
        return entry

    def reset(self) -> None:
        """Forget scripts, records, counters and batches (knobs stay as they are)."""
        with self._lock:
            self._scripts.clear()
        self.ledger.clear()
        self._batch_store.clear()
        self.peak_in_flight = 0

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request seen so far, oldest first (empty when constructed with ``record=False``)."""
        return self.ledger.requests

    def count_by_prompt(self) -> collections.Counter[str]:
        """Last user message → how many times it got a genuine answer (200 with a valid body)."""
        return self.ledger.count_by_prompt()

    def stats(self) -> dict[str, Any]:
        """Totals for benchmarks (see `Ledger.stats`), plus the peak number of concurrent requests."""
        return {**self.ledger.stats(), "peak_in_flight": self.peak_in_flight}

    # --- request handling ------------------------------------------------------------------------

    def _pick(self, body: Any, prompt: str) -> Any:
        """The scripted item for this request: a random fault, a scripted response, or None (default)."""
        fault = self._fault_rates.draw()
        if fault is not None:
            return fault
        return self._scripted(body, prompt)

    def _scripted(self, body: Any, prompt: str) -> Any:
        """The next scripted item for this request, or None (the default answer)."""
        if not self._scripts:
            return None
        with self._lock:
            for entry in self._scripts:
                if not entry.exhausted and entry.matches(body, prompt):
                    return entry.take()
        return None

    def _dispatch(self, ex: _Exchange) -> None:
        """A whole request has arrived on `ex.conn`: answer now, or after the latency."""
        path = ex.path.partition("?")[0]
        dialect = ROUTES.get(path)
        if dialect is None:
            if path.startswith(BATCH_PREFIXES):  # off the online path: only when no online route matched
                self._batch_store.handle(ex, path)
            elif path == "/v1/models" and ex.method == "GET":
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "synthtrace-fake"} for m in self.models]
                ex.conn.reply(ex, 200, orjson.dumps({"object": "list", "data": data}))
            else:
                ex.conn.reply(ex, 404, orjson.dumps({"error": {"message": f"no route for {ex.method} {path}"}}))
            return
        if ex.method != "POST":
            ex.conn.reply(ex, 405, orjson.dumps({"error": {"message": f"{ex.method} not allowed on {path}"}}))
            return
        try:
            body = orjson.loads(ex.body)
        except orjson.JSONDecodeError:
            body = None
        prompt = last_user_text(body)
        ex.rec = self.ledger.arrive(path, body, ex.headers, prompt)
        cap = self.max_in_flight
        if cap is not None and self.in_flight >= cap:
            self._error(ex, dialect, 429, "too many concurrent requests", self.retry_after_s, "capped")
            return
        self.in_flight += 1
        ex.counted = True
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        problem = request_error(dialect, body)
        if problem is not None:
            self._error(ex, dialect, 400, problem, outcome="invalid")
            return
        item = self._pick(body, prompt)
        delay = self.latency + (item.seconds if isinstance(item, Fault) and item.kind == TIMEOUT else 0.0)
        if delay <= 0:
            self._answer(ex, dialect, body, item)
        elif self._stopped:
            self._drop(ex, "aborted")
        else:  # a timer, no task: holding thousands of requests stays cheap
            self._holds.add(ex)
            ex.timer = asyncio.get_running_loop().call_later(delay, self._after_hold, ex, dialect, body, item)

    def _after_hold(self, ex: _Exchange, dialect: str, body: Any, item: Any) -> None:
        self._holds.discard(ex)
        if ex.conn.closed:  # e.g. the client timed out meanwhile
            self._drop(ex, "client_gone")
        else:
            self._answer(ex, dialect, body, item)

    def _answer(self, ex: _Exchange, dialect: str, body: Any, item: Any) -> None:
        if isinstance(item, Fault):
            if item.kind == STATUS:
                self._status_fault(ex, dialect, item)
                return
            if item.kind == DROP:
                self._drop(ex, "drop")
                return
            if item.kind == MALFORMED:
                self._finish(ex, 200, "malformed", MALFORMED_BODY, "text/html")
                return
            if item.kind == TRUNCATED:
                full = orjson.dumps(BODY_BUILDERS[dialect](answer_for(None, dialect, body, self.reasoning), body))
                self._finish(ex, 200, "truncated", full[: len(full) // 2])
                return
            item = None  # TIMEOUT: held long enough, now answer normally
        answer = answer_for(item, dialect, body, self.reasoning)
        self._finish(ex, 200, "ok", orjson.dumps(BODY_BUILDERS[dialect](answer, body)))

    def _finish(self, ex: _Exchange, status: int, outcome: str, data: bytes,
                content_type: str = "application/json", headers: dict[str, str] | None = None) -> None:
        """Note the outcome, free the request's place in flight and send the answer."""
        assert ex.rec is not None
        self.ledger.finish(ex.rec, status, outcome)
        self._release(ex)
        ex.conn.reply(ex, status, data, content_type, headers)

    def _release(self, ex: _Exchange) -> None:
        if ex.counted:
            ex.counted = False
            self.in_flight -= 1

    def _error(self, ex: _Exchange, dialect: str, code: int, message: str,
               retry_after: float | str | None = None, outcome: str = "status") -> None:
        headers = {"Retry-After": retry_after_header(retry_after)} if retry_after is not None else None
        self._finish(ex, code, outcome, orjson.dumps(error_body(dialect, code, message)), headers=headers)

    def _drop(self, ex: _Exchange, outcome: str) -> None:
        """Close the connection without an answer (what a crashed upstream or a cut cable looks like)."""
        assert ex.rec is not None
        self.ledger.finish(ex.rec, None, outcome)
        self._release(ex)
        ex.conn.abort()

    def _status_fault(self, ex: _Exchange, dialect: str, fault: Fault) -> None:
        if fault.body is None:
            self._error(ex, dialect, fault.code, f"injected HTTP {fault.code}", fault.retry_after)
            return
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = retry_after_header(fault.retry_after)
        if isinstance(fault.body, (dict, list)):
            data, content_type = orjson.dumps(fault.body), "application/json"
        else:
            data = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
            content_type = "text/plain"
        self._finish(ex, fault.code, "status", data, content_type, headers)

    # --- running: in the current loop ------------------------------------------------------------

    async def astart(self) -> FakeProvider:
        """Start listening in the running event loop."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._stopped = False
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), sock=sock, backlog=4096)
        return self

    async def astop(self) -> None:
        """Stop listening; requests held by latency or `Fault.timeout` are cut off at once."""
        self._stopped = True
        for ex in list(self._holds):
            self._holds.discard(ex)
            if ex.timer is not None:
                ex.timer.cancel()
            self._drop(ex, "aborted")
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for conn in list(self._connections):
                conn.abort()
            await server.wait_closed()

    async def __aenter__(self) -> FakeProvider:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    # --- running: in a background thread ---------------------------------------------------------

    def start(self) -> FakeProvider:
        """Serve from a background thread with its own event loop; returns once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.astart())
            except BaseException as e:  # noqa: BLE001 - handed to the starting thread
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.astop())
                loop.close()

        self._thread = threading.Thread(target=serve, name="fake-provider", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop the background server and wait for its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # the command line lives in fake_provider_cli, this keeps `-m` working
    from synthtrace.testing.fake_provider_cli import main

    sys.exit(main())
