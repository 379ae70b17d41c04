"""The generic recipe: one prompt (or message list) in, one completion out.

Input lines are `{"id": …, "prompt": "…"}` or `{"id": …, "messages": [...]}`, optionally with
generation params (temperature, top_p, max_tokens, stop, seed, sample, model); every other field
is carried through to the row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthtrace.engine.gateway import RecordLLM
from synthtrace.engine.inputs import BadInput, Record, read_records, record_id
from synthtrace.recipes import Recipe

GEN_PARAMS = ("temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty")
CONTROL = {"id", "prompt", "messages", "system", "model", "sample", *GEN_PARAMS}
OUTPUT = ("messages", "completion", "reasoning", "usage", "cost_usd", "finish_reason", "provenance")
ROLES = {"system", "user", "assistant", "tool", "developer"}


class CompletionsRecipe(Recipe):
    name = "completions"
    prompt_version = "1"

    def __init__(self, system: str | None = None, **defaults: Any):
        self.system = system
        self.defaults = {k: v for k, v in defaults.items() if v is not None}

    def records(self, path: Path) -> Iterator[Record | BadInput]:
        return read_records(path, _build_record)

    def messages(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if "messages" in data:
            return data["messages"]
        system = data.get("system", self.system)
        msgs = [{"role": "system", "content": system}] if system else []
        msgs.append({"role": "user", "content": data["prompt"]})
        return msgs

    async def process(self, record: Record, llm: RecordLLM) -> list[dict[str, Any]]:
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


def _build_record(source: str, n: int, obj: dict[str, Any]) -> Record | BadInput:
    rid = record_id(obj.get("id"))
    problem = None
    if rid is None:
        problem = "missing or empty `id` (a string or integer)"
    elif "messages" in obj:
        problem = _check_messages(obj["messages"])
    elif not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
        problem = "needs a non-empty `prompt` string or a `messages` list"
    if problem:
        return BadInput(source, n, problem, id=rid)
    return Record(rid, obj, source, n)


def _check_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return f"`messages[{i}]` needs a `role` ({'/'.join(sorted(ROLES))}) and a string `content`"
    return None
