"""The client contract and the one lean HTTP stack that the remote clients share.

A client turns a `ChatRequest` into a `ChatResult` or raises one of the errors in `types`. It knows
nothing of rows, caches or limits: the gateway wraps it. Remote clients post JSON with aiohttp and
parse with orjson; that pair costs a fraction of the CPU an SDK spends per request.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any, Protocol

import aiohttp
import orjson

from synthtrace.types import ChatRequest, ChatResult, FatalError, RateLimited, RetryableError


class Client(Protocol):
    """What the gateway needs of a backend."""

    name: str  # endpoint name, for messages and provenance
    native_schema: bool  # True when the backend enforces a JSON schema itself
    max_concurrency: int | None  # a hard cap the backend imposes (the local model: 1), else None

    async def chat(self, req: ChatRequest) -> ChatResult: ...

    async def aclose(self) -> None: ...


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def provider_message(body: bytes, limit: int = 500) -> str:
    """The provider's own error message, when the body carries one, else the raw body (trimmed)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:limit].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:limit]
        if isinstance(err, str):
            return err[:limit]
        if data.get("detail"):
            return str(data["detail"])[:limit]
    return body[:limit].decode("utf-8", "replace").strip()


class HTTPClient:
    """Shared plumbing: one pooled aiohttp session, status-code triage, JSON body decoding."""

    name = "http"
    native_schema = False
    max_concurrency: int | None = None

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout: float = 600.0,
                 connect_timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # limit=0: the gateway's limiter bounds concurrency; a second cap here would only hide it.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers,
                json_serialize=lambda o: orjson.dumps(o).decode(), auto_decompress=True,
            )
        return self._session

    async def post_json(self, url: str, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        """POST `payload`; return the decoded JSON body, or raise the error that fits the failure."""
        session = self._get_session()
        try:
            async with session.post(url, data=orjson.dumps(payload), headers=headers) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except asyncio.TimeoutError as e:
            raise RetryableError(f"{self.name}: request timed out") from e
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
            raise RetryableError(f"{self.name}: connection failed: {e.__class__.__name__}: {e}") from e
        if status == 429:
            raise RateLimited(f"{self.name}: 429 rate limited: {provider_message(body)}", parse_retry_after(retry_after))
        if status >= 500 or status == 408:
            raise RetryableError(f"{self.name}: HTTP {status}: {provider_message(body)}")
        if status >= 400:
            raise FatalError(f"{self.name}: HTTP {status}: {provider_message(body)}", status)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise RetryableError(f"{self.name}: malformed JSON body ({len(body)} bytes): {e}") from e

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def malformed(name: str, what: str) -> RetryableError:
    return RetryableError(f"{name}: malformed response: {what}")
