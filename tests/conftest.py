"""Shared fixtures: a fake provider on 127.0.0.1, input files, config files, and the CLI two ways.

Every test talks to `synthtrace.testing.FakeProvider` (a real HTTP server on loopback); nothing
here may reach another host. Provider keys are scrubbed from the environment of every test and
every subprocess, so a developer's real keys can neither leak into a run dir nor be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from synthtrace.cli import main as cli_main
from synthtrace.engine import online as online_mod
from synthtrace.testing import FakeProvider

# Variables that would point synthtrace somewhere else or hand it a real credential.
SCRUBBED_ENV = ("OPENAI_API_KEY", "SYNTHTRACE_API_KEY", "ANTHROPIC_API_KEY", "ARGO_USER", "OPENAI_BASE_URL",
                "ARGO_BASE_URL", "ANTHROPIC_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    # No ~/.config/synthtrace/config.yaml of the developer's may steer a test run.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def fp() -> Iterator[FakeProvider]:
    """A running fake provider (background thread). Tune it per test: `fp.latency = 0.05`."""
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the online transport's exponential backoff (in-process runs only) so retry tests take milliseconds."""
    monkeypatch.setattr(online_mod, "BACKOFF_BASE_S", 0.02)


def arun(coro: Any) -> Any:
    """Run a coroutine to completion in a fresh event loop."""
    return asyncio.run(coro)


# --- files ---------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Write rows to `path`: dicts as JSON lines, str/bytes lines exactly as given (for bad input)."""
    with open(path, "wb") as f:
        for row in rows:
            if isinstance(row, bytes):
                f.write(row.rstrip(b"\n") + b"\n")
            elif isinstance(row, str):
                f.write(row.rstrip("\n").encode() + b"\n")
            else:
                f.write(json.dumps(row).encode() + b"\n")
    return path


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    def write(rows: list[Any], name: str = "in.jsonl") -> Path:
        return _write_jsonl(tmp_path / name, rows)
    return write


def prompts(n: int, prefix: str = "prompt") -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "prompt": f"{prefix} {i}"} for i in range(n)]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_config(path: Path, fp: FakeProvider, *, timeout: float = 2.0, max_retries: int = 3,
                prices: dict[str, dict[str, float]] | None = None, **extra: Any) -> Path:
    """A YAML config whose default endpoint and model are the fake provider's OpenAI API."""
    cfg: dict[str, Any] = {
        "endpoints": {"fake": {"kind": "openai", "base_url": fp.openai_base, "timeout": timeout}},
        "default_endpoint": "fake",
        "default_model": "fake",
        "limits": {"max_retries": max_retries},
    }
    if prices:
        cfg["prices"] = prices
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path: Path, fp: FakeProvider) -> Callable[..., Path]:
    def make(name: str = "synthtrace-test.yaml", **kwargs: Any) -> Path:
        return make_config(tmp_path / name, fp, **kwargs)
    return make


# --- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `synthtrace ARGS…` in-process with click's CliRunner (cwd = tmp_path, so no stray `.env`)."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: Any, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(cli_main, [str(a) for a in args], env=env, catch_exceptions=False)
    return invoke


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(extra or {})
    return env


def cli_command(*args: Any) -> list[str]:
    return [sys.executable, "-m", "synthtrace.cli", *(str(a) for a in args)]


@pytest.fixture
def cli_subprocess(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m synthtrace.cli ARGS…` as a child process (cwd = tmp_path unless given)."""
    def run(*args: Any, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_command(*args), env=subprocess_env(env), cwd=cwd or tmp_path,
                              capture_output=True, text=True, timeout=timeout)
    return run


def kill_9_when(proc: subprocess.Popen[Any], ready: Callable[[], bool], timeout: float = 60) -> None:
    """SIGKILL `proc` (no handler, no clean-up) as soon as `ready()` holds; fail if it ends first."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no progress"
            try:
                proc.wait(timeout=0.01)  # returns at once if the child exits
            except subprocess.TimeoutExpired:
                pass
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)


@contextlib.contextmanager
def serving_in_a_thread(*servers: Any) -> Iterator[list[Any]]:
    """Async context managers (servers) entered on an event loop of their own, in a thread, for a CLI
    child process to talk to; yields what each gave, and leaves them when the block ends."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
            async with contextlib.AsyncExitStack() as stack:
                box["entered"] = [await stack.enter_async_context(s) for s in servers]
                ready.set()
                await box["stop"].wait()
        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the servers did not start"
    try:
        yield box["entered"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
