"""Plain data shared by every layer: what a model is asked, what it answers, and how it fails.

Nothing here does I/O. Clients turn a `ChatRequest` into a `ChatResult`; the gateway journals the
result and hands a recipe a `Reply` (`text`, `reasoning`, `parsed`). Provider failures are
exceptions, never text.

The rule for plain records: a class that `synthtrace run` builds before its first request is a
`Struct` (a dataclass compiles code when its module is imported); every other record, and every
class pydantic validates or a user declares, is a dataclass.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]  # {"role": "system"|"user"|"assistant", "content": str}


class Struct:
    """Base of the small record classes on the run's start-up path: fields in `__slots__` (in order),
    an `__init__` written out, and repr, equality and `as_dict` from here."""

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


class Reply(Struct):
    """A model's answer as a recipe sees it: what `await llm.chat(...)` returns.

        reply = await llm.chat(messages, schema=Verdict)
        reply.text, reply.reasoning, reply.parsed.score, reply.cost_usd, reply.cached
    """

    __slots__ = ("text", "reasoning", "parsed", "model", "provider_model", "key", "cached", "attempts",
                 "prompt_tokens", "completion_tokens", "cost_usd", "finish_reason")

    def __init__(self, text: str, reasoning: str | None, parsed: Any, model: str, provider_model: str, key: str,
                 cached: bool, attempts: int, prompt_tokens: int, completion_tokens: int, cost_usd: float,
                 finish_reason: str | None):
        self.text = text
        self.reasoning = reasoning
        self.parsed = parsed  # the validated structured output (pydantic instance or dict), when a schema was given
        self.model = model  # alias as the recipe asked
        self.provider_model = provider_model
        self.key = key
        self.cached = cached
        self.attempts = attempts
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cost_usd = cost_usd
        self.finish_reason = finish_reason

    def call_record(self) -> dict[str, Any]:
        """What a row's provenance keeps about this call."""
        return {"model": self.model, "provider_model": self.provider_model, "key": self.key, "cached": self.cached,
                "attempts": self.attempts, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": round(self.cost_usd, 8)}


# ---------------------------------------------------------------------------------------------
# Failures. Clients raise these; the gateway decides what is retried.


class LLMError(Exception):
    """Base for every model failure a recipe may handle (after the engine's own retries).

        try:
            reply = await llm.chat(messages, model="judge")
        except synthtrace.LLMError as e:
            return [{"id": record.id, "judged": False, "why": str(e)}]
    """


class RetryableError(LLMError):
    """5xx, timeouts, dropped connections, malformed or truncated bodies: worth another attempt."""


class Unreachable(RetryableError):
    """The connection could not be opened; `cause` says why ("dns", "tls", "refused", "timeout", "other").
    The gateway stops the run when the cause cannot heal by retrying (see `Gateway`)."""

    def __init__(self, message: str, cause: str = "other"):
        super().__init__(message)
        self.cause = cause


class Disconnected(RetryableError):
    """The connection closed before the whole answer came: the server may have gone away."""


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
        self.run_level = run_level or status in (401, 403, 407)  # 407: the proxy wants credentials


class RunStopped(Exception):
    """The run cannot go on: no record could get past this (the budget, a refused key). Not an
    `LLMError`, so a recipe that handles model failures passes it on to the runner, which stops the
    run and leaves the unfinished records for the next one:

        except synthtrace.LLMError:   # a RunStopped is not caught here, and need not be
            ...
    """


class BudgetExceeded(RunStopped):
    """The run's --max-usd would be passed by this call; nothing was sent."""


class Stalled(RunStopped):
    """An endpoint answered nothing but refusals (429s, 5xx) for the stall window, and the run was
    told to stop then (`--on-stall stop`)."""


class EndpointRefused(RunStopped):
    """An endpoint refused the run as a whole (a bad or missing key, 401/403): nothing more is sent."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class StructuredOutputError(LLMError):
    """The model's answer did not validate against the schema after every allowed re-ask; `last_text`
    is what it said last.

        except synthtrace.StructuredOutputError as e:
            raise synthtrace.Rejected("no valid verdict", said=e.last_text[:200])
    """

    def __init__(self, message: str, last_text: str = ""):
        super().__init__(message)
        self.last_text = last_text


class Rejected(Exception):
    """A recipe gives up on a record, or on part of one: `reason` goes to rejected.jsonl with `details`.

        raise Rejected("no answer matched the reference", tried=4)

    `part` names the part given up on (one sample, one question of a passage) when the record
    keeps other rows; see `RecordOutcome`.
    """

    def __init__(self, reason: str, *, part: str | None = None, **details: Any):
        super().__init__(reason)
        self.reason = reason
        self.part = part
        self.details = details

    def to_entry(self) -> dict[str, Any]:
        """The rejected.jsonl fields it adds to its record's (`part`, `reason`, the details)."""
        head: dict[str, Any] = {"part": self.part} if self.part is not None else {}
        return {**head, "reason": self.reason, **self.details}

    @classmethod
    def of(cls, error: LLMError, part: str | None = None) -> Rejected:
        """A model failure (after its retries, or an answer that never fit its schema) as a rejection."""
        return cls(str(error), part=part, error=type(error).__name__)


class RecipeError(Exception):
    """A recipe's own code failed on a record with something that is neither a rejection nor a model
    failure: a bug (TypeError, KeyError, AttributeError …). A dry run stops on it, since every record
    would probably fail the same way; `error` (also the `__cause__`) is the original exception.

        recipe 'shout' failed on record 'r1' (in.jsonl:1) in process, at shout.py:9: KeyError: 'prompt'
    """

    def __init__(self, recipe: str, record_id: str, source: str, line: int, stage: str, error: BaseException,
                 where: str | None = None):
        at = f", at {where}" if where else ""
        super().__init__(f"recipe {recipe!r} failed on record {record_id!r} ({source}:{line}) in {stage}{at}: "
                         f"{type(error).__name__}: {error}")
        self.recipe = recipe
        self.record_id = record_id
        self.source = source
        self.line = line
        self.error = error


class RecordOutcome(Struct):
    """What a recipe made of one record: the rows it keeps, and the parts it gave up on.

        return RecordOutcome(rows, [Rejected("judge score 4 < 7", part=f"{record.id}/t1", score=4)])
    """

    __slots__ = ("rows", "rejected")

    def __init__(self, rows: list[dict[str, Any]], rejected: list[Rejected] | None = None):
        self.rows = rows
        self.rejected = [] if rejected is None else rejected
