"""The gateway: retries, Retry-After, the journal, request sharing, structured output and admission.

Faults are injected by the fake provider; what is asserted is what reached the server (its own
record of each request and when it arrived) and what the caller got back.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import arun, prompts, read_jsonl
from pydantic import BaseModel

from synthtrace.config import Config, Endpoint, Limits, ModelAlias
from synthtrace.engine.gateway import Gateway
from synthtrace.engine.journal import Journal
from synthtrace.engine.limiter import Limiter, TokenBucket
from synthtrace.testing import FakeProvider, Fault
from synthtrace.types import ChatResult, FatalError, StructuredOutputError, Usage


def gw_config(fp: FakeProvider, *, timeout: float = 2.0, max_retries: int = 3, **limits: Any) -> Config:
    return Config(endpoints={"fake": Endpoint(kind="openai", base_url=fp.openai_base, timeout=timeout)},
                  default_endpoint="fake", default_model="fake", limits=Limits(max_retries=max_retries, **limits))


def with_gateway(cfg: Config, journal: Path, fn: Callable[[Gateway], Awaitable[Any]], **kwargs: Any) -> Any:
    """Run `fn(gateway)` with a gateway over the journal at `journal`, closing both afterwards."""
    async def go() -> Any:
        j = Journal(journal)
        gw = Gateway(cfg, j, default_model="fake", **kwargs)
        try:
            return await fn(gw)
        finally:
            await gw.aclose()
            j.close()
    return arun(go())


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def requests_for(fp: FakeProvider, prompt: str) -> list[Any]:
    return [r for r in fp.requests if r.prompt == prompt]


def run_cli(cli: Any, tmp_path: Path, cfg: Path, inp: Path, *extra: Any) -> Any:
    return cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg, "-q", *extra)


# --- 429 and Retry-After -------------------------------------------------------------------------


def test_429_retry_after_seconds_is_honoured_and_the_row_succeeds(fp, cli, tmp_path, write_jsonl, config_file):
    fp.script("prompt 1", Fault.status(429, retry_after=1))
    inp = write_jsonl(prompts(3))
    result = run_cli(cli, tmp_path, config_file(), inp)
    assert result.exit_code == 0, result.output
    first, retry = requests_for(fp, "prompt 1")
    assert (first.status, retry.status) == (429, 200)
    assert retry.time - first.time >= 1.0
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "run" / "rows.jsonl")}
    assert rows["r1"]["completion"] == "echo: prompt 1"
    assert len(rows) == 3
    assert not (tmp_path / "run" / "rejected.jsonl").read_text()


def test_429_retry_after_http_date_is_honoured(fp, tmp_path):
    not_before = math.floor(time.time()) + 2  # HTTP dates have whole seconds
    fp.script("later", Fault.status(429, retry_after=email.utils.formatdate(not_before, usegmt=True)))
    reply = with_gateway(gw_config(fp), tmp_path / "j.db", lambda gw: gw.chat(msgs("later")))
    assert reply.text == "echo: later"
    first, retry = requests_for(fp, "later")
    assert (first.status, retry.status) == (429, 200)
    assert retry.time >= not_before


def test_429_without_retry_after_is_retried(fp, tmp_path, fast_backoff):
    fp.script("busy", Fault.status(429))
    async def go(gw: Gateway) -> Any:
        return await gw.chat(msgs("busy")), gw.stats
    reply, stats = with_gateway(gw_config(fp), tmp_path / "j.db", go)
    assert reply.text == "echo: busy" and reply.attempts == 2
    assert stats.throttled == 1 and stats.retries == 0  # a 429 is not an error retry
    assert [r.status for r in fp.requests] == [429, 200]


# --- retryable failures --------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.status(500), Fault.status(503), Fault.truncated(), Fault.malformed(),
                                   Fault.drop()], ids=["500", "503", "truncated", "malformed", "drop"])
def test_retryable_failures_are_retried_then_succeed(fp, tmp_path, fast_backoff, fault):
    fp.script("flaky", fault)
    async def go(gw: Gateway) -> Any:
        return await gw.chat(msgs("flaky")), gw.stats
    reply, stats = with_gateway(gw_config(fp), tmp_path / "j.db", go)
    assert reply.text == "echo: flaky"
    assert reply.attempts == 2 and stats.retries == 1
    assert len(requests_for(fp, "flaky")) == 2
    assert fp.count_by_prompt()["flaky"] == 1


def test_timeout_is_retried(fp, tmp_path, fast_backoff):
    fp.script("slow", Fault.timeout(5))
    reply = with_gateway(gw_config(fp, timeout=0.3), tmp_path / "j.db", lambda gw: gw.chat(msgs("slow")))
    assert reply.text == "echo: slow"
    assert reply.attempts == 2
    assert len(requests_for(fp, "slow")) == 2


def test_persistent_500_ends_in_rejected_with_the_reason(fp, cli, tmp_path, write_jsonl, config_file, fast_backoff):
    fp.script("prompt 1", Fault.status(500), repeat_last=True)
    inp = write_jsonl(prompts(3))
    result = run_cli(cli, tmp_path, config_file(max_retries=2), inp)
    assert result.exit_code == 0, result.output
    assert len(requests_for(fp, "prompt 1")) == 3  # the first try and max_retries=2 retries
    (rejected,) = read_jsonl(tmp_path / "run" / "rejected.jsonl")
    assert rejected["id"] == "r1" and rejected["line"] == 2
    assert "HTTP 500" in rejected["reason"] and "injected HTTP 500" in rejected["reason"]
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "run" / "rows.jsonl")) == ["r0", "r2"]


@pytest.mark.parametrize("message", ["model 'fake' does not support `logit_bias`",
                                     "stop: '[/INST]' is not an allowed stop sequence"])
def test_400_is_not_retried_and_its_message_is_kept(fp, cli, tmp_path, write_jsonl, config_file, message):
    fp.script("prompt 0", Fault.status(400, body={"error": {"message": message, "type": "invalid_request_error"}}))
    inp = write_jsonl(prompts(2))
    result = run_cli(cli, tmp_path, config_file(), inp)
    assert result.exit_code == 0, result.output
    assert len(requests_for(fp, "prompt 0")) == 1
    (rejected,) = read_jsonl(tmp_path / "run" / "rejected.jsonl")
    assert rejected["id"] == "r0"
    assert "HTTP 400" in rejected["reason"] and message in rejected["reason"]
    assert message in result.stderr
    assert [r["id"] for r in read_jsonl(tmp_path / "run" / "rows.jsonl")] == ["r1"]


def test_400_through_the_gateway_raises_fatal_error_once(fp, tmp_path):
    fp.script("bad", Fault.status(400))
    async def go(gw: Gateway) -> Any:
        with pytest.raises(FatalError, match="HTTP 400"):
            await gw.chat(msgs("bad"))
    with_gateway(gw_config(fp), tmp_path / "j.db", go)
    assert len(fp.requests) == 1


# --- the journal and request sharing -------------------------------------------------------------


def test_second_gateway_replays_from_the_journal(fp, tmp_path):
    journal = tmp_path / "j.db"
    async def ask_all(gw: Gateway) -> list[Any]:
        return [await gw.chat(msgs(f"q{i}"), temperature=0.5) for i in range(3)]
    first = with_gateway(gw_config(fp), journal, ask_all)
    assert len(fp.requests) == 3 and not any(r.cached for r in first)
    second = with_gateway(gw_config(fp), journal, ask_all)
    assert len(fp.requests) == 3  # nothing new reached the server
    assert [r.text for r in second] == [r.text for r in first]
    assert [r.key for r in second] == [r.key for r in first]
    assert all(r.cached for r in second)


def test_a_long_run_keeps_the_journal_wal_bounded_and_every_answer_readable(tmp_path):
    # Commits run on the journal's writer thread; SQLite's checkpoints (which run inside them) must
    # still fold the WAL back into the database as answers keep arriving.
    path = tmp_path / "j.db"
    journal = Journal(path)
    text = "answer " * 400  # ~2.8 KB per answer: ~11 MB in all
    keys = [f"{i:032x}" for i in range(4000)]
    async def go() -> None:
        for key in keys:  # one answer per commit: the most commits, the most WAL frames
            await journal.record(key, "ep", "m", ChatResult(text=text + key), 0.0)
    arun(go())
    wal = Path(str(path) + "-wal")
    written = len(keys) * len(text)
    assert wal.stat().st_size < written / 2, (wal.stat().st_size, written)
    journal.close()
    again = Journal(path)
    assert all(again.get(key).result.text == text + key for key in keys[::97])
    again.close()


def test_answers_are_committed_before_their_callers_resume_and_a_failed_commit_reaches_each(tmp_path):
    path = tmp_path / "j.db"
    journal = Journal(path)
    def committed() -> int:
        with sqlite3.connect(path) as other:  # another connection sees only committed transactions
            return other.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    async def go() -> list[Any]:
        async def one(i: int) -> int:
            await journal.record(f"{i:032x}", "ep", "m", ChatResult(text=str(i)), 0.0)
            return committed()
        seen = await asyncio.gather(*(one(i) for i in range(50)))  # answers of one tick share a commit
        assert min(seen) == 50
        bad = [journal.record(f"{i:032x}", "ep", "m", ChatResult(text="x"), object() if i == 103 else 0.0)
               for i in range(100, 105)]  # one answer that cannot be stored fails its whole transaction
        outcomes = await asyncio.gather(*bad, return_exceptions=True)
        await journal.record(f"{200:032x}", "ep", "m", ChatResult(text="after"), 0.0)  # the writer lives on
        return outcomes
    outcomes = arun(go())
    assert all(isinstance(o, sqlite3.Error) for o in outcomes), outcomes
    assert committed() == 51
    journal.close()


def test_a_pause_in_the_answers_folds_the_wal_into_the_database(tmp_path):
    # Between rounds of slow requests the writer checkpoints, so the database file itself (read here
    # without the WAL) already holds the answers, and closing has little left to sync.
    path = tmp_path / "j.db"
    journal = Journal(path)
    def in_main_file() -> int:
        with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as raw:  # no WAL
            try:
                return raw.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            except sqlite3.OperationalError:  # not even the table is in the file yet
                return 0
    async def go() -> int:
        await asyncio.gather(*(journal.record(f"{i:032x}", "ep", "m", ChatResult(text="x"), 0.0) for i in range(20)))
        assert in_main_file() == 0  # committed to the WAL, not yet folded in
        for _ in range(100):
            await asyncio.sleep(0.02)
            if in_main_file() == 20:
                break
        return in_main_file()
    assert arun(go()) == 20
    journal.close()


def test_the_last_answer_of_a_burst_is_committed_without_waiting_for_company(tmp_path, monkeypatch):
    # While answers stream in, one waits GROUP_COMMIT_S for others to share its transaction. When the
    # caller says nothing else is in flight, waiting would only hold back the run's last rows.
    monkeypatch.setattr("synthtrace.engine.journal.GROUP_COMMIT_S", 60.0)  # a wait nobody could miss
    journal = Journal(tmp_path / "j.db")
    async def go() -> None:
        await journal.record(f"{0:032x}", "ep", "m", ChatResult(text="0"), 0.0)  # after a pause: at once
        streaming = asyncio.create_task(journal.record(f"{1:032x}", "ep", "m", ChatResult(text="1"), 0.0))
        await asyncio.sleep(0)
        assert not streaming.done()  # waiting for company
        last = journal.record(f"{2:032x}", "ep", "m", ChatResult(text="2"), 0.0, more_coming=False)
        await asyncio.wait_for(asyncio.gather(streaming, last), 10)  # both committed, long before 60 s
    arun(go())
    assert [journal.get(f"{n:032x}").result.text for n in range(3)] == ["0", "1", "2"]
    journal.close()


def test_an_answer_whose_caller_is_cancelled_before_its_commit_is_kept_at_close(tmp_path):
    # Ctrl-C while answers wait for their group commit: the answers were paid for, so closing the
    # journal commits them, and the next run replays them instead of asking again.
    path = tmp_path / "j.db"
    journal = Journal(path)
    async def go() -> None:
        await journal.record(f"{0:032x}", "ep", "m", ChatResult(text="first"), 0.0)
        waiting = asyncio.create_task(journal.record(f"{1:032x}", "ep", "m", ChatResult(text="paid"), 0.0))
        await asyncio.sleep(0)  # its answer now waits for company in the next transaction
        waiting.cancel()
        journal.begin_close()
        with pytest.raises(RuntimeError, match="closing"):
            await journal.record(f"{2:032x}", "ep", "m", ChatResult(text="late"), 0.0)
    arun(go())
    journal.close()
    again = Journal(path)
    assert again.get(f"{1:032x}").result.text == "paid"
    assert again.get(f"{2:032x}") is None
    again.close()
    assert not Path(str(path) + "-wal").exists()  # the last close folded the WAL in and removed it


def test_an_answer_read_back_from_the_journal_equals_what_was_recorded(tmp_path):
    journal = Journal(tmp_path / "j.db")
    answer = ChatResult(text="42", reasoning="6 x 7", usage=Usage(12, 3), finish_reason="stop", model="m-1")
    arun(journal.record(f"{7:032x}", "ep", "m", answer, 0.25))
    again = Journal(tmp_path / "j.db")
    entry = again.get(f"{7:032x}")
    assert entry.result == answer and entry.cost_usd == 0.25
    assert entry.result != ChatResult(text="42")  # every field counts
    assert "reasoning='6 x 7'" in repr(entry) and "prompt_tokens=12" in repr(entry)  # readable in a failure
    again.close()
    journal.close()


def test_one_journal_serves_one_event_loop_after_another(tmp_path):
    journal = Journal(tmp_path / "j.db")
    for n in range(2):  # e.g. a library user calling asyncio.run twice
        arun(journal.record(f"{n:032x}", "ep", "m", ChatResult(text=str(n)), 0.0))
    assert [journal.get(f"{n:032x}").result.text for n in range(2)] == ["0", "1"]
    journal.close()


def test_fresh_gateway_asks_again(fp, tmp_path):
    journal = tmp_path / "j.db"
    with_gateway(gw_config(fp), journal, lambda gw: gw.chat(msgs("q")))
    reply = with_gateway(gw_config(fp), journal, lambda gw: gw.chat(msgs("q")), fresh=True)
    assert not reply.cached and len(fp.requests) == 2


def test_params_are_part_of_the_key(fp, tmp_path):
    async def go(gw: Gateway) -> Any:
        a = await gw.chat(msgs("q"), temperature=0.1)
        b = await gw.chat(msgs("q"), temperature=0.9)
        return a, b
    a, b = with_gateway(gw_config(fp), tmp_path / "j.db", go)
    assert a.key != b.key and len(fp.requests) == 2


def test_samples_are_distinct_cache_entries(fp, tmp_path):
    async def go(gw: Gateway) -> list[Any]:
        return [await gw.chat(msgs("q"), sample=k) for k in (0, 1, 2, 1, 0)]
    replies = with_gateway(gw_config(fp), tmp_path / "j.db", go)
    assert len({r.key for r in replies}) == 3
    assert len(fp.requests) == 3
    assert [r.cached for r in replies] == [False, False, False, True, True]


def test_identical_concurrent_requests_are_sent_once(fp, tmp_path):
    fp.latency = 0.2
    async def go(gw: Gateway) -> list[Any]:
        return await asyncio.gather(*(gw.chat(msgs("same")) for _ in range(5)))
    replies = with_gateway(gw_config(fp), tmp_path / "j.db", go)
    assert len(fp.requests) == 1
    assert {r.text for r in replies} == {"echo: same"}
    assert {r.key for r in replies} == {replies[0].key}
    assert sum(not r.cached for r in replies) == 1


def test_identical_concurrent_requests_share_a_failure(fp, tmp_path):
    fp.latency = 0.2
    fp.script("same", Fault.status(400))
    async def go(gw: Gateway) -> list[Any]:
        return await asyncio.gather(*(gw.chat(msgs("same")) for _ in range(3)), return_exceptions=True)
    results = with_gateway(gw_config(fp), tmp_path / "j.db", go)
    assert all(isinstance(r, FatalError) for r in results)
    assert len(fp.requests) == 1


# --- structured output ---------------------------------------------------------------------------


class Verdict(BaseModel):
    answer: int
    why: str


def mentions(text: str) -> Callable[[Any], bool]:
    """Script match: any message of the conversation contains `text` (re-asks keep the first prompt)."""
    return lambda body: any(text in str(m.get("content")) for m in body.get("messages", []))


def test_invalid_structured_answer_is_reasked_once_then_parsed(fp, tmp_path):
    fp.script(mentions("grade it"), '{"answer": "lots"}', '{"answer": 4, "why": "2+2"}')
    reply = with_gateway(gw_config(fp), tmp_path / "j.db", lambda gw: gw.chat(msgs("grade it"), schema=Verdict))
    assert reply.parsed == Verdict(answer=4, why="2+2")
    assert reply.attempts == 2
    first, reask = fp.requests
    assert first.body["response_format"]["type"] == "json_schema"
    convo = reask.body["messages"]
    assert convo[:2] == [*msgs("grade it"), {"role": "assistant", "content": '{"answer": "lots"}'}]
    assert convo[2]["role"] == "user" and "answer" in convo[2]["content"]


@pytest.mark.parametrize("text", [
    '```json\n{"answer": 4, "why": "two and two"}\n```',
    '```\n{"answer": 4, "why": "two and two"}\n```',
    'Sure! Here it is: {"answer": 4, "why": "two and two"} Hope that helps.',
    '{"answer": 4, "why": "two\nand two"}',  # a raw newline inside a string
])
def test_tolerant_parsing_needs_no_reask(fp, tmp_path, text):
    fp.script("grade it", text)
    reply = with_gateway(gw_config(fp), tmp_path / "j.db", lambda gw: gw.chat(msgs("grade it"), schema=Verdict))
    assert reply.parsed.answer == 4 and reply.parsed.why.replace("\n", " ") == "two and two"
    assert len(fp.requests) == 1


def test_still_invalid_after_reasks_raises(fp, tmp_path):
    fp.script(mentions("grade it"), "I would rather not.", repeat_last=True)
    async def go(gw: Gateway) -> Any:
        with pytest.raises(StructuredOutputError) as info:
            await gw.chat(msgs("grade it"), schema=Verdict, reasks=1)
        return info.value
    error = with_gateway(gw_config(fp), tmp_path / "j.db", go)
    assert error.last_text == "I would rather not."
    assert "Verdict" in str(error)
    assert len(fp.requests) == 2  # the ask and one re-ask


def test_dict_schema_returns_plain_data(fp, tmp_path):
    schema = {"title": "Pair", "type": "object", "properties": {"a": {"type": "integer"}}}
    fp.script("pair", '{"a": 7}')
    reply = with_gateway(gw_config(fp), tmp_path / "j.db", lambda gw: gw.chat(msgs("pair"), schema=schema))
    assert reply.parsed == {"a": 7}
    assert fp.requests[0].body["response_format"]["json_schema"]["name"] == "Pair"


def test_the_journal_keeps_what_was_asked_beside_the_answer(fp, tmp_path):
    old = tmp_path / "old.db"  # a journal written before requests were kept
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, endpoint TEXT NOT NULL, model TEXT NOT NULL, "
                   "created REAL NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, "
                   "cost_usd REAL NOT NULL, result BLOB NOT NULL)")
        db.execute("INSERT INTO calls VALUES ('00000000000000000000000000000007', 'ep', 'm', 1.0, 1, 1, 0.0, '{\"text\": \"old\"}')")
    reply = with_gateway(gw_config(fp), old, lambda gw: gw.chat(msgs("what is new"), temperature=0.3))
    journal = Journal(old)
    try:
        call = journal.call(reply.key)
        assert call["request"] == {"messages": msgs("what is new"), "params": {"temperature": 0.3}, "schema": None}
        assert call["result"]["text"] == "echo: what is new" and call["model"] == "fake"
        assert journal.call(f"{7:032x}")["request"] is None and journal.call(f"{7:032x}")["result"] == {"text": "old"}
    finally:
        journal.close()


# --- admission: concurrency, AIMD under a server cap, requests per minute -------------------------


def test_concurrency_limit_is_honoured(fp, tmp_path):
    fp.latency = 0.2
    async def go(gw: Gateway) -> list[Any]:
        return await asyncio.gather(*(gw.chat(msgs(f"q{i}")) for i in range(9)))
    replies = with_gateway(gw_config(fp), tmp_path / "j.db", go, concurrency=3)
    assert len(replies) == 9 and len(fp.requests) == 9
    assert fp.peak_in_flight == 3


def test_requests_waiting_for_a_slot_are_sent_in_the_order_they_came(fp, tmp_path):
    # Answers come back in bursts; each freed slot goes to the longest-waiting request. (Counting a
    # slot as taken only once its new owner ran, a burst woke more waiters than slots, and the extra
    # ones went back to the end of the queue.)
    fp.latency = 0.05
    async def go(gw: Gateway) -> list[Any]:
        return await asyncio.gather(*(gw.chat(msgs(f"q{i}")) for i in range(40)))
    with_gateway(gw_config(fp), tmp_path / "j.db", go, concurrency=4)
    assert [r.prompt for r in fp.requests] == [f"q{i}" for i in range(40)]
    assert fp.peak_in_flight == 4


def test_a_steady_server_cap_is_kept_full_and_a_falling_one_is_backed_off_from(monkeypatch):
    """A server that takes 50 at a time: after the first burst of 429s the limit sits at 50, and a
    later probe above it comes back to 50 (no round below the cap). A 429 below that level means the
    cap fell: the limit goes a further 5 % below what the server holds."""
    from synthtrace.engine import limiter as limiter_mod

    clock = [1000.0]
    monkeypatch.setattr(limiter_mod.time, "monotonic", lambda: clock[0])

    async def go() -> list[float]:
        lim = Limiter(100)
        seen = []
        for _ in range(60):  # the first burst: 60 sent, the server holds 50
            await lim.acquire()
        for _ in range(10):
            lim.release_throttled(1.0)
        seen.append(lim.limit)
        clock[0] += 2  # past the cool-down; successes probe upwards, then a 51st in flight draws a 429
        while lim.limit < 51:
            lim.release()
            lim.on_success()
            await lim.acquire()
        await lim.acquire()
        lim.release_throttled(1.0)
        seen.append(lim.limit)
        clock[0] += 2  # the server now takes only 49 of our 50
        lim.release_throttled(1.0)
        seen.append(round(lim.limit, 2))
        return seen

    assert asyncio.run(go()) == [50.0, 50.0, 46.55]


def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_the_slot_on():
    async def go() -> list[str]:
        limiter = Limiter(1)
        order: list[str] = []
        async def take(name: str) -> None:
            await limiter.acquire()
            order.append(name)
        await limiter.acquire()  # held
        b = asyncio.create_task(take("b"))
        c = asyncio.create_task(take("c"))
        await asyncio.sleep(0)  # both wait
        limiter.release()  # handed to b ...
        b.cancel()  # ... which is cancelled before it runs
        await asyncio.gather(b, return_exceptions=True)
        await asyncio.wait_for(c, 1)
        return [*order, str(limiter.in_flight)]
    assert arun(go()) == ["c", "1"]


def test_a_sporadic_failure_is_retried_at_once_in_the_slot_it_holds(fp, tmp_path, fast_backoff):
    # One slot, five requests: the first fails once. A healthy endpoint's odd 500 is asked again at
    # once, keeping its slot: given back, the slot would go to the next in line and the retry would
    # wait for one to free again (near the end of a burst of answers, a whole round of latency).
    fp.latency = 0.05
    fp.script("q0", Fault.status(500))
    async def go(gw: Gateway) -> list[Any]:
        return await asyncio.gather(*(gw.chat(msgs(f"q{i}")) for i in range(5)))
    replies = with_gateway(gw_config(fp), tmp_path / "j.db", go, concurrency=1)
    assert [r.text for r in replies] == [f"echo: q{i}" for i in range(5)]
    assert [(r.prompt, r.status) for r in fp.requests[:3]] == [("q0", 500), ("q0", 200), ("q1", 200)]
    assert fp.peak_in_flight == 1  # never more in flight than the slots


def test_with_a_rate_budget_a_retry_queues_again_ahead_of_first_attempts(fp, tmp_path, fast_backoff):
    # With a requests-per-minute budget every attempt must pass admission (and count against the
    # budget): the retry gives its slot back, backs off, and takes the next slot, not a place behind
    # the requests still waiting for their first attempt.
    fp.latency = 0.05
    fp.script("q0", Fault.status(500))
    async def go(gw: Gateway) -> list[Any]:
        return await asyncio.gather(*(gw.chat(msgs(f"q{i}")) for i in range(5)))
    replies = with_gateway(gw_config(fp), tmp_path / "j.db", go, concurrency=1, rpm=60_000)
    assert [r.text for r in replies] == [f"echo: q{i}" for i in range(5)]
    assert [(r.prompt, r.status) for r in fp.requests[:3]] == [("q0", 500), ("q1", 200), ("q0", 200)]


def test_server_concurrency_cap_is_learned(fp, tmp_path):
    cap, n, ours = 4, 48, 12
    fp.latency, fp.max_in_flight, fp.retry_after_s = 0.05, cap, 0.05
    async def go(gw: Gateway) -> tuple[list[Any], Any]:
        replies = await asyncio.gather(*(gw.chat(msgs(f"q{i}")) for i in range(n)))
        return replies, gw.stats
    replies, stats = with_gateway(gw_config(fp), tmp_path / "j.db", go, concurrency=ours)
    assert sorted(r.text for r in replies) == sorted(f"echo: q{i}" for i in range(n))
    assert all(fp.count_by_prompt()[f"q{i}"] == 1 for i in range(n))
    throttled = sum(1 for r in fp.requests if r.status == 429)
    assert throttled == stats.throttled
    # The first wave can overshoot by (ours - cap); after that the limiter must hold near the cap,
    # not keep knocking: far fewer 429s than requests.
    assert throttled <= (ours - cap) + n // 4, throttled


def test_rpm_bucket_allows_its_burst_then_its_rate(fp, cli, tmp_path, write_jsonl, config_file):
    rpm = 240
    bucket = TokenBucket(rpm)  # the limiter's bucket: `capacity` requests at once, then `rate` per second
    burst, rate = int(bucket.capacity), bucket.rate
    n = burst + 4
    inp = write_jsonl(prompts(n))
    result = run_cli(cli, tmp_path, config_file(), inp, "--rpm", rpm, "--concurrency", n + 8)
    assert result.exit_code == 0, result.output
    times = sorted(r.time for r in fp.requests)
    assert len(times) == n
    t0 = times[0]
    slack = 0.2  # the bucket starts filling a moment before the first request reaches the server
    for k in range(burst, n):
        # the (k+1)-th request needs k+1-burst tokens refilled at `rate` per second
        assert times[k] - t0 >= (k + 1 - burst) / rate - slack, (k, times[k] - t0)
    in_first_window = sum(1 for t in times if t - t0 < 1 / rate - slack)
    assert in_first_window <= burst


def test_a_run_through_random_faults_gets_every_row_once(fp, cli, tmp_path, write_jsonl, config_file, fast_backoff):
    n = 60
    fp.retry_after_s = 0.05
    fp.fault_rates = {"500": 0.06, "429": 0.04, "truncated": 0.04, "malformed": 0.03, "drop": 0.03}
    inp = write_jsonl(prompts(n))
    result = run_cli(cli, tmp_path, config_file(max_retries=8), inp, "-c", 8)
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "run" / "rows.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(n))
    assert all(r["completion"] == f"echo: prompt {r['id'][1:]}" for r in rows)
    faults = [r for r in fp.requests if r.outcome != "ok"]
    assert faults, "the fault rates injected nothing"
    answered = fp.count_by_prompt()
    assert all(answered[f"prompt {i}"] == 1 for i in range(n))  # each good answer was used, none paid twice
    retried = {r["id"] for r in rows if r["provenance"]["calls"][0]["attempts"] > 1}
    assert retried == {f"r{r.prompt.split()[1]}" for r in faults}


# --- other providers through the gateway ---------------------------------------------------------


def test_anthropic_structured_output_through_the_gateway(fp, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-test")
    cfg = Config(endpoints={"claude": Endpoint(kind="anthropic", base_url=fp.anthropic_base,
                                               api_key_env="FAKE_ANTHROPIC_KEY", timeout=2)},
                 models={"judge": ModelAlias(endpoint="claude", model="claude-sonnet-4", params={"max_tokens": 300})})
    fp.script("grade it", {"answer": 4, "why": "2+2"})
    reply = with_gateway(cfg, tmp_path / "j.db",
                         lambda gw: gw.chat([{"role": "system", "content": "grader"}, *msgs("grade it")],
                                            model="judge", schema=Verdict))
    assert reply.parsed == Verdict(answer=4, why="2+2")
    assert reply.provider_model == "claude-sonnet-4" and reply.model == "judge"
    (req,) = fp.requests
    assert req.has_api_key and req.body["system"] == "grader" and req.body["max_tokens"] == 300
    assert req.body["tool_choice"] == {"type": "tool", "name": "Verdict"}


def argo_config(fp: FakeProvider) -> Config:
    return Config(endpoints={"argo": Endpoint(kind="argo", base_url=fp.argo_url, timeout=2)},
                  default_endpoint="argo", default_model="gpt4o")


def test_argo_user_comes_from_the_environment(fp, tmp_path, monkeypatch):
    monkeypatch.setenv("ARGO_USER", "alice")
    reply = with_gateway(argo_config(fp), tmp_path / "j.db", lambda gw: gw.chat(msgs("hi"), model="gpt4o"))
    assert reply.text == "echo: hi"
    assert fp.requests[0].body["user"] == "alice"


def test_argo_without_argo_user_fails_before_sending(fp, tmp_path):
    async def go(gw: Gateway) -> None:
        with pytest.raises(FatalError, match="ARGO_USER"):
            await gw.chat(msgs("hi"), model="gpt4o")
    with_gateway(argo_config(fp), tmp_path / "j.db", go)
    assert fp.requests == []
