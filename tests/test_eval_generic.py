"""`synthtrace eval RECIPE` on a planted model: the fake provider answers right exactly where planted."""

from __future__ import annotations

import json

from conftest import make_config

N, BUDGET = 10, 4


def problems() -> list[dict]:
    return [{"id": f"p{i}", "question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(N)]


def plant(fp, greedy_right: set[int], samples_right: dict[int, int]) -> None:
    """Greedy (temperature 0) answers right for `greedy_right`; of each item's BUDGET - 1 samples,
    `samples_right[i]` right."""
    fp.reset()
    for i in range(N):
        right, wrong = f"So \\boxed{{{2 * i}}}", f"So \\boxed{{{2 * i + 1}}}"
        question = f"What is {i} + {i}?"
        fp.script(lambda body, q=question: body.get("temperature") == 0.0 and q in json.dumps(body),
                  right if i in greedy_right else wrong, repeat_last=True)
        sampled = [right] * samples_right.get(i, 0) + [wrong] * (BUDGET - 1 - samples_right.get(i, 0))
        fp.script(lambda body, q=question: body.get("temperature") != 0.0 and q in json.dumps(body), *sampled)


def test_eval_of_a_planted_model_gives_exactly_the_planted_rates_and_compares_paired(fp, cli, tmp_path,
                                                                                    write_jsonl):
    inp = write_jsonl(problems())
    cfg = make_config(tmp_path / "c.yaml", fp)
    plant(fp, greedy_right={0, 1, 2, 3, 4, 5}, samples_right={6: 1, 7: 2})
    base = cli("eval", "math", "-i", inp, "-o", tmp_path / "base", "--config", cfg, "-q", "--budget", BUDGET)
    assert base.exit_code == 0, base.output
    m = json.loads((tmp_path / "base" / "metrics.json").read_text())
    assert m["items"] == N and m["samples_per_item"] == BUDGET and m["missing"] == []
    assert m["pass@1"]["estimate"] == 0.6 and m["pass@1"]["low"] < 0.6 < m["pass@1"]["high"]
    assert m["pass@4"]["estimate"] == 0.8  # 6 greedy-right items, and 2 more with a right sample
    assert m["per_item"]["p7"][0] is False and sum(m["per_item"]["p7"]) == 2  # greedy wrong, two samples right
    assert "pass@1 (greedy)" in base.output and "0.600" in base.output

    plant(fp, greedy_right={0, 1, 2, 3, 4, 5, 6, 7, 8}, samples_right={})
    better = cli("eval", "math", "-i", inp, "-o", tmp_path / "better", "--config", cfg, "-q", "--budget", BUDGET,
                 "--compare", tmp_path / "base")
    assert better.exit_code == 0, better.output
    c = json.loads((tmp_path / "better" / "metrics.json").read_text())["compared_with"]
    assert (c["items"], c["a_only"], c["b_only"]) == (N, 0, 3)
    assert c["difference"]["estimate"] == 0.3 and c["p_value"] == 0.25  # McNemar exact: 2 * (1/2)^3
    assert "McNemar" in better.output


def test_a_recipe_that_cannot_be_evaluated_says_so(cli, tmp_path, write_jsonl):
    done = cli("eval", "completions", "-i", write_jsonl([{"id": "a", "prompt": "hi"}]), "-o", tmp_path / "e")
    assert done.exit_code == 2 and "cannot be evaluated" in done.output
    unknown = cli("eval", "no-such-recipe", "-i", "x", "-o", tmp_path / "e")
    assert unknown.exit_code == 2 and "No such command" in unknown.output
