"""One `reasoning` field from the several ways models expose their thinking.

OpenAI-compatible servers put it in `reasoning_content` (vLLM, SGLang, DeepSeek) or `reasoning`
(Ollama, OpenRouter); Anthropic sends thinking blocks; many open models write `<think>…</think>`
inside the text itself. This module handles the last case; the clients handle the first two.
"""

from __future__ import annotations

import re

_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
_OPEN_ONLY = re.compile(r"^\s*<think>(.*)$", re.DOTALL)


def split_think(text: str) -> tuple[str, str | None]:
    """Split a leading `<think>…</think>` block off `text`: (answer, reasoning or None).

    Servers that strip the opening tag (Qwen3/DeepSeek templates put `<think>` in the prompt) leave
    `reasoning…</think>answer`; that is handled too. An unclosed `<think>` means the model ran out
    of tokens while thinking: everything is reasoning and the answer is empty.
    """
    if "think>" not in text:
        return text, None
    m = _THINK.match(text)
    if m:
        return text[m.end():], m.group(1).strip()
    if "<think>" not in text and "</think>" in text:
        head, _, tail = text.partition("</think>")
        return tail.lstrip(), head.strip()
    m = _OPEN_ONLY.match(text)
    if m:
        return "", m.group(1).strip()
    return text, None


def join_reasoning(*parts: str | None) -> str | None:
    """Join reasoning pieces from different places, or None when there are none."""
    kept = [p.strip() for p in parts if p and p.strip()]
    return "\n\n".join(kept) if kept else None
