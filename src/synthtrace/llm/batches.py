"""The providers' batch APIs, step by step: OpenAI's Batch API and Anthropic's Message Batches.

Each step is its own call so that the engine (`engine.batches`) can record what it learnt (a file
id, a batch id) before taking the next one: upload the requests (OpenAI), create the batch, read
its status, cancel it, and read its results. `find` adopts a batch created by a process that died
before it could record the id (OpenAI: by its input file; Anthropic: by its creation time and size,
among those no other local batch claims). Results are classified per item: an answer, something
worth asking again (5xx, 429, expired, cancelled, missing), or a fault of the request itself.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Protocol

import orjson

from synthtrace.config import Endpoint
from synthtrace.llm.anthropic import AnthropicClient, parse_message
from synthtrace.llm.base import HTTPClient, network, own_settings, url_and_key
from synthtrace.llm.openai import OpenAIClient, parse_chat_completion
from synthtrace.types import ChatRequest, ChatResult, LLMError, Struct

RETRY, FATAL, OK = "retry", "fatal", "ok"


class BatchItem(Struct):
    """One item's result: `outcome` ok (with `result`), retry or fatal (with `error`)."""

    __slots__ = ("custom_id", "outcome", "result", "error")

    def __init__(self, custom_id: str, outcome: str, result: ChatResult | None = None, error: str = ""):
        self.custom_id = custom_id
        self.outcome = outcome
        self.result = result
        self.error = error


class BatchStatus(Struct):
    """Where a batch is: `ended` once its results can be read; `status` is the provider's word for it."""

    __slots__ = ("ended", "status", "counts", "sources", "problem")

    def __init__(self, ended: bool, status: str, counts: dict[str, int], sources: list[str], problem: str = ""):
        self.ended = ended
        self.status = status
        self.counts = counts
        self.sources = sources  # where the results are: file ids (OpenAI) or the results URL (Anthropic)
        self.problem = problem  # why a batch failed as a whole (validation), when it did


class BatchAPI(Protocol):
    """What a provider's batch API offers the engine (`engine.batches.Batcher`), step by step, so that
    each id it learns is recorded before the next step. A provider declares its class as `batch_api`."""

    kind: str  # recorded with each batch, for `synthtrace batch status`
    max_items: int  # the most requests one batch may hold
    uploads: bool  # True: the requests go up as a file (`upload`) before `create`

    def __init__(self, name: str, endpoint: Endpoint) -> None: ...

    def line(self, custom_id: str, req: ChatRequest) -> bytes:
        """One request as the batch takes it, tagged with `custom_id`."""
        ...

    async def upload(self, lines: list[bytes]) -> str | None:
        """Upload the requests; the file's id (None when the API takes them with `create`)."""
        ...

    async def create(self, file_id: str | None, lines: list[bytes], local_id: str) -> str:
        """Create the batch; its id."""
        ...

    async def find(self, file_id: str | None, created_after: float, count: int, claimed: set[str]) -> str | None:
        """The id of a batch created for these requests whose `create` answer was lost, if there is one."""
        ...

    async def status(self, batch_id: str) -> BatchStatus: ...

    async def cancel(self, batch_id: str) -> None: ...

    def result_urls(self, status: BatchStatus) -> list[str]:
        """Where an ended batch's results are."""
        ...

    def expected_results(self, status: BatchStatus) -> int:
        """How many results the batch's own counts say its files hold together."""
        ...

    async def download(self, url: str) -> bytes: ...

    def read_results(self, data: bytes) -> tuple[list[BatchItem], str]:
        """The items of one downloaded file, and why it is not whole ("" when it is)."""
        ...

    async def aclose(self) -> None: ...


class _BatchAPI:
    """What both batch APIs here share: downloading a results file and reading it line by line, and closing."""

    http: HTTPClient

    def result_urls(self, status: BatchStatus) -> list[str]:
        """Where the batch's results are (an ended batch's)."""
        raise NotImplementedError

    def expected_results(self, status: BatchStatus) -> int:
        """How many results the batch's own counts say its files hold together."""
        raise NotImplementedError

    def _item(self, line: bytes) -> BatchItem | None:
        raise NotImplementedError

    async def download(self, url: str) -> bytes:
        """One results file as it came (a transfer cut short of its Content-Length raises `Disconnected`)."""
        return await self.http.send("GET", url)

    def read_results(self, data: bytes) -> tuple[list[BatchItem], str]:
        """The items of one downloaded results file, and why it is not whole ("" when it is): a file
        that stops mid-line or holds a line that does not parse was cut on its way here."""
        items: list[BatchItem] = []
        problems = [] if not data or data.endswith(b"\n") else ["it ends mid-line"]
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            item = self._item(line)
            if item is None:
                problems.append(f"line {n} does not parse")
            else:
                items.append(item)
        return items, "; ".join(problems[:2])

    async def aclose(self) -> None:
        await self.http.aclose()


class OpenAIBatches(_BatchAPI):
    kind = "openai"
    max_items = 50_000
    uploads = True  # the requests go up as a file first, then the batch is created from it

    def __init__(self, name: str, endpoint: Endpoint):
        url, key = url_and_key(name, endpoint)
        self.online = OpenAIClient(url, key, name=name, structured=own_settings(OpenAIClient, endpoint).structured)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = HTTPClient(url, {**headers, **endpoint.headers}, endpoint.timeout, network=network(name, endpoint),
                               content_type=None)
        self.http.name = name
        self.base = self.http.base_url

    def line(self, custom_id: str, req: ChatRequest) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                             "body": self.online.build_payload(req)})

    async def upload(self, lines: list[bytes]) -> str:
        boundary = "synthtrace" + os.urandom(12).hex()
        body = b"".join([
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="requests.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n".encode(),
            b"\n".join(lines), b"\n", f"\r\n--{boundary}--\r\n".encode()])
        data = await self._json("POST", "/files", body, f"multipart/form-data; boundary={boundary}")
        return str(data["id"])

    async def find(self, file_id: str | None, created_after: float, count: int, claimed: set[str]) -> str | None:
        if file_id is None:
            return None
        after = ""
        for _ in range(10):  # the newest thousand batches at most
            page = await self._json("GET", "/batches?limit=100" + (f"&after={after}" if after else ""))
            for b in page.get("data") or []:
                if b.get("input_file_id") == file_id and b.get("id") not in claimed:
                    return str(b["id"])
            data = page.get("data") or []
            if not page.get("has_more") or not data or (data[-1].get("created_at") or 0) < created_after - 60:
                return None
            after = data[-1]["id"]
        return None

    async def create(self, file_id: str | None, lines: list[bytes], local_id: str) -> str:
        payload = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h",
                   "metadata": {"synthtrace_batch": local_id}}
        data = await self._json("POST", "/batches", orjson.dumps(payload), "application/json")
        return str(data["id"])

    async def status(self, batch_id: str) -> BatchStatus:
        b = await self._json("GET", f"/batches/{batch_id}")
        status = str(b.get("status"))
        ended = status in ("completed", "failed", "expired", "cancelled")
        sources = [f for f in (b.get("output_file_id"), b.get("error_file_id")) if f]
        problem = ""
        if status == "failed":
            errors = (b.get("errors") or {}).get("data") or []
            problem = "; ".join(str(e.get("message")) for e in errors[:3]) or "the batch failed validation"
        return BatchStatus(ended, status, dict(b.get("request_counts") or {}), sources, problem)

    async def cancel(self, batch_id: str) -> None:
        await self._json("POST", f"/batches/{batch_id}/cancel", b"", "application/json")

    def result_urls(self, status: BatchStatus) -> list[str]:
        return [f"{self.base}/files/{file_id}/content" for file_id in status.sources]

    def expected_results(self, status: BatchStatus) -> int:
        # answers go to the output file, errored and expired items to the error file
        return int(status.counts.get("completed") or 0) + int(status.counts.get("failed") or 0)

    def _item(self, line: bytes) -> BatchItem | None:
        try:
            entry = orjson.loads(line)
            cid = str(entry["custom_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None  # a line cut short: the file is downloaded again
        response, error = entry.get("response"), entry.get("error")
        if error:
            return BatchItem(cid, RETRY, error=f"{error.get('code', 'error')}: {error.get('message', '')}")
        code = int((response or {}).get("status_code") or 0)
        body = (response or {}).get("body")
        if code == 200:
            try:
                return BatchItem(cid, OK, parse_chat_completion(self.http.name, body))
            except LLMError as e:
                return BatchItem(cid, RETRY, error=str(e))
        message = _message(body) or f"HTTP {code}"
        outcome = RETRY if code in (408, 429) or code >= 500 else FATAL
        return BatchItem(cid, outcome, error=f"HTTP {code}: {message}")

    async def _json(self, method: str, path: str, body: bytes = b"", content_type: str | None = None) -> Any:
        data = await self.http.send(method, self.base + path, body, {"Content-Type": content_type} if content_type
                                    else None)
        return orjson.loads(data)


class AnthropicBatches(_BatchAPI):
    kind = "anthropic"
    max_items = 100_000
    uploads = False  # the requests go with the create call
    _FATAL = {"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
              "request_too_large"}

    def __init__(self, name: str, endpoint: Endpoint):
        url, key = url_and_key(name, endpoint)
        self.online = AnthropicClient(url, key, name=name)
        headers = {"anthropic-version": "2023-06-01", **({"x-api-key": key} if key else {})}
        self.http = HTTPClient(url, headers, endpoint.timeout, network=network(name, endpoint))
        self.http.name = name
        base = self.http.base_url
        self.base = (base if base.endswith("/v1") else base + "/v1") + "/messages/batches"

    def line(self, custom_id: str, req: ChatRequest) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "params": self.online.build_payload(req)})

    async def upload(self, lines: list[bytes]) -> None:
        return None  # the requests go with the create call

    async def find(self, file_id: str | None, created_after: float, count: int, claimed: set[str]) -> str | None:
        page = await self.http.get_json(self.base + "?limit=100")
        for b in page.get("data") or []:
            created = _timestamp(b.get("created_at"))
            total = sum(int(v or 0) for v in (b.get("request_counts") or {}).values())
            if b.get("id") not in claimed and created is not None and created >= created_after - 60 and total == count:
                return str(b["id"])
        return None

    async def create(self, file_id: str | None, lines: list[bytes], local_id: str) -> str:
        body = b'{"requests":[' + b",".join(lines) + b"]}"
        data = orjson.loads(await self.http.send("POST", self.base, body))
        return str(data["id"])

    async def status(self, batch_id: str) -> BatchStatus:
        b = await self.http.get_json(f"{self.base}/{batch_id}")
        status = str(b.get("processing_status"))
        return BatchStatus(status == "ended", status, dict(b.get("request_counts") or {}),
                           [b["results_url"]] if b.get("results_url") else [])

    async def cancel(self, batch_id: str) -> None:
        await self.http.send("POST", f"{self.base}/{batch_id}/cancel")

    def result_urls(self, status: BatchStatus) -> list[str]:
        return list(status.sources)

    def expected_results(self, status: BatchStatus) -> int:
        # every item has a result line: succeeded, errored, canceled or expired
        return sum(int(status.counts.get(k) or 0) for k in ("succeeded", "errored", "canceled", "expired"))

    def _item(self, line: bytes) -> BatchItem | None:
        try:
            entry = orjson.loads(line)
            cid, result = str(entry["custom_id"]), entry["result"]
            kind = result["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if kind == "succeeded":
            try:
                return BatchItem(cid, OK, parse_message(self.http.name, result.get("message")))
            except LLMError as e:
                return BatchItem(cid, RETRY, error=str(e))
        if kind == "errored":
            err = ((result.get("error") or {}).get("error") or {})
            outcome = FATAL if err.get("type") in self._FATAL else RETRY
            return BatchItem(cid, outcome, error=f"{err.get('type', 'error')}: {err.get('message', '')}")
        return BatchItem(cid, RETRY, error=str(kind))  # canceled, expired


def _message(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or "")
    return ""


def _timestamp(value: Any) -> float | None:
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
