"""A fake Hugging Face Hub on 127.0.0.1: the few endpoints huggingface_hub calls to create a dataset
repo, commit files to it and read one back, for `synthtrace push`'s tests.

    with FakeHub(token="hf_test") as hub:       # HF_ENDPOINT=hub.url, HF_TOKEN=hf_test
        push(DIR, "alice/data")
        hub.files("alice/data")                 # {"README.md": b"---…", "default/train-….parquet": …}

Endpoints: POST /api/repos/create (409 when it exists), POST /api/validate-yaml, GET
/api/datasets/R/revision/REV and /api/datasets/R (repo info), GET /api/datasets/R/tree/REV (the
file list), POST /api/datasets/R/preupload/REV (every file "regular": its bytes travel in the
commit), POST /api/datasets/R/commit/REV (huggingface_hub's NDJSON commit: a header line, then
`file` lines with base64 content and `deletedFile` lines), and HEAD/GET /datasets/R/resolve/REV/PATH.
Every request needs `Authorization: Bearer TOKEN`. `hub.requests` records (method, path) of each;
`hub.unknown` the ones it had no answer for; `hub.headers_seen` the headers of each (names in lower
case). Each endpoint is one method of `_Handler`, found through the table `ROUTES`. A stdlib
threading HTTP server: no event loop needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return hashlib.sha1(json.dumps(len(self.commits)).encode() + b"".join(
            k.encode() + hashlib.sha1(v).digest() for k, v in sorted(self.files.items()))).hexdigest()


class FakeHub:
    def __init__(self, token: str = "hf_fake_token"):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []
        self.headers_seen: list[dict[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def files(self, repo_id: str) -> dict[str, bytes]:
        return dict(self.repos[repo_id].files)

    def put(self, repo_id: str, path: str, data: bytes, private: bool = False) -> None:
        """A file on the Hub before the test pushes (a card someone edited there)."""
        repo = self.repos.setdefault(repo_id, Repo(private))
        repo.files[path] = data
        repo.commits.append({"summary": f"upload {path}", "files": [path], "deleted": []})


class _Handler(BaseHTTPRequestHandler):
    """One request to the fake Hub: `_route` checks the token and hands it to the method `ROUTES`
    names for its method and path; each route's method answers it."""

    protocol_version = "HTTP/1.1"
    hub: FakeHub  # the hub this server plays: set by `_handler`

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
               raw: bytes | None = None) -> None:
        data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        self._reply(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message} if code
                    else {"X-Error-Message": message})

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append((self.command, path))
        self.hub.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        body = self._body() if self.command in ("POST", "PUT") else b""
        if self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            self._error(401, "Invalid credentials in Authorization header")
            return
        for method, pattern, action in ROUTES:
            m = re.fullmatch(pattern, path)
            if m and method == self.command:
                action(self, m, body)
                return
        self.hub.unknown.append((self.command, path))
        self._error(404, f"no route for {self.command} {path}")

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _route

    def _repo(self, m: re.Match[str]) -> Repo | None:
        repo = self.hub.repos.get(m["repo"])
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
        return repo

    def create(self, m: re.Match[str], body: bytes) -> None:
        """A new dataset repo, named `organization/name` (else `user/name`); 409 when it exists."""
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else \
            f"user/{payload['name']}"
        if payload.get("type") != "dataset":
            self._error(400, "this fake hub holds dataset repos only")
            return
        if repo_id in self.hub.repos:  # the Hub names the repo in its 409, and exist_ok reads it
            self._reply(409, {"error": "You already created this dataset repo",
                              "url": f"{self.hub.url}/datasets/{repo_id}"})
            return
        self.hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
        self._reply(200, {"url": f"{self.hub.url}/datasets/{repo_id}", "name": repo_id})

    def validate_yaml(self, m: re.Match[str], body: bytes) -> None:
        """Every card's YAML is valid here."""
        self._reply(200, {"errors": [], "warnings": []})

    def info(self, m: re.Match[str], body: bytes) -> None:
        """The repo's info: its sha, visibility and files."""
        repo = self._repo(m)
        if repo is not None:
            self._reply(200, {"id": m["repo"], "sha": repo.sha, "private": repo.private,
                              "siblings": [{"rfilename": p} for p in sorted(repo.files)]})

    def tree(self, m: re.Match[str], body: bytes) -> None:
        """Every file of the repo, with its size."""
        repo = self._repo(m)
        if repo is not None:
            self._reply(200, [{"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                              for p, d in sorted(repo.files.items())])

    def preupload(self, m: re.Match[str], body: bytes) -> None:
        """Every file "regular": its bytes travel in the commit (no LFS)."""
        if self._repo(m) is not None:
            files = json.loads(body)["files"]
            self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                        for f in files]})

    def commit(self, m: re.Match[str], body: bytes) -> None:
        """huggingface_hub's NDJSON commit: a header line, `file` lines (base64) and `deletedFile` lines."""
        repo = self._repo(m)
        if repo is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        added, deleted = [], []
        for x in lines:
            if x["key"] == "file":
                repo.files[x["value"]["path"]] = base64.b64decode(x["value"]["content"])
                added.append(x["value"]["path"])
            elif x["key"] == "deletedFile":
                repo.files.pop(x["value"]["path"], None)
                deleted.append(x["value"]["path"])
            elif x["key"] != "header":
                self._error(400, f"this fake hub cannot commit a {x['key']!r} line")
                return
        repo.commits.append({"summary": header.get("summary"), "files": added, "deleted": deleted})
        self._reply(200, {"commitUrl": f"{self.hub.url}/datasets/{m['repo']}/commit/{repo.sha}",
                          "commitOid": repo.sha, "success": True})

    def resolve(self, m: re.Match[str], body: bytes) -> None:
        """One file's bytes (HEAD: its headers only)."""
        repo = self._repo(m)
        if repo is None:
            return
        data = repo.files.get(m["path"])
        if data is None:
            self._error(404, "Entry not found", "EntryNotFound")
            return
        etag = hashlib.sha1(data).hexdigest()
        self._reply(200, raw=data, headers={"X-Repo-Commit": repo.sha, "ETag": f'"{etag}"'})


# (method, path pattern, the `_Handler` method that answers): the first match wins.
ROUTES: list[tuple[str, str, Any]] = [
    ("POST", r"/api/repos/create", _Handler.create),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("GET", rf"/api/datasets/{_REPO}(?:/revision/{_REV})?", _Handler.info),
    ("GET", rf"/api/datasets/{_REPO}/tree/{_REV}(?:/.*)?", _Handler.tree),
    ("POST", rf"/api/datasets/{_REPO}/preupload/{_REV}", _Handler.preupload),
    ("POST", rf"/api/datasets/{_REPO}/commit/{_REV}", _Handler.commit),
    ("HEAD", rf"/datasets/{_REPO}/resolve/{_REV}/(?P<path>.+)", _Handler.resolve),
    ("GET", rf"/datasets/{_REPO}/resolve/{_REV}/(?P<path>.+)", _Handler.resolve),
]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to `hub` (the server makes one handler per request)."""
    return type("Handler", (_Handler,), {"hub": hub})
