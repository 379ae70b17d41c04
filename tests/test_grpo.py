"""GRPO with the verifier as its reward, a few steps on a tiny model (CPU): TRL calls it and logs it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("trl", reason="needs the train extra (pip install 'synthtrace[train]')")
pytest.importorskip("math_verify")

from synthtrace.train.tiny import build_tiny_model
from synthtrace.verify import ExactRung, Ladder, NumberRung, verifier_reward

PROBLEMS = [("What is 2 + 2?", "4"), ("What is 3 + 4?", "7"), ("What is 10 - 3?", "7"), ("What is 6 / 2?", "3")]


def test_grpo_calls_the_verifier_and_logs_its_rewards(tmp_path: Path):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    base = build_tiny_model(tmp_path / "base", [p for p, _ in PROBLEMS] + ["The answer is 4 7 3."])
    tokenizer = AutoTokenizer.from_pretrained(base)
    data = Dataset.from_list([{"prompt": p, "reference": r} for p, r in PROBLEMS])
    reward = verifier_reward(Ladder([ExactRung(), NumberRung()]))
    seen: list[int] = []

    def counted(completions, **columns):  # the verifier, as TRL calls it
        out = reward(completions, **columns)
        seen.append(len(out))
        return out

    counted.__name__ = "verifier"
    config = GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4,
                        num_generations=2, max_completion_length=8, logging_steps=1, report_to=[], use_cpu=True,
                        save_strategy="no", temperature=1.0, seed=0)
    trainer = GRPOTrainer(model=str(base), reward_funcs=counted, args=config, train_dataset=data,
                          processing_class=tokenizer)
    trainer.train()
    assert seen and all(n > 0 for n in seen)  # the verifier scored every batch of completions
    assert all(v.rung in ("exact", "number", "ladder") for v in reward.verdicts)
    logged = [entry for entry in trainer.state.log_history if any("verifier" in k for k in entry)]
    assert logged and all(0.0 <= entry[next(k for k in entry if "verifier" in k and "mean" in k)] <= 1.0
                          for entry in logged)


def test_the_reward_is_none_when_the_check_itself_fails_and_0_for_a_wrong_or_empty_answer():
    class Broken:
        name = "broken"

        async def check(self, answer, reference):
            raise RuntimeError("the verifier is down")

    assert verifier_reward(Ladder([Broken()]))(["4"], reference=["4"]) == [None]
    scores = verifier_reward(Ladder([ExactRung(), NumberRung()]))(
        ["So it is 4.", "It is 5.", "I am not sure.", [{"role": "assistant", "content": "4"}]],
        reference=["4", "4", "4", "4"])
    assert scores == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(KeyError, match="reference"):
        verifier_reward()(["4"], answer=["4"])


def test_train_method_grpo_runs_steps_logs_the_verifier_reward_and_names_bad_lines(tmp_path: Path, cli):
    base = build_tiny_model(tmp_path / "base", [p for p, _ in PROBLEMS] + ["\\boxed{4} \\boxed{7} \\boxed{3}"])
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(f'{{"question": "{p}", "answer": "#### {r}"}}\n' for p, r in PROBLEMS))
    done = cli("train", "--method", "grpo", "--data", data, "--base", base, "-o", tmp_path / "out",
               "--max-steps", 2, "--batch-size", 2, "--grad-accum", 1, "--generations", 2,
               "--max-completion-length", 8, "--no-gradient-checkpointing", "--verifier", "number",
               "--logging-steps", 1)
    assert done.exit_code == 0, done.output
    assert "verifier reward" in done.output and (tmp_path / "out" / "adapter_config.json").exists()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "What is 1 + 1?"}\nnot json\n')
    refused = cli("train", "--method", "grpo", "--data", bad, "--base", base, "-o", tmp_path / "out2")
    assert refused.exit_code == 1
    assert f"{bad}:1: needs a `problem` or `question` and a reference answer" in refused.output
    assert f"{bad}:2: not JSON" in refused.output
