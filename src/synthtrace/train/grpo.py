"""`synthtrace train --method grpo`: reinforcement with the verifier as reward (TRL's GRPO + PEFT LoRA).

The data is problems with reference answers, in the shapes the `math` recipe reads (GSM8K's
`question` + `answer: "… #### N"`, MATH's `problem` + `solution` with `\\boxed{}` or `answer`). Each
step samples `--generations` answers per problem from the model being trained, and the verifier
ladder (`--verifier`) scores each: 1 right, 0 wrong, None — left out — when the check itself failed
(`synthtrace.verify.verifier_reward`). The adapter and checkpoints go to OUTPUT; re-running resumes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from synthtrace.recipes.math_recipe import SYSTEM, reference_of
from synthtrace.train.sft import TrainDataError
from synthtrace.verify import ladder_of, verifier_reward

REWARD = "verifier"


def load_problems(path: Path) -> list[dict[str, Any]]:
    """The problems of a JSONL file as GRPO rows (`prompt` messages, `reference`); bad lines named."""
    rows, problems = [], []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            problems.append(f"{path}:{n}: not JSON ({e})")
            continue
        text = obj.get("problem") or obj.get("question") if isinstance(obj, dict) else None
        reference = reference_of(obj) if isinstance(obj, dict) else None
        if not isinstance(text, str) or reference is None:
            problems.append(f"{path}:{n}: needs a `problem` or `question` and a reference answer "
                            "(`answer`, or a `solution` with \\boxed{})")
            continue
        rows.append({"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
                     "reference": reference})
    if problems:
        raise TrainDataError("\n".join(problems[:20]))
    if not rows:
        raise TrainDataError(f"{path}: no problems")
    return rows


def train_grpo(opts: Any, callbacks: list[Any] | None = None) -> Any:
    """GRPO on `opts.data` from `opts.base` (a trainable directory), the adapter into `opts.output`."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

    from synthtrace.train.lora import TrainResult, _device, _load_tokenizer

    started = time.monotonic()
    device, dtype = _device(opts.bf16)
    rows = load_problems(Path(opts.data))
    tokenizer = _load_tokenizer(opts.base)
    per_step = opts.batch_size * opts.grad_accum
    if per_step % opts.generations:
        raise TrainDataError(f"--batch-size × --grad-accum ({per_step}) must be a multiple of --generations "
                             f"({opts.generations}): each problem's answers are scored together")
    opts.output.mkdir(parents=True, exist_ok=True)
    args = GRPOConfig(
        output_dir=str(opts.output), num_train_epochs=opts.epochs, max_steps=opts.max_steps or -1,
        learning_rate=opts.lr, per_device_train_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum, num_generations=opts.generations,
        max_completion_length=opts.max_completion_length, bf16=opts.bf16, use_cpu=device == "cpu",
        logging_steps=opts.logging_steps, save_strategy="steps", save_steps=opts.save_steps,
        save_total_limit=opts.save_total_limit, seed=opts.seed, report_to="none",
        gradient_checkpointing=opts.gradient_checkpointing)
    lora = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                      target_modules=list(opts.target_modules), bias="none", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=opts.base, reward_funcs=_named(verifier_reward(ladder_of(list(opts.verifier)))),
                          args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          peft_config=lora, callbacks=callbacks)
    resume_from = get_last_checkpoint(str(opts.output)) if opts.resume else None
    trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(opts.output))
    tokenizer.save_pretrained(str(opts.output))
    key = f"rewards/{REWARD}/mean"
    return TrainResult(output=opts.output, device=device, dtype=str(dtype).removeprefix("torch."),
                       steps=trainer.state.global_step, train_examples=len(rows), resumed_from=resume_from,
                       rewards=[(e["step"], e[key]) for e in trainer.state.log_history if key in e],
                       runtime_s=time.monotonic() - started)


def _named(reward: Any) -> Any:
    reward.__name__ = REWARD
    return reward
