"""`synthtrace view`: a private web page over one or more run directories, served on loopback.

A standard-library threaded HTTP server: the page and its vendored scripts from `static/`, and a
small JSON API over each run's index (`index.py`, `query.py`) and journal. It binds 127.0.0.1
unless told otherwise, there answers only requests addressed to loopback (so a web page elsewhere
cannot reach it through DNS rebinding), sends a Content-Security-Policy that allows
nothing but its own scripts, and never turns row text into markup: the page renders every value
as text.
"""

from __future__ import annotations

import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from synthtrace.engine.journal import Journal
from synthtrace.engine.store import JOURNAL
from synthtrace.view import query
from synthtrace.view.fields import view_fields
from synthtrace.view.index import RunIndex

STATIC = Path(__file__).with_name("static")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class Run:
    """One run as the page sees it: its index, its journal (read-only use), what its recipe declares."""

    def __init__(self, path: Path):
        self.path = path
        self.index = RunIndex(path)
        self.lock = threading.Lock()  # one SQLite connection per run: one question at a time
        self.fields = view_fields(self.index.manifest)
        self._journal: Journal | None = None

    def describe(self) -> dict[str, Any]:
        m = self.index.manifest
        counts = dict(self.index.db.execute("SELECT kind, COUNT(*) FROM docs GROUP BY kind"))
        return {"path": str(self.path), "name": self.path.name, "recipe": m.get("recipe"), "status": m.get("status"),
                "model": (m.get("model") or {}).get("alias") or (m.get("model") or {}).get("model"),
                "rows": counts.get("row", 0), "rejected": counts.get("rejected", 0), "view": self.fields,
                "fields": self.index.fields()}

    def call(self, key: str) -> dict[str, Any] | None:
        if not (self.path / JOURNAL).exists():
            return None
        if self._journal is None:
            self._journal = Journal(self.path / JOURNAL)
        return self._journal.call(key)


class ViewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, runs: list[Path], host: str = "127.0.0.1", port: int = 0):
        self.runs = [Run(p) for p in runs]
        super().__init__((host, port), _Handler)
        # On loopback only requests addressed to loopback are answered (DNS rebinding); a server bound
        # elsewhere on purpose answers whatever name it is reached by.
        loopback = host in ("127.0.0.1", "localhost", "::1")
        self.allowed_hosts = {f"{h}:{self.server_address[1]}" for h in ("127.0.0.1", "localhost", "[::1]")} \
            if loopback else None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        for run in self.runs:
            run.index.close()


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the page asks many small questions
        pass

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        allowed = self.server.allowed_hosts
        if allowed is not None and self.headers.get("Host") not in allowed:
            return self._send(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host", "text/plain")
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        try:
            if not parts or parts == ["index.html"]:
                return self._file(STATIC / "index.html")
            if parts[0] == "static" and len(parts) >= 2:
                return self._file(STATIC.joinpath(*parts[1:]))
            if parts[0] == "api":
                return self._json(self._api(parts[1:], parse_qs(url.query)))
        except query.BadFilter as e:
            return self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        except LookupError:
            pass
        self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def _api(self, parts: list[str], params: dict[str, list[str]]) -> Any:
        if parts == ["runs"]:
            return [run.describe() for run in self.server.runs]
        run = self.server.runs[int(parts[0])]
        spec = orjson.loads(params["spec"][0]) if "spec" in params else {}
        what = parts[1] if len(parts) > 1 else ""
        with run.lock:
            if what == "page":
                offset = int(params.get("offset", ["0"])[0])
                return query.page(run.index, spec, offset, int(params.get("size", ["50"])[0]))
            if what == "facets":
                return query.facets(run.index, spec)
            if what == "reasons":
                return query.reasons(run.index, spec)
            if what == "doc" and len(parts) == 3:
                doc = run.index.doc(int(parts[2]))
                if doc is None:
                    raise LookupError(parts[2])
                return {**doc, "siblings": query.siblings(run.index, int(parts[2]))}
            if what == "call" and len(parts) == 3:
                call = run.call(parts[2])
                if call is None:
                    raise LookupError(parts[2])
                return call
        raise LookupError(what)

    def _file(self, path: Path) -> None:
        path = path.resolve()
        if STATIC.resolve() not in path.parents or not path.is_file():
            raise LookupError(str(path))
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, path.read_bytes(), kind + ("; charset=utf-8" if kind.startswith("text/") or
                                                              kind.endswith("javascript") else ""))

    def _json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, orjson.dumps(data, default=str), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
