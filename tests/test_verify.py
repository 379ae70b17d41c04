"""Verifiers: typed verdicts, the ladder, and Math-Verify in killable workers.

The labelled set and its error rates are in tests/test_verify_labelled.py; the sandboxed code rung
in tests/test_verify_code.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from synthtrace.verify import ChoiceRung, ExactRung, Ladder, MathRung, NumberRung, Verdict, Verification
from synthtrace.verify.rules import final_span, parse_number


def check(rung, answer, reference):
    return asyncio.run(rung.check(answer, reference))


@pytest.mark.parametrize("answer, reference, verdict", [
    ("The answer is 1,234.", "1234", Verdict.CORRECT),
    ("so we get \\boxed{\\frac{3}{4}}", "0.75", Verdict.CORRECT),
    ("That is 25%.", "0.25", Verdict.CORRECT),
    ("It costs $12.50 in all.", "12.5", Verdict.CORRECT),
    ("First 7, then 8. The answer is 9.", "8", Verdict.INCORRECT),
    ("x = -2", "-2", Verdict.CORRECT),
    ("1.2 \\times 10^{3}", "1200", Verdict.CORRECT),
    ("I cannot say.", "4", Verdict.UNPARSEABLE_ANSWER),
    ("So, indeed, 17 + 8 equals 25.", "25", Verdict.CORRECT),  # the result a working line ends on
    ("The total is 12 + 9 = 21 stickers.", "21", Verdict.CORRECT),
    ("12 + 9 = 20", "21", Verdict.INCORRECT),
])
def test_the_number_rung_reads_numbers_as_people_write_them(answer, reference, verdict):
    assert check(NumberRung(), answer, reference).verdict is verdict


def test_rungs_abstain_on_references_they_do_not_understand():
    assert check(NumberRung(), "x^2", "x^2 - 1") is None
    assert check(NumberRung(), "There are 3 birds and 5 cats", "8") is None  # several numbers, no result
    assert check(NumberRung(), "x = 3 or x = 5", "5") is None  # a hedge states no one result
    assert check(ChoiceRung(), "The answer is B", "12") is None
    assert check(ExactRung(), "no", "yes") is None  # different text is not proof of a wrong answer
    assert check(MathRung(), "1", {"tests": "assert True"}) is None


def test_the_choice_rung_finds_the_letter_an_answer_settles_on():
    assert check(ChoiceRung(), "Option C looks tempting, but the answer is (B).", "B").verdict is Verdict.CORRECT
    assert check(ChoiceRung(), "Answer: d", "(B)").verdict is Verdict.INCORRECT
    assert check(ChoiceRung(), "None of them.", "B").verdict is Verdict.UNPARSEABLE_ANSWER


def test_final_span_and_parse_number():
    assert final_span("Work: 3 + 4 = 7.\n**Final answer:** 7 apples") == "7 apples"
    assert final_span("... \\boxed{\\frac{1}{2}} ...") == "\\frac{1}{2}"
    assert float(parse_number("\\dfrac{-3}{4}").value) == -0.75
    assert parse_number("between 3 and 4") is None


class _Fixed:
    def __init__(self, name, verification):
        self.name, self.verification = name, verification

    async def check(self, answer, reference):
        if isinstance(self.verification, Exception):
            raise self.verification
        return self.verification


def test_the_ladder_never_calls_an_infrastructure_failure_incorrect():
    hung = _Fixed("math", Verification(Verdict.TIMEOUT, "no verdict within 5 s", "math"))
    broken = _Fixed("judge", RuntimeError("the judge is down"))
    abstains = _Fixed("choice", None)
    v = asyncio.run(Ladder([abstains, hung, broken]).check("42", "41"))
    assert v.verdict is Verdict.TIMEOUT and v.rung == "math"
    v = asyncio.run(Ladder([broken, abstains]).check("42", "41"))
    assert v.verdict is Verdict.ERROR and "the judge is down" in v.reason
    decided = _Fixed("number", Verification(Verdict.INCORRECT, "42 ≠ 41", "number"))
    assert asyncio.run(Ladder([hung, decided]).check("42", "41")).verdict is Verdict.INCORRECT  # a later rung decides
    assert asyncio.run(Ladder([abstains]).check("42", "41")).verdict is Verdict.UNPARSEABLE_ANSWER


pytest.importorskip("math_verify")


def test_math_equivalence_and_a_hung_expression_is_a_timeout_within_its_limit():
    rung = MathRung(time_limit_s=2.0)
    try:
        assert check(rung, "The answer is $\\sqrt{8}$.", "2\\sqrt{2}").verdict is Verdict.CORRECT
        assert check(rung, "x^2-1", "(x-1)(x+1)").verdict is Verdict.CORRECT
        assert check(rung, "(2, 3)", "(2,3]").verdict is Verdict.INCORRECT
        started = time.perf_counter()
        hung = check(rung, "$3^{3^{3^{3}}}$", "$2^{2^{2^{2^{2}}}}$")  # SymPy works on this for minutes
        took = time.perf_counter() - started
        assert hung.verdict is Verdict.TIMEOUT and took <= 2.0 + 1.0, took
        assert check(rung, "\\frac{1}{2}", "0.5").verdict is Verdict.CORRECT  # its worker was replaced
    finally:
        rung.close()


def test_a_thousand_checks_from_32_tasks_in_one_loop_give_no_false_timeout():
    rung = MathRung(time_limit_s=2.0)
    pairs = [(f"\\frac{{{i}}}{{{i + 1}}}", f"{i}/{i + 1}") for i in range(1000)]

    async def main():
        queue: asyncio.Queue = asyncio.Queue()
        for pair in pairs:
            queue.put_nowait(pair)
        results = []

        async def task():
            while not queue.empty():
                answer, reference = queue.get_nowait()
                results.append(await rung.check(answer, reference))
                await asyncio.sleep(0)

        async def busy_loop():  # the loop stalls longer than the limit: that must not count as checking
            for _ in range(3):
                await asyncio.sleep(0.5)
                time.sleep(2.5)

        await asyncio.gather(*(task() for _ in range(32)), busy_loop())
        return results

    try:
        results = asyncio.run(main())
    finally:
        rung.close()
    assert len(results) == 1000
    assert [r.verdict for r in results if r.verdict is not Verdict.CORRECT] == []


def test_the_judge_counts_only_what_both_orders_agree_on_and_a_failure_is_an_error(fp, tmp_path):
    from synthtrace.config import Config, Endpoint, Limits
    from synthtrace.engine.gateway import Gateway, RecordLLM
    from synthtrace.engine.journal import Journal
    from synthtrace.testing import Fault
    from synthtrace.verify import JudgeRung

    fp.script("Answer 1:\n42 apples", {"json": {"same": True, "why": "both say 42"}}, repeat_last=True)
    fp.script("Answer 1:\nforty-two", {"json": {"same": True, "why": "the same number"}}, repeat_last=True)
    fp.script("Answer 1:\n41", {"json": {"same": False, "why": "41 is not 42"}}, repeat_last=True)
    fp.script("Answer 1:\n42\n\nAnswer 2:\n41", {"json": {"same": False, "why": "42 is not 41"}}, repeat_last=True)
    fp.script("Answer 1:\nseven", {"json": {"same": True, "why": "looks alike"}}, repeat_last=True)
    fp.script("Answer 1:\n7", {"json": {"same": False, "why": "7 is not seven?"}}, repeat_last=True)
    fp.script("Answer 1:\nbroken", Fault.status(400), repeat_last=True)

    async def main():
        journal = Journal(tmp_path / "j.db")
        cfg = Config(endpoints={"fake": Endpoint(base_url=fp.openai_base, timeout=5)}, default_endpoint="fake",
                     default_model="fake", limits=Limits(max_retries=0))
        gateway = Gateway(cfg, journal, default_model="fake")
        judge = JudgeRung(RecordLLM(gateway))
        try:
            return [await judge.check(a, r) for a, r in
                    (("42 apples", "forty-two"), ("41", "42"), ("seven", "7"), ("broken", "3"))]
        finally:
            await gateway.aclose()
            journal.close()

    agree, differ, split, failed = asyncio.run(main())
    assert agree.verdict is Verdict.CORRECT and agree.rung == "judge"
    assert differ is not None and differ.verdict is Verdict.INCORRECT
    assert split is None  # the two orders disagree: not counted either way
    assert failed.verdict is Verdict.ERROR and "the judge failed" in failed.reason
    assert sum(1 for r in fp.requests if "Answer 1:\nforty-two" in r.prompt) == 1  # asked in the other order too
