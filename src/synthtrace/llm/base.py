"""The client contract and the one lean HTTP stack that the remote clients share.

A client turns a `ChatRequest` into a `ChatResult` or raises one of the errors in `types`. It knows
nothing of rows, caches or limits: the gateway wraps it. Remote clients post JSON through the lean
pooled client in `llm.http` and parse with orjson; that pair costs a small fraction of the CPU an
SDK (or even a bare aiohttp loop) spends per request.

A provider is one class with `from_endpoint(name, endpoint)`, registered under its endpoint kind
(`llm.providers.BUILTIN_PROVIDERS`, or an entry point in the `synthtrace.providers` group); what
else it may declare (its bare ids, a batch API, settings of its own) is listed in `llm.providers`.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, Protocol

import orjson

from synthtrace.config import ConfigError, Endpoint, secret
from synthtrace.llm.http import BadResponse, ConnectError, ConnectionLost, ConnectionPool, HTTPError, Network, Timeout
from synthtrace.types import (
    ChatRequest,
    ChatResult,
    Disconnected,
    EndpointRefused,
    FatalError,
    RateLimited,
    RetryableError,
    Unreachable,
)


class Client(Protocol):
    """What the gateway needs of a backend."""

    name: str  # endpoint name, for messages and provenance
    native_schema: bool  # True when the backend enforces a JSON schema itself
    max_concurrency: int | None  # a hard cap the backend imposes (the local model: 1), else None
    in_process: bool  # runs on this machine: free, and seeded per sample

    @classmethod
    def from_endpoint(cls, name: str, endpoint: Endpoint) -> Client:
        """The client for a configured endpoint; keys are read from the environment here."""
        ...

    async def chat(self, req: ChatRequest) -> ChatResult: ...

    async def aclose(self) -> None: ...


def own_settings(cls: Any, endpoint: Endpoint) -> Any:
    """A provider's own settings of `endpoint`: an instance of `cls.Settings` (a dataclass) from the
    endpoint's `settings`, which the config loader checked against it."""
    try:
        return cls.Settings(**endpoint.settings)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: endpoint settings {endpoint.settings!r}: {e}") from None


def network(name: str, endpoint: Endpoint) -> Network:
    """The endpoint's proxy and certificate settings; turning verification off is said out loud."""
    if not endpoint.verify:
        print(f"warning: endpoint {name!r}: TLS certificates are NOT verified (verify: false): anyone on the "
              "network path can read and change this traffic, API keys included", file=sys.stderr, flush=True)
    return Network(endpoint.proxy, endpoint.ca_bundle, endpoint.verify)


def url_and_key(name: str, endpoint: Endpoint) -> tuple[str, str | None]:
    """An HTTP endpoint's base URL and key, read from the variable it names (here and nowhere else)."""
    if not endpoint.base_url:
        raise EndpointRefused(f"endpoint {name!r} has no base_url")
    key = secret(endpoint.api_key_env)
    if endpoint.api_key_env and not key:
        raise EndpointRefused(f"endpoint {name!r}: environment variable {endpoint.api_key_env} is not set")
    return endpoint.base_url, key


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # only for the rare HTTP-date form: kept off the start-up path

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def provider_message(body: bytes, limit: int = 500) -> str:
    """The provider's own error message, when the body carries one; an HTML page (a proxy's or a
    load balancer's error page) by its title; else the raw body, trimmed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:20_000].decode("utf-8", "replace").strip()
        if text[:1] == "<" and re.search(r"(?i)<(?:!doctype html|html|head|body|title|h1)\b", text):
            heading = re.search(r"(?is)<(title|h1)[^>]*>(.*?)</\1>", text)
            summary = " ".join(re.sub(r"<[^>]+>", " ", heading.group(2)).split())[:120] if heading else ""
            return f"an HTML page{f' ({summary})' if summary else ''}, {len(body):,} bytes"
        return text[:limit]
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
    """Shared plumbing: one connection pool, status-code triage, JSON body decoding."""

    name = "http"
    native_schema = False
    max_concurrency: int | None = None
    in_process = False

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout: float = 600.0,
                 connect_timeout: float = 30.0, network: Network | None = None,
                 content_type: str | None = "application/json"):
        self.base_url = base_url.rstrip("/")
        self._headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._network = network
        self._pool: ConnectionPool | None = None

    async def post_json(self, url: str, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        """POST `payload`; return the decoded JSON body, or raise the error that fits the failure."""
        body = await self.send("POST", url, orjson.dumps(payload), headers)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise RetryableError(f"{self.name}: malformed JSON body ({len(body)} bytes): {e}") from e

    async def get_json(self, url: str) -> Any:
        body = await self.send("GET", url)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise RetryableError(f"{self.name}: malformed JSON body ({len(body)} bytes): {e}") from e

    async def send(self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
        """One request; the body of a 2xx answer, or the error that fits the failure."""
        pool = self._pool
        if pool is None:
            pool = self._pool = ConnectionPool(self._headers, self._timeout, self._connect_timeout,
                                               network=self._network)
        try:
            resp = await pool.request(method, url, body, headers)
        except Timeout as e:
            raise RetryableError(f"{self.name}: request timed out ({e})") from e
        except ConnectError as e:
            raise Unreachable(f"{self.name}: {e}", e.cause) from e
        except BadResponse as e:
            raise RetryableError(f"{self.name}: unparseable answer: {e}") from e
        except ConnectionLost as e:
            raise Disconnected(f"{self.name}: connection lost: {e}") from e
        except HTTPError as e:
            raise RetryableError(f"{self.name}: {e}") from e
        status, body = resp.status, resp.body
        if status == 429:
            raise RateLimited(f"{self.name}: 429 rate limited: {provider_message(body)}",
                              parse_retry_after(resp.headers.get("retry-after")))
        if status >= 500 or status == 408:
            raise RetryableError(f"{self.name}: HTTP {status}: {provider_message(body)}")
        if 300 <= status < 400:  # an API that redirects a POST is misconfigured: say where it points
            raise EndpointRefused(f"{self.name}: HTTP {status} redirect to {resp.headers.get('location', '?')} "
                                  f"(set the endpoint's base_url to the final address)", status)
        if status >= 400:
            raise FatalError(f"{self.name}: HTTP {status}: {provider_message(body)}", status)
        return body

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        self._pool = None


def malformed(name: str, what: str) -> RetryableError:
    return RetryableError(f"{name}: malformed response: {what}")
