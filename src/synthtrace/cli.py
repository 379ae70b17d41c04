"""The `synthtrace` command: thin — flags and config in, library calls out, a summary printed.

    synthtrace run RECIPE|package.module:Class|file.py --input PATH --output DIR [run options] [recipe options]
    synthtrace recipes
    synthtrace eval medec --input MEDEC.csv --output DIR --model MODEL [common options]
    synthtrace export sft RUN --format qwen3|chatml|messages --out FILE
    synthtrace export hf RUN --out DIR --license ID   ·   synthtrace push DIR OWNER/NAME [--private]
    synthtrace train --data SFT.jsonl --base MODEL --output DIR [options]
    synthtrace merge RUN … -o OUT   ·   synthtrace view RUN [RUN …]   ·   synthtrace report RUN --out report.html
    synthtrace cache stats|prune …
"""

from __future__ import annotations

import gc

# Start-up allocates a few hundred thousand long-lived objects (module and class dicts); collecting
# them over and over slows it down. Collection resumes once the imports are done.
gc.disable()

import asyncio
import atexit
import inspect
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from synthtrace.config import ConfigError, load_dotenv_file
from synthtrace.console import LazyConsole, escape
from synthtrace.version import __version__

out = LazyConsole()
err = LazyConsole(stderr=True)


def _table(*args: Any, **kwargs: Any) -> Any:
    """A rich Table (rich is imported when the first table is printed)."""
    from rich.table import Table

    return Table(*args, **kwargs)

EXIT_BUDGET = 3
EXIT_STALLED = 4

# Parameter types are stateless, so options share them (each click.Path looks its name up through
# gettext when it is built).
EXISTING_PATH = click.Path(exists=True, path_type=Path)


class LazyGroup(click.Group):
    """A group with commands built when they are named (or listed): a command whose flags come from an
    options class imports that class's module then, not at every start-up."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Callable[[], click.Command]] = {}

    def lazy_command(self, name: str) -> Callable[[Callable[[], click.Command]], Callable[[], click.Command]]:
        """Register the decorated function as the builder of command `name`."""
        def register(make: Callable[[], click.Command]) -> Callable[[], click.Command]:
            self.lazy[name] = make
            return make
        return register

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        make = self.lazy.get(name)
        return make() if make is not None else super().get_command(ctx, name)


def options_command(name: str, cls: type, action: Callable[..., None], help: str | None,
                    head: tuple[click.Parameter, ...] = ()) -> click.Command:
    """Command `name` whose flags are options class `cls`'s, after its own parameters `head`: it calls
    `action(options, **head_values)` with the options built from the flags."""
    from synthtrace.options import OptionError, build, specs

    def callback(**values: Any) -> None:
        own = {param.name: values.pop(param.name) for param in head if param.name}
        try:
            options = build(cls, values, where=name)
        except OptionError as e:
            raise click.UsageError(str(e)) from None
        action(options, **own)

    params = [*head, *(spec.click_option() for spec in specs(cls))]
    return click.Command(name, params=params, callback=callback, help=help)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="synthtrace")
@click.pass_context
def main(ctx: click.Context) -> None:
    """synthtrace: verified reasoning-trace training data from your own sources."""
    load_dotenv_file()
    if ctx.invoked_subcommand not in ("run", "eval"):  # those call started() once their imports are done
        started()


def started() -> None:
    """The imports are done: collect again, and never rescan what start-up left behind.

    A run allocates and frees a few dozen objects per request; at Python's default threshold (700) a
    young collection would come every few hundred requests and rescan everything in flight. At 10,000
    it comes far less often at about the same cost each time, and reference cycles still go within
    10,000 allocations.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    gc.enable()


# -- run ------------------------------------------------------------------------------------------

class RecipeGroup(click.Group):
    """`synthtrace run NAME | package.module:Class | path/file.py[:Class]`: each recipe is a command,
    its flags built from the run options and the recipe's own `Options` declaration."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from synthtrace.registry import RECIPES

        return RECIPES.names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from synthtrace.recipe import RecipeNotFound, load_recipe

        try:
            return recipe_command(load_recipe(name), name)
        except RecipeNotFound as e:
            raise click.UsageError(str(e), ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from synthtrace.recipe import RecipeNotFound, load_recipe

        rows = []
        for name in self.list_commands(ctx):
            try:
                rows.append((name, load_recipe(name).description))
            except RecipeNotFound as e:
                rows.append((name, f"(cannot load: {e})"))
        with formatter.section("Recipes (or package.module:Class, or path/to/file.py[:Class])"):
            formatter.write_dl(rows)


@main.group(cls=RecipeGroup)
def run() -> None:
    """Run a recipe over an input file into a run directory (re-run the same command to resume)."""


def recipe_command(cls: Any, name: str, extra: tuple[click.Option, ...] = (),
                   finish: Callable[..., None] | None = None) -> click.Command:
    """The command that runs recipe class `cls`: the run options, then the recipe's own.

    `extra` options are the command's alone; `finish(result, settings, **extra)` runs after the run
    (and its summary), before the exit status is decided.
    """
    from synthtrace.engine.settings import RunSettings
    from synthtrace.options import specs

    run_specs, recipe_specs = specs(RunSettings), specs(cls.Options)
    taken = {flag for spec in run_specs for flag in _flag_names(spec.flags)}
    for spec in recipe_specs:
        clash = taken & set(_flag_names(spec.flags))
        if clash:
            raise click.UsageError(f"recipe {cls.name}: option {spec.name!r} takes {sorted(clash)[0]}, "
                                   "which is a run option; give it other flags")

    def callback(**values: Any) -> None:
        ctx = click.get_current_context()
        run_values = {spec.name: values.pop(spec.name) for spec in run_specs}
        given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        explicit = {spec.name: values.pop(spec.name) for spec in recipe_specs
                    if ctx.get_parameter_source(spec.name) in given}
        for spec in recipe_specs:
            values.pop(spec.name, None)
        result = _run(cls, run_values, explicit)
        if finish is not None and result is not None:
            finish(*result, **values)
        _exit_for(result[0] if result else None)

    params = [*(spec.click_option() for spec in run_specs), *(spec.click_option() for spec in recipe_specs), *extra]
    return click.Command(name, params=params, callback=callback, help=inspect.getdoc(cls) or cls.description,
                         short_help=cls.description)


def _flag_names(flags: tuple[str, ...]) -> list[str]:
    return [name for flag in flags for name in flag.split("/") if name.startswith("-")]


def _run(cls: Any, run_values: dict[str, Any], explicit: dict[str, Any]) -> tuple[Any, Any] | None:
    """Run recipe class `cls` and print the summary: (result, settings), or None after a dry run."""
    from synthtrace import api
    from synthtrace.llm.providers import resolve_model
    from synthtrace.options import OptionError

    started()
    try:
        recipe, settings, config = api.prepare(cls, run_values.pop("input"), run_values.pop("output"), run_values,
                                               explicit)
        resolved = resolve_model(config, settings.model)
    except (ConfigError, OptionError) as e:
        raise click.UsageError(str(e)) from None
    if settings.dry_run:
        from synthtrace.types import RecipeError

        try:
            estimate = _run_async(api.execute(recipe, settings, config))
        except RecipeError as e:  # a bug in the recipe: say where, as a message, and exit 1
            raise click.ClickException(str(e)) from None
        _print_estimate(estimate)
        return None
    if resolved.is_local:
        _announce_local(resolved.model, explicit=settings.model is not None, engine=resolved.engine)
    elif resolved.chosen_by_name:
        err.print(f"[cyan]model:[/cyan] {escape(resolved.model)} → {resolved.endpoint.kind} "
                  f"({escape(', '.join(resolved.endpoint.urls))}), chosen from its name (a config or --base-url "
                  "chooses otherwise)", soft_wrap=True)
    result = _run_async(api.execute(recipe, settings, config, err))
    _print_summary(result, settings)
    return result, settings


def _exit_for(result: Any) -> None:
    if result is None:
        return
    if result.status in ("invalid-input", "error"):
        sys.exit(1)
    if result.status == "budget":
        sys.exit(EXIT_BUDGET)
    if result.status == "stalled":
        sys.exit(EXIT_STALLED)


def _run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: finished rows are kept; run the same command again to resume[/yellow]")
        sys.exit(130)


def _announce_local(model: str, explicit: bool, engine: str) -> None:
    if explicit:
        err.print(f"[cyan]model:[/cyan] {engine} ({escape(model)})", soft_wrap=True)
        return
    err.print(
        "[cyan]No model configured: using the embedded demo model (SmolLM2-135M-Instruct, llama.cpp, offline).[/cyan]\n"
        "It is tiny — good for trying synthtrace, not for training data. Point at a real model with\n"
        "  --base-url http://localhost:8000/v1 --model NAME   (vLLM, Ollama, llama.cpp server, OpenAI…)\n"
        "or a config file with endpoints and aliases (see the README), or --model local:/path/to/model.gguf.",
        soft_wrap=True,
    )


def _print_estimate(est: Any) -> None:
    table = _table(title="dry run: nothing was sent", show_header=False)
    for k in ("records", "bad_input", "calls", "prompt_tokens", "completion_tokens", "model", "provider_model"):
        value = getattr(est, k)
        table.add_row(k.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
    if len(est.by_model) > 1:
        table.add_row("calls by model", escape(" · ".join(f"{m}: {n:,}" for m, n in est.by_model.most_common())))
    cost = f"${est.cost_usd:.4f}" if est.priced else \
        f"unknown (no price for {', '.join(est.unpriced)}; add one under `prices:`)"
    if est.priced and est.simulated:
        cost += " at most (each call's max_tokens, or 512, as its answer)"
    table.add_row("estimated cost", escape(cost))
    if est.priced and est.batch_cost_usd is not None:
        table.add_row("in batches (--batch)", escape(f"${est.batch_cost_usd:.4f}: half price, answers within 24 h"))
    out.print(table)


def _print_summary(result: Any, settings: Any) -> None:
    """The run's figures: a table on a terminal; plain `key: value` lines with --quiet (logs want no
    box drawing, and a quiet run then never imports rich)."""
    st = result.stats
    figures = [("records done", f"{result.records_done:,}" + (f" (+{result.records_skipped:,} from earlier runs)"
                                                              if result.records_skipped else "")),
               ("rejected", f"{result.records_rejected + result.bad_input:,}"
                + (f" ({result.bad_input} bad input lines)" if result.bad_input else ""))]
    if st:
        figures += [("calls", f"{st['calls']:,} sent · {st['replayed']:,} replayed from the journal · "
                              f"{st['retries']} retries · {st['throttled']}×429"),
                    ("tokens", f"{st['prompt_tokens']:,} prompt · {st['completion_tokens']:,} completion"),
                    ("cost", f"${st['cost_usd']:.4f} this run" + (
                        f" (${st['batch_cost_usd']:.4f} in batches at half price, ${st['online_cost_usd']:.4f} online)"
                        if "batches" in st else "") + f" · ${st['cost_usd_total']:.4f} in total")]
        b = st.get("batches")
        if b:
            figures.append(("batches", f"{b['batches']} submitted with {b['items']:,} requests · {b['answered']:,} "
                                       f"answers read · {b['resent']} sent again · {b['online']} asked online · "
                                       f"{b['cut']} cut by max_tokens · {b['failed']} refused"))
    figures.append(("elapsed", f"{result.elapsed_s:.1f} s"))
    figures += [(k.replace("_", " "), str(v)) for k, v in (result.recipe or {}).items()]
    paths = []
    if result.status != "invalid-input":
        paths.append(("rows:    ", result.paths.get("rows", settings.output / "rows.jsonl")))
        if result.records_rejected or result.bad_input:
            paths.append(("rejected:", result.paths.get("rejected", settings.output / "rejected.jsonl")))
        paths += [(f"{label}:".ljust(9), path) for label, path in settings.outputs.items()]
    if settings.quiet:
        print(f"run {result.status}", *(f"  {k}: {v}" for k, v in figures), sep="\n", flush=True)
        for m in result.messages:
            print(m, file=sys.stderr, flush=True)
        for label, path in paths:
            print(label, path, flush=True)
        return
    table = _table(title=f"run {result.status}", show_header=False, title_justify="left")
    for k, v in figures:
        table.add_row(k, escape(v))
    out.print(table)
    for m in result.messages:
        err.print(f"[yellow]{escape(m)}[/yellow]", soft_wrap=True)
    for label, path in paths:
        out.print(f"{label} {escape(str(path))}", soft_wrap=True)


@main.command("recipes")
def recipes_command() -> None:
    """Every recipe `synthtrace run` can run, built in or from an installed plugin, with its options."""
    from synthtrace.options import specs
    from synthtrace.recipe import RecipeNotFound, load_recipe
    from synthtrace.registry import RECIPES

    started()
    for name in RECIPES.names():
        plugin = RECIPES.plugins().get(name)
        origin = "built in" if plugin is None else f"plugin {plugin.value}" + (
            f" ({plugin.dist.name} {plugin.dist.version})" if getattr(plugin, "dist", None) else "")
        head = f"[bold]{escape(name)}[/bold]  [dim]{escape(origin)}[/dim]"
        try:
            cls = load_recipe(name)
        except RecipeNotFound as e:
            out.print(f"{head}\n  [red]cannot load: {escape(str(e))}[/red]", soft_wrap=True)
            continue
        out.print(f"{head}\n  {escape(cls.description)}", soft_wrap=True)
        for spec in specs(cls.Options):
            default = "" if spec.is_flag and not spec.default or spec.default in (None, [], ()) \
                else f" (default: {spec.default})"
            out.print(f"    {escape(', '.join(spec.flags))}  {escape(spec.help)}{escape(default)}", soft_wrap=True)
    out.print("\nAlso: synthtrace run package.module:Class or path/to/file.py[:Class]", soft_wrap=True)


# -- eval -----------------------------------------------------------------------------------------

class EvalGroup(LazyGroup):
    """`eval medec` and other benchmarks by name; any other name is a recipe that can be evaluated."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        return command if command is not None else _recipe_eval_command(name)


# A benchmark is a recipe (its flags built like `run`'s) plus its scoring.
@main.group("eval", cls=EvalGroup)
def eval_group() -> None:
    """Evaluate a model on a benchmark, or on held-out items of any recipe that verifies
    (`synthtrace eval math -i HELDOUT -o OUT --model M`), through the engine (re-run to resume)."""


def _recipe_eval_command(name: str) -> click.Command | None:
    """`synthtrace eval RECIPE`: greedy pass@1 and pass@k with 95 % intervals; --compare another evaluation."""
    from synthtrace.eval.generic import METRICS, NotEvaluable, evaluation_of, score
    from synthtrace.recipe import RecipeNotFound, load_recipe

    try:
        cls = evaluation_of(load_recipe(name))
    except RecipeNotFound:
        return None
    except NotEvaluable as e:
        raise click.UsageError(str(e)) from None

    def finish(result: Any, settings: Any, compare_with: Path | None) -> None:
        if result.status == "invalid-input":
            return
        m = score(settings.output, compare_with)
        table = _table(title=f"{name}: {m['items']:,} items, {m['samples_per_item']} answer(s) each",
                       title_justify="left")
        for col in ("", "estimate", "95 % interval"):
            table.add_column(col, justify="right" if col else "left")
        for key in [k for k in m if k.startswith("pass@")]:
            f = m[key]
            table.add_row(key + (" (greedy)" if key == "pass@1" else ""), f"{f['estimate']:.3f}",
                          f"{f['low']:.3f} – {f['high']:.3f}")
        if compare_with is not None:
            c = m["compared_with"]
            d = c["difference"]
            table.add_section()
            table.add_row(f"pass@1 minus {escape(str(compare_with))}'s", f"{d['estimate']:+.3f}",
                          f"{d['low']:+.3f} – {d['high']:+.3f}")
            table.add_row(f"McNemar exact p ({c['b_only']} better, {c['a_only']} worse of {c['items']})",
                          f"{c['p_value']:.4f}", "")
        out.print(table)
        if m["missing"]:
            err.print(f"[yellow]{len(m['missing']):,} item(s) without an answer (rejected): counted as wrong[/yellow]")
        out.print(f"metrics: {escape(str(settings.output / METRICS))}", soft_wrap=True)

    option = click.Option(["--compare", "compare_with"], type=click.Path(exists=True, file_okay=False, path_type=Path),
                          metavar="OTHER_EVAL", help="An earlier evaluation of the same items: the paired "
                                                     "difference in pass@1, its interval and McNemar's exact test.")
    return recipe_command(cls, name, extra=(option,), finish=finish)


@eval_group.lazy_command("medec")
def _medec_eval_command() -> click.Command:
    """Error detection and correction on MEDEC notes (official CSV), scored as in MEDIQA-CORR 2024.

    The model sees each note as the trained critic does (its system prompt and task); its verdicts go
    to OUTDIR/rows.jsonl, the figures to OUTDIR/metrics.json, the MEDIQA-CORR submission file to
    OUTDIR/submission.txt.
    """
    from synthtrace.eval.medec import MedecEvalRecipe, correction_scorers, evaluate

    def score(result: Any, settings: Any, bleurt_checkpoint: str) -> None:
        if result.status == "invalid-input":
            return
        scorers, skipped = correction_scorers(bleurt_checkpoint)
        metrics = evaluate(settings.input, settings.output, max_records=settings.max_records, scorers=scorers,
                           skipped=skipped)
        _print_eval(metrics, settings.output)

    bleurt = click.Option(["--bleurt-checkpoint"], default="BLEURT-20", show_default=True,
                          help="BLEURT checkpoint directory (used only when the bleurt package is installed).")
    command = recipe_command(MedecEvalRecipe, "medec", extra=(bleurt,), finish=score)
    command.help, command.short_help = inspect.getdoc(_medec_eval_command), None
    return command


_METRIC_NAMES = {"rouge1_f": "ROUGE-1 F", "bertscore": "BERTScore", "bleurt": "BLEURT", "aggregate": "aggregate"}


def _print_eval(m: dict[str, Any], output: Path) -> None:
    from synthtrace.eval.medec import METRICS, SUBMISSION

    def num(value: Any) -> str:
        return "-" if value is None else value if isinstance(value, str) else f"{value:.3f}"

    metrics = [*m["correction_metrics"], "aggregate"] if m["correction_metrics"] else []
    table = _table(title="MEDEC: error detection and correction", title_justify="left",
                   caption="corrections: composite score (1 when both say NA, 0 when one does); "
                           f"published rows: approximate, MEDEC test set — {m['published']['source']}; "
                           f"this input: {m['published'].get('comparable', '')}",
                   caption_justify="left")
    for col in ("", "notes", "flag acc", "sentence acc", *(_METRIC_NAMES.get(k, k) for k in metrics), "unparseable"):
        table.add_column(col, justify="left" if not col else "right")

    def add(label: str, f: dict[str, Any], style: str | None = None) -> None:
        table.add_row(label, f"{f['notes']:,}", num(f["error_flag_accuracy"]), num(f["error_sentence_accuracy"]),
                      *(num(f["correction"][k]["composite"]) for k in metrics), f"{f['unparseable']:,}", style=style)

    model = m["model"] or {}
    add(escape(str(model.get("alias") or model.get("model") or "this model")), m, style="bold")
    for etype, figures in m["by_error_type"].items():
        add(f"  {etype}" + (" (no error)" if etype == "none" else ""), figures)
    table.add_section()
    for row in m["published"]["rows"]:
        table.add_row(escape(row["who"]), "", num(row["error_flag_accuracy"]), num(row["error_sentence_accuracy"]),
                      *("" for _ in metrics), "", style="dim")
    out.print(table)
    if m["unparseable"]:
        truncated = f", {m['unparseable_truncated']:,} of them cut off by --max-tokens" if m["unparseable_truncated"] else ""
        err.print(f"[yellow]{m['unparseable']:,} unparseable answer(s){truncated}: counted as wrong "
                  f"({escape(', '.join(m['unparseable_ids'][:5]))}{' …' if m['unparseable'] > 5 else ''})[/yellow]",
                  soft_wrap=True)
    if m["missing"]:
        err.print(f"[yellow]{m['missing']:,} note(s) without a prediction (rejected or not run yet): counted as "
                  "wrong; re-run the same command to finish[/yellow]", soft_wrap=True)
    for name, why in m["skipped_metrics"].items():
        err.print(f"[yellow]{_METRIC_NAMES.get(name, name)} skipped: {escape(why)}[/yellow]", soft_wrap=True)
    if m["skipped_metrics"] and m["correction_metrics"]:
        used = ", ".join(_METRIC_NAMES.get(k, k) for k in m["correction_metrics"])
        err.print(f"[yellow]aggregate = mean of {used} only: not the shared task's Aggregate "
                  "(ROUGE-1 F, BERTScore, BLEURT)[/yellow]", soft_wrap=True)
    if m.get("altered_ids"):
        ids = m["altered_ids"]
        err.print(f"[yellow]{len(ids):,} correction(s) changed to be read back as they are by the official scorer "
                  f"(backslashes, quotes at the ends, or no word at all; scored as changed): "
                  f"{escape(', '.join(ids[:5]))}{' …' if len(ids) > 5 else ''}[/yellow]", soft_wrap=True)
    for w in m["warnings"]:
        err.print(f"[yellow]warning: {escape(w)}[/yellow]", soft_wrap=True)
    out.print(f"metrics:    {escape(str(output / METRICS))}", soft_wrap=True)
    out.print(f"submission: {escape(str(output / SUBMISSION))}", soft_wrap=True)


# -- export ---------------------------------------------------------------------------------------

@main.group(cls=LazyGroup)
def export() -> None:
    """Turn a run directory into training files."""


@export.lazy_command("sft")
def _export_sft_command() -> click.Command:
    """Chat-format SFT files from RUN (a run directory or its rows.jsonl), split by source.

    Each row becomes an example through its recipe's `to_sft`.
    """
    from synthtrace.export.sft import ExportOptions, export_sft

    return _export_command("sft", ExportOptions, export_sft, _print_export, inspect.getdoc(_export_sft_command),
                           click.Path(dir_okay=False, path_type=Path),
                           "Training file (JSONL); validation goes beside it as NAME.val.jsonl.")


def _export_command(name: str, options_class: type, export_fn: Any, show: Any, doc: str | None,
                    out_type: click.Path, out_help: str) -> click.Command:
    """An `export` subcommand: RUN and --out, then the options of `options_class`; export errors as messages."""
    from synthtrace.export.sft import ExportError

    def action(options: Any, run_path: Path, out: Path) -> None:
        try:
            result = export_fn(run_path, out, options)
        except ExportError as e:
            raise click.ClickException(str(e)) from None
        show(result)

    # RUN and --out are where the export reads and writes, not options of the export.
    head = (click.Argument(["run_path"], metavar="RUN", type=EXISTING_PATH),
            click.Option(["--out", "-o", "out"], required=True, type=out_type, help=out_help))
    return options_command(name, options_class, action, doc, head)


@export.lazy_command("hf")
def _export_hf_command() -> click.Command:
    """A Hugging Face dataset from RUN (a finished run directory) in DIR: Parquet configs `default` (chat
    messages, ready to train), `metadata` (verdicts, tokens, $ per row) and `rejected` (with reasons),
    split by input file, and a card (README.md) that says how the data was made.

    A card already in DIR is merged, not overwritten: fields and text added to it are kept.
    `synthtrace push DIR REPO` publishes it.
    """
    from synthtrace.export.hf import HfOptions, export_hf

    return _export_command("hf", HfOptions, export_hf, _print_export_hf, inspect.getdoc(_export_hf_command),
                           click.Path(file_okay=False, path_type=Path),
                           "The dataset directory (created; its configs are replaced, its README.md merged).")


def _print_export_hf(result: Any) -> None:
    f = result.facts
    table = _table(title="export hf", show_header=False, title_justify="left")
    table.add_row("input records", f"{f.input_records:,}")
    table.add_row("rows generated", f"{f.rows:,} from {f.records_with_rows:,} records")
    table.add_row("rows verified", f"{f.verified['verified']:,}")
    table.add_row("rows exported", f"{f.exported:,}")
    for config, splits in result.splits.items():
        table.add_row(f"  {config}", " · ".join(f"{split}: {n:,}" for split, n in splits.items()))
    table.add_row("rejected in the run", f"{sum(f.rejected.values()):,}")
    for reason, n in (result.skipped + result.removed).most_common():
        table.add_row("left out at export", f"{n:,} {escape(reason)}")
    table.add_row("licence", escape(result.license))
    out.print(table)
    for line in result.bad_lines:
        err.print(f"[yellow]warning: {escape(line)}[/yellow]", soft_wrap=True)
    if result.bad_line_count > len(result.bad_lines):
        err.print(f"[yellow]warning: … and {result.bad_line_count - len(result.bad_lines):,} more unreadable "
                  "lines[/yellow]")
    for w in result.warnings:
        err.print(f"[yellow]warning: {escape(w)}[/yellow]", soft_wrap=True)
    if result.removed_path is not None:
        out.print(f"removed:  {escape(str(result.removed_path))} (with the evidence)", soft_wrap=True)
    out.print(f"dataset:  {escape(str(result.out))} (card: README.md)", soft_wrap=True)


def _print_export(result: Any) -> None:
    table = _table(title="export sft", show_header=False, title_justify="left")
    table.add_row("rows read", f"{result.rows_read:,}")
    for split, name in (("train", "train"), ("val", "validation")):
        if split == "val" and result.val_path is None:
            continue
        kinds = " · ".join(f"{kind}: {n:,}" for (s, kind), n in sorted(result.by_kind.items()) if s == split)
        table.add_row(name, f"{result.examples[split]:,} examples from {result.groups[split]:,} "
                      f"source{'' if result.groups[split] == 1 else 's'}"
                      + (f" ({escape(kinds)})" if kinds else ""))
    table.add_row("skipped", f"{sum(result.skipped.values()):,}")
    for reason, n in result.skipped.most_common():
        table.add_row("", f"{n:,} {escape(reason)}")
    if result.removed_path is not None:
        table.add_row("removed", f"{sum(result.removed.values()):,} (with their evidence in "
                                 f"{escape(str(result.removed_path))})")
        for reason, n in result.removed.most_common():
            table.add_row("", f"{n:,} {escape(reason)}")
    if result.rebuilt_prompts:
        table.add_row("prompts rebuilt", f"{result.rebuilt_prompts:,} (rows without a stored prompt)")
    if result.bad_line_count:
        table.add_row("unreadable lines", f"{result.bad_line_count:,} (skipped)")
    out.print(table)
    for line in result.bad_lines:
        err.print(f"[yellow]warning: {escape(line)}[/yellow]", soft_wrap=True)
    if result.bad_line_count > len(result.bad_lines):
        err.print(f"[yellow]warning: … and {result.bad_line_count - len(result.bad_lines):,} more unreadable "
                  "lines[/yellow]")
    for w in result.warnings:
        err.print(f"[yellow]warning: {escape(w)}[/yellow]", soft_wrap=True)
    out.print(f"train:      {escape(str(result.train_path))}", soft_wrap=True)
    if result.val_path is not None:
        out.print(f"validation: {escape(str(result.val_path))}", soft_wrap=True)


# -- push -----------------------------------------------------------------------------------------

@main.command("push")
@click.argument("directory", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("repo_id", metavar="REPO")
@click.option("--private", is_flag=True, help="Create the repo private (a repo that exists keeps its visibility).")
def push_command(directory: Path, repo_id: str, private: bool) -> None:
    """Publish DIR (written by `export hf`) to the Hugging Face Hub as dataset REPO (OWNER/NAME).

    The card already on the Hub is merged, not overwritten: what was added to it there stays. The token
    comes from HF_TOKEN in the environment (or `hf auth login`), read by huggingface_hub; it is never
    written anywhere.
    """
    from synthtrace.export.push import ExportError, push

    try:
        r = push(directory, repo_id, private=private)
    except ExportError as e:  # PushError, or huggingface_hub not installed
        raise click.ClickException(str(e)) from None
    note = " (merged with the card already there)" if r.merged_with_hub_card else ""
    out.print(f"pushed {r.files:,} file(s) to {escape(r.url)}{note}", soft_wrap=True)
    if r.commit_url:
        out.print(f"commit: {escape(r.commit_url)}", soft_wrap=True)


# -- merge ----------------------------------------------------------------------------------------

@main.command("merge")
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, type=EXISTING_PATH)
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The merged run directory (written whole; merging again gives the same files).")
def merge_command(runs: tuple[Path, ...], output: Path) -> None:
    """Join run directories into one: the shards of `run --shard I/N` (give their parent directory), or
    any runs of the same recipe, prompts and options. Rows, rejected entries, journals, accounting."""
    from synthtrace.engine.shards import MergeError, merge

    try:
        r = merge(list(runs), output)
    except MergeError as e:
        raise click.ClickException(str(e)) from None
    out.print(f"merged {len(r.runs)} run(s): {r.records:,} records ({r.rows:,} rows) · {r.rejected:,} rejected "
              f"· {r.calls:,} calls in the journal · ${r.cost_usd:.4f}", soft_wrap=True)
    if r.duplicates:
        err.print(f"[yellow]{r.duplicates:,} record(s) were in more than one run: kept once[/yellow]")
    if r.missing:
        err.print(f"[yellow]missing: {escape(', '.join(r.missing))} (the merged run is partial)[/yellow]",
                  soft_wrap=True)
    for run in r.incomplete:
        err.print(f"[yellow]{escape(run)} did not finish (its manifest does not say complete)[/yellow]",
                  soft_wrap=True)
    out.print(f"rows:    {escape(str(output / 'rows.jsonl'))}", soft_wrap=True)


# -- verify ---------------------------------------------------------------------------------------

@main.command("verify")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--verifier", "verifier", multiple=True, type=click.Choice(["exact", "number", "choice", "math"]),
              help="The rungs to check with, in order (repeat the flag). Default: exact, number, choice, math.")
@click.option("--apply", is_flag=True, help="Rewrite rows.jsonl and rejected.jsonl with the new verdicts.")
def verify_command(run: Path, verifier: tuple[str, ...], apply: bool) -> None:
    """Check every stored sample of RUN again, from its journal: no model is called. Lists the verdicts
    that flipped; with --apply, rows whose answer no longer verifies are marked verified: false."""
    from synthtrace.export.reverify import DEFAULT, reverify

    try:
        r = _run_async(reverify(run, verifier or DEFAULT, apply=apply))
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    table = _table(title=f"verdicts that flipped: {len(r.flips):,} of {r.samples:,} samples")
    for col in ("where", "record", "sample", "before", "after", "rung", "why"):
        table.add_column(col)
    for f in r.flips[:50]:
        table.add_row(f.where, escape(f.record), str(f.sample), f.before, f.after.verdict.value, f.after.rung,
                      escape(f.after.reason[:60]))
    out.print(table)
    counts = ", ".join(f"{n:,} {v}" for v, n in r.by_verdict.most_common())
    out.print(f"{r.samples:,} samples checked again ({counts or 'none'}); {r.missing:,} no longer in the journal",
              soft_wrap=True)
    if r.flips:
        verb = "marked" if apply else "would be marked"
        out.print(f"{r.unverified_rows:,} row(s) {verb} verified: false" +
                  ("" if apply else " — run with --apply to rewrite the rows"), soft_wrap=True)
    if r.rescued:
        out.print(f"{len(r.rescued):,} rejected record(s) now have a verified sample ({escape(', '.join(r.rescued[:5]))}"
                  f"{' …' if len(r.rescued) > 5 else ''}): run them again to make rows", soft_wrap=True)


# -- batches --------------------------------------------------------------------------------------

@main.group("batch")
def batch_group() -> None:
    """The provider batches of a run made with --batch: how far they are, and cancelling them."""


def _print_batches(run: Path, cancel: bool) -> None:
    import json

    from synthtrace.engine.batches import run_batches

    started()
    try:
        batches = _run_async(run_batches(run, cancel=cancel))
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    if not batches:
        out.print(f"{escape(str(run))}: no batches")
        return
    for b in batches:
        live = b["live"]
        status = live.status if live is not None else (b["status"] or b["state"])
        counts = live.counts if live is not None else (json.loads(b["counts"]) if b["counts"] else {})
        shown = " · ".join(f"{k} {v:,}" for k, v in counts.items() if v)
        line = (f"{b['local_id']}  {b['endpoint']}  {b['batch_id'] or '(not created)'}  {b['requests']:,} requests  "
                f"{'read' if b['state'] == 'collected' else status}" + (f"  ({shown})" if shown else ""))
        if b["cancelled"]:
            line += "  — cancelled: the next run reads what it answered and asks the rest again"
        if b.get("error"):
            line += f"  — cannot read it: {b['error']}"
        out.print(escape(line), soft_wrap=True)


@batch_group.command("status")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
def batch_status_command(run: Path) -> None:
    """Each batch of RUN: its provider id, requests, and status as the provider says it now."""
    _print_batches(run, cancel=False)


@batch_group.command("cancel")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
def batch_cancel_command(run: Path) -> None:
    """Cancel RUN's batches still running (no question asked). What they answered is kept: the next
    run of the same command reads it and asks the rest again."""
    _print_batches(run, cancel=True)


# -- view and report ------------------------------------------------------------------------------

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@main.command("view")
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False,
                                                                                    path_type=Path))
@click.option("--port", "-p", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port to serve on (0: any free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback lets other machines read the run.")
def view_command(runs: tuple[Path, ...], port: int, host: str) -> None:
    """A private web page over run directories: rows and rejections, search, filters, one example at a time."""
    from synthtrace.view.server import ViewServer

    if host not in LOOPBACK:
        err.print(f"[bold yellow]warning:[/bold yellow] serving on {escape(host)}: anyone who can reach this "
                  "machine can read these runs", soft_wrap=True)
    for run in runs:
        if not (run / "view-index.db").exists():
            err.print(f"indexing {escape(str(run))} (the first time only) …", soft_wrap=True)
    try:
        server = ViewServer(list(runs), host=host, port=port)
    except (OSError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    for run in server.runs:
        d = run.describe()
        err.print(f"{escape(d['path'])}: {d['rows']:,} rows · {d['rejected']:,} rejected", soft_wrap=True)
    out.print(f"synthtrace view: {server.url}  (Ctrl-C to stop)", soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command("report")
@click.argument("run", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "-o", "target", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write (self-contained: it opens offline).")
@click.option("--sample", default=20, show_default=True, type=click.IntRange(0, 500), help="Rows shown in full.")
@click.option("--removed", "removed", metavar="FILE", multiple=True, type=EXISTING_PATH,
              help="An export's NAME.removed.jsonl: what decontamination and --dedup took out, with the evidence. "
                   "Repeatable.")
def report_command(run: Path, target: Path, sample: int, removed: tuple[Path, ...]) -> None:
    """One self-contained HTML file about a run: its funnel, scores, grades, mix, cost over time, a sample."""
    from synthtrace.view.report import write_report

    try:
        write_report(run, target, sample=sample, removed=list(removed))
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    out.print(f"report: {escape(str(target))}", soft_wrap=True)


# -- train ----------------------------------------------------------------------------------------

@main.lazy_command("train")
def _train_command() -> click.Command:
    """LoRA fine-tuning: TRL's SFTTrainer on exported SFT data (loss on the assistant turn only), or with
    --method grpo TRL's GRPO on problems with references, the verifier as reward."""
    from synthtrace.train.lora import TrainError, TrainOptions, train
    from synthtrace.train.sft import TrainDataError

    def action(options: Any) -> None:
        try:
            result = train(options)
        except (TrainError, TrainDataError) as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted: run the same command again to resume from the last checkpoint[/yellow]")
            sys.exit(130)
        _print_train(result)

    return options_command("train", TrainOptions, action, inspect.getdoc(_train_command))


def _print_train(result: Any) -> None:
    table = _table(title="train", show_header=False, title_justify="left")
    table.add_row("device", f"{result.device} ({result.dtype})")
    table.add_row("examples", f"{result.train_examples:,} training" + (f" · {result.eval_examples:,} evaluation"
                                                                       if result.eval_examples else ""))
    table.add_row("steps", f"{result.steps:,}" + (f" (resumed from {escape(result.resumed_from)})"
                                                  if result.resumed_from else ""))
    if result.losses:
        (_, first), (_, last) = result.losses[0], result.losses[-1]
        table.add_row("training loss", f"{first:.4f} → {last:.4f}")
    if result.eval_loss is not None:
        table.add_row("evaluation loss", f"{result.eval_loss:.4f}")
    if result.rewards:
        (_, first), (_, last) = result.rewards[0], result.rewards[-1]
        table.add_row("verifier reward", f"{first:.3f} → {last:.3f} (mean per step)")
    table.add_row("elapsed", f"{result.runtime_s:.1f} s")
    out.print(table)
    for w in result.warnings:
        err.print(f"[yellow]warning: {escape(w)}[/yellow]", soft_wrap=True)
    out.print(f"adapter: {escape(str(result.output))}", soft_wrap=True)
    if result.merged is not None:
        out.print(f"merged:  {escape(str(result.merged))}", soft_wrap=True)


# -- cache ----------------------------------------------------------------------------------------

@main.group()
def cache() -> None:
    """Inspect or prune request journals (a run dir's journal.db)."""


def _journal_path(path: Path) -> Path:
    return path / "journal.db" if path.is_dir() else path


@cache.command("stats")
@click.argument("paths", nargs=-1, required=True, type=EXISTING_PATH)
def cache_stats(paths: tuple[Path, ...]) -> None:
    """Calls, tokens, cost and size per model in each journal (a run dir or a journal.db)."""
    from synthtrace.engine.journal import Journal

    for path in paths:
        j = Journal(_journal_path(path))
        table = _table(title=str(_journal_path(path)))
        for col in ("endpoint", "model", "calls", "prompt tok", "completion tok", "cost $", "MB"):
            table.add_column(col, justify="right" if col not in ("endpoint", "model") else "left")
        for s in j.stats():
            table.add_row(s["endpoint"], s["model"], f"{s['calls']:,}", f"{s['prompt_tokens']:,}",
                          f"{s['completion_tokens']:,}", f"{s['cost_usd']:.4f}", f"{s['bytes'] / 1e6:.2f}")
        j.close()
        out.print(table)


@cache.command("prune")
@click.argument("path", type=EXISTING_PATH)
@click.option("--older-than", type=str, help="Age such as 30d, 12h, 90m.")
@click.option("--model", help="Only entries for this provider model id.")
@click.option("--all", "prune_all", is_flag=True, help="Remove every entry.")
def cache_prune(path: Path, older_than: str | None, model: str | None, prune_all: bool) -> None:
    """Remove journal entries (later runs will pay for those calls again)."""
    from synthtrace.engine.journal import Journal
    from synthtrace.options import parse_duration

    if not (older_than or model or prune_all):
        raise click.UsageError("say what to prune: --older-than AGE, --model ID or --all")
    try:
        seconds = parse_duration(older_than, "--older-than")
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    j = Journal(_journal_path(path))
    n = j.prune(seconds, model)
    j.close()
    out.print(f"removed {n:,} entries from {_journal_path(path)}")


def entry_point() -> None:
    """The `synthtrace` command: `main`, then an exit without the interpreter's teardown.

    Tearing down frees every module and object one by one, about as long as a whole run's start-up
    once a run has loaded asyncio, sqlite3 and the rest. By now
    every file synthtrace wrote is closed, so the exit flushes stdout and stderr, runs the atexit
    handlers as a normal exit would, and ends the process. If another thread is still alive (a normal
    exit would wait for it), it exits normally instead.
    """
    try:
        main.main(prog_name="synthtrace")
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    if threading.active_count() > 1:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a reader that went away (e.g. `| head`)
            pass
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry_point()
