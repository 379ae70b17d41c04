"""Training on exported SFT data: `synthtrace train` (LoRA via TRL + PEFT).

`sft.py` reads the export and masks everything but the assistant's answer; `lora.py` wires the
trainer, checkpoints, the run config and merging; `tiny.py` builds a tiny Qwen3-shaped model with a
locally trained tokenizer for tests and smoke runs. torch, transformers, trl and peft are imported
only inside functions, so importing this package (and `synthtrace --help`) stays fast.
"""

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
