"""The provider clients against the fake provider's real HTTP APIs: what they send, what they read back.

`fp.requests` shows each request body exactly as it arrived, so payload shapes are checked on the
wire, not on a mocked call.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import arun, read_jsonl

from synthtrace.llm.anthropic import AnthropicClient
from synthtrace.llm.argo import ArgoClient
from synthtrace.llm.openai import OpenAIClient
from synthtrace.testing import FakeProvider, Fault
from synthtrace.types import ChatRequest, ChatResult, FatalError


def call(client: Any, req: ChatRequest) -> ChatResult:
    async def go() -> ChatResult:
        try:
            return await client.chat(req)
        finally:
            await client.aclose()
    return arun(go())


def user(text: str, system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": text}]


def openai(fp: FakeProvider, **kwargs: Any) -> OpenAIClient:
    return OpenAIClient(fp.openai_base, name="fake", timeout=5, **kwargs)


def raw_openai_body(content: Any, **message: Any) -> Fault:
    """A 200 whose body is exactly this Chat Completions message (for fields the fake never writes)."""
    return Fault.status(200, body={
        "id": "x", "object": "chat.completion", "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}})


# --- OpenAI-compatible ---------------------------------------------------------------------------


def test_openai_text_usage_finish_reason_and_auth(fp):
    fp.script("count", {"text": "one two three", "usage": {"prompt_tokens": 17, "completion_tokens": 5},
                        "finish_reason": "length"})
    result = call(openai(fp, api_key="sk-test"), ChatRequest("fake", user("count", system="be brief")))
    assert result.text == "one two three"
    assert result.reasoning is None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (17, 5)
    assert not result.usage.estimated
    assert result.finish_reason == "length"
    assert result.model == "fake"
    (req,) = fp.requests
    assert req.path == "/v1/chat/completions"
    assert req.body["messages"] == user("count", system="be brief")
    assert req.has_authorization


def test_openai_without_key_sends_no_authorization(fp):
    call(openai(fp), ChatRequest("fake", user("hi")))
    assert not fp.requests[0].has_authorization


def test_reasoning_from_reasoning_content(fp):
    fp.script("why", {"text": "because", "reasoning": "let me think"})
    result = call(openai(fp), ChatRequest("fake", user("why")))
    assert (result.text, result.reasoning) == ("because", "let me think")


def test_reasoning_from_reasoning_field(fp):
    fp.script("why", raw_openai_body("because", reasoning="ollama-style thought"))
    result = call(openai(fp), ChatRequest("fake", user("why")))
    assert (result.text, result.reasoning) == ("because", "ollama-style thought")
    assert result.model == "served-model"


@pytest.mark.parametrize("content, text, reasoning", [
    ("<think>step one\nstep two</think>\n\nThe answer is 4.", "The answer is 4.", "step one\nstep two"),
    ("step one</think>The answer is 4.", "The answer is 4.", "step one"),  # opening tag was in the prompt
    ("<think>step one and then I ran out of tok", "", "step one and then I ran out of tok"),  # unclosed
    ("no thinking here", "no thinking here", None),
])
def test_reasoning_from_think_tags(fp, content, text, reasoning):
    fp.script("q", content)
    result = call(openai(fp), ChatRequest("fake", user("q")))
    assert (result.text, result.reasoning) == (text, reasoning)


def test_reasoning_field_and_think_tags_are_joined(fp):
    fp.script("q", raw_openai_body("<think>inline</think>answer", reasoning_content="from field"))
    result = call(openai(fp), ChatRequest("fake", user("q")))
    assert result.text == "answer"
    assert result.reasoning == "from field\n\ninline"


def test_content_parts_are_joined(fp):
    fp.script("q", raw_openai_body([{"type": "text", "text": "part one, "}, {"type": "text", "text": "part two"}]))
    assert call(openai(fp), ChatRequest("fake", user("q"))).text == "part one, part two"


def test_refusal_is_fatal(fp):
    fp.script("q", raw_openai_body(None, refusal="I can't help with that"))
    with pytest.raises(FatalError, match="can't help"):
        call(openai(fp), ChatRequest("fake", user("q")))


PARAMS = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 100, "seed": 3, "stop": ["END"]}


@pytest.mark.parametrize("model", ["o3-mini", "o1", "o4-mini", "gpt-5", "gpt-5-mini"])
def test_reasoning_models_get_max_completion_tokens_and_no_sampling(fp, model):
    call(openai(fp), ChatRequest(model, user("hi"), dict(PARAMS)))
    body = fp.requests[0].body
    assert body["model"] == model
    assert body["max_completion_tokens"] == 100
    for gone in ("max_tokens", "temperature", "top_p"):
        assert gone not in body
    assert body["seed"] == 3 and body["stop"] == ["END"]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "fake", "meta-llama/Llama-3.1-8B-Instruct"])
def test_other_models_keep_their_params(fp, model):
    call(openai(fp), ChatRequest(model, user("hi"), dict(PARAMS)))
    body = fp.requests[0].body
    assert {k: body[k] for k in PARAMS} == PARAMS
    assert "max_completion_tokens" not in body


SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}, "why": {"type": "string"}},
          "required": ["answer", "why"]}


def test_structured_output_sends_json_schema(fp):
    result = call(openai(fp), ChatRequest("fake", user("q"), schema=SCHEMA, schema_name="Verdict"))
    assert fp.requests[0].body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "Verdict", "schema": SCHEMA}}
    assert result.text  # the fake answers with an instance of the schema, as JSON text
    assert "answer" in result.text


@pytest.mark.parametrize("mode, expected", [("json_object", {"type": "json_object"}), ("none", None)])
def test_structured_output_for_servers_without_json_schema(fp, mode, expected):
    call(openai(fp, structured=mode), ChatRequest("fake", user("q"), schema=SCHEMA))
    assert fp.requests[0].body.get("response_format") == expected


# --- Anthropic -----------------------------------------------------------------------------------


def anthropic(fp: FakeProvider) -> AnthropicClient:
    return AnthropicClient(fp.anthropic_base, api_key="sk-ant-test", name="claude", timeout=5)


def test_anthropic_system_apart_params_and_usage(fp):
    fp.script("hello", {"text": "hi there", "usage": {"input_tokens": 11, "output_tokens": 5}})
    req = ChatRequest("claude-sonnet-4", user("hello", system="be kind"),
                      {"temperature": 0.2, "max_tokens": 64, "stop": "END"})
    result = call(anthropic(fp), req)
    (rec,) = fp.requests
    assert rec.path == "/v1/messages"
    assert rec.has_api_key and rec.headers.get("anthropic-version") == "2023-06-01"
    body = rec.body
    assert body["system"] == "be kind"
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["max_tokens"] == 64 and body["temperature"] == 0.2
    assert body["stop_sequences"] == ["END"]
    assert result.text == "hi there"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 5)
    assert result.finish_reason == "end_turn"


def test_anthropic_default_max_tokens(fp):
    call(anthropic(fp), ChatRequest("claude-haiku-4-5", user("hi")))
    body = fp.requests[0].body
    assert isinstance(body["max_tokens"], int) and body["max_tokens"] > 0
    assert "system" not in body


def test_anthropic_thinking_blocks_become_reasoning(fp):
    fp.script("why", {"text": "because", "reasoning": "first, consider…"})
    result = call(anthropic(fp), ChatRequest("claude-sonnet-4", user("why")))
    assert (result.text, result.reasoning) == ("because", "first, consider…")


def test_anthropic_schema_forces_a_tool_and_parses_its_input(fp):
    fp.script("grade", {"answer": 42, "why": "six times seven"})
    result = call(anthropic(fp), ChatRequest("claude-sonnet-4", user("grade"), schema=SCHEMA, schema_name="Verdict"))
    body = fp.requests[0].body
    (tool,) = body["tools"]
    assert tool["name"] == "Verdict" and tool["input_schema"] == SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": "Verdict"}
    assert result.structured == {"answer": 42, "why": "six times seven"}
    assert result.finish_reason == "tool_use"
    assert json.loads(result.text) == result.structured


# --- Argo ----------------------------------------------------------------------------------------


def argo(fp: FakeProvider, user_name: str | None = "alice") -> ArgoClient:
    return ArgoClient(fp.argo_url, user_name, timeout=5)


def test_argo_payload_shape_and_estimated_usage(fp):
    fp.script("hello", "hi from argo")
    messages = user("hello", system="sys")
    result = call(argo(fp), ChatRequest("gpt35", messages, {"temperature": 0.3, "top_p": 0.8, "max_tokens": 50,
                                                             "stop": "STOP"}))
    (rec,) = fp.requests
    assert rec.path == "/argo/chat/"
    assert rec.body == {"user": "alice", "model": "gpt35", "messages": messages, "stop": ["STOP"],
                        "temperature": 0.3, "top_p": 0.8, "max_tokens": 50}
    assert result.text == "hi from argo"
    assert result.usage.estimated
    assert result.usage.prompt_tokens == len("syshello") // 4
    assert result.usage.completion_tokens == len("hi from argo") // 4
    assert result.usage.to_dict()["estimated"] is True


@pytest.mark.parametrize("model", ["gpt4o", "gpt4olatest", "gpt41", "gpto3", "o3-mini"])
def test_argo_gpt4_and_o_series_take_max_completion_tokens(fp, model):
    call(argo(fp), ChatRequest(model, user("hi"), {"temperature": 0.3, "max_tokens": 50}))
    body = fp.requests[0].body
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body and "temperature" not in body


def test_argo_think_block_becomes_reasoning(fp):
    fp.script("q", "<think>hmm</think>42")
    result = call(argo(fp), ChatRequest("gpt35", user("q")))
    assert (result.text, result.reasoning) == ("42", "hmm")


def test_argo_without_user_is_fatal_and_sends_nothing(fp):
    with pytest.raises(FatalError, match="ARGO_USER"):
        call(argo(fp, user_name=None), ChatRequest("gpt4o", user("hi")))
    assert fp.requests == []


@pytest.mark.parametrize("model, env, path", [
    ("gpt-4o", {"OPENAI_API_KEY": "sk-test"}, "/v1/chat/completions"),
    ("o3-mini", {"OPENAI_API_KEY": "sk-test"}, "/v1/chat/completions"),
    ("claude-sonnet-4-5", {"ANTHROPIC_API_KEY": "sk-ant-test"}, "/v1/messages"),
    ("claudesonnet4", {"ARGO_USER": "alice"}, "/argo/chat/"),
    ("gpt4o", {"ARGO_USER": "alice"}, "/argo/chat/"),
])
def test_well_known_model_names_go_to_their_provider_when_its_key_is_set(fp, cli_subprocess, tmp_path, write_jsonl,
                                                                         model, env, path):
    inp = write_jsonl([{"id": "a", "prompt": "hello"}])
    overrides = {"OPENAI_BASE_URL": fp.openai_base, "ANTHROPIC_BASE_URL": fp.anthropic_base,
                 "ARGO_BASE_URL": fp.argo_url}
    done = cli_subprocess("run", "completions", "-i", inp, "-o", tmp_path / "run", "-q", "--model", model,
                          env={**overrides, **env})
    assert done.returncode == 0, done.stderr
    assert "chosen from its name" in done.stderr
    (request,) = fp.requests
    assert request.path == path
    (row,) = read_jsonl(tmp_path / "run" / "rows.jsonl")
    assert row["completion"] == "echo: hello"


def test_a_well_known_name_without_its_key_still_says_what_to_do(cli, tmp_path, write_jsonl):
    inp = write_jsonl([{"id": "a", "prompt": "hello"}])
    result = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--model", "gpt-4o")
    assert result.exit_code == 2 and "no endpoint for model 'gpt-4o'" in result.output
