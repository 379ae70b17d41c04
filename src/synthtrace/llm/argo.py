"""Argo's native chat API (Argonne's LLM gateway), which the science tool's users run on.

POST {user, model, messages, stop, temperature, top_p, max_tokens} → {"response": text}. The gpt4*
and o-series ids take `max_completion_tokens` and no temperature. No usage comes back, so tokens are
estimated (about four characters a token) and marked `estimated`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from synthtrace.config import Endpoint, secret
from synthtrace.llm.base import HTTPClient, malformed, network, own_settings, url_and_key
from synthtrace.llm.http import Network
from synthtrace.llm.reasoning import split_think
from synthtrace.types import ChatRequest, ChatResult, FatalError, Usage

ARGO_CHAT_URL = "https://apps.inside.anl.gov/argoapi/api/v1/resource/chat/"
_ARGO_IDS = re.compile(r"^(?:gpt\d+[a-z0-9]*|gpto\d+[a-z0-9]*|claude(?:sonnet|opus|haiku)\d+[a-z0-9]*|gemini\d+[a-z0-9]*)$")
_COMPLETION_TOKENS_MODELS = re.compile(r"^(gpt4|gpto|o\d)", re.IGNORECASE)


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class ArgoClient(HTTPClient):
    @dataclass
    class Settings:
        user_env: str = "ARGO_USER"  # the variable holding the user name Argo asks for

    def __init__(self, base_url: str, user: str | None, name: str = "argo", timeout: float = 600.0,
                 api_key: str | None = None, network: Network | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(base_url, headers, timeout, network=network)
        self.name = name
        self.user = user
        self._url = base_url  # Argo's chat URL is used exactly as configured (it wants its trailing slash)

    @classmethod
    def from_endpoint(cls, name: str, endpoint: Endpoint) -> ArgoClient:
        url, key = url_and_key(name, endpoint)
        return cls(url, secret(own_settings(cls, endpoint).user_env), name=name, timeout=endpoint.timeout, api_key=key,
                   network=network(name, endpoint))

    @staticmethod
    def claims(model: str) -> bool:
        """The Argo gateway's ids (`claudesonnet4`, `gpt4o`, `gpto3mini`, `gemini25pro` …), when `ARGO_USER`
        is set."""
        return bool(_ARGO_IDS.match(model)) and bool(os.environ.get("ARGO_USER"))

    @staticmethod
    def default_endpoint() -> Endpoint:
        """The endpoint behind `argo:MODEL`."""
        return Endpoint(kind="argo", base_url=os.environ.get("ARGO_BASE_URL", ARGO_CHAT_URL))

    def build_payload(self, req: ChatRequest) -> dict[str, Any]:
        if not self.user:
            raise FatalError(f"{self.name}: Argo needs a user name: set ARGO_USER (or the endpoint's user_env)")
        p = req.params
        payload: dict[str, Any] = {"user": self.user, "model": req.model, "messages": req.messages}
        if p.get("stop") is not None:
            payload["stop"] = p["stop"] if isinstance(p["stop"], list) else [p["stop"]]
        max_tokens = p.get("max_tokens") or p.get("max_completion_tokens")
        if _COMPLETION_TOKENS_MODELS.match(req.model):
            if max_tokens:
                payload["max_completion_tokens"] = max_tokens
        else:
            for k in ("temperature", "top_p"):
                if k in p:
                    payload[k] = p[k]
            if max_tokens:
                payload["max_tokens"] = max_tokens
        return payload

    async def chat(self, req: ChatRequest) -> ChatResult:
        data = await self.post_json(self._url, self.build_payload(req))
        if not isinstance(data, dict) or not isinstance(data.get("response"), str):
            raise malformed(self.name, "no 'response' string")
        text, reasoning = split_think(data["response"])
        prompt_chars = sum(len(m.get("content") or "") for m in req.messages)
        usage = Usage(max(1, prompt_chars // 4), estimate_tokens(data["response"]), estimated=True)
        return ChatResult(text=text, reasoning=reasoning, usage=usage, finish_reason="stop", model=req.model)
