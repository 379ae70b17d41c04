"""The generic recipe: one prompt (or message list) in, one completion out.

Input lines are `{"id": …, "prompt": "…"}` or `{"id": …, "messages": [...]}`, optionally with
generation params (temperature, top_p, max_tokens, stop, seed, sample, model); every other field
is carried through to the row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthtrace.inputs import BadInput, Record, build_record, read_records, record_id
from synthtrace.options import option
from synthtrace.recipe import LLM, ChatExample, Recipe, ViewFields

GEN_PARAMS = ("temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty")
CONTROL = {"id", "prompt", "messages", "system", "model", "sample", *GEN_PARAMS}
OUTPUT = ("messages", "completion", "reasoning", "usage", "cost_usd", "finish_reason", "provenance")
ROLES = {"system", "user", "assistant", "tool", "developer"}


class CompletionsRecipe(Recipe):
    """One completion per input line: {"id", "prompt"} or {"id", "messages"} plus optional params."""

    name = "completions"
    prompt_version = "1"
    view = ViewFields(question="messages", trace="reasoning", answer="completion")

    @dataclass(frozen=True)
    class Options:
        system: str | None = option(None, "System prompt for `prompt` lines.")
        temperature: float | None = option(None, "Default temperature (a line's own value wins).")
        max_tokens: int | None = option(None, "Default max tokens (a line's own value wins).", min=1)

    def __init__(self, options: Any = None, /, **values: Any):
        super().__init__(options, **values)
        given = {"temperature": self.options.temperature, "max_tokens": self.options.max_tokens}
        self.defaults = {k: v for k, v in given.items() if v is not None}

    def records(self, path: Path) -> Iterator[Record | BadInput]:
        return read_records(path, _build_record)

    def messages(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if "messages" in data:
            return data["messages"]
        system = data.get("system", self.options.system)
        msgs = [{"role": "system", "content": system}] if system else []
        msgs.append({"role": "user", "content": data["prompt"]})
        return msgs

    async def process(self, record: Record, llm: LLM) -> list[dict[str, Any]]:
        data = record.data
        params = {**self.defaults, **{k: data[k] for k in GEN_PARAMS if k in data}}
        messages = self.messages(data)
        reply = await llm.chat(messages, model=data.get("model"), sample=int(data.get("sample", 0)), **params)
        row: dict[str, Any] = {"id": data["id"], "messages": messages}  # what was sent, so rows export as-is
        carried = {k: v for k, v in data.items() if k not in CONTROL}
        clashing = {k: carried.pop(k) for k in OUTPUT if k in carried}
        row.update(carried)
        if clashing:
            row["input_fields"] = clashing
        row["completion"] = reply.text
        if reply.reasoning:
            row["reasoning"] = reply.reasoning
        row["usage"] = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
        row["cost_usd"] = round(reply.cost_usd, 8)
        row["finish_reason"] = reply.finish_reason
        return [row]

    def estimate(self, record: Record) -> tuple[int, int, int]:
        chars = sum(len(str(m.get("content") or "")) for m in self.messages(record.data))
        out = int(record.data.get("max_tokens") or self.defaults.get("max_tokens") or 512)
        return 1, chars // 4 + 1, out

    def to_sft(self, row: dict[str, Any]) -> ChatExample | str:
        """`messages` (what was sent: one user turn with an optional system prompt) or a bare `prompt`,
        and the `completion`."""
        answer = row.get("completion")
        if not isinstance(answer, str) or not answer.strip():
            return "empty completion"
        reasoning = row["reasoning"].strip() if isinstance(row.get("reasoning"), str) else ""
        system: str | None = None
        messages = row.get("messages")
        if isinstance(messages, list) and messages:
            roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
            if roles not in (["user"], ["system", "user"]) or not all(
                    isinstance(m.get("content"), str) and m["content"].strip() for m in messages):
                return "completions messages are not one user turn (with an optional system prompt)"
            if roles[0] == "system":
                system = messages[0]["content"]
            user = messages[-1]["content"]
        elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
            user = row["prompt"]
            system = row["system"] if isinstance(row.get("system"), str) and row["system"].strip() else None
        else:
            return "completions row without its prompt or messages"
        return ChatExample(user, answer, reasoning, system, kind="completions", meta={"id": record_id(row.get("id"))})


def _build_record(source: str, n: int, obj: dict[str, Any]) -> Record | BadInput:
    item = build_record(source, n, obj)
    if isinstance(item, BadInput):
        return item
    problem = None
    if "messages" in obj:
        problem = _check_messages(obj["messages"])
    elif not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
        problem = "needs a non-empty `prompt` string or a `messages` list"
    return BadInput(source, n, problem, id=item.id) if problem else item


def _check_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return f"`messages[{i}]` needs a `role` ({'/'.join(sorted(ROLES))}) and a string `content`"
    return None
