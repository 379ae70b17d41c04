"""What the fake provider says: reading requests and shaping answers in each provider's dialect.

The fake server (`fake_provider`) decides *whether* and *when* to answer; this module decides *what*
the answer body is. Everything is a pure function of the request and the scripted item, so tests and
benchmarks can predict every byte:

* the default answer text is ``"echo: " + <last user message>``;
* a JSON schema (OpenAI ``response_format``) or a forced Anthropic tool gets a deterministic
  instance of the schema, every string in it set to that same echo text;
* usage is ``prompt_tokens = chars of all messages // 4`` and ``completion_tokens = len(text) // 4``
  (each at least 1) unless the scripted item says otherwise.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import orjson

OPENAI, ANTHROPIC, ARGO = "openai", "anthropic", "argo"
ANSWER_SPEC_KEYS = frozenset({"text", "json", "reasoning", "usage", "finish_reason"})

_ids = itertools.count(1)


def content_text(content: Any) -> str:
    """The text of one message's content: a plain string or a list of text parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def last_user_text(body: Any) -> str:
    """Content of the last ``user`` message in a chat request ('' when there is none)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return content_text(msg.get("content"))
    return ""


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of every message (and an Anthropic top-level ``system``) in the request."""
    total = len(content_text(body.get("system")))
    for msg in body.get("messages") or ():
        if isinstance(msg, dict):
            total += len(content_text(msg.get("content")))
    return total


def request_error(dialect: str, body: Any) -> str | None:
    """Why a real provider would reject this request with HTTP 400, or None when it is acceptable."""
    if not isinstance(body, dict):
        return "request body is not a JSON object"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages: field required (a non-empty list)"
    if dialect != ARGO and not body.get("model"):
        return "model: field required"
    if dialect == ANTHROPIC and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    return None


# ---------------------------------------------------------------------------------------------
# Structured output: what schema (if any) the request asks for, and a deterministic instance of it.


def requested_schema(dialect: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``(kind, schema)`` when the request demands structured output, else None.

    kind is ``"json"`` (OpenAI ``response_format``: answer is JSON text) or ``"tool:<name>"``
    (Anthropic ``tool_choice`` forcing a tool: answer is a ``tool_use`` block).
    """
    if dialect == OPENAI:
        fmt = body.get("response_format")
        if isinstance(fmt, dict):
            if fmt.get("type") == "json_schema":
                spec = fmt.get("json_schema") or {}
                return "json", spec.get("schema") or {"type": "object"}
            if fmt.get("type") == "json_object":
                return "json", {"type": "object", "properties": {"answer": {"type": "string"}}}
        return None
    if dialect == ANTHROPIC:
        choice, tools = body.get("tool_choice"), body.get("tools") or []
        if not isinstance(choice, dict) or not tools:
            return None
        if choice.get("type") == "tool":
            tool = next((t for t in tools if t.get("name") == choice.get("name")), None)
        elif choice.get("type") == "any":
            tool = tools[0]
        else:
            return None
        if tool is None:
            return None
        return f"tool:{tool.get('name')}", tool.get("input_schema") or {"type": "object"}
    return None


def schema_instance(schema: Any, text: str, root: Any = None, depth: int = 0) -> Any:
    """A small valid instance of `schema`; every string is `text`."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 20:
        return text
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return schema_instance(target, text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: schema_instance(sub, text, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [schema_instance(schema.get("items", {}), text, root, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


# ---------------------------------------------------------------------------------------------
# One answer, independent of dialect, then its body in each dialect.


@dataclass(slots=True)
class Answer:
    """What the model 'says': text and/or a structured value, optional reasoning, optional usage."""

    text: str | None = None
    structured: Any = None  # dict/list: JSON text for OpenAI/Argo, tool input for a forced tool
    reasoning: str | None = None
    usage: dict[str, int] | None = None
    finish_reason: str | None = None


def answer_for(item: Any, dialect: str, body: dict[str, Any], reasoning_mode: bool) -> Answer:
    """Turn a scripted item (or None, for the default) into an `Answer` for this request."""
    prompt = last_user_text(body)
    echo = "echo: " + prompt
    if item is None:
        schema = requested_schema(dialect, body)
        answer = Answer(text=echo) if schema is None else Answer(structured=schema_instance(schema[1], echo))
    elif isinstance(item, str):
        answer = Answer(text=item)
    elif isinstance(item, dict) and item and item.keys() <= ANSWER_SPEC_KEYS and ("text" in item or "json" in item):
        answer = Answer(text=item.get("text"), structured=item.get("json"), reasoning=item.get("reasoning"),
                        usage=item.get("usage"), finish_reason=item.get("finish_reason"))
    elif isinstance(item, (dict, list)):
        answer = Answer(structured=item)
    else:
        raise TypeError(f"cannot serve scripted item of type {type(item).__name__}: {item!r}")
    if answer.reasoning is None and reasoning_mode:
        answer.reasoning = "thinking about: " + prompt
    return answer


def _answer_text(answer: Answer) -> str:
    if answer.text is not None:
        return answer.text
    return orjson.dumps(answer.structured).decode()


def _usage(answer: Answer, body: dict[str, Any], text: str) -> tuple[int, int]:
    given = answer.usage or {}
    prompt = given.get("prompt_tokens", given.get("input_tokens"))
    completion = given.get("completion_tokens", given.get("output_tokens"))
    if prompt is None:
        prompt = max(1, prompt_chars(body) // 4)
    if completion is None:
        completion = max(1, len(text) // 4)
    return int(prompt), int(completion)


def openai_body(answer: Answer, body: dict[str, Any]) -> dict[str, Any]:
    text = _answer_text(answer)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if answer.reasoning is not None:
        message["reasoning_content"] = answer.reasoning
    prompt_tokens, completion_tokens = _usage(answer, body, text)
    return {
        "id": f"chatcmpl-fake-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": answer.finish_reason or "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def anthropic_body(answer: Answer, body: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.reasoning is not None:
        content.append({"type": "thinking", "thinking": answer.reasoning, "signature": "fake-signature"})
    schema = requested_schema(ANTHROPIC, body)
    if schema is not None and answer.text is None:
        # A forced tool answered with a structured value: a tool_use block, as the real API does.
        content.append({"type": "tool_use", "id": f"toolu_fake_{next(_ids)}", "name": schema[0][5:],
                        "input": answer.structured})
        text, stop_reason = orjson.dumps(answer.structured).decode(), "tool_use"
    else:
        text, stop_reason = _answer_text(answer), "end_turn"
        content.append({"type": "text", "text": text})
    input_tokens, output_tokens = _usage(answer, body, text)
    return {
        "id": f"msg_fake_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "content": content,
        "stop_reason": answer.finish_reason or stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def argo_body(answer: Answer, body: dict[str, Any]) -> dict[str, Any]:
    return {"response": _answer_text(answer)}


BODY_BUILDERS = {OPENAI: openai_body, ANTHROPIC: anthropic_body, ARGO: argo_body}


def error_body(dialect: str, status: int, message: str) -> dict[str, Any]:
    """The error JSON a provider of this dialect sends with a non-200 status."""
    if dialect == ANTHROPIC:
        kind = {429: "rate_limit_error", 400: "invalid_request_error", 401: "authentication_error",
                529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind = {429: "rate_limit_exceeded", 400: "invalid_request_error",
            401: "invalid_api_key"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
