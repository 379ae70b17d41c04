"""`synthtrace run … --ray [ADDRESS]`: the shards of one run as Ray workers, merged into one run dir.

Each worker is a Ray actor that runs shard I of N (`engine.shards`) with one engine of its own and
its share of the run's concurrency, RPM, TPM and budget, writing to `OUTPUT/shard-I-of-N/` on the
shared file system. The driver (this process) shows one progress bar summed over the workers, and
when all have ended merges the shards into `OUTPUT` (rows.jsonl, rejected.jsonl, journal, manifest).
A worker whose process dies is restarted by Ray and runs its shard again: finished records are
skipped and finished calls replay from the shard's journal, so only the calls in flight at the
death are sent again.

Ray is imported here only, and this module only for `--ray`. Ray is told to stay on this machine's
loopback and to keep its usage statistics to itself; a cluster at an ADDRESS is Ray's to configure.
Provider keys are never handed to Ray: each worker reads them from its own environment, which on a
local cluster is this process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from synthtrace.config import Config
from synthtrace.console import LazyConsole
from synthtrace.engine.gateway import GatewayStats
from synthtrace.engine.progress import RunProgress
from synthtrace.engine.runner import RunResult, run_recipe, strict_check
from synthtrace.engine.settings import RunSettings
from synthtrace.engine.shards import SHARD_DIR, merge, shard_dir
from synthtrace.engine.store import JOURNAL, MANIFEST, REJECTED, ROWS
from synthtrace.options import as_dict
from synthtrace.recipe import Recipe, RecipeNotFound, load_recipe, recipe_reference

WORKER_CPUS = 0.25  # I/O-bound: a whole CPU each would starve Ray's own processes on a small machine
RESTARTS = 5  # a worker process that dies is started again up to this many times
POLL_S = 0.5  # how often the driver asks the workers how far they are
LOCAL_OBJECT_STORE = 100 * 1024**2  # what the workers pass is small: no need for Ray's 30 % of memory
STATUS_ORDER = ("invalid-input", "error", "budget", "stalled", "interrupted", "complete")
# A worker process's own counters: a restarted worker starts them again, so its earlier process's are carried.
COUNTERS = ("calls", "replayed", "retries", "throttled", "failures", "prompt_tokens", "completion_tokens", "cost_usd")


class RayUnavailable(RuntimeError):
    """`--ray` without Ray installed, or a cluster that cannot be reached."""


def import_ray(address: str) -> tuple[Any, bool]:
    """Ray, started (a local cluster) or connected (ADDRESS) for this process, and whether this call
    did it (Ray already initialised by the caller is left as it is)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing phones home
    local = address == "local" and not os.environ.get("RAY_ADDRESS")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the node's address is 127.0.0.1
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray: pip install 'synthtrace[ray]'") from None
    if ray.is_initialized():
        return ray, False
    import logging

    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if local:
        kwargs.update(include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE)
    try:
        ray.init(address=None if address == "local" else address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"--ray {address}: {e}") from None
    return ray, True


class ShardWorker:
    """One shard of the run in a Ray actor: `run` runs it (again, after a restart), `progress` says how
    far it is. Made a Ray actor class by `run_on_ray` (this module imports no Ray at import time)."""

    def __init__(self) -> None:
        self.progress_now: _Reporting | None = None

    async def run(self, recipe: Recipe | tuple[str, dict[str, Any]], settings: RunSettings,
                  config: Config) -> dict[str, Any]:
        import ray

        if isinstance(recipe, tuple):
            ref, options = recipe
            recipe = load_recipe(ref)(**options)
        with warnings.catch_warnings():  # Ray's own property calls one of its deprecated ones
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if restarted:
            settings = replace(settings, fresh=False)  # --fresh was for the first start, not for a restart
        worker = self

        class Reporting(_Reporting):
            def __enter__(self) -> RunProgress:
                worker.progress_now = self
                return self

        result = await run_recipe(recipe, settings, config, progress_cls=Reporting)
        return {**{k: getattr(result, k) for k in RunResult.__slots__ if k != "paths"}, "pid": os.getpid()}

    async def progress(self) -> dict[str, Any]:
        p = self.progress_now
        if p is None:
            return {"pid": os.getpid(), "started": False}
        st = p.gateway.stats
        return {"pid": os.getpid(), "started": True, "done": p.done, "rejected": p.rejected, "skipped": p.skipped,
                "resumed": p.resumed, "in_flight": p.gateway.in_flight, **{k: getattr(st, k) for k in COUNTERS}}


class _Reporting(RunProgress):
    """A worker's progress: counted, never shown (the driver shows the sum)."""

    def __exit__(self, *exc: object) -> None:
        pass


class _Totals:
    """The workers' counters summed, for the driver's progress bar; a restarted worker's earlier
    process counts too (its calls were sent and paid for)."""

    def __init__(self, workers: int):
        self.stats = GatewayStats()
        self.in_flight = 0
        self._last: list[dict[str, Any]] = [{} for _ in range(workers)]
        self._carried: list[dict[str, float]] = [{} for _ in range(workers)]
        self.resumed: list[int | None] = [None] * workers  # records each shard had finished before this run

    def update(self, index: int, report: dict[str, Any]) -> bool:
        """Take worker `index`'s report; True when it comes from a new process (the worker was restarted)."""
        last = self._last[index]
        restarted = last.get("pid") not in (None, report["pid"])
        if restarted and last.get("started"):
            carried = self._carried[index]
            for k in COUNTERS:
                carried[k] = carried.get(k, 0) + last.get(k, 0)
        self._last[index] = report
        if self.resumed[index] is None and report.get("started"):
            self.resumed[index] = report["resumed"]
        self.in_flight = sum(r.get("in_flight", 0) for r in self._last)
        for k in COUNTERS:
            setattr(self.stats, k, sum(r.get(k, 0) for r in self._last) + sum(c.get(k, 0) for c in self._carried))
        return restarted

    def counts(self) -> tuple[int, int, int]:
        return tuple(sum(r.get(k, 0) for r in self._last) for k in ("done", "rejected", "skipped"))  # type: ignore[return-value]

    def carried(self, index: int) -> dict[str, float]:
        return self._carried[index]


def check(settings: RunSettings) -> None:
    """What `--ray` refuses before anything runs (ValueError, saying what to do instead)."""
    import importlib.util

    if settings.shard:
        raise ValueError("--ray makes its own shards: give --ray or --shard, not both")
    if importlib.util.find_spec("ray") is None:
        raise ValueError("--ray needs Ray: pip install 'synthtrace[ray]'")
    output = settings.output
    manifest = output / MANIFEST
    if manifest.exists():
        import orjson

        try:
            merged = "merged" in orjson.loads(manifest.read_bytes())
        except orjson.JSONDecodeError:
            merged = False
        if not merged:  # merging the shards would replace that run, and its journal with it
            raise ValueError(f"{output} holds a run made without --ray: re-run it without --ray (it resumes), "
                             "or give --ray another output directory")
    found = _shard_counts(output)
    if len(found) > 1:
        raise ValueError(f"{output} holds the shards of {sorted(found)} workers: keep one set")
    if settings.ray_workers and found and found != {settings.ray_workers}:
        n = found.pop()
        raise ValueError(f"{output} holds the shards of {n} workers, whose journals {settings.ray_workers} workers "
                         f"would not use: give --ray-workers {n}, or another output directory")


def _shard_counts(output: Path) -> set[int]:
    return {int(m.group(2)) for p in (output.iterdir() if output.is_dir() else ()) if (m := SHARD_DIR.match(p.name))}


def _workers(settings: RunSettings, ray: Any) -> int:
    """How many shards: --ray-workers; else as many as OUTPUT holds (a re-run resumes them); else one
    per node of the cluster, at least 2."""
    found = _shard_counts(settings.output)
    return settings.ray_workers or (found.pop() if found else max(2, sum(1 for n in ray.nodes() if n.get("Alive"))))


def _recipe_for_workers(recipe: Recipe) -> Recipe | tuple[str, dict[str, Any]]:
    """How the workers get the recipe: by reference and options when they can load it themselves (a
    name, module:Class, /path/file.py:Class), else the object itself, pickled by Ray."""
    ref = recipe_reference(type(recipe))
    if not ref.startswith("__main__:"):
        try:
            if load_recipe(ref) is type(recipe):
                return ref, as_dict(recipe.options)
        except RecipeNotFound:
            pass
    return recipe


async def run_on_ray(recipe: Recipe, settings: RunSettings, config: Config,
                     console: LazyConsole | None = None) -> RunResult:
    console = console or LazyConsole(stderr=True)
    check(settings)
    refused = strict_check(recipe, settings, console)  # once here, not once per worker
    if refused is not None:
        return refused

    started = time.monotonic()
    ray, owned = import_ray(settings.ray or "local")
    workers: list[Any] = []
    try:
        n = _workers(settings, ray)
        actor = ray.remote(num_cpus=WORKER_CPUS, max_restarts=RESTARTS, max_task_retries=RESTARTS,
                           scheduling_strategy="SPREAD")(ShardWorker)
        shipped = _recipe_for_workers(recipe)
        runs = []
        for i in range(n):
            part = replace(settings, shard=f"{i}/{n}", output=shard_dir(settings.output, i, n), ray=None,
                           ray_workers=None, quiet=True, strict=False, publish=None, outputs={},
                           share_of_limits=(i, n), max_usd=None if settings.max_usd is None else settings.max_usd / n)
            w = actor.remote()
            workers.append(w)
            runs.append(w.run.remote(shipped, part, config))
        totals = _Totals(n)
        total = recipe.count(settings.input)
        if settings.max_records is not None and total is not None:
            total = min(total, settings.max_records)
        label = f"{recipe.name} · {n} Ray workers"
        results: list[dict[str, Any] | BaseException | None] = [None] * n
        pending = {asyncio.ensure_future(_awaited(r)): i for i, r in enumerate(runs)}
        with RunProgress(totals, total, settings.quiet, console, label) as progress:  # type: ignore[arg-type]
            while pending:
                done, _ = await asyncio.wait(pending, timeout=POLL_S)
                for fut in done:
                    i = pending.pop(fut)
                    exc = fut.exception()
                    results[i] = exc if exc is not None else fut.result()
                for i in await _poll(workers, totals, results):
                    console.print(f"[yellow]shard {i}/{n}: its worker died and Ray started it again; it resumes "
                                  "from its journal[/yellow]", soft_wrap=True)
                progress.set_counts(*totals.counts())
        result = _combine(results, totals, n, started)
    finally:
        for w in workers:  # on a cluster that outlives this run, the workers must not
            with contextlib.suppress(Exception):
                ray.kill(w)
        if owned:
            ray.shutdown()
    merged = merge([shard_dir(settings.output, i, n) for i in range(n) if shard_dir(settings.output, i, n).is_dir()],
                   settings.output)
    if merged.missing:
        result.messages.append(f"shards without a run dir: {', '.join(merged.missing)}")
    result.rows_written = merged.rows
    result.paths = {"rows": settings.output / ROWS, "rejected": settings.output / REJECTED,
                    "manifest": settings.output / MANIFEST, "journal": settings.output / JOURNAL, **settings.outputs}
    if settings.publish is not None:
        settings.publish(settings.output / ROWS, result.status)
    return result


async def _awaited(ref: Any) -> Any:
    return await ref


async def _poll(workers: list[Any], totals: _Totals, results: list[Any]) -> list[int]:
    """Ask each worker still running how far it is (one that is restarting answers later); the
    workers found restarted."""
    asks = {i: asyncio.ensure_future(_awaited(w.progress.remote())) for i, w in enumerate(workers)
            if results[i] is None}
    restarted: list[int] = []
    if not asks:
        return restarted
    await asyncio.wait(asks.values(), timeout=POLL_S)
    for i, fut in asks.items():
        if fut.done() and fut.exception() is None:
            if totals.update(i, fut.result()):
                restarted.append(i)
        else:
            fut.cancel()
            with contextlib.suppress(BaseException):
                await fut
    return restarted


def _combine(results: list[Any], totals: _Totals, n: int, started: float) -> RunResult:
    """One result for the run from its workers' (a worker that failed counts as an error, named)."""
    statuses, out = [], RunResult("complete")
    said: dict[str, list[str]] = {}
    by_key: dict[str, list[tuple[str, Any]]] = {}  # the recipe's summary figures, by shard
    stats: dict[str, float] = {k: 0 for k in (*COUNTERS, "cost_usd_total")}
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            statuses.append("error")
            out.messages.append(f"shard {i}/{n}: the worker failed: {str(r).strip().splitlines()[-1] if r else '?'}")
            continue
        statuses.append(r["status"])
        earlier = totals.resumed[i]
        if earlier is not None and earlier < r["records_skipped"]:  # restarted: its dead process's records count
            r = {**r, "records_done": r["records_done"] + r["records_skipped"] - earlier, "records_skipped": earlier}
        for k in ("records_done", "records_skipped", "records_rejected", "bad_input"):
            setattr(out, k, getattr(out, k) + r[k])
        for k in stats:
            stats[k] += r["stats"].get(k, 0) + totals.carried(i).get(k, 0)  # the journal's total carries nothing
        for m in r["messages"]:
            said.setdefault(m, []).append(f"{i}/{n}")
        for k, v in (r["recipe"] or {}).items():
            by_key.setdefault(k, []).append((f"{i}/{n}", v))
    # A message every shard gave is said once; one some gave, with their names.
    out.messages += [m if len(shards) == n else f"shard {', '.join(shards)}: {m}" for m, shards in said.items()]
    for k, values in by_key.items():  # numbers add up; other figures are shown per shard unless all agree
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in values):
            out.recipe[k] = sum(v for _, v in values)
        elif len({str(v) for _, v in values}) == 1:
            out.recipe[k] = values[0][1]
        else:
            out.recipe[k] = " · ".join(f"shard {shard}: {v}" for shard, v in values)
    out.status = min(statuses, key=STATUS_ORDER.index) if statuses else "error"
    out.stats = {k: round(v, 6) if isinstance(v, float) else v for k, v in stats.items()}
    out.elapsed_s = time.monotonic() - started
    return out
