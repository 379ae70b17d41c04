"""Several servers for one model: a 429 from one slows only that one, a dead one's requests go to the
others, it is tried again later, and the journal does not care which replica answered."""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import Any

import pytest
from conftest import make_config, prompts, read_jsonl

import synthtrace
from synthtrace.engine import replicas as replicas_mod
from synthtrace.testing import FakeProvider


def answered(*servers: FakeProvider) -> collections.Counter[str]:
    """Prompt → how many genuine answers it got, over all the servers."""
    total: collections.Counter[str] = collections.Counter()
    for s in servers:
        total.update(s.count_by_prompt())
    return total


def outcomes(server: FakeProvider) -> collections.Counter[str]:
    return collections.Counter(r.outcome for r in server.requests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there until a test starts a server


async def when(condition: Any) -> None:
    """Wait (polling the servers' ledgers) until `condition()` holds."""
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.005)


def test_a_replica_killed_mid_run_and_one_answering_429s_lose_nothing_and_pay_nothing_twice(
        tmp_path, write_jsonl, capsys):
    inp = write_jsonl(prompts(300))

    async def main() -> Any:
        async with (FakeProvider(latency=0.02) as a, FakeProvider(latency=0.02, max_in_flight=2, retry_after_s=0.2) as b,
                    FakeProvider(latency=0.05) as c):
            urls = [a.openai_base, b.openai_base, c.openai_base]

            async def kill_c() -> None:
                await when(lambda: outcomes(c)["ok"] >= 30 and c.in_flight >= 2)
                await c.astop()  # every connection cut, answers held mid-way lost, nothing listens any more

            killer = asyncio.create_task(kill_c())
            result = await synthtrace.arun("completions", inp, tmp_path / "run", base_url=urls, model="fake",
                                           concurrency=4, quiet=True)
            await killer
            again = await synthtrace.arun("completions", inp, tmp_path / "run", base_url=[a.openai_base],
                                          model="fake", quiet=True)
            return result, again, a, b, c

    result, again, a, b, c = asyncio.run(main())
    assert result.status == "complete" and result.records_done == 300
    rows = read_jsonl(tmp_path / "run" / "rows.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(300))  # every row, exactly once

    # Every prompt was answered exactly once over the three servers: nothing completed was asked again.
    assert set(answered(a, b, c).values()) == {1} and len(answered(a, b, c)) == 300
    lost_at_c = {r.prompt for r in c.requests if r.outcome == "aborted"}
    assert len(lost_at_c) >= 2  # the kill caught requests in flight
    assert all(answered(a, b)[p] == 1 for p in lost_at_c)  # re-sent to the live replicas, and answered there
    assert outcomes(b)["capped"] > 0 and outcomes(b)["ok"] > 0  # B refused past 2 at once, and still served
    assert outcomes(a)["ok"] > outcomes(b)["ok"]  # A, never refusing, took the larger share
    assert f"replica {c.openai_base} stopped answering" in capsys.readouterr().err

    # The journal keys by the endpoint's first URL, not by who answered: with the others gone, all replays.
    assert again.records_skipped == 300 and again.stats["calls"] == 0
    assert outcomes(a)["ok"] + outcomes(b)["ok"] + outcomes(c)["ok"] == 300


def test_a_replica_that_comes_back_is_put_back_in_service(tmp_path, write_jsonl, capsys, monkeypatch):
    monkeypatch.setattr(replicas_mod, "RETRY_FIRST_S", 0.05)
    inp = write_jsonl(prompts(400))
    late = FakeProvider(port=free_port(), latency=0.02)  # down when the run starts

    async def main() -> Any:
        async with FakeProvider(latency=0.02) as a:
            async def start_late() -> None:
                await when(lambda: outcomes(a)["ok"] >= 40)
                await late.astart()

            starter = asyncio.create_task(start_late())
            result = await synthtrace.arun("completions", inp, tmp_path / "run", base_url=[late.openai_base,
                                           a.openai_base], model="fake", concurrency=4, quiet=True)
            await starter
            await late.astop()
            return result, a

    result, a = asyncio.run(main())
    assert result.status == "complete" and len(read_jsonl(tmp_path / "run" / "rows.jsonl")) == 400
    assert outcomes(late)["ok"] > 0, "the replica was tried again once it listened"
    assert set(answered(a, late).values()) == {1} and len(answered(a, late)) == 400
    err = capsys.readouterr().err
    assert f"replica {late.openai_base} stopped answering (connection refused)" in err
    assert f"replica {late.openai_base} answers again: back in service" in err


def test_every_replica_unreachable_stops_the_run_at_once(tmp_path, write_jsonl, capsys):
    inp = write_jsonl(prompts(20))
    urls = [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"]
    result = synthtrace.run("completions", inp, tmp_path / "run", base_url=urls, model="fake", quiet=True)
    assert result.status == "error"
    assert any("endpoint 'cli': none of its 2 servers answers: nothing listens there" in m
               for m in result.messages), result.messages
    assert read_jsonl(tmp_path / "run" / "rows.jsonl") == [] and read_jsonl(tmp_path / "run" / "rejected.jsonl") == []


def test_repeated_base_url_flags_spread_one_run_over_the_servers(cli, tmp_path, write_jsonl):
    inp = write_jsonl(prompts(60))
    with FakeProvider(latency=0.01) as a, FakeProvider(latency=0.01) as b:
        done = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--base-url", a.openai_base,
                   "--base-url", b.openai_base, "--model", "fake", "-c", 2, "-q")
        assert done.exit_code == 0, done.output
        assert outcomes(a)["ok"] > 0 and outcomes(b)["ok"] > 0
        assert set(answered(a, b).values()) == {1} and len(answered(a, b)) == 60
    assert len(read_jsonl(tmp_path / "run" / "rows.jsonl")) == 60


@pytest.mark.parametrize("urls", [[], ["http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1"]])
def test_a_config_list_of_urls_must_name_each_server_once(cli, tmp_path, write_jsonl, urls):
    with FakeProvider() as fp:
        cfg = make_config(tmp_path / "cfg.yaml", fp, endpoints={"fake": {"kind": "openai", "base_url": urls}})
    done = cli("run", "completions", "-i", write_jsonl(prompts(1)), "-o", tmp_path / "run", "--config", cfg)
    assert done.exit_code != 0
    assert f"{cfg}: endpoints.fake.base_url: a list needs at least one URL, each once" in done.output


def test_a_config_lists_replicas_and_their_limits_apply_to_each(tmp_path, write_jsonl):
    inp = write_jsonl(prompts(40))
    with FakeProvider(latency=0.03) as a, FakeProvider(latency=0.03) as b:
        cfg = make_config(tmp_path / "cfg.yaml", a, endpoints={"fake": {
            "kind": "openai", "base_url": [a.openai_base, b.openai_base], "concurrency": 3}})
        result = synthtrace.run("completions", inp, tmp_path / "run", config=cfg, quiet=True)
        assert result.status == "complete"
        assert a.peak_in_flight <= 3 and b.peak_in_flight <= 3
        assert a.peak_in_flight + b.peak_in_flight >= 5  # each replica held its own three slots
    assert len(read_jsonl(tmp_path / "run" / "rows.jsonl")) == 40

