"""What one run is asked to do: the run options, declared once.

The same declaration gives `synthtrace run`'s common flags (and `eval`'s), the keyword arguments
of `synthtrace.run(...)`, and the settings the manifest records. Fields without a flag are set by
code: a recipe's `prepare`, or the API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from synthtrace.options import option
from synthtrace.options import parse_duration as _parse_duration


@dataclass
class RunSettings:
    input: Path = option(help="Input file.", flags=("--input", "-i", "--input-file"), exists=True)
    output: Path = option(help="Run directory.", flags=("--output", "-o"))
    config: Path | None = option(None, "YAML config (default: ./synthtrace.yaml, ~/.config/synthtrace/config.yaml).",
                                 exists=True)
    model: str | None = option(None, "Model alias, provider id, `local`, `local:/path/model.gguf`, `hf:DIR` or "
                                     "`hf:DIR+ADAPTER_DIR`.", flags=("--model", "-m"))
    base_url: list[str] = option([], "OpenAI-compatible endpoint (key from SYNTHTRACE_API_KEY or OPENAI_API_KEY); "
                                     "repeat it for replicas of one deployment.")
    concurrency: int | None = option(None, "Requests in flight per endpoint.", flags=("--concurrency", "-c"), min=1)
    rpm: float | None = option(None, "Requests-per-minute budget.", min=0, min_open=True)
    tpm: float | None = option(None, "Tokens-per-minute budget.", min=0, min_open=True)
    max_records: int | None = option(None, "Only the first N input records.", min=1)
    max_usd: float | None = option(None, "Stop cleanly before spending more than this.", min=0)
    dry_run: bool = option(False, "Estimate calls, tokens and cost from the input; send nothing.")
    fresh: bool = option(False, "Ignore earlier results in the run dir and the journal.")
    strict: bool = option(False, "Stop before running anything if any input line is bad.")
    quiet: bool = option(False, "Log lines instead of a progress bar.", flags=("--quiet", "-q"))
    shard: str | None = option(None, "Only the records whose id hashes to shard I of N, into OUTPUT/shard-I-of-N/ "
                                     "(for a job array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); "
                                     "`synthtrace merge OUTPUT` joins them.", flags=("--shard",))
    decontaminate_against: list[Path] = option(
        [], "Evaluation set (JSONL, CSV or Parquet; MEDEC's CSVs as they are): rows sharing word 13-grams with one "
            "of its items are rejected, with the n-gram, instead of written. Repeatable; needs synthtrace[clean].",
        exists=True)
    batch: bool = option(False, "Send the calls as provider batches at half price (OpenAI, Anthropic endpoints); "
                                "they take longer. Same as `mode: batch` on an endpoint.")
    batch_deadline: str | None = option(None, "With batches: what has not come back after this long (90s, 30m, "
                                              "2h, 1h30m) is cancelled and asked online.")
    batch_retry_length: bool = option(False, "With batches: ask an answer cut by max_tokens again, once, with "
                                             "twice the tokens.")
    ray: str | None = option(None, "Run the shards as Ray workers and merge them into OUTPUT: alone, on a new local "
                                   "cluster (or RAY_ADDRESS's); with an ADDRESS (`auto`, `HOST:6379`), on that "
                                   "cluster. Needs synthtrace[ray].", flags=("--ray",), bare="local")
    ray_workers: int | None = option(None, "Ray workers, one shard each (default: one per node, at least 2).",
                                     min=1)
    on_stall: Literal["wait", "stop"] | None = option(
        None, "When an endpoint answers only 429s or 5xx for --stall-after seconds: keep waiting, or stop with "
              "every finished row kept (exit 4). Default: limits.on_stall in the config, else wait.")
    stall_after: float | None = option(None, "Seconds without progress that make an endpoint stalled "
                                             "(default: limits.stall_after_s, else 30).", min=0, min_open=True)

    # Set by code, not by flags.
    journal: Path | None = field(default=None, init=True, metadata={"internal": True})  # default OUTDIR/journal.db
    # Called with (rows.jsonl, status) while rows arrive (at most every few seconds, and never more than a
    # tenth of the run's time) and once at the end: how a recipe keeps a file of its own in step with the run.
    publish: Callable[[Path, str], Any] | None = field(default=None, metadata={"internal": True})
    outputs: dict[str, Path] = field(default_factory=dict, metadata={"internal": True})  # extra files, by label
    # (I, N): this process is worker I of N sharing the run's concurrency, RPM, TPM and budget (a Ray worker).
    share_of_limits: tuple[int, int] | None = field(default=None, metadata={"internal": True})

    def manifest(self) -> dict[str, Any]:
        """The settings as the manifest records them."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self).items()
                if k not in ("publish", "outputs")} | {"outputs": {k: str(v) for k, v in self.outputs.items()}}


def parse_duration(text: str | None) -> float | None:
    """`--batch-deadline` as seconds (None for None): `synthtrace.options.parse_duration`, naming that flag."""
    return _parse_duration(text, "--batch-deadline")
