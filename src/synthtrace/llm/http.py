"""A lean HTTP/1.1 client for JSON APIs: asyncio protocols, httptools' C parser, pooled keep-alive.

Every LLM call crosses this code, so its CPU per request is a product figure: a general-purpose
client (aiohttp, an SDK) spends several times as much per request and takes far longer to import
(`bench/server_check.py` measures both on the machine at hand). It can be this small because it serves one shape of traffic: requests with a
body that fits in memory, answered by a body that fits in memory, on keep-alive connections to a few
origins. Parsing — status line, headers, Content-Length, chunked encoding, keep-alive semantics — is
llhttp (Node.js's parser) through httptools; TLS is the standard library's.

Proxies as every HTTP client honours them (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, in
either case, read by the standard library; or one proxy per endpoint): https goes through an HTTP
CONNECT tunnel, plain http as absolute-form requests to the proxy, credentials in the proxy URL
become a `Proxy-Authorization` header and are never shown. Certificates are verified against the
system's store (`SSL_CERT_FILE` / `SSL_CERT_DIR` move it), or `REQUESTS_CA_BUNDLE`, or an endpoint's
own bundle.

Deliberately absent: redirects (an API that redirects a POST is misconfigured; the 3xx is returned
as is), cookies, HTTP/2. Failures surface as the exceptions below so that callers can tell a
connection that never opened from one lost mid-answer, and both from a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import os
import socket
import ssl
import time
import zlib
from urllib.parse import unquote, urlsplit

import httptools

from synthtrace.types import Struct

USER_AGENT = b"synthtrace"
DNS_TTL_S = 300.0
# Idle connections older than this are closed rather than reused: servers drop idle keep-alive
# connections after a few seconds (uvicorn, so vLLM and SGLang: 5 s), and a request sent just as the
# server hangs up fails. A `Keep-Alive: timeout=N` header from the server shortens it.
KEEPALIVE_EXPIRY_S = 4.0
HAPPY_EYEBALLS_DELAY_S = 0.25  # RFC 8305's recommended connection attempt delay
MAX_HEADER_BYTES = 256 * 1024  # an answer's headers, all together
MAX_BODY_BYTES = 256 * 1024 * 1024  # an answer's body, before and after decompression
# The headers anything here or in the clients reads. Providers send a score of others (rate-limit
# counters, tracing ids, CDN fields); decoding them all would cost more than parsing the status line.
KEPT_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"content-encoding", b"keep-alive",
                          b"retry-after", b"location", b"content-type", b"x-request-id", b"request-id"})


class HTTPError(Exception):
    """A request that got no usable answer."""


class ConnectError(HTTPError):
    """The connection could not be opened. `cause` says why: "dns" (the name does not resolve),
    "tls" (the certificate was not accepted), "refused" (nothing listens), "timeout", or "other"."""

    def __init__(self, message: str, cause: str = "other"):
        super().__init__(message)
        self.cause = cause


def connect_cause(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return "tls"
    if isinstance(e, socket.gaierror):
        return "dns"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    return "other"


class ConnectionLost(HTTPError):
    """The connection closed before the whole answer arrived."""


class BadResponse(HTTPError):
    """The bytes that came back are not HTTP/1.1."""


class Timeout(HTTPError):
    """No whole answer within the request's time limit."""


class Response(Struct):
    """A whole answer: status, the headers kept, the body (decompressed)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers  # the KEPT_HEADERS that came, lower-case; a repeated one keeps its last value
        self.body = body


class Proxy(Struct):
    """An HTTP proxy: where it is, and the credentials its URL carried (as a header, never shown)."""

    __slots__ = ("host", "port", "authorization")

    def __init__(self, host: str, port: int, authorization: bytes | None = None):
        self.host = host
        self.port = port
        self.authorization = authorization  # b"Basic …", or None

    @classmethod
    def parse(cls, url: str) -> Proxy:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"unsupported proxy {parts.scheme}://{parts.hostname or ''} (an http:// proxy is needed)")
        auth = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            auth = b"Basic " + base64.b64encode(pair)
        return cls(parts.hostname, parts.port or 80, auth)

    def __repr__(self) -> str:  # never the credentials
        return f"Proxy({self.shown})"

    @property
    def shown(self) -> str:
        return f"{self.host}:{self.port}"


class Network(Struct):
    """How connections leave this machine: which proxy (None: the environment's; "direct": none) and
    which certificates to trust (the system's store and the bundles named; `verify=False`: anything)."""

    __slots__ = ("proxy", "ca_bundle", "verify")

    def __init__(self, proxy: str | None = None, ca_bundle: str | None = None, verify: bool = True):
        self.proxy = proxy
        self.ca_bundle = ca_bundle
        self.verify = verify

    def proxy_for(self, scheme: str, host: str) -> Proxy | None:
        if self.proxy == "direct":
            return None
        if self.proxy:
            return Proxy.parse(self.proxy)
        if not any(k.lower().endswith("_proxy") for k in os.environ):
            return None
        # the standard library's reading of them (a slow import: only when some are set)
        from urllib.request import getproxies_environment, proxy_bypass_environment

        proxies = getproxies_environment()  # HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY, either case
        url = proxies.get(scheme) or proxies.get("all")
        if not url or proxy_bypass_environment(host, proxies):
            return None
        return Proxy.parse(url)

    def ssl_context(self) -> ssl.SSLContext:
        """The system's trust store (which `SSL_CERT_FILE` / `SSL_CERT_DIR` move), and beside it the
        bundles that `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE` and the endpoint's `ca_bundle` name."""
        context = ssl.create_default_context()
        for bundle in dict.fromkeys(filter(None, (os.environ.get("REQUESTS_CA_BUNDLE"),
                                                  os.environ.get("CURL_CA_BUNDLE"), self.ca_bundle))):
            context.load_verify_locations(cafile=bundle)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class _Target(Struct):
    """A URL split once: where to connect and the request-line path."""

    __slots__ = ("origin", "host_header", "path")

    def __init__(self, origin: tuple[str, str, int], host_header: bytes, path: bytes):
        self.origin = origin  # scheme, host, port
        self.host_header = host_header
        self.path = path

    @classmethod
    def parse(cls, url: str) -> _Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default = port == (443 if parts.scheme == "https" else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = shown if default else f"{shown}:{port}"
        # the idna codec is a slow import; only a non-ASCII name needs it
        return cls((parts.scheme, host, port), host_header.encode("ascii" if host_header.isascii() else "idna"),
                   path.encode("ascii"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection, owned by one request from its send to the end of its answer.

    It goes back to the pool only after a whole answer to the request it carries, once the bytes
    that brought it are parsed, and only if nothing else came: an answer nobody asked for (a second
    one, or bytes on an idle connection) retires it, so two requests can never share it.
    """

    __slots__ = ("pool", "origin", "transport", "parser", "waiter", "status", "headers", "chunks",
                 "headers_done", "closed", "idle_since", "expiry", "timer", "answered", "keep", "stray",
                 "header_bytes", "body_bytes")

    def __init__(self, pool: ConnectionPool, origin: tuple[str, str, int]):
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.headers_done = False
        self.closed = False
        self.idle_since = 0.0
        self.expiry = pool.keepalive_expiry
        self.timer: asyncio.TimerHandle | None = None
        self.answered = False  # the request on this connection has had its whole answer
        self.keep = False  # ... and the server allows reusing the connection
        self.stray = False  # an answer began that no request asked for
        self.header_bytes = 0
        self.body_bytes = 0

    # asyncio protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.answered:  # bytes nobody asked for: never trust the connection again
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:  # a limit raised in a callback comes wrapped in one
            limit = e.__context__ if isinstance(e.__context__, _TooLarge) else None
            self._fail(BadResponse(str(limit) if limit else f"unparseable HTTP response: {e}"))
            return
        if self.answered:  # the whole answer is in: hand the connection back, unless more came with it
            self.waiter = None
            if self.keep and not self.stray and not self.closed:
                self.pool._release(self)
            else:
                self.close()

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost settles any waiter

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if self.waiter is not None and not self.waiter.done():
            if self.headers_done and self._until_eof():
                self._finish()  # a body delimited by the close itself (no length, not chunked)
            else:
                reason = f": {exc}" if exc else ""
                got = "after the headers" if self.headers_done else "before an answer"
                self._fail(ConnectionLost(f"server closed the connection {got}{reason}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.answered:  # a second answer to one request
            self.stray = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _TooLarge(f"headers over {MAX_HEADER_BYTES // 1024} KiB")
        name = name.lower()
        if name in KEPT_HEADERS:
            self.headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if self.answered:
            return
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY_BYTES:
            raise _TooLarge(f"body over {MAX_BODY_BYTES >> 20} MiB")
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.answered:  # the end of an answer nobody asked for
            return
        if self.status < 200:  # 1xx interim answer: the real one follows on this connection
            self.headers, self.chunks, self.headers_done = {}, [], False
            return
        self.keep = self.parser.should_keep_alive()
        if "keep-alive" in self.headers:
            self._note_keepalive(self.headers["keep-alive"])
        self.answered = True
        self._finish(keep_waiter=True)

    def _note_keepalive(self, value: str) -> None:
        for part in value.split(","):
            name, _, number = part.strip().partition("=")
            if name.lower() == "timeout":
                try:
                    self.expiry = min(self.expiry, max(0.0, float(number) - 1.0))
                except ValueError:
                    pass

    # request side
    def send(self, data: bytes, waiter: asyncio.Future[Response], timeout: float) -> None:
        if self.waiter is not None:  # never two requests on one connection
            raise RuntimeError("a connection was handed to a second request")
        self.waiter = waiter
        self.status, self.headers, self.chunks, self.headers_done = 0, {}, [], False
        self.answered = self.keep = self.stray = False
        self.header_bytes = self.body_bytes = 0
        if self.closed or self.transport.is_closing():  # type: ignore[union-attr]
            self._fail(ConnectionLost("server closed the connection before the request was sent"))
            return
        self.timer = waiter.get_loop().call_later(timeout, self._timed_out, timeout)
        self.transport.write(data)  # type: ignore[union-attr]

    def _until_eof(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "")

    def _finish(self, keep_waiter: bool = False) -> None:
        """Settle the waiter with the answer. `keep_waiter`: the connection stays its request's until
        the bytes being parsed are done (see `data_received`)."""
        waiter = self.waiter
        if not keep_waiter:
            self.waiter = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        if waiter is None or waiter.done():
            return
        encoding = self.headers.get("content-encoding")
        if encoding and body:
            try:
                body = _decompress(encoding, body)
            except (zlib.error, _TooLarge) as e:
                waiter.set_exception(BadResponse(f"body does not decode as {encoding}: {e}"))
                self.keep = False
                return
        waiter.set_result(Response(self.status, self.headers, body))

    def _fail(self, error: HTTPError) -> None:
        waiter, self.waiter = self.waiter, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def _timed_out(self, timeout: float) -> None:
        self.timer = None
        self._fail(Timeout(f"no complete answer within {timeout:g} s"))

    def close(self) -> None:
        """Drop the connection now (never reused)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.closed:
            self.closed = True
            self.pool._forget(self)
            if self.transport is not None:
                self.transport.abort()


class _Handshake(asyncio.Protocol):
    """The proxy's answer to a CONNECT: its status line, read up to the end of its headers."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not self.answer.done():
            line = self.buffer.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ", 2)
            try:
                self.answer.set_result((int(parts[1]), parts[2] if len(parts) > 2 else ""))
            except (IndexError, ValueError):
                self.answer.set_exception(ConnectError(f"the proxy did not answer in HTTP: {line[:80]!r}", "proxy"))
        elif len(self.buffer) > MAX_HEADER_BYTES and not self.answer.done():
            self.answer.set_exception(ConnectError("the proxy's answer to CONNECT is too long", "proxy"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ConnectError("the proxy closed the connection instead of a tunnel", "proxy"))


def _interleave(addresses: list[tuple]) -> list[tuple]:
    """Addresses alternating between families, the first family first (RFC 8305, section 4)."""
    by_family: dict[int, list[tuple]] = {}
    for a in addresses:
        by_family.setdefault(a[0], []).append(a)
    groups = list(by_family.values())
    return [a for round_ in itertools.zip_longest(*groups) for a in round_ if a is not None]


def _ip_literal(host: str, port: int) -> list[tuple] | None:
    """The address itself when `host` is an IP literal: no lookup (nor resolver thread) needed."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
    return None


def _expire(task: asyncio.Task, expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class _TooLarge(Exception):
    """An answer over the size this client takes (headers, body, or body once decompressed)."""


def _inflate(body: bytes, wbits: int) -> bytes:
    """Decompress every member of `body` (a gzip stream may hold several), at most MAX_BODY_BYTES."""
    out, total = [], 0
    while body:
        d = zlib.decompressobj(wbits)
        part = d.decompress(body, MAX_BODY_BYTES - total + 1)
        total += len(part)
        if total > MAX_BODY_BYTES or d.unconsumed_tail:
            raise _TooLarge(f"body over {MAX_BODY_BYTES >> 20} MiB once decompressed")
        out.append(part)
        if not d.eof:
            raise zlib.error("truncated compressed body")
        body = d.unused_data
    return b"".join(out)


def _decompress(encoding: str, body: bytes) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return _inflate(body, 31)
    if encoding == "deflate":  # zlib-wrapped as the RFC says, raw as some servers send it
        try:
            return _inflate(body, 15)
        except zlib.error:
            return _inflate(body, -15)
    if encoding == "identity":
        return body
    raise zlib.error(f"unsupported content-encoding {encoding!r}")


class ConnectionPool:
    """Keep-alive connections per origin, opened on demand and reused most-recent first.

    There is no cap on connections: the gateway's limiter bounds requests in flight, and one
    connection serves one request at a time, so the pool never holds more than that many.
    """

    def __init__(self, headers: dict[str, str] | None = None, timeout: float = 600.0,
                 connect_timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None,
                 keepalive_expiry: float = KEEPALIVE_EXPIRY_S, network: Network | None = None):
        static = [(b"User-Agent", USER_AGENT), (b"Accept", b"application/json"),
                  (b"Accept-Encoding", b"gzip, deflate")]
        given = {k.lower() for k in (headers or {})}
        static = [(k, v) for k, v in static if k.decode().lower() not in given]
        static += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        self._static = b"".join(b"%s: %s\r\n" % kv for kv in static)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self.network = network or Network()
        self._proxies: dict[tuple[str, str, int], Proxy | None] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._prepared: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[_Target, bytes]] = {}
        self._dns: dict[tuple[str, int], tuple[float, asyncio.Future[list[tuple]]]] = {}
        self._closed = False

    async def request(self, method: str, url: str, body: bytes = b"",
                      headers: dict[str, str] | None = None, timeout: float | None = None) -> Response:
        """Send one request and return the whole answer, or raise an `HTTPError`."""
        if self._closed:
            raise ConnectError("the connection pool is closed")
        key = (method, url, tuple(headers.items()) if headers else ())
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepare(*key)
        target, head = prepared
        conn = await self._acquire(target.origin)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        conn.send(head + b"%d\r\n\r\n" % len(body) + body, waiter, timeout or self.timeout)
        try:
            return await waiter
        except asyncio.CancelledError:
            conn.close()  # half a request/answer on the wire: the connection is unusable
            raise

    def _prepare(self, method: str, url: str, extra: tuple[tuple[str, str], ...]) -> tuple[_Target, bytes]:
        """Where to connect, and the request's bytes up to its Content-Length value (through an http
        proxy: the whole URL as the request target, and the proxy's credentials)."""
        target = _Target.parse(url)
        lines = b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1")) for k, v in extra)
        request_target = target.path
        proxy = self.proxy_for(target.origin)
        if proxy is not None and target.origin[0] == "http":
            request_target = b"http://%s%s" % (target.host_header, target.path)
            if proxy.authorization:
                lines += b"Proxy-Authorization: %s\r\n" % proxy.authorization
        head = (b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode("ascii"), request_target, target.host_header)
                + self._static + lines + b"Content-Length: ")
        if len(self._prepared) < 64:  # a handful of URLs and header sets per client; never a leak
            self._prepared[(method, url, extra)] = (target, head)
        return target, head

    async def _acquire(self, origin: tuple[str, str, int]) -> _Connection:
        idle = self._idle.get(origin)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    if now - conn.idle_since < conn.expiry:
                        return conn
                    conn.close()
        return await self._open(origin)

    def proxy_for(self, origin: tuple[str, str, int]) -> Proxy | None:
        if origin not in self._proxies:
            try:
                self._proxies[origin] = self.network.proxy_for(origin[0], origin[1])
            except ValueError as e:  # a proxy URL this client cannot use
                raise ConnectError(str(e), "proxy") from None
        return self._proxies[origin]

    async def _open(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        if scheme == "https" and self._ssl is None:
            self._ssl = self.network.ssl_context()
        # The deadline cancels this task, as asyncio.timeout does (3.11+): wait_for would wrap the
        # connect in a task of its own, a third of the CPU a first request costs.
        task = asyncio.current_task()
        assert task is not None
        expired = []
        timer = asyncio.get_running_loop().call_later(self.connect_timeout, _expire, task, expired)
        try:
            conn = await self._connect(origin)
        except asyncio.CancelledError:
            if not expired:
                raise
            if hasattr(task, "uncancel"):  # 3.11+: this cancellation was ours, not the caller's ...
                if task.uncancel() > 0:  # ... unless the caller cancelled too, in the same tick
                    raise
            raise ConnectError(f"cannot connect to {self._where(origin)} within {self.connect_timeout:g} s",
                               "timeout") from None
        except OSError as e:  # ssl.SSLError included
            self._dns.clear()  # the next try looks the names up again
            raise ConnectError(f"cannot connect to {self._where(origin)}: {e}", connect_cause(e)) from e
        finally:
            timer.cancel()
        self._all.add(conn)
        return conn

    def _where(self, origin: tuple[str, str, int]) -> str:
        proxy = self.proxy_for(origin)
        return f"{origin[1]}:{origin[2]}" + (f" through the proxy {proxy.shown}" if proxy else "")

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        proxy = self.proxy_for(origin)
        if proxy is not None:
            return await self._through(proxy, origin)
        return await self._direct(origin)

    async def _through(self, proxy: Proxy, origin: tuple[str, str, int]) -> _Connection:
        """A connection to `origin` by way of an http proxy: for http, a connection to the proxy (the
        requests name their URL); for https, a CONNECT tunnel through it with TLS to the origin inside."""
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        if scheme == "http":
            return await self._race(origin, proxy.host, proxy.port, None)
        handshake = _Handshake()
        family, _t, proto, _n, address = (await self._resolve(loop, proxy.host, proxy.port))[0]
        transport, _ = await loop.create_connection(lambda: handshake, address[0], address[1], family=family,
                                                    proto=proto)
        try:
            auth = b"Proxy-Authorization: %s\r\n" % proxy.authorization if proxy.authorization else b""
            shown = f"[{host}]" if ":" in host else host
            transport.write(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n" % (
                shown.encode("idna"), port, shown.encode("idna"), port, auth))
            status, reason = await handshake.answer
            if status == 407:
                raise ConnectError(f"the proxy {proxy.shown} needs credentials (407 {reason}): put them in the "
                                   "proxy URL, http://USER:PASSWORD@HOST:PORT", "proxy")
            if status != 200:
                raise ConnectError(f"the proxy {proxy.shown} refused the tunnel to {host}:{port} ({status} {reason})",
                                   "proxy")
            conn = _Connection(self, origin)
            tls = await loop.start_tls(transport, conn, self._ssl, server_hostname=host)
            conn.connection_made(tls)
            return conn
        except BaseException:
            transport.abort()
            raise

    async def _direct(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        return await self._race(origin, host, port, self._ssl if scheme == "https" else None)

    async def _race(self, origin: tuple[str, str, int], host: str, port: int,
                    context: ssl.SSLContext | None) -> _Connection:
        """Connect to one of the origin's addresses. Several are tried Happy Eyeballs style (RFC 8305):
        families interleaved, the next attempt started when the last has not connected within
        HAPPY_EYEBALLS_DELAY_S, the first to connect kept; so one address that drops packets does not
        use up the whole connect deadline."""
        loop = asyncio.get_running_loop()
        addresses = _interleave(await self._resolve(loop, host, port))

        async def attempt(family: int, proto: int, address: tuple) -> _Connection:
            _, conn = await loop.create_connection(
                lambda: _Connection(self, origin), address[0], address[1], family=family, proto=proto,
                ssl=context, server_hostname=origin[1] if context else None)
            return conn  # type: ignore[return-value]

        if len(addresses) == 1:
            family, _type, proto, _name, address = addresses[0]
            return await attempt(family, proto, address)
        from asyncio import staggered

        conn, _, errors = await staggered.staggered_race(
            [functools.partial(attempt, a[0], a[2], a[4]) for a in addresses], HAPPY_EYEBALLS_DELAY_S)
        if conn is None:
            raise next((e for e in reversed(errors) if e is not None), OSError(f"no address for {host}"))
        return conn

    async def _resolve(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[tuple]:
        """Addresses for host:port, looked up once per DNS_TTL_S however many connections open at once."""
        key = (host, port)
        literal = _ip_literal(host, port)
        if literal is not None:
            return literal
        cached = self._dns.get(key)
        if cached is None or time.monotonic() - cached[0] > DNS_TTL_S:
            lookup = asyncio.ensure_future(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            lookup.add_done_callback(_retrieve)  # a lookup whose first asker gave up must not warn
            cached = self._dns[key] = (time.monotonic(), lookup)
        return await asyncio.shield(cached[1])

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin, []).append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)

    async def aclose(self) -> None:
        """Close every connection; requests still in flight fail with ConnectionLost."""
        self._closed = True
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        if self._all:
            await asyncio.sleep(0)  # let the transports deliver connection_lost

    @property
    def open_connections(self) -> int:
        return len(self._all)
