"""The public contract says all a recipe may use, and holds where recipes meet it.

The `LLM` protocol names every member of the `llm` handle; both of its implementations (the
gateway's `RecordLLM` and the dry run's stand-in) have them all, and the built-in recipes run
against the stand-in. A bug in a recipe stops a dry run with the record named; the failures a
user can meet are exported from `synthtrace`; `run` and `arun` take the run options as typed
keyword arguments, the same ones `RunSettings` declares.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Protocol

import pytest

import synthtrace
from synthtrace import api
from synthtrace.engine.estimate import EstimateLLM, _simulate
from synthtrace.engine.gateway import RecordLLM
from synthtrace.engine.settings import RunSettings
from synthtrace.inputs import BadInput
from synthtrace.options import specs
from synthtrace.recipe import LLM, load_recipe

ROOT = Path(__file__).resolve().parents[1]


def protocol_members(proto: type) -> dict[str, Any]:
    """A protocol's public members (methods, properties, annotated attributes) by name, its bases' included."""
    members: dict[str, Any] = {}
    for base in reversed(proto.__mro__):
        if base in (object, Protocol, typing.Generic):
            continue
        members.update({n: None for n in getattr(base, "__annotations__", {}) if not n.startswith("_")})
        members.update({n: v for n, v in vars(base).items() if not n.startswith("_")})
    return members


# --- the llm handle --------------------------------------------------------------------------------


def test_protocol_members_sees_a_member_added_to_the_protocol():
    class Wider(LLM, Protocol):
        seed: int

        def rewind(self) -> None: ...

    assert set(protocol_members(Wider)) - set(protocol_members(LLM)) == {"seed", "rewind"}
    assert {"chat", "fork", "calls", "tokens", "cost_usd"} <= set(protocol_members(LLM))


@pytest.mark.parametrize("impl", [EstimateLLM, RecordLLM])
def test_every_llm_implementation_has_every_member_of_the_protocol(impl):
    handle = EstimateLLM() if impl is EstimateLLM else RecordLLM(gateway=None)  # type: ignore[arg-type]
    for name, declared in protocol_members(LLM).items():
        assert hasattr(handle, name), f"{impl.__name__} lacks LLM.{name}"
        if isinstance(declared, property):
            assert isinstance(inspect.getattr_static(handle, name), property), f"{impl.__name__}.{name}: a property"
        elif callable(declared):
            mine = inspect.signature(getattr(handle, name)).parameters
            wanted = [p for p in inspect.signature(declared).parameters.values() if p.name != "self"]
            takes_any = any(p.kind is p.VAR_KEYWORD for p in mine.values())
            for p in wanted:
                ok = takes_any if p.kind is p.VAR_KEYWORD else p.name in mine or (takes_any and p.kind is p.KEYWORD_ONLY)
                assert ok, f"{impl.__name__}.{name} does not take {p}"
            assert inspect.iscoroutinefunction(declared) == inspect.iscoroutinefunction(getattr(handle, name))


def test_the_stand_in_counts_calls_and_spends_nothing():
    llm = EstimateLLM()
    row = llm.fork()

    async def go() -> None:
        await llm.chat([{"role": "user", "content": "a"}])
        await row.chat([{"role": "user", "content": "b"}], max_tokens=9)

    asyncio.run(go())
    assert len(llm.calls) == 2 and len(row.calls) == 1  # a fork's calls count in its parent too
    assert llm.tokens == (0, 0) and row.tokens == (0, 0) and llm.cost_usd == 0.0
    assert [c for _, _, c in llm.requests] == [512, 9]


@pytest.mark.parametrize(("name", "path"), [("medec", "examples/medec/medec-ms-val-sample.csv"),
                                            ("science", "examples/science/passages.jsonl"),
                                            ("completions", "examples/prompts.jsonl")])
def test_the_built_in_recipes_run_against_the_stand_in(name, path):
    recipe = load_recipe(name)()

    async def go() -> int:
        calls = 0
        for item in itertools.islice(recipe.records(ROOT / path), 3):
            assert not isinstance(item, BadInput), item
            calls += len(await _simulate(recipe, item))  # a RecipeError would name what it lacked
        return calls

    assert asyncio.run(go()) > 0


# --- a bug in a recipe stops the dry run --------------------------------------------------------------

RECIPES = '''
import json

import synthtrace


class Typo(synthtrace.Recipe):
    async def process(self, record, llm):
        reply = await llm.chat([{"role": "user", "content": record.data["prompt"]}])
        return [{"id": record.id, "answer": reply.txt}]


class EarlyNumber(synthtrace.Recipe):
    async def process(self, record, llm):
        n = int(record.data["prompt"])  # no answer yet: the stand-in cannot have caused this
        await llm.chat([{"role": "user", "content": str(n)}])
        return []


class BadEstimate(synthtrace.Recipe):
    def estimate(self, record):
        return record.data["calls"], 1, 1

    async def process(self, record, llm):
        return []


class ParsesItsAnswer(synthtrace.Recipe):
    async def process(self, record, llm):
        a = await llm.chat([{"role": "user", "content": record.data["prompt"]}], sample=0)
        n = int(a.text)  # "" from the stand-in: ValueError, as a real run's unparsable answer would
        return [{"id": record.id, "n": n}]


class GivesUp(synthtrace.Recipe):
    async def process(self, record, llm):
        a = await llm.chat([{"role": "user", "content": "judge " + record.data["prompt"]}], max_tokens=10)
        b = await llm.fork().chat([{"role": "user", "content": "again"}], schema={"type": "object"})
        if record.id == "r0":
            raise synthtrace.StructuredOutputError("no verdict", last_text=a.text)
        if record.id == "r1":
            raise synthtrace.BudgetExceeded("over")
        if not b.parsed:
            raise synthtrace.Rejected("empty", tokens=llm.tokens, cost=llm.cost_usd)
        return []
'''


@pytest.fixture
def recipes_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipes.py"
    path.write_text(RECIPES, encoding="utf-8")
    return path


def test_a_bug_in_process_fails_the_dry_run_with_the_record_named(cli, tmp_path, write_jsonl, config_file,
                                                                    recipes_file):
    inp = write_jsonl([{"id": "r0", "prompt": "hello"}, {"id": "r1", "prompt": "again"}])
    out = tmp_path / "run"
    result = cli("run", f"{recipes_file}:Typo", "-i", inp, "-o", out, "--config", config_file(), "--dry-run")
    assert result.exit_code == 1, result.output
    line = next(n for n, text in enumerate(RECIPES.splitlines(), 1) if "reply.txt" in text)
    assert (f"recipe 'typo' failed on record 'r0' ({inp}:1) in process, at {recipes_file}:{line}: "
            "AttributeError: 'Reply' object has no attribute 'txt'") in " ".join(result.stderr.split())
    assert "Traceback" not in result.output and not out.exists()


def test_a_bug_in_the_python_api_dry_run_raises_recipe_error(tmp_path, write_jsonl, config_file, recipes_file):
    inp = write_jsonl([{"id": "r0", "prompt": "1"}, {"id": "r1", "prompt": "two"}])
    with pytest.raises(synthtrace.RecipeError, match=r"record 'r1' \(.*in.jsonl:2\) in process.*ValueError") as e:
        synthtrace.run(f"{recipes_file}:EarlyNumber", inp, tmp_path / "run", config=config_file(), dry_run=True)
    assert isinstance(e.value.error, ValueError) and e.value.__cause__ is e.value.error
    assert (e.value.recipe, e.value.record_id, e.value.line) == ("early-number", "r1", 2)
    with pytest.raises(synthtrace.RecipeError, match=r"record 'r0' .* in estimate.*KeyError: 'calls'"):
        synthtrace.run(f"{recipes_file}:BadEstimate", inp, tmp_path / "run", config=config_file(), dry_run=True)


def test_what_an_empty_answer_makes_a_recipe_do_still_counts(tmp_path, write_jsonl, config_file, recipes_file):
    inp = write_jsonl([{"id": f"r{i}", "prompt": f"p{i}"} for i in range(3)])
    for name, calls in (("ParsesItsAnswer", 3), ("GivesUp", 6)):
        est = synthtrace.run(f"{recipes_file}:{name}", inp, tmp_path / "run", config=config_file(), dry_run=True)
        assert est.simulated and est.records == 3 and est.calls == calls, name


# --- the exports -------------------------------------------------------------------------------------

FAILURES = {"LLMError": "synthtrace.types", "RetryableError": "synthtrace.types", "FatalError": "synthtrace.types",
            "StructuredOutputError": "synthtrace.types", "RunStopped": "synthtrace.types",
            "BudgetExceeded": "synthtrace.types", "EndpointRefused": "synthtrace.types", "Stalled": "synthtrace.types",
            "RecipeError": "synthtrace.types", "ConfigError": "synthtrace.config", "OptionError": "synthtrace.options",
            "RecipeNotFound": "synthtrace.recipe", "RayUnavailable": "synthtrace.engine.ray_run"}


@pytest.mark.parametrize(("name", "module"), sorted(FAILURES.items()))
def test_the_failures_a_user_meets_are_exported(name, module):
    import importlib

    exported = getattr(synthtrace, name)
    assert name in synthtrace.__all__ and name in dir(synthtrace)
    assert exported is getattr(importlib.import_module(module), name)
    assert issubclass(exported, Exception) and (exported.__doc__ or "").strip()


def test_run_raises_the_exported_failures(tmp_path, write_jsonl, config_file):
    inp = write_jsonl([{"id": "r0", "prompt": "p"}])
    with pytest.raises(synthtrace.RecipeNotFound):
        synthtrace.run("no-such-recipe", inp, tmp_path / "run", config=config_file())
    with pytest.raises(synthtrace.OptionError, match="concurrency"):
        synthtrace.run("completions", inp, tmp_path / "run", config=config_file(), concurrency=0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints: [1, 2]\n", encoding="utf-8")
    with pytest.raises(synthtrace.ConfigError):
        synthtrace.run("completions", inp, tmp_path / "run", config=bad)


# --- run() and arun() --------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [api.run, api.arun])
def test_run_and_arun_take_every_run_option_as_a_typed_keyword(fn):
    declared = {s.name: s for s in specs(RunSettings)}
    params = inspect.signature(fn).parameters
    keywords = {n: p for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert list(params)[:3] == ["recipe", "input", "output"]
    assert set(keywords) == set(declared) - {"input", "output"}, "run()/arun() and RunSettings differ"
    assert params[list(params)[-1]].kind is inspect.Parameter.VAR_KEYWORD  # the recipe's own options
    by_field = {f.name: f for f in fields(RunSettings)}
    for name, p in keywords.items():
        assert p.annotation is not p.empty, f"{fn.__name__}({name}=…) has no type"
        f = by_field[name]
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        assert p.default == default or (p.default == () and default == []), \
            f"{fn.__name__}({name}={p.default!r}) but RunSettings.{name} defaults to {default!r}"
