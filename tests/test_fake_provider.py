"""The fake provider itself: default answers, scripting, every injected fault, and its two ways of running.

Each test talks to a real server on 127.0.0.1 with a plain aiohttp client, so what is checked here is
exactly what synthtrace's clients will see.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from synthtrace.testing import FakeProvider, Fault

SRC = Path(__file__).resolve().parents[1] / "src"


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": prompt}], **extra}


async def post(fp: FakeProvider, path: str, payload: Any, timeout: float = 5.0,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.post(fp.url + path, data=orjson.dumps(payload), headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.read()


def run(coro_fn, **provider_args: Any) -> Any:
    """Run `coro_fn(fp)` against a fresh provider served in this test's own event loop."""
    async def main() -> Any:
        async with FakeProvider(**provider_args) as fp:
            return await coro_fn(fp)
    return asyncio.run(main())


# --- default answers -----------------------------------------------------------------------------


def test_openai_default_echo_and_usage():
    async def go(fp):
        status, _, body = await post(fp, "/v1/chat/completions", {
            "model": "fake", "messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "what is 2+2?"}]})
        return status, orjson.loads(body), fp.count_by_prompt()
    status, data, counts = run(go)
    assert status == 200
    assert data["object"] == "chat.completion" and data["model"] == "fake"
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "echo: what is 2+2?"}
    assert choice["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": (8 + 12) // 4, "completion_tokens": len("echo: what is 2+2?") // 4,
                             "total_tokens": 5 + 4}
    assert counts == {"what is 2+2?": 1}


def test_models_list_and_bad_request_validation():
    async def go(fp):
        async with aiohttp.ClientSession() as session, session.get(fp.openai_base + "/models") as resp:
            models = await resp.json()
        no_messages = await post(fp, "/v1/chat/completions", {"model": "fake"})
        no_max_tokens = await post(fp, "/v1/messages", chat("hi"))
        return models, no_messages, no_max_tokens
    models, no_messages, no_max_tokens = run(go)
    assert [m["id"] for m in models["data"]] == ["fake", "fake-large"]
    assert no_messages[0] == 400 and "messages" in orjson.loads(no_messages[2])["error"]["message"]
    assert no_max_tokens[0] == 400 and orjson.loads(no_max_tokens[2])["type"] == "error"


def test_openai_reasoning_mode_and_structured_default():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "integer"},
                                               "tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["answer", "score", "tags"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": True}}

    async def go(fp):
        return orjson.loads((await post(fp, "/v1/chat/completions", chat("q", response_format=fmt)))[2])
    data = run(go, reasoning=True)
    message = data["choices"][0]["message"]
    assert message["reasoning_content"] == "thinking about: q"
    assert orjson.loads(message["content"]) == {"answer": "echo: q", "score": 1, "tags": ["echo: q"]}


# --- scripting -----------------------------------------------------------------------------------


def test_script_order_fallback_repeat_and_callable_match():
    async def go(fp):
        fp.script("alpha", "first", {"text": "second", "reasoning": "hmm", "usage": {"completion_tokens": 99}})
        fp.script("beta", "always", repeat_last=True)
        fp.script(lambda body: body.get("model") == "special", {"ok": True})
        texts = []
        for prompt in ["alpha 1", "alpha 2", "alpha 3", "beta", "beta"]:
            data = orjson.loads((await post(fp, "/v1/chat/completions", chat(prompt)))[2])
            texts.append(data["choices"][0]["message"].get("content"))
            if prompt == "alpha 2":
                assert data["choices"][0]["message"]["reasoning_content"] == "hmm"
                assert data["usage"]["completion_tokens"] == 99
        special = orjson.loads((await post(fp, "/v1/chat/completions", {**chat("x"), "model": "special"}))[2])
        texts.append(special["choices"][0]["message"]["content"])
        return texts
    assert run(go) == ["first", "second", "echo: alpha 3", "always", "always", '{"ok":true}']


def test_anthropic_forced_tool_and_thinking():
    tool = {"name": "record", "description": "d",
            "input_schema": {"type": "object", "properties": {"label": {"type": "string"}}}}

    async def go(fp):
        fp.script("scripted", {"label": "from script"})
        base = {"model": "fake", "max_tokens": 100, "system": "sys", "tools": [tool],
                "tool_choice": {"type": "tool", "name": "record"}}
        forced = orjson.loads((await post(fp, "/v1/messages", {
            **base, "messages": [{"role": "user", "content": [{"type": "text", "text": "label this"}]}]}))[2])
        scripted = orjson.loads((await post(fp, "/v1/messages", {
            **base, "messages": [{"role": "user", "content": "scripted"}]}))[2])
        fp.reasoning = True
        plain = orjson.loads((await post(fp, "/v1/messages", {"model": "fake", "max_tokens": 5,
                                                               "messages": [{"role": "user", "content": "hi"}]}))[2])
        return forced, scripted, plain
    forced, scripted, plain = run(go)
    assert forced["type"] == "message" and forced["role"] == "assistant"
    block = forced["content"][0]
    assert block["type"] == "tool_use" and block["name"] == "record" and block["input"] == {"label": "echo: label this"}
    assert forced["stop_reason"] == "tool_use"
    assert scripted["content"][0]["input"] == {"label": "from script"}
    assert [b["type"] for b in plain["content"]] == ["thinking", "text"]
    assert plain["content"][0]["thinking"] == "thinking about: hi"
    assert plain["content"][1]["text"] == "echo: hi" and plain["stop_reason"] == "end_turn"
    assert set(plain["usage"]) == {"input_tokens", "output_tokens"}


def test_argo_both_paths():
    async def go(fp):
        payload = {"user": "me", "model": "gpt4o", "messages": [{"role": "user", "content": "argo?"}],
                   "stop": [], "temperature": 0.1, "top_p": 0.9, "max_tokens": 10}
        return [await post(fp, path, payload) for path in ("/argo/chat/", "/argo/chat")]
    for status, _, body in run(go):
        assert status == 200 and orjson.loads(body) == {"response": "echo: argo?"}


def test_raw_http_expect_continue_pipelining_and_garbage():
    """What curl and hand-written clients send: Expect: 100-continue, two requests in one write
    (answered in order), bytes that are not HTTP (a 400, then the connection closes), and a body over
    the size limit (a 413)."""
    import socket

    from synthtrace.testing import fake_provider

    def exchange(fp: FakeProvider, data: bytes, answers: int) -> bytes:
        """Send `data` on a new connection; what came back once `answers` status lines (or EOF) did."""
        with socket.create_connection(("127.0.0.1", fp.port), timeout=5) as s:
            s.sendall(data)
            got = b""
            while got.count(b"HTTP/1.1 ") < answers:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got

    def post(prompt: str, extra: str = "") -> bytes:
        body = orjson.dumps(chat(prompt))
        return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body

    with FakeProvider() as fp:
        continued = exchange(fp, post("first", "Expect: 100-continue\r\n"), 2)
        assert continued.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
        fp.script("slow", Fault.timeout(0.2))
        both = exchange(fp, post("slow") + post("fast"), 2)
        assert both.index(b"echo: slow") < both.index(b"echo: fast")  # in request order, not finish order
        garbage = exchange(fp, b"HELLO THERE\r\n\r\n", 99)  # reads until the server closes
        assert garbage.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in garbage
        fake_provider.MAX_BODY, limit = 1000, fake_provider.MAX_BODY
        try:
            too_big = exchange(fp, post("x" * 2000), 99)
        finally:
            fake_provider.MAX_BODY = limit
        assert too_big.startswith(b"HTTP/1.1 413 ")


def test_records_keep_no_credentials():
    async def go(fp):
        await post(fp, "/v1/chat/completions", chat("a"), headers={"Authorization": "Bearer sk-SECRET"})
        await post(fp, "/v1/messages", {**chat("b"), "max_tokens": 1},
                   headers={"x-api-key": "sk-ant-SECRET", "anthropic-version": "2023-06-01"})
        return fp.requests
    first, second = run(go)
    assert first.has_authorization and not first.has_api_key and first.status == 200 and first.prompt == "a"
    assert second.has_api_key and second.headers["anthropic-version"] == "2023-06-01"
    assert "SECRET" not in repr([first, second])


# --- faults --------------------------------------------------------------------------------------


def test_status_faults_429_500_400():
    http_date = email.utils.formatdate(time.time() + 30, usegmt=True)

    async def go(fp):
        fp.script("p", Fault.status(429, retry_after=2), Fault.status(429, retry_after=http_date),
                  Fault.status(500), Fault.status(400, body={"error": {"message": "bad model"}}), "done")
        return [await post(fp, "/v1/chat/completions", chat("p")) for _ in range(5)], fp.count_by_prompt()
    (r429, r429_date, r500, r400, ok), counts = run(go)
    assert r429[0] == 429 and r429[1]["Retry-After"] == "2"
    assert r429_date[0] == 429 and r429_date[1]["Retry-After"] == http_date
    assert r500[0] == 500 and "error" in orjson.loads(r500[2])
    assert r400[0] == 400 and orjson.loads(r400[2]) == {"error": {"message": "bad model"}}
    assert ok[0] == 200 and counts == {"p": 1}


def test_truncated_and_malformed_bodies():
    async def go(fp):
        fp.script("p", Fault.truncated(), Fault.malformed())
        return [await post(fp, "/v1/chat/completions", chat("p")) for _ in range(2)], fp.count_by_prompt()
    (truncated, malformed), counts = run(go)
    for status, _, body in (truncated, malformed):
        assert status == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(body)
    assert truncated[2].startswith(b'{"id":"chatcmpl-') and int(truncated[1]["Content-Length"]) == len(truncated[2])
    assert not counts  # neither counts as an answer


def test_drop_closes_connection():
    async def go(fp):
        fp.script("p", Fault.drop())
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(fp, "/v1/chat/completions", chat("p"))
        return (await post(fp, "/v1/chat/completions", chat("p")))[0], [r.outcome for r in fp.requests]
    assert run(go) == (200, ["drop", "ok"])


def test_timeout_fault_and_stop_does_not_hang():
    async def go():
        fp = await FakeProvider().astart()
        fp.script("slow", Fault.timeout(30), repeat_last=True)
        with pytest.raises(asyncio.TimeoutError):
            await post(fp, "/v1/chat/completions", chat("slow"), timeout=0.2)
        held = asyncio.ensure_future(post(fp, "/v1/chat/completions", chat("slow")))
        while len(fp.requests) < 2:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await fp.astop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await held
        assert [r.outcome for r in fp.requests] == ["aborted", "aborted"]  # cut off by the stop
        return time.monotonic() - started
    assert asyncio.run(go()) < 2.0


def test_max_in_flight_caps_with_429():
    async def go(fp):
        results = await asyncio.gather(*(post(fp, "/v1/chat/completions", chat(f"p{i}")) for i in range(5)))
        return results, fp.peak_in_flight
    results, peak = run(go, max_in_flight=2, latency=0.3, retry_after_s=3)
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 429, 429, 429] and peak == 2
    assert all(headers["Retry-After"] == "3" for status, headers, _ in results if status == 429)


def test_fault_rates_are_seeded():
    async def go(fp):
        return [(await post(fp, "/v1/chat/completions", chat(f"p{i}")))[0] for i in range(40)]
    first = run(go, fault_rates={"500": 0.3, "503": 0.2}, seed=7)
    again = run(go, fault_rates={"500": 0.3, "503": 0.2}, seed=7)
    assert first == again and {200, 500, 503} <= set(first)


# --- ways of running -----------------------------------------------------------------------------


def test_background_thread_mode_serves_synchronous_clients():
    with FakeProvider() as fp:
        fp.script("q", "scripted answer")
        fp.script("hang", Fault.timeout(30))
        req = urllib.request.Request(fp.openai_base + "/chat/completions", data=orjson.dumps(chat("q")),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            data = json.load(resp)
        hanging = urllib.request.Request(fp.openai_base + "/chat/completions", data=orjson.dumps(chat("hang")))
        with pytest.raises(OSError):  # TimeoutError is an OSError
            urllib.request.urlopen(hanging, timeout=0.2)
        started = time.monotonic()
    assert time.monotonic() - started < 2.0  # leaving the block stopped a server holding a request
    assert data["choices"][0]["message"]["content"] == "scripted answer"
    assert fp.count_by_prompt() == {"q": 1}


def test_command_line_ready_line_and_stats_on_sigterm(tmp_path):
    stats_file = tmp_path / "stats.json"
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "synthtrace.testing.fake_provider", "--port", "0",
                             "--stats-file", str(stats_file)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        for prompt in ("a", "a", "b"):
            req = urllib.request.Request(url + "/v1/chat/completions", data=orjson.dumps(chat(prompt)))
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert json.load(resp)["choices"][0]["message"]["content"] == f"echo: {prompt}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    stats = json.loads(stats_file.read_text())
    assert stats["requests_total"] == 3 and stats["by_status"] == {"200": 3}
    assert stats["prompts_answered"] == 2 and stats["prompts_answered_more_than_once"] == 1
