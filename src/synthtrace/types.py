"""Plain data shared by every layer: what a model is asked, what it answers, and how it fails.

Nothing here does I/O. Clients turn a `ChatRequest` into a `ChatResult`; the gateway journals the
result; recipes read `text`, `reasoning` and `parsed`. Provider failures are exceptions, never text.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]  # {"role": "system"|"user"|"assistant", "content": str}


class Struct:
    """Base of the small record classes that `synthtrace run` imports before its first request.

    They were dataclasses, and a dataclass compiles generated source for its methods when its module
    is imported: 0.5–1.3 ms a class on the development machine, 14.5 ms for the twenty on that path,
    an eighth of its import time. A Struct lists its fields in `__slots__` (in order) and writes its
    own `__init__`; repr, equality and `as_dict` come from here. (The config classes that pydantic
    validates a config file against stay dataclasses.)
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable, as a dataclass with eq is

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (shallow)."""
        return {k: getattr(self, k) for k in self.__slots__}


def content_text(content: Any) -> str:
    """A message's content as one string: OpenAI-style content parts joined (chat templates want text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


class ChatRequest(Struct):
    """One call as the client must send it (model already resolved to the provider's id)."""

    __slots__ = ("model", "messages", "params", "schema", "schema_name")

    def __init__(self, model: str, messages: list[Message], params: dict[str, Any] | None = None,
                 schema: dict[str, Any] | None = None, schema_name: str = "response"):
        self.model = model
        self.messages = messages
        self.params = {} if params is None else params  # temperature, max_tokens, top_p, stop, seed …
        self.schema = schema  # JSON schema for structured output
        self.schema_name = schema_name


class Usage(Struct):
    """Tokens of one call."""

    __slots__ = ("prompt_tokens", "completion_tokens", "estimated")

    def __init__(self, prompt_tokens: int = 0, completion_tokens: int = 0, estimated: bool = False):
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.estimated = estimated  # True when the provider gave no usage and we counted ourselves

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
        if self.estimated:
            d["estimated"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Usage:
        d = d or {}
        return cls(int(d.get("prompt_tokens", 0)), int(d.get("completion_tokens", 0)), bool(d.get("estimated", False)))


class ChatResult(Struct):
    """What came back: the answer text, any reasoning the model exposed, usage and finish reason."""

    __slots__ = ("text", "reasoning", "usage", "finish_reason", "model", "structured")

    def __init__(self, text: str, reasoning: str | None = None, usage: Usage | None = None,
                 finish_reason: str | None = None, model: str | None = None, structured: Any = None):
        self.text = text
        self.reasoning = reasoning
        self.usage = Usage() if usage is None else usage
        self.finish_reason = finish_reason
        self.model = model  # the id the provider says answered
        self.structured = structured  # provider-native structured output (e.g. Anthropic tool input), if any

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"text": self.text, "usage": self.usage.to_dict()}
        if self.reasoning is not None:
            d["reasoning"] = self.reasoning
        if self.finish_reason is not None:
            d["finish_reason"] = self.finish_reason
        if self.model is not None:
            d["model"] = self.model
        if self.structured is not None:
            d["structured"] = self.structured
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChatResult:
        return cls(
            text=d.get("text", ""),
            reasoning=d.get("reasoning"),
            usage=Usage.from_dict(d.get("usage")),
            finish_reason=d.get("finish_reason"),
            model=d.get("model"),
            structured=d.get("structured"),
        )


# ---------------------------------------------------------------------------------------------
# Failures. Clients raise these; the gateway decides what is retried.


class LLMError(Exception):
    """Base for every provider-side failure."""


class RetryableError(LLMError):
    """5xx, timeouts, dropped connections, malformed or truncated bodies: worth another attempt."""


class RateLimited(RetryableError):
    """HTTP 429. `retry_after` is the server's wish in seconds, when it said one."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(LLMError):
    """4xx other than 429 (bad request, auth, unknown model): retrying cannot help."""

    def __init__(self, message: str, status: int | None = None, run_level: bool = False):
        super().__init__(message)
        self.status = status
        # True when no record can succeed either (bad key, missing key): the run stops, records untouched
        self.run_level = run_level or status in (401, 403)


class BudgetExceeded(LLMError):
    """The run's --max-usd would be passed by this call; nothing was sent."""


def stops_run(e: BaseException) -> bool:
    """Errors a recipe must pass on to the runner: the budget, or a failure no record can get past."""
    return isinstance(e, BudgetExceeded) or (isinstance(e, FatalError) and e.run_level)


class StructuredOutputError(LLMError):
    """The model's answer did not validate against the schema after every allowed re-ask."""

    def __init__(self, message: str, last_text: str = ""):
        super().__init__(message)
        self.last_text = last_text


class Rejected(Exception):
    """A recipe gives up on a record: `reason` goes to rejected.jsonl with `details`."""

    def __init__(self, reason: str, **details: Any):
        super().__init__(reason)
        self.reason = reason
        self.details = details


class RecordOutcome(Struct):
    """What a recipe made of one record: rows, and the parts it had to give up on (with reasons)."""

    __slots__ = ("rows", "rejected")

    def __init__(self, rows: list[dict[str, Any]], rejected: list[dict[str, Any]] | None = None):
        self.rows = rows
        self.rejected = [] if rejected is None else rejected
