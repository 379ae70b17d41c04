"""Running a recipe from Python: `synthtrace.run(...)` in a script, `await synthtrace.arun(...)` in a loop.

    result = synthtrace.run("medec", "notes.csv", "runs/medec", model="gpt4o", max_usd=5)
    result = await synthtrace.arun(MyRecipe(samples=4), "in.jsonl", "runs/mine", base_url=URL, model="qwen")

The keyword arguments are the options of `synthtrace run`, named like its flags: the run's, each
a typed parameter of `run` and `arun` (the fields of `RunSettings`), and, when the recipe is given
by class or name, the recipe's own (`samples=4`), checked the same way. The CLI runs through
`prepare` and `execute` too.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from synthtrace.config import Config, ConfigError, load_config, with_cli_endpoint
from synthtrace.engine.settings import RunSettings, parse_duration
from synthtrace.engine.shards import parse_shard, shard_dir
from synthtrace.llm.providers import check_endpoints, resolve_model
from synthtrace.options import OptionError, build, specs
from synthtrace.recipe import Recipe, load_recipe

if TYPE_CHECKING:
    from synthtrace.console import LazyConsole
    from synthtrace.engine.estimate import Estimate
    from synthtrace.engine.runner import RunResult


def run(recipe: Recipe | type[Recipe] | str, input: str | Path, output: str | Path, *,
        config: str | Path | None = None, model: str | None = None, base_url: str | Sequence[str] = (),
        concurrency: int | None = None, rpm: float | None = None, tpm: float | None = None,
        max_records: int | None = None, max_usd: float | None = None, dry_run: bool = False, fresh: bool = False,
        strict: bool = False, quiet: bool = False, shard: str | None = None,
        decontaminate_against: Sequence[str | Path] = (), batch: bool = False, batch_deadline: str | None = None,
        batch_retry_length: bool = False, ray: str | None = None, ray_workers: int | None = None,
        on_stall: Literal["wait", "stop"] | None = None, stall_after: float | None = None,
        **recipe_options: Any) -> RunResult | Estimate:
    """Run `recipe` over `input` into the run directory `output`; re-running the same call resumes.

    `recipe` is an instance, a `Recipe` subclass, or what `synthtrace run` takes (a name,
    `package.module:Class`, `path/file.py[:Class]`); a class or a name gets its options from the
    config's `recipes.NAME:`, and from `recipe_options` (`samples=4`). The other keyword arguments
    are `synthtrace run`'s flags (`RunSettings`): `base_url` takes one URL or several (replicas).
    Returns the `RunResult` (status, counts, cost, paths), or with `dry_run=True` the `Estimate`
    (a bug in the recipe raises `RecipeError` there). Inside a running event loop (a notebook) use
    `await arun(...)`.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("synthtrace.run() was called inside a running event loop (a notebook?): "
                           "use `await synthtrace.arun(...)` there")
    coro = arun(recipe, input, output, **_given(locals()), **recipe_options)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def arun(recipe: Recipe | type[Recipe] | str, input: str | Path, output: str | Path, *,
               config: str | Path | None = None, model: str | None = None, base_url: str | Sequence[str] = (),
               concurrency: int | None = None, rpm: float | None = None, tpm: float | None = None,
               max_records: int | None = None, max_usd: float | None = None, dry_run: bool = False,
               fresh: bool = False, strict: bool = False, quiet: bool = False, shard: str | None = None,
               decontaminate_against: Sequence[str | Path] = (), batch: bool = False,
               batch_deadline: str | None = None, batch_retry_length: bool = False, ray: str | None = None,
               ray_workers: int | None = None, on_stall: Literal["wait", "stop"] | None = None,
               stall_after: float | None = None, **recipe_options: Any) -> RunResult | Estimate:
    """`run`, for code already inside an event loop: `result = await synthtrace.arun(...)`."""
    recipe, settings, cfg = prepare(recipe, input, output, {**_given(locals()), **recipe_options})
    return await execute(recipe, settings, cfg)


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The run options among a call's `values` (its locals) that are not at their defaults: what it was given."""
    return {k: values[k] for k, default in _RUN_DEFAULTS.items() if values[k] is not default and values[k] != default}


# run()'s keyword-only parameters, the run options, and their defaults (tests check they match RunSettings)
_RUN_DEFAULTS = {name: p.default for name, p in inspect.signature(run).parameters.items() if p.kind is p.KEYWORD_ONLY}


def prepare(recipe: Recipe | type[Recipe] | str, input: str | Path, output: str | Path,
            run_options: Mapping[str, Any], recipe_options: Mapping[str, Any] | None = None
            ) -> tuple[Recipe, RunSettings, Config]:
    """The recipe, the run's settings and its config, checked; nothing is run yet. `recipe_options`
    (flags given on a command line) win over the config's `recipes.NAME:`."""
    names = {spec.name for spec in specs(RunSettings)}
    recipe_options = {**{k: v for k, v in run_options.items() if k not in names}, **(recipe_options or {})}
    given = {k: v for k, v in run_options.items() if k in names}
    if isinstance(given.get("base_url"), str):  # one URL, as a person writes it
        given["base_url"] = [given["base_url"]]
    settings = build(RunSettings, {"input": input, "output": output, **given}, where="run")
    if settings.shard:
        try:
            index, shards = parse_shard(settings.shard)
        except ValueError as e:
            raise OptionError(str(e)) from None
        settings.output = shard_dir(settings.output, index, shards)
    try:
        parse_duration(settings.batch_deadline)
    except ValueError as e:
        raise OptionError(str(e)) from None
    if settings.ray is not None:
        from synthtrace.engine.ray_run import check

        try:
            check(settings)
        except ValueError as e:
            raise OptionError(str(e)) from None
    config = with_cli_endpoint(check_endpoints(load_config(settings.config)), settings.base_url)
    if isinstance(recipe, Recipe):
        if recipe_options:
            raise OptionError(f"run: unknown option {next(iter(recipe_options))!r} (run options: {', '.join(names)}; "
                              f"a recipe instance has its options already: {type(recipe).__name__}(…))")
    else:
        recipe = instantiate(load_recipe(recipe) if isinstance(recipe, str) else recipe, config, recipe_options)
    recipe.prepare(settings)
    resolve_model(config, settings.model)  # a model no endpoint serves fails now, not on the first record
    return recipe, settings, config


def instantiate(cls: type[Recipe], config: Config, explicit: Mapping[str, Any]) -> Recipe:
    """`cls` with its options: defaults, then the config's `recipes.NAME:`, then `explicit`."""
    if not (isinstance(cls, type) and issubclass(cls, Recipe)):
        raise TypeError(f"expected a synthtrace.Recipe (instance, subclass or reference), got {cls!r}")
    from_config = config.recipes.get(cls.name) or {}
    where = f"{config.source or 'config'}: recipes.{cls.name}"
    if not isinstance(from_config, dict):
        raise ConfigError(f"{where}: expected a mapping of option names to values")
    try:
        build(cls.Options, from_config, where=where)
    except OptionError as e:
        raise ConfigError(str(e)) from None
    return cls(**{**from_config, **explicit})


async def execute(recipe: Recipe, settings: RunSettings, config: Config,
                  console: LazyConsole | None = None) -> RunResult | Estimate:
    if settings.dry_run:
        from synthtrace.engine.estimate import estimate_run

        return await estimate_run(recipe, settings, config)
    if settings.ray is not None:
        from synthtrace.engine.ray_run import run_on_ray

        return await run_on_ray(recipe, settings, config, console)
    from synthtrace.engine.runner import run_recipe

    return await run_recipe(recipe, settings, config, console)
