"""The runner: records in, rows out, nothing lost.

A producer streams the input (bad lines to rejected.jsonl with file and line, duplicate ids
refused, records already in rows.jsonl skipped) into a bounded queue; workers hand each record to
the recipe with a fresh `llm` handle and append its rows with provenance. Every record ends as
rows, as a rejected entry with a reason, or — when the budget stops the run — untouched, to be
done by the next run of the same command.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from synthtrace.config import Config
from synthtrace.console import LazyConsole, escape
from synthtrace.engine.cost import Budget
from synthtrace.engine.gateway import Gateway, RecordLLM
from synthtrace.engine.journal import Journal
from synthtrace.engine.progress import RunProgress
from synthtrace.engine.settings import RunSettings, parse_duration
from synthtrace.engine.shards import parse_shard, shard_of
from synthtrace.engine.store import IdIndex, RunStore
from synthtrace.inputs import BadInput, Record
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
SAME_REASON_SHOWN = 3  # rejections printed per reason; rejected.jsonl has them all
_NUMBERS = re.compile(r"\d+")


async def run_recipe(recipe: Recipe, settings: RunSettings, config: Config,
                     console: LazyConsole | None = None, progress_cls: type[RunProgress] = RunProgress) -> RunResult:
    """Run `recipe` over `settings.input` into `settings.output`. `progress_cls` shows the run as it
    goes (a Ray worker passes one that reports to its driver instead)."""
    console = console or LazyConsole(stderr=True)
    store = RunStore(settings.output)
    refused = strict_check(recipe, settings, console)
    if refused is not None:
        return refused
    store.open(fresh=settings.fresh)
    journal = Journal(settings.journal or store.journal_path, replay_earlier=not settings.fresh)
    budget = Budget(settings.max_usd, already_spent=0.0 if settings.fresh else journal.total_cost())
    gateway = Gateway(config, journal, budget=budget, fresh=settings.fresh, concurrency=settings.concurrency,
                      rpm=settings.rpm, tpm=settings.tpm, default_model=settings.model, share=settings.share_of_limits,
                      batch=settings.batch, batch_deadline_s=parse_duration(settings.batch_deadline),
                      batch_retry_length=settings.batch_retry_length)
    result = RunResult("complete")
    if store.repaired_bytes:
        result.messages.append(f"repaired {store.rows_path}: cut a torn last line ({store.repaired_bytes} bytes)")
    for n in store.unreadable_lines[:5]:
        result.messages.append(f"{store.rows_path}:{n}: unreadable row kept as is (its record will be redone)")
    shard = parse_shard(settings.shard) if settings.shard else None
    total = recipe.count(settings.input) if shard is None else None  # a shard's size is known only once read
    if settings.max_records is not None and total is not None:
        total = min(total, settings.max_records)
    contamination = None
    if settings.decontaminate_against:
        from synthtrace.quality.contamination import ContaminationIndex

        contamination = ContaminationIndex.build(settings.decontaminate_against)
    limits = config.limits
    # Two workers per request slot (plus a few): a worker whose answer is being journaled and whose rows
    # are being written holds no slot, and a freed slot must not wait for a free worker. Asking for
    # the slots opens the model's endpoint: the run waits on it from here (its stall clock starts).
    slots = settings.concurrency or limits.concurrency
    try:
        slots = max(slots, gateway.slots(settings.model))  # over all the replicas of the model's endpoint
    except Exception:  # a model no endpoint serves (or no key): its first call says so, with the record
        pass
    manifest = _manifest(recipe, settings, config, gateway, "running")
    store.write_manifest(manifest)
    started = time.monotonic()
    workers = 2 * slots + 8
    queue: asyncio.Queue[Record | None] = asyncio.Queue(maxsize=workers * 2)
    stop = asyncio.Event()

    said: Counter[str] = Counter()  # rejection reasons printed, numbers taken out

    def reject(entry: dict[str, Any], message: str | None = None) -> None:
        store.reject(entry)
        if message:
            same = _NUMBERS.sub("#", str(entry.get("reason", message)))
            said[same] += 1
            if said[same] <= SAME_REASON_SHOWN:  # after a few, the rest of the same kind are counted
                console.print(f"[yellow]{escape(message)}[/yellow]", highlight=False, soft_wrap=True)

    async def produce(progress: RunProgress) -> None:
        taken = 0
        for item in recipe.records(settings.input):
            if stop.is_set():
                break
            if settings.max_records is not None and taken >= settings.max_records:
                break
            taken += 1
            if shard is not None and shard_of(item.id if isinstance(item, Record) else f"{item.source}:{item.line}",
                                              shard[1]) != shard[0]:
                continue  # another shard's
            if isinstance(item, BadInput):
                result.bad_input += 1
                reject(item.to_entry(), item.message())
                progress.advance(rejected=True)
                continue
            earlier = store.index.first_seen(item.id, item.line)
            if earlier is not None:
                bad = _duplicate(item, earlier)
                result.bad_input += 1
                reject(bad.to_entry(), bad.message())
                progress.advance(rejected=True)
                continue
            if store.is_done(item.id):
                result.records_skipped += 1
                progress.skip(1)
                continue
            await queue.put(item)
            if taken <= slots:  # let a worker start each of the first requests before reading on
                await asyncio.sleep(0)
        for _ in range(workers):
            await queue.put(None)

    async def work(progress: RunProgress) -> None:
        while (record := await queue.get()) is not None:
            if stop.is_set():
                continue
            llm = RecordLLM(gateway)
            try:
                rows = await recipe.process(record, llm)
            except RunStopped as e:  # no record can get past this: stop, leave them all for the next run
                if not stop.is_set():
                    budget = isinstance(e, BudgetExceeded)
                    result.messages.append(f"stopped before the budget was passed: {e}" if budget else f"stopped: {e}")
                    result.status = "budget" if budget else "error"
                stop.set()
                continue
            except Rejected as e:
                _reject_record(reject, record, e, llm)
                result.records_rejected += 1
                progress.advance(rejected=True)
                continue
            except LLMError as e:
                _reject_record(reject, record, Rejected.of(e), llm)
                result.records_rejected += 1
                progress.advance(rejected=True)
                continue
            except Exception as e:  # a recipe bug must not take the run down with it
                log.debug("recipe error", exc_info=True)
                _reject_record(reject, record, Rejected(f"internal error: {e.__class__.__name__}: {e}",
                                                        traceback=traceback.format_exc(limit=5)), llm)
                result.records_rejected += 1
                progress.advance(rejected=True)
                continue
            if isinstance(rows, RecordOutcome):
                for part in rows.rejected:
                    _reject_part(reject, record, part)
                rows = rows.rows
            if contamination is not None:
                rows = _decontaminated(contamination, reject, record, rows)
            if not rows:
                result.records_rejected += 1
                progress.advance(rejected=True)
                continue
            for row in rows:
                row["provenance"] = _provenance(recipe, record, llm, row.get("provenance"))
            store.write_rows(rows)
            result.records_done += 1
            progress.advance()
            if settings.publish is not None and time.monotonic() >= publisher.due:
                publisher.run("running")

    window = settings.stall_after or limits.stall_after_s
    policy = settings.on_stall or limits.on_stall

    def say_recovered(progress: RunProgress) -> None:
        for notice in gateway.notices():
            console.print(f"[yellow]{escape(notice)}[/yellow]", soft_wrap=True)
        for name in gateway.recovered():
            console.print(f"[green]endpoint {escape(repr(name))} answers again[/green]", soft_wrap=True)
            progress.note(None)

    async def watch_stalls(progress: RunProgress, tasks: list[asyncio.Task[None]]) -> None:
        """Say when an endpoint answers nothing but refusals for the stall window; stop the run then if
        the policy says so (what was finished is kept; the rest waits for the next run)."""
        while True:
            due = gateway.next_stall_in(window)  # wake when a stall is due, not a poll after it
            if due is not None:
                console.real  # noqa: B018 - an endpoint refuses: make the console now, not when the stall is said
            await asyncio.sleep(min(1.0, window / 4) if due is None else min(1.0, window / 4, due))
            say_recovered(progress)
            for name, seconds, said in gateway.stalls(window):
                since = time.strftime("%H:%M:%S", time.localtime(time.time() - seconds))
                text = (f"endpoint {name!r} has answered nothing but refusals for {seconds:.{0 if seconds >= 10 else 1}f} s "
                        f"(since {since}): {said}")
                if gateway.mark_stalled(name):
                    console.print(f"[bold yellow]stalled:[/bold yellow] {escape(text)}"
                                  + (" — waiting (--on-stall stop stops the run instead)" if policy == "wait"
                                     else " — stopping (--on-stall stop)"), soft_wrap=True)
                    progress.note(f"stalled: {name} for {seconds:.0f} s")
                if policy == "stop" and not stop.is_set():
                    result.messages.append(f"stopped: {text}")
                    result.status = "stalled"
                    stop.set()
                    for t in tasks:
                        t.cancel()
                    return

    publisher = _Publisher(store, settings.publish)
    try:
        with progress_cls(gateway, total, settings.quiet, console, recipe.name) as progress:
            progress.resumed = store.resumed_records
            tasks = [asyncio.create_task(work(progress)) for _ in range(workers)]
            producer = asyncio.create_task(produce(progress))
            watchdog = asyncio.create_task(watch_stalls(progress, [producer, *tasks]))
            try:
                done = await asyncio.gather(producer, *tasks, return_exceptions=True)
                if result.status != "stalled":
                    for outcome in done:
                        if isinstance(outcome, BaseException):
                            raise outcome
            except BaseException:
                for t in (producer, *tasks):
                    t.cancel()
                await asyncio.gather(producer, *tasks, return_exceptions=True)
                raise
            finally:
                watchdog.cancel()
                say_recovered(progress)
    except (KeyboardInterrupt, asyncio.CancelledError):
        result.status = "interrupted"
        raise
    finally:
        result.elapsed_s = time.monotonic() - started
        result.rows_written = store.rows_written
        result.stats = _stats(gateway)
        result.recipe = recipe.summary()
        result.paths = {"rows": store.rows_path, "rejected": store.rejected_path, "manifest": store.manifest_path,
                        "journal": settings.journal or store.journal_path, **settings.outputs}
        if gateway.prices.unpriced:
            result.messages.append("no price known for " + ", ".join(sorted(gateway.prices.unpriced)) +
                                   ": their cost counts as 0 (add them under `prices:` in the config)")
        for reason, n in said.items():
            if n > SAME_REASON_SHOWN:
                result.messages.append(f"… and {n - SAME_REASON_SHOWN:,} more rejected for the same reason: {reason}")
        journal.begin_close()  # its last commit and the WAL's checkpoint (fsyncs) go on beside what follows
        manifest.update(status=result.status, finished=time.time(), result=result.as_dict())
        store.write_manifest(manifest)
        if settings.publish is not None:
            publisher.run(result.status)
        await gateway.aclose()
        journal.close()
        store.close()
    return result


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


def _duplicate(record: Record, earlier: int) -> BadInput:
    return BadInput(record.source, record.line, f"duplicate id {record.id!r} (first at line {earlier})", id=record.id)


def _input_problems(recipe: Recipe, path: Path) -> list[BadInput]:
    """Every bad input line, duplicate ids included (for --strict), without holding the ids in memory."""
    problems: list[BadInput] = []
    index = IdIndex()
    try:
        for item in recipe.records(path):
            if isinstance(item, BadInput):
                problems.append(item)
            elif (earlier := index.first_seen(item.id, item.line)) is not None:
                problems.append(_duplicate(item, earlier))
    finally:
        index.close()
    return problems


def _reject_record(reject: Any, record: Record, e: Rejected, llm: RecordLLM) -> None:
    entry = {"id": record.id, "record_id": record.id, "source": record.source, "line": record.line,
             "calls": llm.calls, **e.to_entry()}
    reject(entry, f"{record.source}:{record.line}: {e.part or record.id}: {e.reason}")


def _reject_part(reject: Any, record: Record, part: Rejected) -> None:
    if not isinstance(part, Rejected):
        raise TypeError(f"RecordOutcome.rejected holds Rejected(reason, part=…, **details), got {part!r}")
    entry = {"id": record.id, "record_id": record.id, "source": record.source, "line": record.line, **part.to_entry()}
    reject(entry, f"{record.source}:{record.line}: {part.part or record.id}: {part.reason}")


def strict_check(recipe: Recipe, settings: RunSettings, console: LazyConsole) -> RunResult | None:
    """Under --strict, the run's result when the input has bad lines (each said); else None."""
    if not settings.strict:
        return None
    problems = _input_problems(recipe, settings.input)
    if not problems:
        return None
    for p in problems[:20]:
        console.print(f"[red]{escape(p.message())}[/red]", soft_wrap=True)
    return RunResult("invalid-input", bad_input=len(problems),
                     messages=[f"--strict: {len(problems)} bad input line(s); nothing was run"])


def _decontaminated(index: Any, reject: Any, record: Record, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` without those that overlap an evaluation set; each of those is rejected with its evidence."""
    kept = []
    for row in rows:
        hit = next(((path, m) for path, text in _texts(row) if (m := index.find(text)) is not None), None)
        if hit is None:
            kept.append(row)
            continue
        path, m = hit
        part = str(row.get("note_id") or row.get("id") or record.id)
        _reject_part(reject, record, Rejected(f"overlap with {m.eval_set}", part=part, field=path,
                                              method=f"word {m.n}-gram overlap", threshold=index.min_overlap,
                                              evidence=m.as_dict()))
    return kept


def _texts(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, text) of each string in a row, its provenance aside."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            if not (k == "provenance" and not path):
                yield from _texts(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _texts(v, f"{path}[{i}]")


def _provenance(recipe: Recipe, record: Record, llm: RecordLLM, extra: dict[str, Any] | None) -> dict[str, Any]:
    prompt_tokens, completion_tokens = llm.tokens
    prov = {"recipe": recipe.name, "prompt_version": recipe.prompt_version, "record_id": record.id,
            "source": {"file": record.source, "line": record.line}, "calls": llm.calls,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "cost_usd": round(llm.cost_usd, 8), "synthtrace": __version__}
    if extra:
        prov.update(extra)
    return prov


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
