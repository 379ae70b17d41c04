"""SFT data for training: exported JSONL → token ids with labels on the assistant's answer only.

Each line of an export (`synthtrace export sft`) is one example, in any of its three formats:
  qwen3     {"messages": [..., {"role": "assistant", "content": "<think>\\n…\\n</think>\\n\\nANSWER"}]}
  messages  {"messages": [..., {"role": "assistant", "content": ANSWER, "reasoning_content": …}]}
            (rebuilt into the qwen3 form: the think block goes back in front of the answer)
  chatml    {"text": "<|im_start|>system\\n…<|im_end|>\\n…<|im_start|>assistant\\n…<|im_end|>\\n"}

Conversations are rendered with the base model's own chat template; the final assistant turn is the
one trained (earlier turns are context). Masking does not rely on `{% generation %}` markers, which
stock templates such as Qwen3's lack: the prompt is the template applied to the messages before the
final turn with the generation prompt, and the rendered conversation must start with exactly that
text. Tokens lying wholly after the prompt and up to the turn's end token carry labels; the prompt and
anything after the end token get -100. Character offsets decide (not a token-prefix comparison), so a
merge across the boundary cannot shift the mask. The final turn must render exactly as exported —
`<think>\\n…\\n</think>\\n\\nANSWER`, nothing added, though the generation prompt may hold its opening
`<think>\\n` — with the think block in the content (Qwen3's templates drop reasoning from *earlier*
turns only) or, failing that, in `reasoning_content`; a template that does neither is refused, naming
the line. A chatml `text` is used as written: everything up to the last `<|im_start|>assistant\\n`
is prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthtrace.inputs import BadInput, read_jsonl

IGNORE = -100
ASSISTANT_OPEN = "<|im_start|>assistant\n"
TURN_END = "<|im_end|>"
ROLES = ("system", "user", "assistant", "tool")
MAX_PROBLEMS_SHOWN = 10


class TrainDataError(ValueError):
    """Training data the trainer cannot use; the message names the file and line(s)."""


@dataclass(slots=True)
class Example:
    """One line as the trainer sees it: text to render, and where its trained part starts and ends."""

    source: str
    line: int
    text: str
    prompt_end: int  # character offset: labels start at or after it
    content_end: int  # character offset: the end of the trained turn (its end token included)
    trained: tuple[tuple[str, str], ...]  # (what, text) that must lie in the trained part: reasoning, answer


@dataclass(slots=True)
class Encoded:
    """Token ids and labels ready for the collator, with what happened on the way."""

    rows: list[dict[str, list[int]]] = field(default_factory=list)
    truncated: int = 0  # examples cut at max_length (their answers lose their end)
    dropped: int = 0  # examples with no trained token left after the cut
    tokens: int = 0
    label_tokens: int = 0


def file_digest(path: str | Path) -> str:
    """sha256 of a file, for the run config."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_examples(path: str | Path, tokenizer: Any) -> list[Example]:
    """Every line of `path` as an Example, or a TrainDataError listing the bad lines (file:line: why)."""
    examples: list[Example] = []
    problems: list[str] = []
    for item in _read(path):
        if isinstance(item, BadInput):
            problems.append(item.message())
            continue
        try:
            examples.append(to_example(item[1], tokenizer, str(path), item[0]))
        except TrainDataError as e:
            problems.append(str(e))
    if problems:
        more = len(problems) - MAX_PROBLEMS_SHOWN
        shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN]) + (f"\n  … and {more} more" if more > 0 else "")
        raise TrainDataError(f"{len(problems)} unusable line(s) in {path}:\n  {shown}")
    if not examples:
        raise TrainDataError(f"{path}: no examples (the file is empty)")
    return examples


def _read(path: str | Path) -> Iterator[tuple[int, dict[str, Any]] | BadInput]:
    try:
        yield from read_jsonl(path)
    except OSError as e:
        raise TrainDataError(f"{path}: cannot read: {e.strerror or e}") from None


def to_example(obj: dict[str, Any], tokenizer: Any, source: str, line: int) -> Example:
    """One parsed line as an Example; TrainDataError (naming source:line) when it cannot be trained on."""
    where = f"{source}:{line}"
    if isinstance(obj.get("messages"), list):
        return _from_messages(obj["messages"], tokenizer, source, line)
    if isinstance(obj.get("text"), str):
        return _from_text(obj["text"], tokenizer, source, line)
    raise TrainDataError(f"{where}: expected a `messages` list (qwen3 or messages format) or a `text` string "
                         f"(chatml format); found keys {sorted(obj)}")


def _from_messages(messages: list[Any], tokenizer: Any, source: str, line: int) -> Example:
    where = f"{source}:{line}"
    msgs: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise TrainDataError(f"{where}: messages[{i}] must be an object with a role ({'/'.join(ROLES)}) and a "
                                 "string content")
        msgs.append({"role": m["role"], "content": m["content"]})
    if len(msgs) < 2 or msgs[-1]["role"] != "assistant" or msgs[-2]["role"] == "assistant":
        raise TrainDataError(f"{where}: the conversation must end with one assistant turn after a user (or system) "
                             "turn")
    reasoning = messages[-1].get("reasoning_content")
    if reasoning is not None and not isinstance(reasoning, str):
        raise TrainDataError(f"{where}: reasoning_content must be a string")
    content = msgs[-1]["content"]
    if reasoning is not None and "</think>" not in content:  # `messages` format: the think block goes back in front
        content = f"<think>\n{reasoning.strip()}\n</think>\n\n{content.strip()}"
    thinking = "</think>" in content
    reasoning, answer = _split_think(content)
    if not answer.strip():
        raise TrainDataError(f"{where}: the assistant turn has no answer")
    if getattr(tokenizer, "chat_template", None) is None:
        raise TrainDataError(f"{where}: the base model's tokenizer has no chat template; export with "
                             "--format chatml to train on rendered text")
    # The turn as exported: with the think block in the content (Qwen3's templates take it from there), else
    # with the reasoning in `reasoning_content` (templates that only read it there).
    expected = f"<think>\n{reasoning}\n</think>\n\n{answer.strip()}" if thinking else answer.strip()
    forms = [{"role": "assistant", "content": content}]
    if thinking:
        forms.append({"role": "assistant", "content": answer.strip(), "reasoning_content": reasoning})
    for final in forms:
        try:
            prompt = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
            text = tokenizer.apply_chat_template([*msgs[:-1], final], tokenize=False)
        except Exception as e:  # noqa: BLE001 - template errors come as jinja exceptions of many kinds
            raise TrainDataError(f"{where}: the chat template failed: {e}") from None
        if not text.startswith(prompt):
            continue  # the prompt renders differently once the answer follows: its end cannot be found
        content_end = _content_end(text, tokenizer, len(prompt))
        body = _without_end_token(text[:content_end], tokenizer).rstrip()
        # the turn ends with the exported text and, when it has a think block, nothing but the generation
        # prompt stands before it (without one, what the template puts there, e.g. an empty block, is kept)
        if body.endswith(expected) and (not thinking or len(body) - len(expected) <= len(prompt)):
            return Example(source, line, text, len(prompt), content_end, _pieces(reasoning, answer))
    raise TrainDataError(f"{where}: the base model's chat template does not render the final assistant turn as "
                         "exported (it drops, moves or adds to the reasoning); export with --format chatml to train "
                         "on the text as written")


def _from_text(text: str, tokenizer: Any, source: str, line: int) -> Example:
    start = text.rfind(ASSISTANT_OPEN)
    if start < 0:
        raise TrainDataError(f"{source}:{line}: the text has no `{ASSISTANT_OPEN.strip()}` turn")
    prompt_end = start + len(ASSISTANT_OPEN)
    reasoning, answer = _split_think(text[prompt_end:].split(TURN_END)[0])
    if not answer.strip():
        raise TrainDataError(f"{source}:{line}: the assistant turn has no answer")
    return Example(source, line, text, prompt_end, _content_end(text, tokenizer, prompt_end),
                   _pieces(reasoning, answer))


def _split_think(content: str) -> tuple[str, str]:
    """(reasoning, answer) of an assistant content with an optional leading think block."""
    head, sep, tail = content.partition("</think>")
    if not sep:
        return "", content
    return head.split("<think>")[-1].strip(), tail


def _pieces(reasoning: str, answer: str) -> tuple[tuple[str, str], ...]:
    return tuple((what, text) for what, text in (("reasoning", reasoning), ("answer", answer.strip())) if text)


def _without_end_token(text: str, tokenizer: Any) -> str:
    for end in (TURN_END, getattr(tokenizer, "eos_token", None)):
        if end and text.endswith(end):
            return text[:-len(end)]
    return text


def _content_end(text: str, tokenizer: Any, prompt_end: int) -> int:
    """Where the trained turn ends: just after its end token (`<|im_end|>`, else the tokenizer's eos)."""
    for end in (TURN_END, getattr(tokenizer, "eos_token", None)):
        if end and (i := text.find(end, prompt_end)) >= 0:
            return i + len(end)
    return len(text.rstrip())


def encode(examples: list[Example], tokenizer: Any, max_length: int | None) -> Encoded:
    """Token ids and labels (-100 outside the trained turn), cut to `max_length` (the start is kept)."""
    out = Encoded()
    eos = getattr(tokenizer, "eos_token", None)
    for ex in examples:
        text, content_end = ex.text, ex.content_end
        if eos and not _ends_turn(text[:content_end], eos):  # a template without an end token: teach one
            text = text[:content_end] + eos + text[content_end:]
            content_end += len(eos)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        labels = [tok if start >= ex.prompt_end and end <= content_end and end > start else IGNORE
                  for tok, (start, end) in zip(ids, offsets)]
        _check_trained(ex, text, offsets, labels)
        if max_length is not None and len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
            out.truncated += 1
            if all(lab == IGNORE for lab in labels):
                out.dropped += 1
                continue
        out.rows.append({"input_ids": list(ids), "labels": labels})
        out.tokens += len(ids)
        out.label_tokens += sum(lab != IGNORE for lab in labels)
    return out


def _ends_turn(text: str, eos: str) -> bool:
    stripped = text.rstrip()
    return stripped.endswith((TURN_END, eos))


def _check_trained(ex: Example, text: str, offsets: list[tuple[int, int]], labels: list[int]) -> None:
    """The reasoning and the answer must lie inside the labelled characters, exactly as exported."""
    spans = [(s, e) for (s, e), lab in zip(offsets, labels) if lab != IGNORE]
    if not spans:
        raise TrainDataError(f"{ex.source}:{ex.line}: no token of the assistant turn could be labelled")
    trained = text[spans[0][0]:spans[-1][1]]
    for what, piece in ex.trained:
        if piece not in trained:
            raise TrainDataError(f"{ex.source}:{ex.line}: the chat template dropped or rewrote the {what} of the "
                                 "final assistant turn; export with --format chatml to train on the text as written")


def collate(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch: input_ids with `pad_id`, labels with -100, and the attention mask."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    batch = {"input_ids": torch.full((len(features), width), pad_id, dtype=torch.long),
             "labels": torch.full((len(features), width), IGNORE, dtype=torch.long),
             "attention_mask": torch.zeros((len(features), width), dtype=torch.long)}
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(f["input_ids"])
        batch["labels"][i, :n] = torch.tensor(f["labels"])
        batch["attention_mask"][i, :n] = 1
    return batch
