"""--dry-run: what a run would cost, from the input alone; nothing is sent, nothing is written.

A recipe may say what a record costs (`Recipe.estimate`). One that does not is run against
`EstimateLLM`, a stand-in that sends nothing and answers every call with empty text (and, for a
schema, its smallest valid value): each distinct request it sees counts as one call, its messages
as prompt tokens (characters / 4) and its `max_tokens` (else 512) as completion tokens, priced for
the model that call names. An empty answer fails most checks, so a recipe that retries until an
answer passes shows its most expensive path: the figure is a ceiling, as a budget wants.

A simulated record may end as a real one does (rows, `Rejected`, a model failure, `RunStopped`),
or on what an empty answer makes the recipe's own parsing raise once it has one (`int("")`,
`json.loads("")`, `text.split()[0]`). Anything else is a bug in the recipe, and the dry run stops
on it with a `RecipeError` naming the record, rather than estimate a run whose records would fail.
"""

from __future__ import annotations

import inspect
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from synthtrace.config import Config
from synthtrace.engine.cost import BATCH_DISCOUNT, PriceTable
from synthtrace.engine.settings import RunSettings
from synthtrace.inputs import BadInput, Record
from synthtrace.llm.providers import batch_api, resolve_model
from synthtrace.recipe import CallLog, Recipe
from synthtrace.types import LLMError, Message, RecipeError, Rejected, Reply, RunStopped, Struct

DEFAULT_COMPLETION = 512
MAX_CALLS_PER_RECORD = 1000  # a recipe that loops until an answer passes stops here
# What parsing an empty answer raises: int(""), json.loads(""), a pydantic check, text.split()[0], a mean of nothing.
EMPTY_ANSWER_ERRORS = (ValueError, IndexError, ZeroDivisionError)


class Estimate(Struct):
    """A dry run's figures.

        est = synthtrace.run(recipe, "in.jsonl", "runs/x", dry_run=True)
        est.records, est.calls, est.prompt_tokens, est.completion_tokens, est.cost_usd, est.unpriced
    """

    __slots__ = ("records", "bad_input", "calls", "prompt_tokens", "completion_tokens", "cost_usd", "priced",
                 "unpriced", "model", "provider_model", "by_model", "simulated", "batch_cost_usd", "batchable_calls")

    def __init__(self) -> None:
        self.records = 0
        self.bad_input = 0
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self.priced = True  # every model asked has a price (or runs here, for free)
        self.unpriced: list[str] = []
        self.model = ""  # the run's default model, as given and as the provider names it
        self.provider_model = ""
        self.by_model: Counter[str] = Counter()  # provider model → calls
        self.simulated = False  # counted by running the recipe against EstimateLLM
        self.batch_cost_usd: float | None = 0.0  # in batch mode (None when no call's endpoint has a batch API)
        self.batchable_calls = 0


class _Stop(Exception):
    """Ends a simulated record that asks for more than MAX_CALLS_PER_RECORD calls."""


class EstimateLLM(CallLog):
    """The `llm` of a dry run (a `synthtrace.LLM`): records requests, sends nothing, answers emptily.
    Its replies cost nothing, so `tokens` is (0, 0) and `cost_usd` 0.0; `calls` lists them as a
    `RecordLLM`'s does."""

    def __init__(self, parent: EstimateLLM | None = None):
        super().__init__(parent)
        self._seen: set[bytes] = set() if parent is None else parent._seen
        self._root: EstimateLLM = self if parent is None else parent._root
        self.requests: list[tuple[str | None, int, int]] = []  # (model, prompt tokens, completion tokens)
        self.answered = 0  # replies handed to the recipe (on the root: by it and every fork)

    async def chat(self, messages: list[Message], *, model: str | None = None, schema: Any = None, sample: int = 0,
                   **params: Any) -> Reply:
        key = orjson.dumps([model, messages, sorted(params.items(), key=str), sample], default=str)
        root = self._root
        if key not in self._seen:  # the same request twice is one call (the journal answers the second)
            self._seen.add(key)
            if len(root.requests) >= MAX_CALLS_PER_RECORD:
                raise _Stop
            prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
            root.requests.append((model, prompt, int(params.get("max_tokens") or DEFAULT_COMPLETION)))
        reply = Reply("", None, placeholder(schema) if schema is not None else None, model or "", model or "",
                      "", False, 0, 0, 0, 0.0, "stop")
        self._log(reply.call_record())
        root.answered += 1
        return reply

    def fork(self) -> EstimateLLM:
        return EstimateLLM(parent=self)


async def estimate_run(recipe: Recipe, settings: RunSettings, config: Config) -> Estimate:
    est = Estimate()
    default = resolve_model(config, settings.model)
    est.model, est.provider_model = default.alias, default.model
    prices = PriceTable(config.prices)
    resolved: dict[str | None, Any] = {None: default}
    for item in recipe.records(settings.input):
        if settings.max_records is not None and est.records + est.bad_input >= settings.max_records:
            break
        if isinstance(item, BadInput):
            est.bad_input += 1
            continue
        est.records += 1
        try:
            figures = recipe.estimate(item)
        except Exception as e:  # no model is involved: a bug
            raise _recipe_error(recipe, item, "estimate", e) from e
        if figures is not None:
            calls, prompt, completion = figures
            _add(est, prices, default, calls, prompt, completion)
            continue
        est.simulated = True
        for model, prompt, completion in await _simulate(recipe, item):
            r = resolved.get(model)
            if r is None:
                r = resolved[model] = resolve_model(config, model)
            _add(est, prices, r, 1, prompt, completion)
    est.cost_usd = round(est.cost_usd, 6)
    est.batch_cost_usd = round(est.batch_cost_usd or 0.0, 6) if est.batchable_calls else None
    return est


async def _simulate(recipe: Recipe, record: Record) -> list[tuple[str | None, int, int]]:
    llm = EstimateLLM()
    try:
        await recipe.process(record, llm)
    except (Rejected, LLMError, RunStopped, _Stop):  # it gave up, as empty answers make most recipes do
        pass
    except EMPTY_ANSWER_ERRORS as e:
        if not llm.answered:  # raised before any answer came: the stand-in cannot have caused it
            raise _recipe_error(recipe, record, "process", e) from e
    except Exception as e:
        raise _recipe_error(recipe, record, "process", e) from e
    return llm.requests


def _recipe_error(recipe: Recipe, record: Record, stage: str, error: Exception) -> RecipeError:
    """`error` as a RecipeError, located at the innermost line of the recipe's own file (else the innermost)."""
    frames = traceback.extract_tb(error.__traceback__)
    try:
        own = str(Path(inspect.getfile(type(recipe))).resolve())
    except (TypeError, OSError):
        own = ""
    mine = [f for f in frames if f.filename and str(Path(f.filename).resolve()) == own]
    at = (mine or frames)[-1] if frames else None
    where = f"{at.filename}:{at.lineno}" if at is not None else None
    return RecipeError(recipe.name, record.id, record.source, record.line, stage, error, where)


def _add(est: Estimate, prices: PriceTable, r: Any, calls: int, prompt: int, completion: int) -> None:
    est.calls += calls
    est.prompt_tokens += prompt
    est.completion_tokens += completion
    est.by_model[r.model] += calls
    cost = prices.cost(r.model, prompt, completion, local=r.is_local)
    est.cost_usd += cost
    batchable = batch_api(r.endpoint.kind) is not None  # what batch mode would cost (the rest online, as they are)
    est.batchable_calls += calls if batchable else 0
    est.batch_cost_usd = (est.batch_cost_usd or 0.0) + cost * (BATCH_DISCOUNT if batchable else 1.0)
    if not r.is_local and prices.lookup(r.model) is None:
        est.priced = False
        if r.model not in est.unpriced:
            est.unpriced.append(r.model)


def placeholder(schema: Any) -> Any:
    """The smallest value of `schema` (a pydantic class or a JSON schema): what an empty answer parses to."""
    if isinstance(schema, dict):
        return _minimal(schema, schema)
    json_schema = schema.model_json_schema()
    value = _minimal(json_schema, json_schema)
    try:
        return schema.model_validate(value)
    except Exception:  # constraints the minimal value misses (min lengths, patterns): skip validation
        return schema.model_construct(**value) if isinstance(value, dict) else value


def _minimal(node: Any, root: dict[str, Any], depth: int = 0) -> Any:
    if not isinstance(node, dict) or depth > 20:
        return None
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _minimal(target, root, depth + 1)
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return node["enum"][0]
    if "default" in node:
        return node["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if node.get(key):
            return _minimal(node[key][0], root, depth + 1)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in node:
        props = node.get("properties", {})
        return {k: _minimal(props.get(k, {}), root, depth + 1) for k in node.get("required", list(props))}
    if kind == "array":
        return [_minimal(node.get("items", {}), root, depth + 1) for _ in range(int(node.get("minItems", 0)))]
    if kind == "string":
        return "x" * int(node.get("minLength", 0))
    if kind in ("integer", "number"):
        low = node.get("minimum", node.get("exclusiveMinimum", 0))
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return False
    return None
