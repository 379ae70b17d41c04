"""The lean HTTP client (`synthtrace.llm.http`) against a byte-level HTTP server on 127.0.0.1.

The fake provider speaks well-formed HTTP; the server here writes whatever bytes a test scripts, so
the edges real servers show can be checked: chunked and compressed bodies, bodies ended by a close,
interim 1xx answers, hang-ups before and during an answer, garbage, silence, and TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import arun, cli_command, read_jsonl, serving_in_a_thread, subprocess_env

from synthtrace.llm.base import HTTPClient
from synthtrace.llm.http import BadResponse, ConnectError, ConnectionLost, ConnectionPool, Timeout
from synthtrace.types import EndpointRefused, RetryableError

# answer(n, head, body, writer) writes the n-th request's answer; returns False to hang up afterwards
Answer = Callable[[int, bytes, bytes, asyncio.StreamWriter], Awaitable[bool | None]]


def ok(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        status, extra, len(body), body)


class RawServer:
    """Reads HTTP/1.1 requests with a Content-Length body and lets `answer` write raw bytes back."""

    def __init__(self, answer: Answer, ssl_context: ssl.SSLContext | None = None):
        self.answer = answer
        self.ssl_context = ssl_context
        self.connections = 0  # connections accepted
        self.requests: list[tuple[bytes, bytes]] = []
        self.hangups = 0  # connections the client closed (we saw EOF while waiting for a request)
        self.release = asyncio.Event()  # answers that wait for the test wait on this

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        self.server.close()
        await self.server.wait_closed()

    def url(self, path: str = "/v1/chat/completions", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.hangups += 1
                    return
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1)) if length else 0)
                self.requests.append((head, body))
                keep = await self.answer(len(self.requests), head, body, writer)
                await writer.drain()
                if keep is False:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.hangups += 1
        finally:
            writer.close()


def serve(*answers: bytes, close_after: bool = False) -> Answer:
    """Answer request n with answers[n-1] (the last one repeats)."""
    async def answer(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answers[min(n, len(answers)) - 1])
        return not close_after
    return answer


async def until(condition: Callable[[], bool], turns: int = 200) -> None:
    """Let the event loop run until `condition` holds (no wall-clock waiting)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_keep_alive_connections_are_reused_and_concurrency_opens_no_more_than_needed() -> None:
    async def go() -> None:
        async with RawServer(serve(ok(b'{"n": 1}'))) as srv:
            pool = ConnectionPool()
            for _ in range(20):
                assert (await pool.request("POST", srv.url(), b"{}")).body == b'{"n": 1}'
            assert srv.connections == 1
            answers = await asyncio.gather(*(pool.request("POST", srv.url(), b"{}") for _ in range(8)))
            assert {a.status for a in answers} == {200} and srv.connections <= 8
            opened = srv.connections
            await asyncio.gather(*(pool.request("POST", srv.url(), b"{}") for _ in range(8)))
            assert srv.connections == opened  # the second wave rode the first wave's connections
            await pool.aclose()
            await until(lambda: srv.hangups == srv.connections)
    arun(go())


def test_request_on_the_wire_host_length_and_headers() -> None:
    async def go() -> None:
        async with RawServer(serve(ok(b"{}"))) as srv:
            pool = ConnectionPool({"Authorization": "Bearer k", "Content-Type": "application/json"})
            await pool.request("POST", srv.url("/v1/x?api-version=2"), b'{"a": "\xc3\xa9"}', {"X-Extra": "1"})
            head, body = srv.requests[0]
            lines = head.decode().split("\r\n")
            assert lines[0] == "POST /v1/x?api-version=2 HTTP/1.1"
            fields = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:] if ln)}
            assert fields["host"] == f"127.0.0.1:{srv.port}"
            assert fields["content-length"] == str(len(body)) and body == b'{"a": "\xc3\xa9"}'
            assert fields["authorization"] == "Bearer k" and fields["x-extra"] == "1"
            assert fields["content-type"] == "application/json"
            await pool.aclose()
    arun(go())


def test_chunked_gzip_and_close_delimited_bodies_arrive_whole() -> None:
    payload = orjson.dumps({"text": "é" * 3000})
    packed = gzip.compress(payload)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(payload[i:i + 700]), payload[i:i + 700]) for i in range(0, len(payload), 700)
    ) + b"0\r\n\r\n"

    async def go() -> None:
        async with RawServer(serve(chunked, ok(packed, b"Content-Encoding: gzip"))) as srv:
            pool = ConnectionPool()
            assert (await pool.request("POST", srv.url(), b"{}")).body == payload
            assert (await pool.request("POST", srv.url(), b"{}")).body == payload
            assert srv.connections == 1
            await pool.aclose()
        # no length, not chunked: the body runs to the close
        async with RawServer(serve(b"HTTP/1.1 200 OK\r\n\r\n" + payload, close_after=True)) as srv:
            pool = ConnectionPool()
            assert (await pool.request("POST", srv.url(), b"{}")).body == payload
            assert (await pool.request("POST", srv.url(), b"{}")).body == payload
            assert srv.connections == 2
            await pool.aclose()
    arun(go())


def test_interim_100_continue_is_skipped() -> None:
    async def go() -> None:
        async with RawServer(serve(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b'{"ok": true}'))) as srv:
            pool = ConnectionPool()
            resp = await pool.request("POST", srv.url(), b"{}")
            assert (resp.status, resp.body) == (200, b'{"ok": true}')
            await pool.aclose()
    arun(go())


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def go() -> None:
        async with RawServer(serve(ok(b"{}"), close_after=True)) as srv:
            pool = ConnectionPool()
            await pool.request("POST", srv.url(), b"{}")
            await until(lambda: pool.open_connections == 0)  # the client noticed the hang-up
            assert (await pool.request("POST", srv.url(), b"{}")).status == 200
            assert srv.connections == 2
            await pool.aclose()
    arun(go())


def test_idle_connections_expire_and_keep_alive_timeout_shortens_it() -> None:
    async def connections_for_three_requests(answer: bytes, **pool_options: float) -> int:
        async with RawServer(serve(answer)) as srv:
            pool = ConnectionPool(**pool_options)
            for _ in range(3):
                await pool.request("POST", srv.url(), b"{}")
            await pool.aclose()
            return srv.connections

    assert arun(connections_for_three_requests(ok(b"{}"))) == 1
    assert arun(connections_for_three_requests(ok(b"{}"), keepalive_expiry=0.0)) == 3
    # the server keeps idle connections 1 s; less the margin, nothing is left to reuse
    assert arun(connections_for_three_requests(ok(b"{}", b"Keep-Alive: timeout=1"))) == 3


@pytest.mark.parametrize("answer, error, words", [
    (b"", ConnectionLost, "before an answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cut", ConnectionLost, "after the headers"),
    (b"SMTP ready\r\n\r\n", BadResponse, "unparseable"),
    (ok(b"not gzip", b"Content-Encoding: gzip"), BadResponse, "gzip"),
])
def test_broken_answers_raise_and_the_connection_is_not_reused(answer: bytes, error: type, words: str) -> None:
    async def go() -> None:
        async def script(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
            writer.write(answer if n == 1 else ok(b"{}"))
            return n != 1  # hang up after the broken answer
        async with RawServer(script) as srv:
            pool = ConnectionPool()
            with pytest.raises(error, match=words):
                await pool.request("POST", srv.url(), b"{}")
            assert (await pool.request("POST", srv.url(), b"{}")).status == 200
            assert srv.connections == 2
            await pool.aclose()
    arun(go())


def test_silence_times_out_and_cancellation_drops_the_connection() -> None:
    async def go() -> None:
        async def script(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
            if n <= 2:
                await srv.release.wait()  # never released while the test runs
            writer.write(ok(b"{}"))
            return True
        async with RawServer(script) as srv:
            pool = ConnectionPool(timeout=0.1)
            with pytest.raises(Timeout, match="0.1 s"):
                await pool.request("POST", srv.url(), b"{}")
            task = asyncio.ensure_future(pool.request("POST", srv.url(), b"{}", timeout=60))
            await until(lambda: len(srv.requests) == 2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pool.open_connections == 0
            assert (await pool.request("POST", srv.url(), b"{}")).status == 200
            assert srv.connections == 3  # neither the timed-out nor the cancelled connection was reused
            await pool.aclose()
    arun(go())


def test_nothing_listening_is_a_connect_error() -> None:
    async def go() -> None:
        async with RawServer(serve(ok(b"{}"))) as srv:
            url = srv.url()
        pool = ConnectionPool()
        with pytest.raises(ConnectError, match="cannot connect to 127.0.0.1"):
            await pool.request("POST", url, b"{}")
        await pool.aclose()
    arun(go())


def test_a_connect_that_never_completes_times_out_and_a_caller_can_still_cancel_it() -> None:
    """A listener whose accept queue is full drops further SYNs, so those connects hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the queue; later connects stay pending
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)

    async def go() -> None:
        pool = ConnectionPool(connect_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(ConnectError, match=r"within 0.2 s"):
            await pool.request("POST", f"http://127.0.0.1:{port}/", b"{}")
        assert time.monotonic() - started < 2.0
        pool = ConnectionPool(connect_timeout=30)
        task = asyncio.ensure_future(pool.request("POST", f"http://127.0.0.1:{port}/", b"{}"))
        await asyncio.sleep(0.1)
        task.cancel()  # the caller's own cancellation stays a cancellation
        with pytest.raises(asyncio.CancelledError):
            await task
        await pool.aclose()
    try:
        arun(go())
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_http_client_maps_redirects_and_transport_failures_to_engine_errors() -> None:
    async def go() -> None:
        moved = ok(b"", b"Location: https://api.example.test/v1/chat/completions", status=b"308 Permanent Redirect")

        async def script(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
            writer.write(moved if n == 1 else b"")
            return n == 1  # the second request gets a hang-up and no answer

        async with RawServer(script) as srv:
            client = HTTPClient(f"http://127.0.0.1:{srv.port}/v1", timeout=10)
            with pytest.raises(EndpointRefused, match="308 redirect to https://api.example.test"):
                await client.post_json(srv.url(), {"a": 1})
            with pytest.raises(RetryableError, match="connection lost: server closed the connection before an answer"):
                await client.post_json(srv.url(), {"a": 1})
            await client.aclose()
    arun(go())


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


def test_tls_verifies_the_server_certificate(certificate: tuple[Path, Path]) -> None:
    key, cert = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def go() -> None:
        async with RawServer(serve(ok(b'{"secure": true}')), ssl_context=server_context) as srv:
            trusting = ConnectionPool(ssl_context=ssl.create_default_context(cafile=str(cert)))
            resp = await trusting.request("POST", srv.url(scheme="https"), b"{}")
            assert resp.body == b'{"secure": true}'
            await trusting.aclose()
            default = ConnectionPool()  # the system's trust store does not know this certificate
            with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await default.request("POST", srv.url(scheme="https"), b"{}")
            await default.aclose()
            assert len(srv.requests) == 1
    arun(go())


@contextlib.contextmanager
def served_in_a_thread(answer: Answer, ssl_context: ssl.SSLContext | None = None) -> Iterator[int]:
    """A RawServer on a loop of its own in a thread (for a CLI child process to talk to); yields its port."""
    with serving_in_a_thread(RawServer(answer, ssl_context)) as (srv,):
        yield srv.port


def run_cli(tmp_path: Path, base_url: str, records: int, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`synthtrace run completions` over `records` prompts against `base_url`, as a child process."""
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(records)))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"endpoints: {{raw: {{kind: openai, base_url: '{base_url}', timeout: 5}}}}\n"
                   "default_endpoint: raw\n")
    return subprocess.run(cli_command("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg,
                                      "--model", "m", "-q", "-c", 10), env=subprocess_env(env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


# --- a connection belongs to one request -------------------------------------------------------------

def echo(head: bytes, body: bytes) -> bytes:
    return ok(b'{"echo": %s}' % body)


@pytest.mark.parametrize("extra", [
    "a second whole answer",  # what a confused proxy or server may send
    "half of a second answer",  # a stray answer cut in the middle: its rest comes later
])
def test_an_answer_nobody_asked_for_retires_the_connection_and_no_request_gets_another_s(extra: str) -> None:
    async def script(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        stray = ok(b'{"echo": "stray %d"}' % n)
        writer.write(echo(head, body) + (stray if extra.startswith("a second") else stray[:30]))
        return True

    async def go() -> None:
        async with RawServer(script) as srv:
            pool = ConnectionPool(timeout=5)
            bodies = [b'"p%d"' % i for i in range(50)]
            for _ in range(3):  # waves: connections freed by one wave are what the next would reuse
                answers = await asyncio.wait_for(asyncio.gather(*(pool.request("POST", srv.url(), b)
                                                                  for b in bodies)), 20)
                assert [a.body for a in answers] == [b'{"echo": %s}' % b for b in bodies]
            assert srv.connections >= 150  # every connection retired after its one answer
            await pool.aclose()
    arun(go())


def test_bytes_on_an_idle_connection_retire_it() -> None:
    srv: RawServer

    async def script(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(echo(head, body))
        await writer.drain()
        if n == 1:
            await srv.release.wait()  # after the answer, while the connection sits idle
            writer.write(ok(b'{"echo": "stray"}'))
        return True

    async def go() -> None:
        nonlocal srv
        async with RawServer(script) as srv:
            pool = ConnectionPool(timeout=5)
            assert (await pool.request("POST", srv.url(), b"1")).body == b'{"echo": 1}'
            srv.release.set()
            await until(lambda: pool.open_connections == 0, turns=10_000)
            assert (await pool.request("POST", srv.url(), b"2")).body == b'{"echo": 2}'
            assert srv.connections == 2
            await pool.aclose()
    arun(go())


def test_every_request_ends_within_its_timeout_whatever_the_server_does() -> None:
    async def script(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if n % 3 == 0:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")  # and then nothing
        else:
            writer.write(echo(head, body) + ok(b"{}"))
        return True

    async def go() -> None:
        async with RawServer(script) as srv:
            pool = ConnectionPool(timeout=0.3)
            started = time.monotonic()
            results = await asyncio.gather(*(pool.request("POST", srv.url(), b"%d" % i) for i in range(30)),
                                           return_exceptions=True)
            assert time.monotonic() - started < 3
            for i, r in enumerate(results):
                assert isinstance(r, Timeout) or r.body == b'{"echo": %d}' % i
            await pool.aclose()
    arun(go())


def test_oversized_headers_and_decompression_bombs_are_refused_and_gzip_members_are_all_read() -> None:
    bomb = gzip.compress(b"\0" * (300 << 20))
    members = gzip.compress(b'{"a": ') + gzip.compress(b"1}")

    async def go() -> None:
        answers = [ok(b"{}", b"X-Big: " + b"x" * (300 << 10)), ok(bomb, b"Content-Encoding: gzip"),
                   ok(members, b"Content-Encoding: gzip")]
        async with RawServer(serve(*answers)) as srv:
            pool = ConnectionPool(timeout=30)
            with pytest.raises(BadResponse, match="headers over 256 KiB"):
                await pool.request("POST", srv.url(), b"{}")
            with pytest.raises(BadResponse, match="over 256 MiB once decompressed"):
                await pool.request("POST", srv.url(), b"{}")
            assert (await pool.request("POST", srv.url(), b"{}")).body == b'{"a": 1}'
            await pool.aclose()
    arun(go())


def test_a_cancelled_request_leaves_no_timer_behind() -> None:
    async def go() -> None:
        async def script(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
            await srv.release.wait()
            return True
        async with RawServer(script) as srv:
            pool = ConnectionPool(timeout=60)
            task = asyncio.ensure_future(pool.request("POST", srv.url(), b"{}"))
            await until(lambda: len(srv.requests) == 1)
            conn = next(iter(pool._all))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert conn.timer is None and conn.closed
            await pool.aclose()
    arun(go())


def test_through_the_cli_every_row_gets_its_own_answer_when_a_server_sends_extra_ones(tmp_path: Path) -> None:
    """A server (or something between) that follows each answer with another: the CLI's rows stay right."""
    def answer_for(body: bytes, text: str) -> bytes:
        return ok(orjson.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}}))

    async def script(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        prompt = orjson.loads(body)["messages"][-1]["content"]
        writer.write(answer_for(body, "echo: " + prompt) + answer_for(body, "echo: stray"))
        return True

    with served_in_a_thread(script) as port:
        done = run_cli(tmp_path, f"http://127.0.0.1:{port}/v1", 50)
        assert done.returncode == 0, done.stderr
        rows = read_jsonl(tmp_path / "run" / "rows.jsonl")
        assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(50))
        assert all(r["completion"] == f"echo: prompt {r['id'][1:]}" for r in rows)


# --- failures that cannot heal stop the run ------------------------------------------------------------

def test_a_closed_port_stops_the_run_at_once_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    done = run_cli(tmp_path, f"http://127.0.0.1:{port}/v1", 200)
    assert time.monotonic() - started < 10
    assert done.returncode == 1
    assert done.stderr.count("nothing listens there (connection refused)") == 1, done.stderr
    assert read_jsonl(tmp_path / "run" / "rows.jsonl") == [] and read_jsonl(tmp_path / "run" / "rejected.jsonl") == []


def test_a_certificate_for_another_host_stops_the_run_at_once(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=other.test", "-addext", "subjectAltName=DNS:other.test"],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with served_in_a_thread(serve(ok(b"{}")), context) as port:
        started = time.monotonic()
        done = run_cli(tmp_path, f"https://127.0.0.1:{port}/v1", 100, env={"SSL_CERT_FILE": str(cert)})
    assert time.monotonic() - started < 10 and done.returncode == 1
    assert done.stderr.count("its TLS certificate is not accepted") == 1, done.stderr
    assert "IP address mismatch" in done.stderr or "doesn't match" in done.stderr or "mismatch" in done.stderr


def test_an_address_that_drops_packets_does_not_hold_up_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """Happy Eyeballs: the name's first address never completes a connect; the second answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    black_hole = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # a full accept queue: further connects there hang
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", black_hole))
        fillers.append(f)

    async def go() -> None:
        async with RawServer(serve(ok(b'{"ok": 1}'))) as srv:
            pool = ConnectionPool(connect_timeout=30)
            addresses = [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", black_hole)),
                         (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", srv.port))]

            async def resolve(loop: Any, host: str, port: int) -> list[tuple]:
                return addresses
            monkeypatch.setattr(pool, "_resolve", resolve)
            started = time.monotonic()
            resp = await pool.request("POST", "http://api.invalid/v1/x", b"{}")
            assert resp.body == b'{"ok": 1}' and time.monotonic() - started < 5
            await pool.aclose()
    try:
        arun(go())
    finally:
        for f in fillers:
            f.close()
        listener.close()
