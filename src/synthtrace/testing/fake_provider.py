"""A real HTTP server on 127.0.0.1 that plays LLM provider APIs, with scripted answers and injected faults.

Routes: ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/messages`` (Anthropic),
``POST /argo/chat[/]`` (Argo), ``GET /v1/models``. Unscripted requests get a deterministic answer,
``"echo: " + <last user message>`` (see `fake_answers`).

In tests::

    with FakeProvider(latency=0.01) as fp:                  # background thread, own event loop
        fp.script("hello", Fault.status(429, retry_after=1), "hi!")
        ...  # point a client (or a CLI subprocess) at fp.openai_base
        assert fp.count_by_prompt()["hello"] == 1

    async with FakeProvider() as fp:                        # inside an already running loop
        ...

For benchmarks, run it as its own process (uvloop when available)::

    python -m synthtrace.testing.fake_provider --port 0 --latency 0.05 --stats-file stats.json

It prints ``READY http://127.0.0.1:PORT`` once listening and writes the stats file on SIGTERM
(the command line itself lives in `fake_provider_cli`).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

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
from synthtrace.testing.fake_ledger import Ledger, RecordedRequest
from synthtrace.testing.faults import DROP, MALFORMED, STATUS, TIMEOUT, TRUNCATED, Fault, FaultRates, retry_after_header

JSON_HEADERS = {"Content-Type": "application/json"}
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


def _resolve(wake: asyncio.Future[bool], value: bool) -> None:
    if not wake.done():
        wake.set_result(value)


class FakeProvider:
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
        self._runner: web.AppRunner | None = None
        self._stopped = False
        self._holds: set[asyncio.Future[bool]] = set()  # requests waiting out latency or a timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        """Forget scripts, records and counters (knobs stay as they are)."""
        with self._lock:
            self._scripts.clear()
        self.ledger.clear()
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
        if not self._scripts:
            return None
        with self._lock:
            for entry in self._scripts:
                if not entry.exhausted and entry.matches(body, prompt):
                    return entry.take()
        return None

    async def _hold(self, seconds: float) -> bool:
        """Wait `seconds`; False when the server began stopping meanwhile (a timer, no task: cheap)."""
        if self._stopped:
            return False
        loop = asyncio.get_running_loop()
        wake = loop.create_future()
        timer = loop.call_later(seconds, _resolve, wake, True)
        self._holds.add(wake)
        try:
            return await wake
        finally:
            self._holds.discard(wake)
            timer.cancel()

    def _error(self, rec: RecordedRequest, dialect: str, code: int, message: str,
               retry_after: float | str | None = None, outcome: str = "status") -> web.Response:
        headers = dict(JSON_HEADERS)
        if retry_after is not None:
            headers["Retry-After"] = retry_after_header(retry_after)
        self.ledger.finish(rec, code, outcome)
        return web.Response(status=code, body=orjson.dumps(error_body(dialect, code, message)), headers=headers)

    def _drop(self, request: web.Request, rec: RecordedRequest, outcome: str) -> web.StreamResponse:
        self.ledger.finish(rec, None, outcome)
        request.protocol.force_close()
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp treats this as a lost connection: nothing is written

    async def _handle(self, request: web.Request, dialect: str) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        prompt = last_user_text(body)
        rec = self.ledger.arrive(request.path, body, request.headers, prompt)
        cap = self.max_in_flight
        if cap is not None and self.in_flight >= cap:
            return self._error(rec, dialect, 429, "too many concurrent requests", self.retry_after_s, "capped")
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer(request, rec, dialect, body, prompt)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, rec: RecordedRequest, dialect: str, body: Any,
                      prompt: str) -> web.StreamResponse:
        problem = request_error(dialect, body)
        if problem is not None:
            return self._error(rec, dialect, 400, problem, outcome="invalid")
        item = self._pick(body, prompt)
        delay = self.latency + (item.seconds if isinstance(item, Fault) and item.kind == TIMEOUT else 0.0)
        if delay > 0:
            if not await self._hold(delay):
                return self._drop(request, rec, "aborted")  # the server is stopping
            if request.transport is None or request.transport.is_closing():
                return self._drop(request, rec, "client_gone")  # e.g. the client timed out meanwhile
        if isinstance(item, Fault):
            if item.kind == STATUS:
                return self._status_fault(rec, dialect, item)
            if item.kind == DROP:
                return self._drop(request, rec, "drop")
            if item.kind == MALFORMED:
                self.ledger.finish(rec, 200, "malformed")
                return web.Response(body=MALFORMED_BODY, headers={"Content-Type": "text/html"})
            if item.kind == TRUNCATED:
                full = orjson.dumps(BODY_BUILDERS[dialect](answer_for(None, dialect, body, self.reasoning), body))
                self.ledger.finish(rec, 200, "truncated")
                return web.Response(body=full[: len(full) // 2], headers=JSON_HEADERS)
            item = None  # TIMEOUT: held long enough, now answer normally
        answer = answer_for(item, dialect, body, self.reasoning)
        payload = orjson.dumps(BODY_BUILDERS[dialect](answer, body))
        self.ledger.finish(rec, 200, "ok")
        return web.Response(body=payload, headers=JSON_HEADERS)

    def _status_fault(self, rec: RecordedRequest, dialect: str, fault: Fault) -> web.Response:
        if fault.body is None:
            return self._error(rec, dialect, fault.code, f"injected HTTP {fault.code}", fault.retry_after)
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = retry_after_header(fault.retry_after)
        if isinstance(fault.body, (dict, list)):
            data, headers["Content-Type"] = orjson.dumps(fault.body), "application/json"
        else:
            data = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
            headers["Content-Type"] = "text/plain"
        self.ledger.finish(rec, fault.code, "status")
        return web.Response(status=fault.code, body=data, headers=headers)

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "synthtrace-fake"} for m in self.models]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), headers=JSON_HEADERS)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)

        def route(dialect: str) -> Callable[[web.Request], Any]:
            async def handler(request: web.Request) -> web.StreamResponse:
                return await self._handle(request, dialect)
            return handler

        app.router.add_post("/v1/chat/completions", route(OPENAI))
        app.router.add_post("/v1/messages", route(ANTHROPIC))
        app.router.add_post("/argo/chat/", route(ARGO))
        app.router.add_post("/argo/chat", route(ARGO))
        app.router.add_get("/v1/models", self._models)
        return app

    # --- running: in the current loop ------------------------------------------------------------

    async def astart(self) -> FakeProvider:
        """Start listening in the running event loop."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._stopped = False
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock, backlog=4096).start()
        return self

    async def astop(self) -> None:
        """Stop listening; requests held by latency or `Fault.timeout` are cut off at once."""
        self._stopped = True
        for wake in list(self._holds):
            _resolve(wake, False)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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
