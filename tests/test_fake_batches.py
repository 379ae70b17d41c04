"""The fake provider's batch APIs: OpenAI's Batch API and Anthropic's Message Batches, and their faults.

Each test drives a real FakeProvider over HTTP (aiohttp, or urllib against the background-thread mode),
so what is checked is what a batch client will see on the wire. Waiting is a short polling loop on the
batch's own status, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from synthtrace.testing import BatchFaults, FakeProvider, Fault

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
          "required": ["answer", "score"]}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA, "strict": True}}
TOOL = {"name": "record", "description": "d",
        "input_schema": {"type": "object", "properties": {"label": {"type": "string"}}}}


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": prompt}], **extra}


def message(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "max_tokens": 50, "messages": [{"role": "user", "content": prompt}], **extra}


def line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in data.splitlines()]


def same_answer(batch_body: dict[str, Any], online_body: dict[str, Any]) -> bool:
    """Equal but for the fields every answer has fresh (ids, the clock)."""
    volatile = {"id", "created"}
    strip = {k: v for k, v in batch_body.items() if k not in volatile}
    if "content" in strip:  # Anthropic: tool_use blocks carry fresh ids too
        strip["content"] = [{k: v for k, v in b.items() if k != "id"} for b in strip["content"]]
        online_body = {**online_body,
                       "content": [{k: v for k, v in b.items() if k != "id"} for b in online_body["content"]]}
    return strip == {k: v for k, v in online_body.items() if k not in volatile}


class Api:
    """A thin aiohttp client for one fake provider."""

    def __init__(self, fp: FakeProvider, session: aiohttp.ClientSession):
        self.fp, self.session = fp, session

    async def call(self, method: str, path: str, payload: Any = None, timeout: float = 5.0,
                   **kw: Any) -> tuple[int, bytes, str]:
        if payload is not None:
            kw["data"] = orjson.dumps(payload)
        async with self.session.request(method, self.fp.url + path, timeout=aiohttp.ClientTimeout(total=timeout),
                                        **kw) as resp:
            return resp.status, await resp.read(), resp.headers.get("Content-Type", "")

    async def json(self, method: str, path: str, payload: Any = None, **kw: Any) -> tuple[int, Any]:
        status, data, _ = await self.call(method, path, payload, **kw)
        return status, orjson.loads(data)

    async def upload(self, lines: list[dict[str, Any]] | bytes) -> dict[str, Any]:
        data = lines if isinstance(lines, bytes) else b"".join(orjson.dumps(x) + b"\n" for x in lines)
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", data, filename="input.jsonl", content_type="application/jsonl")
        async with self.session.post(self.fp.url + "/v1/files", data=form) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def openai_batch(self, lines: list[dict[str, Any]] | bytes, **extra: Any) -> dict[str, Any]:
        file = await self.upload(lines)
        status, batch = await self.json("POST", "/v1/batches", {
            "input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra})
        assert status == 200, batch
        return batch

    async def anthropic_batch(self, requests: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        status, batch = await self.json("POST", "/v1/messages/batches",
                                        {"requests": [{"custom_id": c, "params": p} for c, p in requests]})
        assert status == 200, batch
        return batch

    async def poll(self, path: str, done: Callable[[dict[str, Any]], bool],
                   key: str = "status") -> tuple[dict[str, Any], list[str]]:
        """GET `path` every few ms until `done(obj)`; the object and every distinct status seen, in order."""
        seen: list[str] = []
        deadline = time.monotonic() + 3.0
        while True:
            status, obj = await self.json("GET", path)
            assert status == 200, obj
            if not seen or seen[-1] != obj[key]:
                seen.append(obj[key])
            if done(obj):
                return obj, seen
            assert time.monotonic() < deadline, f"still {obj[key]} after 3 s"
            await asyncio.sleep(0.005)

    async def openai_done(self, batch_id: str) -> tuple[dict[str, Any], list[str]]:
        return await self.poll(f"/v1/batches/{batch_id}",
                               lambda b: b["status"] in {"completed", "expired", "failed", "cancelled"})

    async def anthropic_done(self, batch_id: str) -> tuple[dict[str, Any], list[str]]:
        return await self.poll(f"/v1/messages/batches/{batch_id}", lambda b: b["processing_status"] == "ended",
                               key="processing_status")

    async def content(self, file_id: str) -> bytes:
        status, data, _ = await self.call("GET", f"/v1/files/{file_id}/content")
        assert status == 200
        return data


def run(coro_fn: Callable[[FakeProvider, Api], Any], **provider_args: Any) -> Any:
    """Run `coro_fn(fp, api)` against a fresh provider served in this test's own event loop."""
    async def main() -> Any:
        async with FakeProvider(**provider_args) as fp, aiohttp.ClientSession() as session:
            return await coro_fn(fp, Api(fp, session))
    return asyncio.run(main())


# --- OpenAI ---------------------------------------------------------------------------------------


def test_openai_round_trip_matches_online_answers():
    bodies = {"plain": chat("what is 2+2?"), "schema": chat("rate this", response_format=SCHEMA_FORMAT),
              "scripted": chat("scripted one")}

    async def go(fp, api):
        fp.script("scripted one", "from the script", repeat_last=True)
        online = {}
        for cid, body in bodies.items():
            status, online[cid] = await api.json("POST", "/v1/chat/completions", body)
            assert status == 200
        fp.fault_rates = {"500": 1.0}  # online random faults must not reach batch items
        f = fp.batch_faults
        f.validating_s, f.complete_after_s, f.finalizing_s = 3600.0, 3600.0, 3600.0  # each phase held...
        file = await api.upload([line(cid, body) for cid, body in bodies.items()])
        status, created = await api.json("POST", "/v1/batches", {
            "input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h",
            "metadata": {"run": "r1"}})
        assert status == 200
        path = f"/v1/batches/{created['id']}"
        seen = [(await api.json("GET", path))[1]["status"]]
        f.validating_s = 0.02  # ... until the test lets it go
        seen += (await api.poll(path, lambda b: b["status"] != "validating"))[1][-1:]
        f.complete_after_s = 0.04
        seen += (await api.poll(path, lambda b: b["status"] != "in_progress"))[1][-1:]
        f.finalizing_s = 0.02
        final, last = await api.openai_done(created["id"])
        seen += last[-1:]
        stored = await api.content(file["id"])
        output = await api.content(final["output_file_id"])
        return file, created, final, seen, stored, online, output, fp

    file, created, final, seen, stored, online, output, fp = run(go)
    assert file["object"] == "file" and file["purpose"] == "batch" and file["status"] == "processed"
    assert file["id"].startswith("file-") and file["filename"] == "input.jsonl" and file["bytes"] == len(stored)
    assert [orjson.loads(x)["custom_id"] for x in stored.splitlines()] == list(bodies)  # bytes kept exact
    assert created["object"] == "batch" and created["status"] == "validating" and created["id"].startswith("batch_")
    assert created["metadata"] == {"run": "r1"} and created["output_file_id"] is None
    assert created["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    assert final["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert final["error_file_id"] is None and final["errors"] is None
    assert final["created_at"] <= final["in_progress_at"] <= final["finalizing_at"] <= final["completed_at"]
    assert final["expires_at"] == final["created_at"] + 86400 and final["failed_at"] is None
    lines = jsonl(output)
    assert [x["custom_id"] for x in lines] == list(bodies)
    for x in lines:
        assert x["id"].startswith("batch_req_") and x["error"] is None
        assert x["response"]["status_code"] == 200 and x["response"]["request_id"]
        assert same_answer(x["response"]["body"], online[x["custom_id"]])
    answers = {x["custom_id"]: x["response"]["body"]["choices"][0]["message"]["content"] for x in lines}
    assert answers["scripted"] == "from the script"
    assert orjson.loads(answers["schema"]) == {"answer": "echo: rate this", "score": 1}
    # the online ledger counts online requests only; the batch ledger its own
    assert fp.count_by_prompt() == {"what is 2+2?": 1, "rate this": 1, "scripted one": 1}
    assert len(fp.requests) == 3
    assert fp.batch_count_by_prompt() == {"what is 2+2?": 1, "rate this": 1, "scripted one": 1}
    assert fp.batch_succeeded() == {"plain": 1, "schema": 1, "scripted": 1}
    assert fp.batch_requests() == {"openai": 1}
    assert fp.batches[final["id"]].dialect == "openai" and fp.batches[final["id"]].custom_ids == list(bodies)
    assert fp.batches[final["id"]].status == "completed"


def test_openai_errored_expired_and_scripted_faults_go_to_the_error_file():
    async def go(fp, api):
        fp.batch_faults.errored_ids, fp.batch_faults.expired_ids = {"err"}, {"exp"}
        fp.script("limited", Fault.status(429))
        fp.script("hanging", Fault.timeout(30))  # only delays online; in a batch it is answered
        first = await api.openai_batch([line("ok", chat("fine")), line("err", chat("e")), line("exp", chat("x")),
                                        line("lim", chat("limited")), line("bad", {"messages": []}),
                                        line("slow", chat("hanging"))])
        final, _ = await api.openai_done(first["id"])
        output, errors = await api.content(final["output_file_id"]), await api.content(final["error_file_id"])
        again = await api.openai_batch([line("err", chat("e")), line("exp", chat("x"))])  # forced only once
        final2, _ = await api.openai_done(again["id"])
        return final, jsonl(output), jsonl(errors), final2, fp.batch_items, fp.batch_succeeded()

    final, output, errors, final2, items, succeeded = run(go)
    assert final["status"] == "expired" and final["expired_at"] is not None and final["completed_at"] is None
    assert final["request_counts"] == {"total": 6, "completed": 2, "failed": 4}
    assert [x["custom_id"] for x in output] == ["ok", "slow"]
    by_id = {x["custom_id"]: x for x in errors}
    assert set(by_id) == {"err", "exp", "lim", "bad"}
    assert by_id["err"]["response"]["status_code"] == 500 and by_id["err"]["error"] is None
    assert by_id["err"]["response"]["body"]["error"]["type"] == "server_error"
    assert by_id["lim"]["response"]["status_code"] == 429
    assert by_id["bad"]["response"]["status_code"] == 400
    assert by_id["bad"]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert by_id["exp"]["response"] is None
    assert by_id["exp"]["error"] == {"code": "batch_expired", "message": "This request could not be executed "
                                     "before the completion window expired."}
    assert final2["status"] == "completed" and final2["error_file_id"] is None
    assert [(i.custom_id, i.outcome, i.status) for i in items[:6]] == [
        ("ok", "succeeded", 200), ("err", "errored", 500), ("exp", "expired", None), ("lim", "errored", 429),
        ("bad", "errored", 400), ("slow", "succeeded", 200)]
    assert succeeded == {"ok": 1, "slow": 1, "err": 1, "exp": 1}


def test_random_errored_and_expired_fractions_are_seeded():
    async def go(fp, api):
        fp.batch_faults = BatchFaults(errored=0.2, expired=0.1, seed=7)
        batch = await api.openai_batch([line(f"r{i}", chat(f"p{i}")) for i in range(200)])
        await api.openai_done(batch["id"])
        return {i.custom_id: i.outcome for i in fp.batch_items}

    first, second = run(go), run(go)
    assert first == second  # same seed, same batch id: the same draw
    counts = {k: list(first.values()).count(k) for k in ("succeeded", "errored", "expired")}
    assert 20 <= counts["errored"] <= 60 and 5 <= counts["expired"] <= 35 and sum(counts.values()) == 200


def test_openai_invalid_input_file_fails_the_batch():
    good = orjson.dumps(line("a", chat("a")))
    data = b"\n".join([good, b"{not json", orjson.dumps({"method": "POST", "url": "/v1/chat/completions",
                                                         "body": chat("b")}), good, b""])

    async def go(fp, api):
        batch = await api.openai_batch(data)
        final, seen = await api.openai_done(batch["id"])
        return final, seen, fp.batch_items

    final, seen, items = run(go)
    assert final["status"] == "failed" and final["failed_at"] is not None and seen[-1] == "failed"
    assert final["output_file_id"] is None and final["error_file_id"] is None
    errors = final["errors"]
    assert errors["object"] == "list"
    assert [(e["line"], e["code"]) for e in errors["data"]] == [
        (2, "invalid_json_line"), (3, "missing_required_parameter"), (4, "duplicate_custom_id")]
    assert all(e["message"] for e in errors["data"])
    assert final["request_counts"]["total"] == 0 and items == []


def test_openai_create_and_file_errors():
    async def go(fp, api):
        unknown_content = await api.json("GET", "/v1/files/file-999/content")
        unknown_file = await api.json("POST", "/v1/batches", {"input_file_id": "file-999",
                                                              "endpoint": "/v1/chat/completions",
                                                              "completion_window": "24h"})
        file = await api.upload([line("a", chat("a"))])
        wrong_endpoint = await api.json("POST", "/v1/batches", {"input_file_id": file["id"],
                                                                "endpoint": "/v1/embeddings",
                                                                "completion_window": "24h"})
        no_multipart = await api.json("POST", "/v1/files", {"purpose": "batch"})
        fp.batch_faults.fail_create = 402
        no_credit = await api.json("POST", "/v1/batches", {"input_file_id": file["id"],
                                                           "endpoint": "/v1/chat/completions",
                                                           "completion_window": "24h"})
        unknown_batch = await api.json("GET", "/v1/batches/batch_999")
        return unknown_content, unknown_file, wrong_endpoint, no_multipart, no_credit, unknown_batch, fp

    unknown_content, unknown_file, wrong_endpoint, no_multipart, no_credit, unknown_batch, fp = run(go)
    assert unknown_content[0] == 404 and unknown_content[1]["error"]["type"] == "invalid_request_error"
    assert unknown_file[0] == 404 and "file-999" in unknown_file[1]["error"]["message"]
    assert wrong_endpoint[0] == 400 and wrong_endpoint[1]["error"]["param"] == "endpoint"
    assert no_multipart[0] == 400
    assert no_credit[0] == 402 and "error" in no_credit[1]
    assert unknown_batch[0] == 404
    assert fp.batches == {} and fp.batch_requests() == {"openai": 3}


def test_openai_cancel_with_some_items_done():
    async def go(fp, api):
        fp.batch_faults.complete_after_s, fp.batch_faults.cancel_s = 60.0, 0.05
        fp.batch_faults.done_before_cancel = 0.5
        batch = await api.openai_batch([line(f"c{i}", chat(f"p{i}")) for i in range(4)])
        status, cancelling = await api.json("POST", f"/v1/batches/{batch['id']}/cancel")
        assert status == 200
        final, seen = await api.openai_done(batch["id"])
        output = await api.content(final["output_file_id"])
        again = await api.json("POST", f"/v1/batches/{batch['id']}/cancel")
        plain = await api.openai_batch([line("n", chat("n"))])  # done_before_cancel=0: nothing answered
        fp.batch_faults.done_before_cancel = 0.0
        await api.json("POST", f"/v1/batches/{plain['id']}/cancel")
        plain_final, _ = await api.openai_done(plain["id"])
        assert fp.batches[batch["id"]]["status"] == "cancelled" and fp.batches[batch["id"]].get("nope") is None
        return cancelling, final, seen, jsonl(output), again, plain_final, fp.batch_items

    cancelling, final, seen, output, again, plain_final, items = run(go)
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
    assert seen[-1] == "cancelled" and final["cancelled_at"] is not None and final["completed_at"] is None
    assert [x["custom_id"] for x in output] == ["c0", "c1"]
    assert final["request_counts"] == {"total": 4, "completed": 2, "failed": 0} and final["error_file_id"] is None
    assert again[0] == 409  # a cancelled batch cannot be cancelled again
    assert plain_final["status"] == "cancelled" and plain_final["output_file_id"] is None
    assert [(i.custom_id, i.outcome) for i in items] == [("c0", "succeeded"), ("c1", "succeeded"),
                                                         ("c2", "canceled"), ("c3", "canceled"), ("n", "canceled")]


def test_openai_list_pages_newest_first_and_not_found_reads():
    async def go(fp, api):
        fp.batch_faults.complete_after_s = 60.0
        ids = [(await api.openai_batch([line("a", chat("a"))]))["id"] for _ in range(3)]
        page1 = await api.json("GET", "/v1/batches?limit=2")
        page2 = await api.json("GET", f"/v1/batches?limit=2&after={page1[1]['last_id']}")
        fp.batch_faults.not_found_reads = 2
        fresh = await api.openai_batch([line("a", chat("a"))])
        reads = [(await api.json("GET", f"/v1/batches/{fresh['id']}"))[0] for _ in range(3)]
        return ids, page1[1], page2[1], reads

    ids, page1, page2, reads = run(go)
    assert page1["object"] == "list" and [b["id"] for b in page1["data"]] == [ids[2], ids[1]]
    assert page1["has_more"] is True and page1["first_id"] == ids[2] and page1["last_id"] == ids[1]
    assert [b["id"] for b in page2["data"]] == [ids[0]] and page2["has_more"] is False
    assert all(b["status"] == "in_progress" for b in page1["data"])
    assert reads == [404, 404, 200]


def test_openai_truncated_output_once():
    async def go(fp, api):
        fp.batch_faults.truncate_outputs = 1
        lines = [line(f"t{i}", chat(f"p{i}")) for i in range(4)]
        first = await api.openai_batch(lines)
        final, _ = await api.openai_done(first["id"])
        cut = await api.content(final["output_file_id"])
        second = await api.openai_batch(lines)
        final2, _ = await api.openai_done(second["id"])
        whole = await api.content(final2["output_file_id"])
        return cut, whole, fp.batch_faults.truncate_outputs, fp.batch_succeeded(), fp.batch_items

    cut, whole, left, succeeded, items = run(go)
    assert not cut.endswith(b"\n")
    parts = cut.split(b"\n")
    assert len(parts) == 2 and orjson.loads(parts[0])["custom_id"] == "t0"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(parts[1])
    assert whole.endswith(b"\n") and len(jsonl(whole)) == 4 and left == 0
    assert [i.truncated for i in items[:4]] == [False, True, True, True]
    assert succeeded == {"t0": 2, "t1": 1, "t2": 1, "t3": 1}  # what the client saw in full


def test_hold_on_create_still_creates_the_batch_and_holds_poll_and_download():
    async def go(fp, api):
        fp.batch_faults.hold_s = {"create": 10.0}
        file = await api.upload([line("a", chat("a"))])
        with pytest.raises(asyncio.TimeoutError):
            await api.call("POST", "/v1/batches", {"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                                                   "completion_window": "24h"}, timeout=0.1)
        with pytest.raises(asyncio.TimeoutError):
            await api.call("POST", "/v1/messages/batches", {"requests": [{"custom_id": "a", "params": message("a")}]},
                           timeout=0.1)
        created = {b.id: b.dialect for b in fp.batches.values()}
        fp.batch_faults.hold_s = {"poll": 0.1, "download": 0.1}
        openai_id = next(i for i, d in created.items() if d == "openai")
        started = time.monotonic()
        status, batch = await api.json("GET", f"/v1/batches/{openai_id}")
        polled_s = time.monotonic() - started
        started = time.monotonic()
        await api.content(batch["output_file_id"])
        downloaded_s = time.monotonic() - started
        counts = (fp.batch_creates(), fp.batch_uploads(), fp.batch_status_reads(), fp.batch_downloads_started())
        return created, fp.batch_requests(), batch, polled_s, downloaded_s, counts

    created, requests, batch, polled_s, downloaded_s, counts = run(go)
    assert sorted(created.values()) == ["anthropic", "openai"]
    assert requests == {"openai": 1, "anthropic": 1} and counts == (2, 1, 1, 1)
    assert batch["status"] == "completed"  # created on arrival, answered while the client was gone
    assert polled_s >= 0.09 and downloaded_s >= 0.09


# --- Anthropic ------------------------------------------------------------------------------------


def test_anthropic_round_trip_every_result_type():
    tool_params = message("label this", tools=[TOOL], tool_choice={"type": "tool", "name": "record"})

    async def go(fp, api):
        online = {}
        for cid, params in (("plain", message("hello")), ("tool", tool_params)):
            status, online[cid] = await api.json("POST", "/v1/messages", params)
            assert status == 200
        fp.fault_rates = {"500": 1.0}
        fp.batch_faults.complete_after_s, fp.batch_faults.finalizing_s = 0.05, 3600.0  # finalizing held
        fp.batch_faults.errored_ids, fp.batch_faults.expired_ids = {"err"}, {"exp"}
        fp.script("refused", Fault.status(400))
        created = await api.anthropic_batch([("plain", message("hello")), ("tool", tool_params),
                                             ("err", message("e")), ("exp", message("x")),
                                             ("bad", message("refused")), ("nomax", chat("no max_tokens"))])
        early = await api.call("GET", f"/v1/messages/batches/{created['id']}/results")
        # the finalizing window still says in_progress; wait until the answers exist, then until ended
        await api.poll(f"/v1/messages/batches/{created['id']}", lambda b: fp.batch_items != [],
                       key="processing_status")
        mid = (await api.json("GET", f"/v1/messages/batches/{created['id']}"))[1]
        still_early = (await api.call("GET", f"/v1/messages/batches/{created['id']}/results"))[0]
        fp.batch_faults.finalizing_s = 0.0
        final, seen = await api.anthropic_done(created["id"])
        assert still_early == 404
        assert final["results_url"].startswith(fp.url)
        status, results, content_type = await api.call("GET", final["results_url"][len(fp.url):])
        assert status == 200
        return created, early, mid, final, seen, jsonl(results), online, fp

    created, early, mid, final, seen, results, online, fp = run(go)
    assert created["type"] == "message_batch" and created["id"].startswith("msgbatch_")
    assert created["processing_status"] == "in_progress" and created["ended_at"] is None
    assert created["results_url"] is None and created["cancel_initiated_at"] is None
    assert created["archived_at"] is None and created["created_at"].endswith("Z")
    assert created["request_counts"] == {"processing": 6, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert early[0] == 404 and orjson.loads(early[1])["error"]["type"] == "not_found_error"
    assert mid["processing_status"] == "in_progress"
    assert seen[-1] == "ended" and final["ended_at"] is not None
    assert final["request_counts"] == {"processing": 0, "succeeded": 2, "errored": 3, "canceled": 0, "expired": 1}
    by_id = {r["custom_id"]: r["result"] for r in results}
    assert [r["custom_id"] for r in results] == ["plain", "tool", "err", "exp", "bad", "nomax"]
    assert by_id["plain"]["type"] == "succeeded" and same_answer(by_id["plain"]["message"], online["plain"])
    assert same_answer(by_id["tool"]["message"], online["tool"])
    assert by_id["tool"]["message"]["content"][0]["input"] == {"label": "echo: label this"}
    assert by_id["err"] == {"type": "errored", "error": {"type": "error", "error": {
        "type": "api_error", "message": "injected batch item error"}}}
    assert by_id["bad"]["error"]["error"]["type"] == "invalid_request_error"
    assert by_id["nomax"]["error"]["error"]["type"] == "invalid_request_error"
    assert by_id["exp"] == {"type": "expired"}
    assert fp.count_by_prompt() == {"hello": 1, "label this": 1}
    assert fp.batch_count_by_prompt() == {"hello": 1, "label this": 1}
    assert fp.batch_requests() == {"anthropic": 1}


def test_anthropic_cancel_list_and_custom_id_validation():
    async def go(fp, api):
        fp.batch_faults.complete_after_s, fp.batch_faults.cancel_s = 60.0, 0.05
        fp.batch_faults.done_before_cancel = 0.34
        batch = await api.anthropic_batch([(f"k{i}", message(f"p{i}")) for i in range(3)])
        other = await api.anthropic_batch([("z", message("z"))])
        status, canceling = await api.json("POST", f"/v1/messages/batches/{batch['id']}/cancel")
        assert status == 200
        final, seen = await api.anthropic_done(batch["id"])
        _, results, _ = await api.call("GET", f"/v1/messages/batches/{batch['id']}/results")
        listed = await api.json("GET", "/v1/messages/batches?limit=1")
        rest = await api.json("GET", f"/v1/messages/batches?limit=5&after_id={listed[1]['last_id']}")
        invalid = []
        for requests in ([{"custom_id": "has space", "params": message("a")}],
                         [{"custom_id": "x" * 65, "params": message("a")}],
                         [{"custom_id": "d", "params": message("a")}, {"custom_id": "d", "params": message("b")}],
                         [{"custom_id": "np"}], []):
            invalid.append(await api.json("POST", "/v1/messages/batches", {"requests": requests}))
        return canceling, final, seen, jsonl(results), other, listed[1], rest[1], invalid, fp

    canceling, final, seen, results, other, listed, rest, invalid, fp = run(go)
    assert canceling["processing_status"] == "canceling" and canceling["cancel_initiated_at"] is not None
    assert seen[-1] == "ended" and final["request_counts"]["canceled"] == 2
    assert final["request_counts"]["succeeded"] == 1
    assert [r["result"]["type"] for r in results] == ["succeeded", "canceled", "canceled"]
    assert [b["id"] for b in listed["data"]] == [other["id"]] and listed["has_more"] is True
    assert listed["first_id"] == listed["last_id"] == other["id"]
    assert [b["id"] for b in rest["data"]] == [final["id"]] and rest["has_more"] is False
    for status, body in invalid:
        assert status == 400 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "pattern" in invalid[0][1]["error"]["message"] and "Duplicate" in invalid[2][1]["error"]["message"]
    assert len(fp.batches) == 2 and fp.batch_requests() == {"anthropic": 7}


def test_anthropic_truncated_results_and_not_found_reads():
    async def go(fp, api):
        fp.batch_faults.truncate_outputs, fp.batch_faults.not_found_reads = 1, 1
        batch = await api.anthropic_batch([(f"k{i}", message(f"p{i}")) for i in range(3)])
        first_read = (await api.json("GET", f"/v1/messages/batches/{batch['id']}"))[0]
        await api.anthropic_done(batch["id"])
        _, results, _ = await api.call("GET", f"/v1/messages/batches/{batch['id']}/results")
        return first_read, results, fp.batch_succeeded(), fp.batch_succeeded(include_truncated=True)

    first_read, results, succeeded, billed = run(go)
    assert first_read == 404
    parts = results.split(b"\n")
    assert len(parts) == 2 and orjson.loads(parts[0])["custom_id"] == "k0" and not results.endswith(b"\n")
    assert succeeded == {"k0": 1} and billed == {"k0": 1, "k1": 1, "k2": 1}


# --- thread mode, knobs set from the test's thread --------------------------------------------------


def test_background_thread_knobs_set_mid_run_and_reset():
    def call(fp: FakeProvider, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        req = urllib.request.Request(fp.url + path, method=method,
                                     data=None if payload is None else orjson.dumps(payload))
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    with FakeProvider() as fp:
        fp.batch_faults.complete_after_s = 3600.0  # held in progress until the test lets it go
        status, batch = call(fp, "POST", "/v1/messages/batches",
                             {"requests": [{"custom_id": "a", "params": message("a")}]})
        assert status == 200
        assert fp.batches[batch["id"]].status == "in_progress"
        assert call(fp, "GET", f"/v1/messages/batches/{batch['id']}")[1]["processing_status"] == "in_progress"
        fp.batch_faults.complete_after_s = 0.0
        assert call(fp, "GET", f"/v1/messages/batches/{batch['id']}")[1]["processing_status"] == "ended"
        assert fp.batch_succeeded() == {"a": 1} and fp.count_by_prompt() == {}
        fp.reset()
        assert fp.batches == {} and fp.batch_items == [] and fp.batch_requests() == {}
        assert call(fp, "GET", f"/v1/messages/batches/{batch['id']}")[0] == 404
        assert fp.batch_faults.complete_after_s == 0.0  # knobs stay
