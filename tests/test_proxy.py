"""Proxies and certificates as users meet them, all on 127.0.0.1 (no name is ever resolved).

A small CONNECT proxy written here sits in front of a TLS server whose certificate a test CA signed:
requests go through it (a tunnel for https, absolute-form for http), `NO_PROXY` bypasses it,
credentials in the proxy URL get through one that asks for them and their lack is a clear stop, a
certificate for another host is refused, and `SSL_CERT_FILE` or `REQUESTS_CA_BUNDLE` make the
private CA trusted. The same through the CLI, on uvloop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import arun, cli_command, read_jsonl, serving_in_a_thread, subprocess_env
from test_http import RawServer, ok, serve

from synthtrace.llm.http import ConnectError, ConnectionPool, Network

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for a test CA")


class Proxy:
    """An HTTP proxy: CONNECT tunnels and absolute-form requests, optionally asking for credentials."""

    def __init__(self, credentials: str | None = None):
        self.expected = b"Basic " + base64.b64encode(credentials.encode()) if credentials else None
        self.seen: list[tuple[str, str]] = []  # (method, target) of every request it handled
        self.auth_seen: list[bytes | None] = []

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        self.seen.append((method, target))
        auth = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                     if line.lower().startswith(b"proxy-authorization:")), None)
        self.auth_seen.append(auth)
        if self.expected and auth != self.expected:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
                         b"Content-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # absolute-form: forward the request in origin-form
            url = target.removeprefix("http://")
            hostport, _, path = url.partition("/")
            host, port = hostport.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            rest = head.split(b"\r\n", 1)[1]
            up_writer.write(f"{method} /{path} HTTP/1.1\r\n".encode() + rest)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA and two server certificates it signed: for 127.0.0.1, and for another host."""
    d = tmp_path_factory.mktemp("ca")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=synthtrace test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")
    for name, san in (("server", "IP:127.0.0.1"), ("other", "DNS:other.test")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={san.split(':')[1]}")
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {"ca": d / "ca.pem", "server": d / "server.pem", "server_key": d / "server.key",
            "other": d / "other.pem", "other_key": d / "other.key"}


def tls(ca: dict[str, Path], which: str = "server") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(ca[which], ca[which + "_key"])
    return context


@pytest.mark.parametrize("trust", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
def test_https_goes_through_the_proxy_and_a_private_ca_is_trusted(ca, monkeypatch, trust):
    monkeypatch.setenv(trust, str(ca["ca"]))

    async def go() -> None:
        async with RawServer(serve(ok(b'{"through": true}')), tls(ca)) as srv, Proxy() as proxy:
            monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
            pool = ConnectionPool()
            for _ in range(3):  # one tunnel, kept alive
                assert (await pool.request("POST", srv.url(scheme="https"), b"{}")).body == b'{"through": true}'
            assert proxy.seen == [("CONNECT", f"127.0.0.1:{srv.port}")]
            await pool.aclose()
    arun(go())


def test_no_proxy_bypasses_it_and_plain_http_goes_in_absolute_form(ca, monkeypatch):
    async def go() -> None:
        async with RawServer(serve(ok(b"{}"))) as srv, Proxy() as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
            pool = ConnectionPool()
            assert (await pool.request("POST", srv.url("/v1/x"), b"{}")).status == 200
            assert proxy.seen == [("POST", f"http://127.0.0.1:{srv.port}/v1/x")]
            assert srv.requests[0][0].startswith(b"POST /v1/x HTTP/1.1")  # the proxy passed it on in origin-form
            await pool.aclose()
            monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
            pool = ConnectionPool()
            assert (await pool.request("POST", srv.url("/v1/y"), b"{}")).status == 200
            assert len(proxy.seen) == 1  # straight to the server
            await pool.aclose()
    arun(go())


def test_a_proxy_that_asks_for_credentials_gets_them_from_its_url_and_says_so_without(ca, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(ca["ca"]))

    async def go() -> None:
        async with RawServer(serve(ok(b"{}")), tls(ca)) as srv, Proxy("alice:s3cr@t") as proxy:
            monkeypatch.setenv("HTTPS_PROXY", f"http://alice:s3cr%40t@127.0.0.1:{proxy.port}")
            pool = ConnectionPool()
            assert (await pool.request("POST", srv.url(scheme="https"), b"{}")).status == 200
            await pool.aclose()
            monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
            pool = ConnectionPool()
            with pytest.raises(ConnectError, match="needs credentials") as e:
                await pool.request("POST", srv.url(scheme="https"), b"{}")
            assert e.value.cause == "proxy"
            await pool.aclose()
            assert proxy.auth_seen[0] == b"Basic " + base64.b64encode(b"alice:s3cr@t") and proxy.auth_seen[1] is None
    arun(go())


def test_a_certificate_for_another_host_is_refused_through_the_tunnel(ca, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(ca["ca"]))

    async def go() -> None:
        async with RawServer(serve(ok(b"{}")), tls(ca, "other")) as srv, Proxy() as proxy:
            pool = ConnectionPool(network=Network(proxy=f"http://127.0.0.1:{proxy.port}"))
            with pytest.raises(ConnectError, match="through the proxy") as e:
                await pool.request("POST", srv.url(scheme="https"), b"{}")
            assert e.value.cause == "tls" and "mismatch" in str(e.value)
            await pool.aclose()
            trusting = ConnectionPool(network=Network(proxy=f"http://127.0.0.1:{proxy.port}", verify=False))
            assert (await trusting.request("POST", srv.url(scheme="https"), b"{}")).status == 200
            await trusting.aclose()
    arun(go())


@contextlib.contextmanager
def in_a_thread(ca: dict[str, Path], credentials: str | None) -> Iterator[dict[str, Any]]:
    """A TLS server and a proxy in front of it, on a loop of their own (for a CLI child process)."""
    with serving_in_a_thread(RawServer(serve(orjson_body("echo: through")), tls(ca)), Proxy(credentials)) as (srv, p):
        yield {"server": srv.port, "proxy": p}


def orjson_body(text: str) -> bytes:
    return ok(json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode())


def cli_run(tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"p {i}"}) + "\n" for i in range(20)))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"endpoints: {{tls: {{kind: openai, base_url: 'https://127.0.0.1:{port}/v1', timeout: 5}}}}\n"
                   "default_endpoint: tls\n")
    return subprocess.run(cli_command("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg,
                                      "--model", "m", "-q", "--fresh"), env=subprocess_env(env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def test_the_cli_goes_through_an_authenticating_proxy_and_stops_clearly_without_credentials(ca, tmp_path):
    with in_a_thread(ca, "bob:pw") as box:
        env = {"REQUESTS_CA_BUNDLE": str(ca["ca"]), "HTTPS_PROXY": f"http://bob:pw@127.0.0.1:{box['proxy'].port}"}
        done = cli_run(tmp_path, box["server"], env)
        assert done.returncode == 0, done.stderr
        assert len(read_jsonl(tmp_path / "run" / "rows.jsonl")) == 20
        assert all(method == "CONNECT" for method, _ in box["proxy"].seen)
        written = done.stdout + done.stderr + "".join(f.read_text(errors="replace")
                                                      for f in (tmp_path / "run").iterdir() if f.suffix == ".json")
        assert "bob" not in written and "pw@" not in written  # the credentials go nowhere but to the proxy
        done = cli_run(tmp_path, box["server"], {**env, "HTTPS_PROXY": f"http://127.0.0.1:{box['proxy'].port}"})
    assert done.returncode == 1
    assert done.stderr.count("needs credentials") == 1, done.stderr


def test_an_endpoint_can_name_its_own_proxy_and_turning_verification_off_is_said_out_loud(ca, tmp_path):
    with in_a_thread(ca, None) as box:
        cfg = tmp_path / "cfg.yaml"
        inp = tmp_path / "in.jsonl"
        inp.write_text(json.dumps({"id": "a", "prompt": "hi"}) + "\n")
        cfg.write_text(f"endpoints: {{tls: {{kind: openai, base_url: 'https://127.0.0.1:{box['server']}/v1', "
                       f"proxy: 'http://127.0.0.1:{box['proxy'].port}', verify: false}}}}\ndefault_endpoint: tls\n")
        done = subprocess.run(cli_command("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg,
                                          "--model", "m", "-q"), env=subprocess_env(), cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "TLS certificates are NOT verified" in done.stderr
    assert box["proxy"].seen and read_jsonl(tmp_path / "run" / "rows.jsonl")[0]["completion"] == "echo: through"
