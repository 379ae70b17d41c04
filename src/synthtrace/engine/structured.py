"""Structured output that small models can keep: schema, tolerant parsing, and the re-ask message.

Providers with native JSON-schema support (and llama.cpp's grammars) mostly give valid JSON; the
rest, and small models, wrap it in fences, add prose, or put raw newlines inside strings. The
parser forgives those; what still fails validation is asked again with the error spelled out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from synthtrace.types import ChatResult, Message

if TYPE_CHECKING:  # a schema class comes from a caller that has imported pydantic; a run without one never does
    from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class SchemaSpec:
    """A JSON schema to ask for, by name, and the pydantic class that validates answers, if any."""

    name: str
    schema: dict[str, Any]
    model: type[BaseModel] | None

    @classmethod
    def of(cls, schema: type[BaseModel] | dict[str, Any]) -> SchemaSpec:
        if isinstance(schema, dict):
            return cls(str(schema.get("title") or "response"), schema, None)
        return _spec_cache.get(schema) or _spec_cache.setdefault(
            schema, cls(schema.__name__, schema.model_json_schema(), schema))

    def parse(self, result: ChatResult) -> Any:
        """Validated value from a result; raises ValueError with a message fit to show the model."""
        data = result.structured if result.structured is not None else loads_tolerant(result.text)
        if self.model is None:
            return data
        from pydantic import ValidationError

        try:
            return self.model.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}" for err in e.errors()[:5])
            raise ValueError(f"does not match the schema: {problems}") from None


_spec_cache: dict[type[BaseModel], SchemaSpec] = {}


def loads_tolerant(text: str) -> Any:
    """JSON from a model's text: code fences, surrounding prose and raw control characters forgiven."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0]
    try:
        return json.loads(s, strict=False)
    except json.JSONDecodeError:
        pass
    start = min((i for i in (s.find("{"), s.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError("no JSON object found in the answer")
    try:
        value, _ = json.JSONDecoder(strict=False).raw_decode(s, start)
        return value
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} at char {e.pos}") from None


def reask_message(problem: str) -> Message:
    return {"role": "user", "content": f"Your answer could not be used: {problem}. "
                                      "Reply again with only the JSON object, matching the schema exactly."}
