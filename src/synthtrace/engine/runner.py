"""The runner: records in, rows out, nothing lost.

A run is a `Run` with named parts: its input (`run_input.RunInput` streams the records, bad lines
to rejected.jsonl with file and line, duplicate ids refused, records already in rows.jsonl
skipped) into a bounded queue; workers hand each record to the recipe with a fresh `llm` handle;
the writing of rows with provenance and of rejected entries (`rows`); the accounting (the result,
the gateway's stats, the manifest); and the stall watch (`stalls`) beside the progress display.
Every record ends as rows, as a rejected entry with a reason, or — when the budget stops the run
— untouched, to be done by the next run of the same command.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthtrace.config import Config
from synthtrace.console import LazyConsole
from synthtrace.engine.cost import Budget
from synthtrace.engine.gateway import Gateway, RecordLLM
from synthtrace.engine.journal import Journal
from synthtrace.engine.progress import RunProgress
from synthtrace.engine.rows import Rejections, decontaminated, provenance
from synthtrace.engine.run_input import RunInput, bad_lines
from synthtrace.engine.settings import RunSettings, parse_duration
from synthtrace.engine.shards import parse_shard
from synthtrace.engine.stalls import StallWatch
from synthtrace.engine.store import RunStore
from synthtrace.inputs import Record
from synthtrace.options import as_dict
from synthtrace.recipe import Recipe, recipe_reference
from synthtrace.types import BudgetExceeded, LLMError, RecordOutcome, Rejected, RunStopped, Struct
from synthtrace.version import __version__

__all__ = ["RunResult", "RunSettings", "run_recipe"]

log = logging.getLogger("synthtrace")


class RunResult(Struct):
    """How a run ended, with its counts, for the summary and the manifest.

        result = synthtrace.run(recipe, "in.jsonl", "runs/x")
        result.status, result.records_done, result.records_rejected, result.cost_usd, result.paths["rows"]
    """

    __slots__ = ("status", "records_done", "records_skipped", "records_rejected", "rows_written", "bad_input",
                 "elapsed_s", "stats", "recipe", "messages", "paths")

    def __init__(self, status: str, bad_input: int = 0, messages: list[str] | None = None):
        self.status = status  # complete | budget | interrupted | invalid-input | error
        self.records_done = 0
        self.records_skipped = 0
        self.records_rejected = 0
        self.rows_written = 0
        self.bad_input = bad_input
        self.elapsed_s = 0.0
        self.stats: dict[str, Any] = {}
        self.recipe: dict[str, Any] = {}
        self.messages = [] if messages is None else messages
        self.paths: dict[str, Path] = {}  # rows, rejected, manifest, journal, and any file the recipe keeps

    @property
    def cost_usd(self) -> float:
        """What this invocation paid (calls replayed from the journal cost nothing)."""
        return float(self.stats.get("cost_usd", 0.0))

    @property
    def ok(self) -> bool:
        return self.status == "complete"


PUBLISH_EVERY_S = 2.0


async def run_recipe(recipe: Recipe, settings: RunSettings, config: Config,
                     console: LazyConsole | None = None, progress_cls: type[RunProgress] = RunProgress) -> RunResult:
    """Run `recipe` over `settings.input` into `settings.output`. `progress_cls` shows the run as it
    goes (a Ray worker passes one that reports to its driver instead)."""
    console = console or LazyConsole(stderr=True)
    refused = strict_check(recipe, settings, console)
    if refused is not None:
        return refused
    return await Run(recipe, settings, config, console, progress_cls).execute()


def strict_check(recipe: Recipe, settings: RunSettings, console: LazyConsole) -> RunResult | None:
    """Under --strict, the run's result when the input has bad lines (each said); else None."""
    problems = bad_lines(recipe, settings, console)
    if problems is None:
        return None
    return RunResult("invalid-input", bad_input=len(problems),
                     messages=[f"--strict: {len(problems)} bad input line(s); nothing was run"])


class Run:
    """One run of a recipe over its input, from opening its run dir to its manifest's last word."""

    def __init__(self, recipe: Recipe, settings: RunSettings, config: Config, console: LazyConsole,
                 progress_cls: type[RunProgress]):
        self.recipe = recipe
        self.settings = settings
        self.config = config
        self.console = console
        self.progress_cls = progress_cls
        self.store = RunStore(settings.output)
        self.result = RunResult("complete")
        self.stop = asyncio.Event()  # set when no record may start any more (budget, refused key, stall)

    # -- opening ------------------------------------------------------------------------------------

    def _open(self) -> None:
        """The run dir, journal and gateway; the input's size; the model's endpoint; the manifest."""
        settings, store, result = self.settings, self.store, self.result
        store.open(fresh=settings.fresh)
        self.journal = Journal(settings.journal or store.journal_path, replay_earlier=not settings.fresh)
        budget = Budget(settings.max_usd, already_spent=0.0 if settings.fresh else self.journal.total_cost())
        self.gateway = Gateway(self.config, self.journal, budget=budget, fresh=settings.fresh,
                               concurrency=settings.concurrency, rpm=settings.rpm, tpm=settings.tpm,
                               default_model=settings.model, share=settings.share_of_limits, batch=settings.batch,
                               batch_deadline_s=parse_duration(settings.batch_deadline),
                               batch_retry_length=settings.batch_retry_length)
        if store.repaired_bytes:
            result.messages.append(f"repaired {store.rows_path}: cut a torn last line ({store.repaired_bytes} bytes)")
        for n in store.unreadable_lines[:5]:
            result.messages.append(f"{store.rows_path}:{n}: unreadable row kept as is (its record will be redone)")
        shard = parse_shard(settings.shard) if settings.shard else None
        self.total = self.recipe.count(settings.input) if shard is None else None  # a shard's: known once read
        if settings.max_records is not None and self.total is not None:
            self.total = min(self.total, settings.max_records)
        self.contamination = None
        if settings.decontaminate_against:
            from synthtrace.quality.contamination import ContaminationIndex

            self.contamination = ContaminationIndex.build(settings.decontaminate_against)
        limits = self.config.limits
        # Two workers per request slot (plus a few): a worker whose answer is being journaled and whose rows
        # are being written holds no slot, and a freed slot must not wait for a free worker. Asking for
        # the slots opens the model's endpoint: the run waits on it from here (its stall clock starts).
        self.slots = settings.concurrency or limits.concurrency
        try:
            self.slots = max(self.slots, self.gateway.slots(settings.model))  # over all the model's replicas
        except Exception:  # a model no endpoint serves (or no key): its first call says so, with the record
            pass
        self.workers = 2 * self.slots + 8
        self.manifest = _manifest(self.recipe, settings, self.config, self.gateway, "running")
        store.write_manifest(self.manifest)
        self.started = time.monotonic()
        self.rejections = Rejections(store, self.console)
        self.input = RunInput(self.recipe, settings, store, shard, self.rejections, self.stop)
        self.publisher = _Publisher(store, settings.publish)
        self.stalls = StallWatch(self.gateway, self.console, settings.stall_after or limits.stall_after_s,
                                 settings.on_stall or limits.on_stall)

    # -- running ------------------------------------------------------------------------------------

    async def execute(self) -> RunResult:
        self._open()
        try:
            with self.progress_cls(self.gateway, self.total, self.settings.quiet, self.console,
                                   self.recipe.name) as progress:
                progress.resumed = self.store.resumed_records
                await self._run_tasks(progress)
        except (KeyboardInterrupt, asyncio.CancelledError):
            self.result.status = "interrupted"
            raise
        finally:
            await self._close()
        return self.result

    async def _run_tasks(self, progress: RunProgress) -> None:
        """The input feeding the workers, with the stall watch beside them, until every record is done."""
        queue: asyncio.Queue[Record | None] = asyncio.Queue(maxsize=self.workers * 2)
        everything = [asyncio.create_task(self.input.feed(queue, self.workers, self.slots, progress)),
                      *(asyncio.create_task(self._work(queue, progress)) for _ in range(self.workers))]
        watchdog = asyncio.create_task(self.stalls.watch(progress, lambda text: self._stalled(text, everything)))
        try:
            done = await asyncio.gather(*everything, return_exceptions=True)
            if self.result.status != "stalled":
                for outcome in done:
                    if isinstance(outcome, BaseException):
                        raise outcome
        except BaseException:
            for t in everything:
                t.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
            raise
        finally:
            watchdog.cancel()
            self.stalls.say_news(progress)

    def _stalled(self, text: str, tasks: list[asyncio.Task[None]]) -> None:
        """--on-stall stop: what was finished is kept; the rest waits for the next run."""
        if self.stop.is_set():
            return
        self.result.messages.append(f"stopped: {text}")
        self.result.status = "stalled"
        self.stop.set()
        for t in tasks:
            t.cancel()

    async def _work(self, queue: asyncio.Queue[Record | None], progress: RunProgress) -> None:
        while (record := await queue.get()) is not None:
            if not self.stop.is_set():
                await self._process(record, progress)

    async def _process(self, record: Record, progress: RunProgress) -> None:
        """One record through the recipe: its rows written, or the record rejected with the reason."""
        llm = RecordLLM(self.gateway)
        try:
            rows = await self.recipe.process(record, llm)
        except RunStopped as e:  # no record can get past this: stop, leave them all for the next run
            self._stop_for(e)
            return
        except Rejected as e:
            self._rejected(record, e, llm, progress)
            return
        except LLMError as e:
            self._rejected(record, Rejected.of(e), llm, progress)
            return
        except Exception as e:  # a recipe bug must not take the run down with it
            log.debug("recipe error", exc_info=True)
            self._rejected(record, Rejected(f"internal error: {e.__class__.__name__}: {e}",
                                            traceback=traceback.format_exc(limit=5)), llm, progress)
            return
        self._write(record, llm, rows, progress)

    def _stop_for(self, e: RunStopped) -> None:
        if not self.stop.is_set():
            budget = isinstance(e, BudgetExceeded)
            self.result.messages.append(f"stopped before the budget was passed: {e}" if budget else f"stopped: {e}")
            self.result.status = "budget" if budget else "error"
        self.stop.set()

    def _rejected(self, record: Record, e: Rejected, llm: RecordLLM, progress: RunProgress) -> None:
        self.rejections.record(record, e, llm)
        self.result.records_rejected += 1
        progress.advance(rejected=True)

    # -- writing ------------------------------------------------------------------------------------

    def _write(self, record: Record, llm: RecordLLM, rows: list[dict[str, Any]] | RecordOutcome,
               progress: RunProgress) -> None:
        """A record's rows with their provenance (its rejected parts beside them); none: it is rejected."""
        if isinstance(rows, RecordOutcome):
            for part in rows.rejected:
                self.rejections.part(record, part)
            rows = rows.rows
        if self.contamination is not None:
            rows = decontaminated(self.contamination, self.rejections, record, rows)
        if not rows:
            self.result.records_rejected += 1
            progress.advance(rejected=True)
            return
        for row in rows:
            row["provenance"] = provenance(self.recipe, record, llm, row.get("provenance"))
        self.store.write_rows(rows)
        self.result.records_done += 1
        progress.advance()
        if self.settings.publish is not None and time.monotonic() >= self.publisher.due:
            self.publisher.run("running")

    # -- closing ------------------------------------------------------------------------------------

    async def _close(self) -> None:
        """The accounting: the result's counts and stats, the manifest's last word; then close everything."""
        result, store, gateway, settings = self.result, self.store, self.gateway, self.settings
        result.elapsed_s = time.monotonic() - self.started
        result.bad_input += self.input.bad_input
        result.records_skipped += self.input.skipped
        result.rows_written = store.rows_written
        result.stats = _stats(gateway)
        result.recipe = self.recipe.summary()
        result.paths = {"rows": store.rows_path, "rejected": store.rejected_path, "manifest": store.manifest_path,
                        "journal": settings.journal or store.journal_path, **settings.outputs}
        if gateway.prices.unpriced:
            result.messages.append("no price known for " + ", ".join(sorted(gateway.prices.unpriced)) +
                                   ": their cost counts as 0 (add them under `prices:` in the config)")
        result.messages.extend(self.rejections.summary())
        self.journal.begin_close()  # its last commit and the WAL's checkpoint (fsyncs) go on beside what follows
        self.manifest.update(status=result.status, finished=time.time(), result=result.as_dict())
        store.write_manifest(self.manifest)
        if settings.publish is not None:
            self.publisher.run(result.status)
        await gateway.aclose()
        self.journal.close()
        store.close()


class _Publisher:
    def __init__(self, store: RunStore, publish: Callable[[Path, str], Any] | None):
        self.store = store
        self.publish = publish
        self.due = 0.0

    def run(self, status: str) -> None:
        assert self.publish is not None
        self.store.flush()
        started = time.monotonic()
        self.publish(self.store.rows_path, status)
        took = time.monotonic() - started
        self.due = time.monotonic() + max(PUBLISH_EVERY_S, 10 * took)


def _stats(gateway: Gateway) -> dict[str, Any]:
    st = gateway.stats
    out = {"calls": st.calls, "replayed": st.replayed, "retries": st.retries, "throttled": st.throttled,
           "failures": st.failures, "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens,
           "cost_usd": round(st.cost_usd, 6), "cost_usd_total": round(gateway.budget.spent, 6)}
    batches = gateway.batch_stats()
    if batches:
        out.update(batch_calls=st.batch_calls, batch_cost_usd=round(st.batch_cost_usd, 6),
                   online_cost_usd=round(st.cost_usd - st.batch_cost_usd, 6), batches=batches)
    return out


def _manifest(recipe: Recipe, settings: RunSettings, config: Config, gateway: Gateway, status: str) -> dict[str, Any]:
    try:
        r = gateway.resolve(settings.model)
        model = {"alias": r.alias, "endpoint": r.endpoint_name, "kind": r.endpoint.kind, "model": r.model,
                 "base_url": r.endpoint.base_url}
    except Exception as e:  # resolution errors surface on the first call, with the record they hit
        model = {"alias": settings.model, "error": str(e)}
    return {"synthtrace": __version__, "recipe": recipe.name, "recipe_ref": recipe_reference(type(recipe)),
            "prompt_version": recipe.prompt_version, "options": as_dict(recipe.options), "status": status,
            "started": time.time(), "argv": sys.argv[1:], "input": str(settings.input), "model": model,
            "config": config.source, "settings": settings.manifest()}
