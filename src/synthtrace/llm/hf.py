"""An in-process Hugging Face backend: a transformers model (optionally with a PEFT adapter), no server.

    --model hf:DIR              a model directory (weights, config, tokenizer with a chat template)
    --model hf:DIR+ADAPTER_DIR  a base model plus a LoRA adapter (what `synthtrace train` writes)

Meant for checking a freshly trained model on this machine; serve merged weights with vLLM for
volume. Loading is lazy (first chat) and happens, like every generation, on the client's own worker
thread, never on the event loop; one generation runs at a time (`max_concurrency = 1`). An adapter is
merged into the base weights in memory. The tokenizer comes from the adapter directory when it has
one (training saves it there), else from the base. Prompts go through the tokenizer's chat template
(`chat_template_kwargs`, as vLLM takes them, are passed on — e.g. `{"enable_thinking": false}`); a
leading `<think>` block of the answer becomes `reasoning`. Temperature 0 (or none given) decodes
greedily; `stop` strings end the answer and are cut off, as OpenAI-compatible servers do.

Structured output is best effort: nothing constrains decoding (`native_schema = False`); the gateway's
tolerant JSON parsing and its re-asks that quote the validation error do the rest.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from synthtrace.config import Endpoint
from synthtrace.llm.reasoning import split_think
from synthtrace.types import ChatRequest, ChatResult, EndpointRefused, FatalError, Usage, content_text

INSTALL_HINT = "pip install 'synthtrace[train]'"
DEFAULT_MAX_TOKENS = 512


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`DIR` or `DIR+ADAPTER` → (base, adapter or None); a path that itself contains `+` is left whole."""
    if "+" in spec and not os.path.exists(spec):
        base, _, adapter = spec.rpartition("+")
        return base, adapter
    return spec, None


class HFClient:
    """A `Client` that generates with a transformers model in this process."""

    native_schema = False
    max_concurrency: int | None = 1
    description = "in-process transformers"
    in_process = True

    @classmethod
    def from_endpoint(cls, name: str, endpoint: Endpoint) -> HFClient:
        if not endpoint.model_path:
            raise EndpointRefused(f"endpoint {name!r}: kind hf needs model_path (DIR or DIR+ADAPTER_DIR)")
        return cls(endpoint.model_path, name=name)

    def __init__(self, spec: str, name: str = "hf", device: str | None = None, seed: int = 0):
        self.spec = spec
        self.name = name
        self.base, self.adapter = parse_spec(spec)
        self.device = device
        self.seed = seed
        self._model: Any = None
        self._tokenizer: Any = None
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="synthtrace-hf")

    # -- loading (worker thread) ---------------------------------------------------------------

    def _load(self) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise FatalError(f"hf: transformers/torch are not installed ({e}); {INSTALL_HINT}") from e
        for path in filter(None, (self.base, self.adapter)):
            if not os.path.isdir(path):
                raise FatalError(f"hf: model directory not found: {path}")
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        has_own_tokenizer = self.adapter and os.path.isfile(os.path.join(self.adapter, "tokenizer_config.json"))
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.adapter if has_own_tokenizer else self.base)
            model = AutoModelForCausalLM.from_pretrained(self.base, dtype="auto")
            if self.adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, self.adapter).merge_and_unload()
        except (OSError, ValueError) as e:
            raise FatalError(f"hf: cannot load {self.spec}: {e}") from e
        if getattr(tokenizer, "chat_template", None) is None:
            raise FatalError(f"hf: the tokenizer of {self.spec} has no chat template")
        self._tokenizer, self._model = tokenizer, model.to(device).eval()

    def _generate(self, req: ChatRequest) -> ChatResult:
        import torch

        if self._model is None:
            self._load()
        tok, model, p = self._tokenizer, self._model, req.params
        messages = [{"role": m.get("role", "user"), "content": content_text(m.get("content"))}
                    for m in req.messages]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         **(p.get("chat_template_kwargs") or {}))
        inputs = tok(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
        max_new = int(p.get("max_tokens") or p.get("max_completion_tokens") or DEFAULT_MAX_TOKENS)
        temperature = float(p.get("temperature") or 0.0)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": temperature > 0,
                                  "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=float(p.get("top_p") or 1.0), top_k=int(p.get("top_k") or 0))
        else:  # greedy: keep the model's sampling defaults from warning about being ignored
            kwargs.update(temperature=None, top_p=None, top_k=None)
        stops = [p["stop"]] if isinstance(p.get("stop"), str) else list(p.get("stop") or [])
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=tok)
        torch.manual_seed(int(p["seed"]) if p.get("seed") is not None else self.seed)
        with torch.inference_mode():
            out = model.generate(**inputs, **kwargs)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        text = tok.decode(new, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        ended = cut >= 0 or bool(new and new[-1] in _eos_ids(model, tok))
        answer, reasoning = split_think(text)
        return ChatResult(text=answer, reasoning=reasoning, usage=Usage(inputs["input_ids"].shape[1], len(new)),
                          finish_reason="stop" if ended or len(new) < max_new else "length", model=self.spec)

    # -- the Client protocol -------------------------------------------------------------------

    async def chat(self, req: ChatRequest) -> ChatResult:
        if self._executor is None:
            raise FatalError(f"hf: client for {self.spec} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._generate, req)

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
        self._model = self._tokenizer = None


def _eos_ids(model: Any, tok: Any) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = set(ids) if isinstance(ids, list) else {ids} if ids is not None else set()
    return ids | ({tok.eos_token_id} if tok.eos_token_id is not None else set())

