"""A tiny Qwen3-architecture model with a tokenizer trained here: the train and hf paths, offline.

    build_tiny_model(DIR, corpus)   →  DIR/config.json, model.safetensors, tokenizer.json, …

Nothing is downloaded. The tokenizer is a byte-level BPE trained on `corpus` (plus a few built-in
lines) with Qwen3's chat tokens: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` as special tokens and
`<think>`, `</think>` as plain added tokens (so decoding keeps them, as Qwen3's does). Its chat
template is Qwen3-shaped: ChatML turns, reasoning shown only for assistant turns after the last user
turn (taken from `reasoning_content` or a leading `<think>` block), `enable_thinking=False` opens an
empty think block. The weights are random (seeded): good for testing machinery, not for text.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK_TOKENS = ("<think>", "</think>")

CHAT_TEMPLATE = """\
{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for m in messages -%}
{%- set content = m.content if m.content is string else '' -%}
{%- if m.role == 'assistant' -%}
{%- set reasoning = m.reasoning_content if m.reasoning_content is string else '' -%}
{%- if '</think>' in content -%}
{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] -%}
{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}
{%- endif -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if loop.index0 > ns.last_user -%}{{- '<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' -}}{%- endif -%}
{{- content + '<|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>' + m.role + '\\n' + content + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}
{%- endif -%}
"""

_BASE_CORPUS = (
    "The patient is a 54-year-old man with chest pain radiating to the left arm.",
    "Sentence 3 names the wrong drug; the correct treatment is aspirin.",
    "Let me check each sentence against the history, the findings and the treatment.",
    "The note is correct. No error was found.",
    "You are a careful clinical reviewer. Answer with a verdict.",
    "What is the capital of France? Paris is the capital of France.",
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer trained on `corpus`, with Qwen3's chat tokens and template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([*_BASE_CORPUS, *corpus], trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=4096)


def build_tiny_model(out_dir: str | Path, corpus: Iterable[str] = (), *, vocab_size: int = 512,
                     hidden_size: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                     init_std: float = 0.1, seed: int = 0) -> Path:
    """Write a randomly initialised Qwen3ForCausalLM and its tokenizer to `out_dir`; return the path.

    `init_std` is wider than a real model's 0.02, so that a few LoRA steps move its output visibly.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    out = Path(out_dir)
    tokenizer = train_tokenizer(corpus, vocab_size)
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=hidden_size // heads, max_position_embeddings=4096, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
