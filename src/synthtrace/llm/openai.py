"""OpenAI-compatible Chat Completions: OpenAI, vLLM, SGLang, Ollama, llama.cpp server, OpenRouter, Together…

One client, chosen by base URL. Reasoning is read from `reasoning_content` / `reasoning` or from a
`<think>` block in the text. Structured output uses `response_format` with a JSON schema (or
`json_object` for servers that only know that); the gateway validates and re-asks either way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from synthtrace.config import Endpoint
from synthtrace.llm.base import HTTPClient, malformed, network, own_settings, url_and_key
from synthtrace.llm.http import Network
from synthtrace.llm.reasoning import join_reasoning, split_think
from synthtrace.types import ChatRequest, ChatResult, FatalError, Usage

# OpenAI's reasoning models take max_completion_tokens and reject sampling parameters.
REASONING_MODEL = re.compile(r"^(o\d|gpt-5)", re.IGNORECASE)
_SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs")


def openai_params(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """Generation params as this model family expects them."""
    if not REASONING_MODEL.match(model):
        return params
    out = {k: v for k, v in params.items() if k not in _SAMPLING}
    if "max_tokens" in out:
        out["max_completion_tokens"] = out.pop("max_tokens")
    return out


_OPENAI_IDS = re.compile(r"^(?:gpt-|chatgpt-|o[1-9](?:$|-)|text-|davinci|babbage)")


class OpenAIClient(HTTPClient):
    batch_api = "synthtrace.llm.batches:OpenAIBatches"

    @dataclass
    class Settings:
        # how a schema is asked for: OpenAI's json_schema, plain JSON mode, or only in the prompt
        structured: Literal["json_schema", "json_object", "none"] = "json_schema"

    def __init__(self, base_url: str, api_key: str | None = None, name: str = "openai",
                 structured: str = "json_schema", timeout: float = 600.0, extra_headers: dict[str, str] | None = None,
                 network: Network | None = None):
        headers = dict(extra_headers or {})
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        super().__init__(base_url, headers, timeout, network=network)
        self.name = name
        self.structured = structured  # "json_schema" | "json_object" | "none"
        self.native_schema = structured == "json_schema"
        self._url = self.base_url + "/chat/completions"

    @classmethod
    def from_endpoint(cls, name: str, endpoint: Endpoint) -> OpenAIClient:
        url, key = url_and_key(name, endpoint)
        return cls(url, key, name=name, structured=own_settings(cls, endpoint).structured, timeout=endpoint.timeout,
                   extra_headers=endpoint.headers, network=network(name, endpoint))

    @staticmethod
    def claims(model: str) -> bool:
        """OpenAI's own ids (`gpt-4o`, `o3-mini`, `chatgpt-4o-latest` …), when its key is set."""
        return bool(_OPENAI_IDS.match(model)) and bool(os.environ.get("OPENAI_API_KEY"))

    @staticmethod
    def default_endpoint() -> Endpoint:
        """The endpoint behind `openai:MODEL` (and OpenAI's ids): `OPENAI_BASE_URL` moves it."""
        return Endpoint(kind="openai", base_url=os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                        api_key_env="OPENAI_API_KEY")

    def build_payload(self, req: ChatRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": req.model, "messages": req.messages}
        payload.update(openai_params(req.model, req.params))
        if req.schema is not None and self.structured != "none":
            if self.structured == "json_schema":
                payload["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": req.schema_name, "schema": req.schema},
                }
            else:
                payload["response_format"] = {"type": "json_object"}
        return payload

    async def chat(self, req: ChatRequest) -> ChatResult:
        data = await self.post_json(self._url, self.build_payload(req))
        return parse_chat_completion(self.name, data)


def parse_chat_completion(name: str, data: Any) -> ChatResult:
    """A Chat Completions body → ChatResult; anything missing is a malformed (retryable) answer."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        if isinstance(data, dict) and data.get("error"):
            raise FatalError(f"{name}: provider error: {data['error']}") from None
        raise malformed(name, "no choices[0].message") from None
    content = message.get("content")
    if content is None:
        if message.get("refusal"):
            raise FatalError(f"{name}: the model refused: {message['refusal']}")
        content = ""
    if isinstance(content, list):  # some servers send content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    field_reasoning = message.get("reasoning_content") or message.get("reasoning")
    text, think = split_think(content)
    usage = data.get("usage") or {}
    return ChatResult(
        text=text,
        reasoning=join_reasoning(field_reasoning if isinstance(field_reasoning, str) else None, think),
        usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
        finish_reason=choice.get("finish_reason"),
        model=data.get("model"),
    )
