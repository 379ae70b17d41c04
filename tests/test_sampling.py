"""sample_until against the fake provider: stop once k answers are verified, keep every verdict."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from synthtrace.config import Config, Endpoint, Limits
from synthtrace.engine.gateway import Gateway, RecordLLM
from synthtrace.engine.journal import Journal
from synthtrace.testing import FakeProvider
from synthtrace.verify import NumberRung, Samples, Verdict, sample_until

N, BUDGET, K = 40, 8, 2


def problems(seed: int = 7) -> list[list[str]]:
    """Each problem's first BUDGET answers, right (42) with a seeded pass probability of its own."""
    rng = random.Random(seed)
    out = []
    for _ in range(N):
        p = rng.uniform(0.05, 0.95)
        out.append(["The answer is 42." if rng.random() < p else "The answer is 7." for _ in range(BUDGET)])
    return out


def config(fp: FakeProvider) -> Config:
    return Config(endpoints={"fake": Endpoint(base_url=fp.openai_base, timeout=5)}, default_endpoint="fake",
                  default_model="fake", limits=Limits(max_retries=1))


async def check(reply: Any):
    return await NumberRung().check(reply.text, "42")


def run(fp: FakeProvider, journal, strategy: str) -> list[Samples]:
    fp.reset()
    for i, answers in enumerate(problems()):
        fp.script(f"problem {i}?", *answers)

    async def go() -> list[Samples]:
        j = Journal(journal)
        gateway = Gateway(config(fp), j, default_model="fake")
        try:
            async def one(i: int) -> Samples:
                llm = RecordLLM(gateway)
                messages = [{"role": "user", "content": f"problem {i}?"}]
                if strategy == "until":
                    return await sample_until(llm, messages, check, k=K, budget=BUDGET, temperature=0.8)
                return await sample_until(llm, messages, check, k=BUDGET, budget=BUDGET, temperature=0.8)  # all 8
            return list(await asyncio.gather(*(one(i) for i in range(N))))
        finally:
            await gateway.aclose()
            j.close()

    return asyncio.run(go())


def test_sampling_until_two_are_verified_costs_at_least_30pc_fewer_calls_than_eight_each(fp, tmp_path):
    fixed = run(fp, tmp_path / "fixed.db", "fixed")
    fixed_calls = len(fp.requests)
    until = run(fp, tmp_path / "until.db", "until")
    until_calls = len(fp.requests)
    assert fixed_calls == N * BUDGET
    verified_fixed = sum(len(s.verified) >= K for s in fixed)
    verified_until = sum(len(s.verified) >= K for s in until)
    assert verified_until == verified_fixed > 0  # the same problems end with two verified answers
    assert until_calls <= 0.7 * fixed_calls, (until_calls, fixed_calls)
    for s in until:  # every sample keeps its verdict, and the stop says why
        assert len(s.samples) == len({x.index for x in s.samples}) <= BUDGET
        assert all(x.verification.verdict in (Verdict.CORRECT, Verdict.INCORRECT) for x in s.samples)
        assert s.stopped == ("enough" if len(s.verified) >= K else "budget")
        row = s.as_dict()
        assert row["drawn"] == len(s.samples) and 0 <= row["pass_rate"] <= 1


def test_a_hopeless_item_is_given_up_and_easy_items_stop_early(fp, tmp_path):
    fp.script("hard?", *(["The answer is 7."] * 8))
    fp.script("easy?", *(["The answer is 42."] * 8))

    async def go():
        j = Journal(tmp_path / "j.db")
        gateway = Gateway(config(fp), j, default_model="fake")
        try:
            llm = RecordLLM(gateway)
            hard = await sample_until(llm, [{"role": "user", "content": "hard?"}], check, k=2, budget=8,
                                      give_up_after=3)
            easy = await sample_until(llm, [{"role": "user", "content": "easy?"}], check, k=2, budget=8)
            return hard, easy
        finally:
            await gateway.aclose()
            j.close()

    hard, easy = asyncio.run(go())
    assert hard.stopped == "hopeless" and 3 <= len(hard.samples) < 8 and hard.pass_rate == 0
    assert easy.stopped == "enough" and len(easy.samples) == 2 and easy.pass_rate == 1
