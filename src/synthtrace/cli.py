"""The `synthtrace` command: thin — flags and config in, library calls out, a summary printed.

    synthtrace run RECIPE --input PATH --output DIR [common options] [recipe options]
    synthtrace eval medec --input MEDEC.csv --output DIR --model MODEL [common options]
    synthtrace export sft RUN --format qwen3|chatml|messages --out FILE
    synthtrace train --data SFT.jsonl --base MODEL --output DIR [options]
    synthtrace cache stats|prune …
"""

from __future__ import annotations

import gc

# Start-up allocates a few hundred thousand long-lived objects (module and class dicts); collecting
# them over and over costs ~15 ms of a ~0.3 s start. Collection resumes once the imports are done.
gc.disable()

import asyncio
import atexit
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from synthtrace import __version__
from synthtrace.config import Config, ConfigError, load_config, load_dotenv_file, resolve_model, with_cli_endpoint
from synthtrace.console import LazyConsole, escape
from synthtrace.export import FORMATS
from synthtrace.train import LORA_TARGETS

out = LazyConsole()
err = LazyConsole(stderr=True)


def _table(*args: Any, **kwargs: Any) -> Any:
    """A rich Table (rich is imported when the first table is printed)."""
    from rich.table import Table

    return Table(*args, **kwargs)

EXIT_BUDGET = 3

# Parameter types are stateless, so options share them: each click.Path looks its name up through
# gettext when built (~0.07 ms), and the commands would otherwise build 19 of them at start-up.
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING_PATH = click.Path(exists=True, path_type=Path)
ANY_PATH = click.Path(path_type=Path)


def _common_run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--input", "-i", "--input-file", "input_path", required=True, type=EXISTING_FILE,
                     help="Input file."),
        click.option("--output", "-o", required=True, type=ANY_PATH, help="Run directory."),
        click.option("--config", "config_path", type=EXISTING_FILE,
                     help="YAML config (default: ./synthtrace.yaml, ~/.config/synthtrace/config.yaml)."),
        click.option("--model", "-m", help="Model alias, provider id, `local`, `local:/path/model.gguf`, `hf:DIR` or "
                                           "`hf:DIR+ADAPTER_DIR`."),
        click.option("--base-url", help="OpenAI-compatible endpoint (key from SYNTHTRACE_API_KEY or OPENAI_API_KEY)."),
        click.option("--concurrency", "-c", type=click.IntRange(1), help="Requests in flight per endpoint."),
        click.option("--rpm", type=click.FloatRange(0, min_open=True), help="Requests-per-minute budget."),
        click.option("--tpm", type=click.FloatRange(0, min_open=True), help="Tokens-per-minute budget."),
        click.option("--max-records", type=click.IntRange(1), help="Only the first N input records."),
        click.option("--max-usd", type=click.FloatRange(0), help="Stop cleanly before spending more than this."),
        click.option("--dry-run", is_flag=True, help="Estimate calls, tokens and cost from the input; send nothing."),
        click.option("--fresh", is_flag=True, help="Ignore earlier results in the run dir and the journal."),
        click.option("--strict", is_flag=True, help="Stop before running anything if any input line is bad."),
        click.option("--quiet", "-q", is_flag=True, help="Log lines instead of a progress bar."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="synthtrace")
@click.pass_context
def main(ctx: click.Context) -> None:
    """synthtrace: verified reasoning-trace training data from your own sources."""
    load_dotenv_file()
    if ctx.invoked_subcommand not in ("run", "eval"):  # those call started() once their imports are done
        started()


def started() -> None:
    """The imports are done: collect again, and never rescan what start-up left behind.

    A run allocates and frees a few dozen objects per request; with Python's default threshold (700)
    a young collection came every ~150 requests and rescanned everything in flight each time, about
    a tenth of the engine's CPU. At 10,000 it comes ~15 times less often and costs about the same
    each time (what is in flight), and reference cycles still go within 10,000 allocations.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    gc.enable()


@main.group()
def run() -> None:
    """Run a recipe over an input file into a run directory (re-run the same command to resume)."""


@run.command("completions")
@_common_run_options
@click.option("--system", help="System prompt for `prompt` lines.")
@click.option("--temperature", type=float, help="Default temperature (a line's own value wins).")
@click.option("--max-tokens", type=click.IntRange(1), help="Default max tokens (a line's own value wins).")
def run_completions(system: str | None, temperature: float | None, max_tokens: int | None, **common: Any) -> None:
    """One completion per input line: {"id", "prompt"} or {"id", "messages"} plus optional params."""
    from synthtrace.recipes.completions import CompletionsRecipe

    execute(CompletionsRecipe(system=system, temperature=temperature, max_tokens=max_tokens), **common)


@run.command("medec")
@_common_run_options
@click.option("--samples", "-k", default=3, show_default=True, type=click.IntRange(1, 10),
              help="Independent critic attempts per note (rising temperature), each verified.")
@click.option("--hint-on-failure", is_flag=True, help="One last critic attempt with the reference given (kept, hinted: true).")
@click.option("--keep-unverified", is_flag=True, help="Keep critic traces that failed verification (verified: false).")
@click.option("--min-similarity", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Minimum ROUGE-1 F of the critic's correction against the reference.")
@click.option("--critic-model", help="Model for critic traces (default: --model).")
@click.option("--generator-model", help="Model for generator traces (default: --model).")
@click.option("--max-tokens", default=2048, show_default=True, type=click.IntRange(16))
def run_medec(samples: int, hint_on_failure: bool, keep_unverified: bool, min_similarity: float,
              critic_model: str | None, generator_model: str | None, max_tokens: int, **common: Any) -> None:
    """Critic and generator traces from MEDEC notes (official CSV or pairs JSONL), critics verified."""
    from synthtrace.recipes.medec.recipe import MedecRecipe

    execute(MedecRecipe(samples=samples, hint_on_failure=hint_on_failure, min_similarity=min_similarity,
                        critic_model=critic_model, generator_model=generator_model, max_tokens=max_tokens,
                        keep_unverified=keep_unverified), **common)


@run.command("science")
@_common_run_options
@click.option("--traces-per-sample", default=2, show_default=True, type=click.IntRange(1, 8),
              help="Questions traced per passage, spread over the question types.")
@click.option("--traces-per-question", default=1, show_default=True, type=click.IntRange(1, 8),
              help="Traces per question, each a different sample (own sample index and temperature).")
@click.option("--max-traces", type=click.IntRange(1), help="Stop after about this many traces (whole passages).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="--no-resume is --fresh.")
@click.option("--quality-check", is_flag=True, help="A judge panel scores each trace; weak ones are redone.")
@click.option("--min-quality-score", default=7.0, show_default=True, type=click.FloatRange(1, 10),
              help="Accept a trace when the judges' mean overall score (1-10) reaches this.")
@click.option("--max-regenerations", default=2, show_default=True, type=click.IntRange(0, 5),
              help="Redos of a trace the judges reject.")
@click.option("--judge-model", "judges", multiple=True,
              help="A judge (repeat for a panel; default: recipes.science.judges in the config, else --model).")
@click.option("--grade-answers", is_flag=True, help="Six 0-1 answer grades plus overall per trace, for RL.")
@click.option("--grader-model", help="Model for answer grades (default: recipes.science.grader, else --model).")
@click.option("--passage-tokens", default=1500, show_default=True, type=click.IntRange(200),
              help="Longer texts are split on paragraph boundaries into passages of at most this many tokens.")
@click.option("--max-tokens", default=4096, show_default=True, type=click.IntRange(64),
              help="Max tokens of the assembled trace (and the cap of every other stage).")
def run_science(traces_per_sample: int, traces_per_question: int, max_traces: int | None, resume: bool,
                quality_check: bool, min_quality_score: float, max_regenerations: int, judges: tuple[str, ...],
                grade_answers: bool, grader_model: str | None, passage_tokens: int, max_tokens: int,
                **common: Any) -> None:
    """Questions, multi-stage reasoning traces and answers from scientific passages (JSONL with `text`).

    --output DIR keeps the run there; --output FILE.json or FILE.jsonl also writes the traces in the
    science tool's format (kept in step while the run goes), with the run in FILE.json.run/.
    """
    from synthtrace.recipes.science.output import SUFFIXES, TraceFile, run_dir_for
    from synthtrace.recipes.science.recipe import ScienceRecipe

    def recipe(config: Config) -> ScienceRecipe:
        options = config.recipes.get("science", {})
        return ScienceRecipe(traces_per_sample=traces_per_sample, traces_per_question=traces_per_question,
                             passage_tokens=passage_tokens, quality_check=quality_check,
                             min_quality_score=min_quality_score, max_regenerations=max_regenerations,
                             judges=list(judges) or list(options.get("judges") or []), grade_answers=grade_answers,
                             grader_model=grader_model or options.get("grader"), max_tokens=max_tokens)

    target: Path = common["output"]
    common["fresh"] = common["fresh"] or not resume
    if max_traces is not None:
        per_passage = traces_per_sample * traces_per_question
        common["max_records"] = min(common["max_records"] or max_traces, -(-max_traces // per_passage))
    publish = None
    if target.suffix in SUFFIXES:
        info = {"model": common["model"] or "default", "input_file": str(common["input_path"]),
                "traces_per_sample": traces_per_sample, "traces_per_question": traces_per_question,
                "quality_check": quality_check, "min_quality_score": min_quality_score if quality_check else None,
                "grade_answers": grade_answers, "run_dir": str(run_dir_for(target))}
        publish = TraceFile(target, info, max_traces).publish
        common["output"] = run_dir_for(target)
    execute(recipe, publish=publish, **common)
    if publish is not None and not common["dry_run"]:
        out.print(f"traces:   {escape(str(target))}", soft_wrap=True)


def execute(recipe: Any, **common: Any) -> None:
    """Shared body of every `run` subcommand."""
    _exit_for(_run(recipe, **common))


def _run(recipe: Any, *, input_path: Path, output: Path, config_path: Path | None, model: str | None,
         base_url: str | None, concurrency: int | None, rpm: float | None, tpm: float | None,
         max_records: int | None, max_usd: float | None, dry_run: bool, fresh: bool, strict: bool,
         quiet: bool, publish: Callable[[Path, str], Any] | None = None) -> Any:
    """Run `recipe` (or a function of the loaded config that makes it) with the common options and print
    the run summary; None after a dry run."""
    from synthtrace.engine.runner import RunSettings
    from synthtrace.engine.runner import dry_run as estimate

    started()

    config = _config(config_path, base_url)
    if callable(recipe):
        recipe = recipe(config)
    settings = RunSettings(input=input_path, output=output, model=model, max_records=max_records, fresh=fresh,
                           strict=strict, quiet=quiet, max_usd=max_usd, concurrency=concurrency, rpm=rpm, tpm=tpm,
                           publish=publish)
    try:
        resolved = resolve_model(config, model)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if dry_run:
        _print_estimate(estimate(recipe, settings, config))
        return None
    if resolved.is_local:
        _announce_local(resolved.model, explicit=model is not None, kind=resolved.endpoint.kind)
    result = _run_async(recipe, settings, config)
    _print_summary(result, settings)
    return result


def _exit_for(result: Any) -> None:
    if result is None:
        return
    if result.status in ("invalid-input", "error"):
        sys.exit(1)
    if result.status == "budget":
        sys.exit(EXIT_BUDGET)


def _run_async(recipe: Any, settings: Any, config: Config) -> Any:
    from synthtrace.engine.runner import run_recipe

    coro = run_recipe(recipe, settings, config, err)
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: finished rows are kept; run the same command again to resume[/yellow]")
        sys.exit(130)


def _config(config_path: Path | None, base_url: str | None) -> Config:
    try:
        return with_cli_endpoint(load_config(config_path), base_url)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def _announce_local(model: str, explicit: bool, kind: str = "local") -> None:
    if explicit:
        engine = "in-process transformers" if kind == "hf" else "local llama.cpp"
        err.print(f"[cyan]model:[/cyan] {engine} ({escape(model)})", soft_wrap=True)
        return
    err.print(
        "[cyan]No model configured: using the embedded demo model (SmolLM2-135M-Instruct, llama.cpp, offline).[/cyan]\n"
        "It is tiny — good for trying synthtrace, not for training data. Point at a real model with\n"
        "  --base-url http://localhost:8000/v1 --model NAME   (vLLM, Ollama, llama.cpp server, OpenAI…)\n"
        "or a config file with endpoints and aliases (see the README), or --model local:/path/to/model.gguf.",
        soft_wrap=True,
    )


def _print_estimate(est: dict[str, Any]) -> None:
    table = _table(title="dry run: nothing was sent", show_header=False)
    for k in ("records", "bad_input", "calls", "prompt_tokens", "completion_tokens", "model", "provider_model"):
        table.add_row(k.replace("_", " "), f"{est[k]:,}" if isinstance(est[k], int) else str(est[k]))
    cost = f"${est['cost_usd']:.4f}" if est["priced"] else "unknown (no price for this model; add one under `prices:`)"
    table.add_row("estimated cost", cost)
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
                    ("cost", f"${st['cost_usd']:.4f} this run · ${st['cost_usd_total']:.4f} in total")]
    figures.append(("elapsed", f"{result.elapsed_s:.1f} s"))
    figures += [(k.replace("_", " "), str(v)) for k, v in (result.recipe or {}).items()]
    paths = []
    if result.status != "invalid-input":
        paths.append(("rows:    ", settings.output / "rows.jsonl"))
        if result.records_rejected or result.bad_input:
            paths.append(("rejected:", settings.output / "rejected.jsonl"))
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


# -- eval -----------------------------------------------------------------------------------------

@main.group("eval")
def eval_group() -> None:
    """Evaluate a model on a benchmark, through the engine (re-run the same command to resume)."""


@eval_group.command("medec")
@_common_run_options
@click.option("--max-tokens", default=4096, show_default=True, type=click.IntRange(16),
              help="Answer budget per note, reasoning included.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Sampling temperature (0: greedy).")
@click.option("--explain-format", is_flag=True,
              help="Append the answer format to the task prompt, for models not trained on it (baselines). "
                   "Use a fresh output dir when changing it.")
@click.option("--bleurt-checkpoint", default="BLEURT-20", show_default=True,
              help="BLEURT checkpoint directory (used only when the bleurt package is installed).")
def eval_medec(max_tokens: int, temperature: float, explain_format: bool, bleurt_checkpoint: str,
               **common: Any) -> None:
    """Error detection and correction on MEDEC notes (official CSV), scored as in MEDIQA-CORR 2024.

    The model sees each note as the trained critic does (its system prompt and task); its verdicts go
    to OUTDIR/rows.jsonl, the figures to OUTDIR/metrics.json, the MEDIQA-CORR submission file to
    OUTDIR/submission.txt.
    """
    from synthtrace.eval.medec import MedecEvalRecipe, correction_scorers, evaluate

    recipe = MedecEvalRecipe(max_tokens=max_tokens, temperature=temperature, explain_format=explain_format)
    result = _run(recipe, **common)
    if result is not None and result.status != "invalid-input":
        scorers, skipped = correction_scorers(bleurt_checkpoint)
        metrics = evaluate(common["input_path"], common["output"], max_records=common["max_records"],
                           scorers=scorers, skipped=skipped)
        _print_eval(metrics, common["output"])
    _exit_for(result)


_METRIC_NAMES = {"rouge1_f": "ROUGE-1 F", "bertscore": "BERTScore", "bleurt": "BLEURT", "aggregate": "aggregate"}


def _print_eval(m: dict[str, Any], output: Path) -> None:
    from synthtrace.eval.medec import METRICS, SUBMISSION

    def num(value: Any) -> str:
        return "-" if value is None else value if isinstance(value, str) else f"{value:.3f}"

    metrics = [*m["correction_metrics"], "aggregate"] if m["correction_metrics"] else []
    table = _table(title="MEDEC: error detection and correction", title_justify="left",
                   caption="corrections: composite score (1 when both say NA, 0 when one does); "
                           f"published rows: approximate, MEDEC test set — {m['published']['source']}",
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
    for w in m["warnings"]:
        err.print(f"[yellow]warning: {escape(w)}[/yellow]", soft_wrap=True)
    out.print(f"metrics:    {escape(str(output / METRICS))}", soft_wrap=True)
    out.print(f"submission: {escape(str(output / SUBMISSION))}", soft_wrap=True)


# -- export ---------------------------------------------------------------------------------------

@main.group()
def export() -> None:
    """Turn a run directory into training files."""


@export.command("sft")
@click.argument("run_path", metavar="RUN", type=EXISTING_PATH)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="qwen3", show_default=True,
              help="qwen3: think block in the assistant content; messages: reasoning in `reasoning_content`; "
                   "chatml: one rendered `text` field.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Training file (JSONL); validation goes beside it as NAME.val.jsonl.")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of source notes held out for validation (0: no validation file).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split.")
@click.option("--include-unverified", is_flag=True, help="Keep rows that failed verification (verified: false).")
@click.option("--include-hinted/--no-include-hinted", default=True, show_default=True,
              help="Keep rows written with the reference given (hinted: true).")
@click.option("--with-metadata/--no-metadata", default=True, show_default=True,
              help="A `metadata` object per line (note id, recipe, role, task, label, error type, group).")
def export_sft_command(run_path: Path, fmt: str, out: Path, val_fraction: float, seed: int, include_unverified: bool,
                       include_hinted: bool, with_metadata: bool) -> None:
    """Chat-format SFT files from RUN (a run directory or its rows.jsonl), split by source note."""
    from synthtrace.export.sft import ExportError, ExportOptions, export_sft

    options = ExportOptions(format=fmt, val_fraction=val_fraction, seed=seed, include_unverified=include_unverified,
                            include_hinted=include_hinted, with_metadata=with_metadata)
    try:
        result = export_sft(run_path, out, options)
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    _print_export(result)


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


# -- train ----------------------------------------------------------------------------------------

@main.command("train")
@click.option("--data", required=True, type=EXISTING_FILE,
              help="Training file from `synthtrace export sft` (qwen3, messages or chatml format).")
@click.option("--base", required=True, help="Base model: a directory with weights and tokenizer (or a hub id).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Adapter, checkpoints and synthtrace-train.json go here; re-running resumes.")
@click.option("--eval-data", type=EXISTING_FILE,
              help="Validation file (e.g. NAME.val.jsonl): evaluation loss at every save and at the end.")
@click.option("--epochs", default=1.0, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--max-steps", type=click.IntRange(1), help="Stop after this many optimizer steps (overrides --epochs).")
@click.option("--lr", default=2e-4, show_default=True, type=click.FloatRange(0, min_open=True), help="Learning rate.")
@click.option("--lora-r", default=16, show_default=True, type=click.IntRange(1))
@click.option("--lora-alpha", default=32, show_default=True, type=click.IntRange(1))
@click.option("--lora-dropout", default=0.05, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--target-modules", default=",".join(LORA_TARGETS), show_default=True,
              help="Comma-separated module names that get LoRA adapters.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1), help="Examples per device step.")
@click.option("--grad-accum", default=8, show_default=True, type=click.IntRange(1), help="Gradient accumulation steps.")
@click.option("--max-length", default=4096, show_default=True, type=click.IntRange(16),
              help="Tokens per example; longer ones are cut (and counted in the summary).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--bf16", is_flag=True, help="Train in bfloat16 (needs a CUDA GPU that supports it); fp32 otherwise.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=True, show_default=True,
              help="Recompute activations in the backward pass: less memory, about a third slower.")
@click.option("--logging-steps", default=10, show_default=True, type=click.IntRange(1))
@click.option("--save-steps", default=100, show_default=True, type=click.IntRange(1), help="Checkpoint every N steps.")
@click.option("--save-total-limit", default=3, show_default=True, type=click.IntRange(1),
              help="Checkpoints kept (older ones are deleted).")
@click.option("--eval-steps", type=click.IntRange(1), help="Evaluate every N steps (default: --save-steps).")
@click.option("--merge", is_flag=True, help="Also write the merged full weights + tokenizer to OUTPUT/merged (for vLLM).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the newest checkpoint in OUTPUT; --no-resume deletes them and starts over.")
def train_command(data: Path, base: str, output: Path, eval_data: Path | None, target_modules: str,
                  **options: Any) -> None:
    """LoRA fine-tuning (TRL SFTTrainer + PEFT) on exported SFT data; loss on the assistant turn only."""
    from synthtrace.train.lora import TrainError, TrainOptions, train
    from synthtrace.train.sft import TrainDataError

    modules = tuple(m.strip() for m in target_modules.split(",") if m.strip())
    opts = TrainOptions(data=data, base=base, output=output, eval_data=eval_data, target_modules=modules, **options)
    try:
        result = train(opts)
    except (TrainError, TrainDataError) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: run the same command again to resume from the last checkpoint[/yellow]")
        sys.exit(130)
    _print_train(result)


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

    if not (older_than or model or prune_all):
        raise click.UsageError("say what to prune: --older-than AGE, --model ID or --all")
    seconds = _parse_age(older_than) if older_than else None
    j = Journal(_journal_path(path))
    n = j.prune(seconds, model)
    j.close()
    out.print(f"removed {n:,} entries from {_journal_path(path)}")


def _parse_age(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    try:
        return float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError):
        raise click.BadParameter(f"{text!r}: use a number and one of s, m, h, d, w (e.g. 30d)") from None


def entry_point() -> None:
    """The `synthtrace` command: `main`, then an exit without the interpreter's teardown.

    Tearing down frees every module and object one by one: 0.1–0.2 s on a 2-core machine once a run
    has loaded asyncio, sqlite3 and the rest — about as long as a whole run's start-up. By now
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
