"""The recipe contract: what a recipe is, the `llm` handle it calls, and what its rows become.

A recipe is an async function of one record. It reads `record.id` and `record.data`, calls models
only through `await llm.chat(...)`, and returns rows (dicts), raises `Rejected`, or returns a
`RecordOutcome` to keep some rows and give up on other parts. Concurrency, retries, the journal
(resume, nothing paid twice), limits, the budget, progress and provenance are the engine's: the
same for a recipe in this package and one in a user's file. This module sits below the engine;
the engine implements `LLM` and runs any `Recipe`.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from synthtrace.inputs import BadInput, Record, count_records, read_table
from synthtrace.options import NoOptions, OptionError, build
from synthtrace.types import LLMError, Message, RecordOutcome, Rejected, Reply

if TYPE_CHECKING:
    from pydantic import BaseModel

T = TypeVar("T")


class CallLog:
    """What an `llm` handle's calls took, as the `LLM` protocol reports it: `calls` (one dict per
    call; a fork's calls are logged in its parent too), `tokens` and `cost_usd` summed over them.
    The engine's handles build on it."""

    def __init__(self, parent: CallLog | None = None):
        self._parent = parent
        self.calls: list[dict[str, Any]] = []

    def _log(self, call: dict[str, Any]) -> None:
        self.calls.append(call)
        if self._parent is not None:
            self._parent._log(call)

    @property
    def tokens(self) -> tuple[int, int]:
        return sum(c["prompt_tokens"] for c in self.calls), sum(c["completion_tokens"] for c in self.calls)

    @property
    def cost_usd(self) -> float:
        return sum(c["cost_usd"] for c in self.calls)


class LLM(Protocol):
    """The handle a recipe gets for one record: the one door to every model.

        reply = await llm.chat([{"role": "user", "content": q}], model="judge", schema=Score, sample=k,
                               temperature=0.7, max_tokens=512)
        reply.text, reply.reasoning, reply.parsed   # parsed: a validated `Score`

    `model` is an alias, a provider id or `local` (default: the run's `--model`). `schema` (a pydantic
    class or a JSON schema) asks for structured output, validated, re-asked when invalid. `sample=k`
    makes the k-th independent sample of the same request its own journal entry. Other keyword
    arguments are generation parameters (temperature, max_tokens, top_p, stop, seed …).
    """

    calls: list[dict[str, Any]]  # what each call cost, in order: a row's provenance lists them

    async def chat(self, messages: list[Message], *, model: str | None = None,
                   schema: type[BaseModel] | dict[str, Any] | None = None, sample: int = 0,
                   **params: Any) -> Reply: ...

    def fork(self) -> LLM:
        """A handle whose calls are also logged apart: one per example when a record makes several."""
        ...

    @property
    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens of the calls in `calls` so far (a fork's count in its parent too);
        an answer replayed from the journal counts what it took when it was first asked."""
        ...

    @property
    def cost_usd(self) -> float:
        """USD of the calls in `calls` so far, at the run's prices (a fork's count in its parent too);
        an answer replayed from the journal counts what it cost when it was first asked."""
        ...


@dataclass
class ChatExample:
    """One single-turn training example, as `Recipe.to_sft` makes it from a row.

        return ChatExample(user=row["question"], answer=row["answer"], reasoning=row["reasoning"], system=SYSTEM)


    `user` (and `system`, when there is one) are exactly what the trained model will see; `reasoning`
    is the thought without its tags, `answer` the final answer. Examples of one `group` (default: the
    row's record) always land on the same side of the train/validation split.
    """

    user: str
    answer: str
    reasoning: str = ""
    system: str | None = None
    group: str = ""
    kind: str = ""  # what the export summary counts (default: the recipe's name)
    meta: dict[str, Any] = field(default_factory=dict)  # carried as the line's `metadata`
    rebuilt_prompt: bool = False  # the row had no stored prompt; the recipe rebuilt it


@dataclass(frozen=True)
class ViewFields:
    """Which fields of a recipe's rows `synthtrace view` and `synthtrace report` show as what, each a
    dotted path into the row (`error_details.error_sentence`). Unset ones are guessed from the names.

        view = ViewFields(source="note", trace="reasoning", answer="answer", verdicts=("verification",),
                          marks=(("error", "error_details.error_sentence"),))
    """

    source: str | None = None  # the material the example came from: a note, a passage
    question: str | None = None  # what was asked (a string, or a list of chat messages)
    trace: str | None = None  # the reasoning; <think>, <thought> and <reasoning> blocks are shown as such
    answer: str | None = None
    verdicts: tuple[str, ...] = ()  # fields that hold checks, judges' scores or grades
    marks: tuple[tuple[str, str], ...] = ()  # (label, path): text to mark in the source, e.g. an error


class Recipe:
    """The base a recipe subclasses. Only `process` is required.

        class Shout(synthtrace.Recipe):
            \"\"\"Answers in capitals.\"\"\"

            async def process(self, record, llm):
                reply = await llm.chat([{"role": "user", "content": record.data["prompt"]}])
                return [{"id": record.id, "answer": reply.text.upper()}]

    Class attributes: `name` (default: the class name in kebab-case, `shout`), `description` (default:
    the docstring's first line), `prompt_version` (goes into every row's provenance: change it when
    the prompts change), `Options`, a dataclass of `synthtrace.option` fields that become the
    recipe's flags, its `recipes.NAME:` config keys and its manifest entry (`self.options` holds them),
    and `view`, a `ViewFields` saying which row fields the viewer shows as source, trace and answer.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    prompt_version: ClassVar[str] = "1"
    Options: ClassVar[type] = NoOptions
    view: ClassVar[ViewFields | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = _kebab(cls.__name__.removesuffix("Recipe") or cls.__name__)
        if not cls.__dict__.get("description"):
            cls.description = (inspect.getdoc(cls) or "").strip().split("\n\n")[0].replace("\n", " ")
        process = cls.__dict__.get("process")
        if process is not None and not inspect.iscoroutinefunction(process):
            raise TypeError(f"{cls.__qualname__}.process must be `async def process(self, record, llm)`")

    def __init__(self, options: Any = None, /, **values: Any) -> None:
        """`Recipe(samples=4)` or `Recipe(Recipe.Options(samples=4))`: values are checked as the CLI checks flags."""
        if options is not None and not isinstance(options, self.Options):
            raise OptionError(f"{type(self).__name__}: options must be a {self.Options.__qualname__}, "
                              f"got {type(options).__name__}")
        if options is None:
            options = build(self.Options, values, where=f"recipe {self.name}")
        elif values:
            from dataclasses import asdict

            options = build(self.Options, {**asdict(options), **values}, where=f"recipe {self.name}")
        self.options = options

    # -- reading the input ----------------------------------------------------------------------

    def records(self, path: Path) -> Iterator[Record | BadInput]:
        """The input's records. Default: JSON lines (or CSV / TSV / Parquet, by extension), one record
        per object, each with an `id` (a string or an integer); a bad line is named, not fatal."""
        return read_table(path)

    def count(self, path: Path) -> int | None:
        """How many records the input holds, for progress (None when unknown)."""
        return count_records(path)

    # -- one record -----------------------------------------------------------------------------

    async def process(self, record: Record, llm: LLM) -> list[dict[str, Any]] | RecordOutcome:
        """Rows for one record; raise `Rejected(reason, **details)` to give up on it with a reason, or
        return a `RecordOutcome` to keep some rows and give up on other parts of the record."""
        raise NotImplementedError(f"{type(self).__name__} must define `async def process(self, record, llm)`")

    def estimate(self, record: Record) -> tuple[int, int, int] | None:
        """(calls, prompt tokens, completion tokens) this record will probably cost, for --dry-run.
        Default None: the engine runs `process` against a stand-in model that answers nothing and
        counts the requests it makes (their `max_tokens`, or 512, as the completion)."""
        return None

    def summary(self) -> dict[str, Any]:
        """Recipe-specific figures for the run summary and manifest."""
        return {}

    def prepare(self, settings: Any) -> None:
        """Called once before a run (dry runs included) with its `RunSettings`, which a recipe may
        adjust: where the run dir lives, how many records, a file of its own to keep in step."""

    # -- what the rows become -------------------------------------------------------------------

    def to_sft(self, row: dict[str, Any]) -> ChatExample | str | None:
        """The training example a row makes, or None (or a short reason) to skip it in `export sft`."""
        return f"recipe {self.name!r} does not make training examples (it has no to_sft)"


async def gather_parts(*parts: Awaitable[T]) -> list[T | Rejected]:
    """Await the parts of one record concurrently; a part that gives up comes back as a `Rejected`.

        results = await gather_parts(*(self.sample(record, llm.fork(), k) for k in range(4)))
        rows = [r for r in results if not isinstance(r, Rejected)]
        return RecordOutcome(rows, [r for r in results if isinstance(r, Rejected)])

    A part gives up by raising `Rejected`, or fails on a model error (`LLMError`: a provider error
    after its retries, an answer that never fit its schema), which becomes a `Rejected` naming it.
    Anything else — the budget or a refused key (`RunStopped`), a bug — is raised once every part
    has finished, so the runner stops the run, or rejects the record with the traceback.
    """
    results = await asyncio.gather(*parts, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, (Rejected, LLMError)):
            raise r
    return [Rejected.of(r) if isinstance(r, LLMError) else r for r in results]  # type: ignore[misc]


# -- finding a recipe -----------------------------------------------------------------------------

class RecipeNotFound(LookupError):
    """A recipe reference that names nothing runnable; the message says what and why."""


def load_recipe(ref: str) -> type[Recipe]:
    """The recipe class `ref` names: a registered name (built in, or a plugin's entry point in the
    `synthtrace.recipes` group), `package.module:Class`, or `path/to/file.py[:Class]`."""
    path, _, attr = ref.rpartition(":") if re.search(r"\.py:\w+$", ref) else (ref, "", "")
    if path.endswith(".py") or "/" in path or "\\" in path:
        return _from_file(Path(path), attr or None, ref)
    if ":" in ref:
        from synthtrace.registry import load_reference

        try:
            obj = load_reference(ref)
        except (ImportError, AttributeError) as e:
            raise RecipeNotFound(f"cannot load recipe {ref!r}: {type(e).__name__}: {e}") from None
        return _check_recipe(obj, ref)
    from synthtrace.registry import RECIPES, NotRegistered

    try:
        obj = RECIPES.load(ref)
    except NotRegistered as e:
        raise RecipeNotFound(str(e)) from None
    except Exception as e:  # a plugin that fails to import
        raise RecipeNotFound(f"recipe {ref!r} ({RECIPES.reference(ref)}) failed to load: "
                             f"{type(e).__name__}: {e}") from None
    return _check_recipe(obj, ref)


def recipe_reference(cls: type[Recipe]) -> str:
    """How a later command (`export sft`) finds `cls` again: its registered name, `module:Class`, or
    `/abs/path/file.py:Class` for a recipe loaded from a file."""
    from synthtrace.registry import BUILTIN_RECIPES

    ref = f"{cls.__module__}:{cls.__qualname__}"
    if BUILTIN_RECIPES.get(cls.name) == ref:
        return cls.name
    file = getattr(cls, "__synthtrace_file__", None)
    return f"{file}:{cls.__qualname__}" if file else ref


def _from_file(path: Path, attr: str | None, ref: str) -> type[Recipe]:
    import importlib.util
    import sys
    import traceback

    if not path.is_file():
        raise RecipeNotFound(f"recipe file not found: {path}")
    path = path.resolve()
    module_name = "synthtrace_user_recipe_" + re.sub(r"\W", "_", path.stem) + f"_{abs(hash(str(path))):x}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look classes up here
        try:
            spec.loader.exec_module(module)
        except SyntaxError as e:
            del sys.modules[module_name]
            raise RecipeNotFound(f"{path}:{e.lineno}: {e.msg}") from None
        except Exception as e:
            del sys.modules[module_name]
            frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
            where = f"{path}:{frames[-1].lineno}" if frames else str(path)
            raise RecipeNotFound(f"{where}: loading the recipe failed: {type(e).__name__}: {e}") from None
    if attr:
        obj = getattr(module, attr, None)
        if obj is None:
            raise RecipeNotFound(f"{path} defines no {attr!r}")
        cls = _check_recipe(obj, ref)
    else:
        found = [v for v in vars(module).values()
                 if isinstance(v, type) and issubclass(v, Recipe) and v.__module__ == module_name]
        if not found:
            raise RecipeNotFound(f"{path} defines no recipe (a subclass of synthtrace.Recipe)")
        if len(found) > 1:
            names = ", ".join(c.__name__ for c in found)
            raise RecipeNotFound(f"{path} defines several recipes ({names}): name one, as {path}:{found[0].__name__}")
        cls = found[0]
    cls.__synthtrace_file__ = str(path)  # type: ignore[attr-defined]
    return cls


def _check_recipe(obj: Any, ref: str) -> type[Recipe]:
    if not (isinstance(obj, type) and issubclass(obj, Recipe)):
        raise RecipeNotFound(f"{ref!r} is {type(obj).__name__} {obj!r}, not a subclass of synthtrace.Recipe")
    if obj.process is Recipe.process:
        raise RecipeNotFound(f"{ref!r}: {obj.__name__} does not define `async def process(self, record, llm)`")
    return obj


def _kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name).lower()
