"""Anthropic Messages API: system prompt apart, thinking blocks as reasoning, tools for structure.

Structured output forces a single tool whose input schema is the requested schema; the tool input
comes back already parsed in `ChatResult.structured` (and as JSON text in `text`).
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from synthtrace.config import Endpoint
from synthtrace.llm.base import HTTPClient, malformed, network, url_and_key
from synthtrace.llm.http import Network
from synthtrace.llm.reasoning import join_reasoning, split_think
from synthtrace.types import ChatRequest, ChatResult, Usage

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
_PASS = ("temperature", "top_p", "top_k", "stop_sequences", "metadata", "thinking", "service_tier")


class AnthropicClient(HTTPClient):
    batch_api = "synthtrace.llm.batches:AnthropicBatches"

    native_schema = True

    def __init__(self, base_url: str = "https://api.anthropic.com", api_key: str | None = None,
                 name: str = "anthropic", timeout: float = 600.0, network: Network | None = None):
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        super().__init__(base_url, headers, timeout, network=network)
        self.name = name
        base = self.base_url
        self._url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    @classmethod
    def from_endpoint(cls, name: str, endpoint: Endpoint) -> AnthropicClient:
        url, key = url_and_key(name, endpoint)
        return cls(url, key, name=name, timeout=endpoint.timeout, network=network(name, endpoint))

    @staticmethod
    def claims(model: str) -> bool:
        """Anthropic's own ids (`claude-sonnet-4-5` …), when its key is set."""
        return model.startswith("claude-") and bool(os.environ.get("ANTHROPIC_API_KEY"))

    @staticmethod
    def default_endpoint() -> Endpoint:
        """The endpoint behind `anthropic:MODEL` (and Anthropic's ids): `ANTHROPIC_BASE_URL` moves it."""
        return Endpoint(kind="anthropic", base_url=os.environ.get("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
                        api_key_env="ANTHROPIC_API_KEY")

    def build_payload(self, req: ChatRequest) -> dict[str, Any]:
        system = [m["content"] for m in req.messages if m["role"] == "system"]
        messages = [{"role": m["role"], "content": m["content"]} for m in req.messages if m["role"] != "system"]
        p = req.params
        payload: dict[str, Any] = {
            "model": req.model,
            "messages": messages,
            "max_tokens": int(p.get("max_tokens") or p.get("max_completion_tokens") or DEFAULT_MAX_TOKENS),
        }
        if system:
            payload["system"] = "\n\n".join(system)
        for k in _PASS:
            if k in p:
                payload[k] = p[k]
        if "stop" in p and "stop_sequences" not in p:
            stop = p["stop"]
            payload["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if req.schema is not None:
            payload["tools"] = [{"name": req.schema_name, "description": "Give the answer in this structure.",
                                 "input_schema": req.schema}]
            payload["tool_choice"] = {"type": "tool", "name": req.schema_name}
        return payload

    async def chat(self, req: ChatRequest) -> ChatResult:
        data = await self.post_json(self._url, self.build_payload(req))
        return parse_message(self.name, data)


def parse_message(name: str, data: Any) -> ChatResult:
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise malformed(name, "no content list")
    texts: list[str] = []
    thinking: list[str] = []
    structured = None
    for block in data["content"]:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
        elif kind == "tool_use":
            structured = block.get("input")
    text = "".join(texts)
    text, think = split_think(text)
    if structured is not None:
        text = orjson.dumps(structured).decode()
    usage = data.get("usage") or {}
    return ChatResult(
        text=text,
        reasoning=join_reasoning(*thinking, think),
        usage=Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
        finish_reason=data.get("stop_reason"),
        model=data.get("model"),
        structured=structured,
    )
