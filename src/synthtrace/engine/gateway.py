"""The gateway: the one door every LLM call goes through.

    await llm.chat(messages, model="judge", schema=Verdict, sample=k, temperature=0.7)

Its layers, top to bottom: structured output (validated here for every backend, tolerant parsing,
a bounded number of re-asks); the journal (a call answered before is replayed; identical calls in
flight at once are sent once; an answer is recorded before its caller sees it); then the
endpoint's transport — `online.OnlineTransport` (a replica with room, its limiter, bounded
retries) or, in batch mode, `batches.Batcher` (provider batches at half price, journaled as they
are read). Both reserve the call's cost in the budget first and count it in `accounting`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Protocol

from synthtrace.config import Config
from synthtrace.engine.accounting import Accounting, GatewayStats
from synthtrace.engine.cost import Budget, PriceTable
from synthtrace.engine.journal import Journal, request_key
from synthtrace.engine.limiter import Limiter
from synthtrace.engine.online import OnlineTransport
from synthtrace.engine.replicas import Replica, Replicas
from synthtrace.llm.providers import ResolvedModel, batch_api, build_clients, resolve_model
from synthtrace.recipe import CallLog
from synthtrace.types import ChatRequest, ChatResult, Message, Reply, Struct, StructuredOutputError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from synthtrace.engine.batches import Batcher, BatchLedger
    from synthtrace.engine.structured import SchemaSpec

__all__ = ["Call", "Gateway", "GatewayStats", "RecordLLM", "Transport"]


class Call(Struct):
    """One request on its way: its journal key, the model it is for, what it asks, and what the
    journal keeps of it."""

    __slots__ = ("key", "r", "req", "request")

    def __init__(self, key: str, r: ResolvedModel, req: ChatRequest, request: dict[str, Any]):
        self.key = key
        self.r = r
        self.req = req
        self.request = request


class Transport(Protocol):
    """How an endpoint's calls reach its provider."""

    journals: bool  # True: it journals each answer itself, before handing it back

    async def send(self, call: Call) -> tuple[ChatResult, float, int]:
        """(answer, cost, attempts), the cost reserved in the budget before and settled after."""
        ...

    async def aclose(self) -> None: ...


class _Endpoint(Struct):
    """A configured endpoint in this run: its online transport (replicas, limiters, health) and the
    transport its calls take (the online one, or its batcher in batch mode)."""

    __slots__ = ("name", "online", "batcher", "transport")

    def __init__(self, name: str, online: OnlineTransport, batcher: Batcher | None):
        self.name = name
        self.online = online
        self.batcher = batcher
        self.transport: Transport = batcher if batcher is not None else online


class Gateway:
    def __init__(self, config: Config, journal: Journal, *, budget: Budget | None = None, fresh: bool = False,
                 concurrency: int | None = None, rpm: float | None = None, tpm: float | None = None,
                 default_model: str | None = None, share: tuple[int, int] | None = None, batch: bool = False,
                 batch_deadline_s: float | None = None, batch_retry_length: bool = False):
        self.config = config
        self.journal = journal
        self.accounting = Accounting(budget or Budget(None), PriceTable(config.prices))
        self.default_model = default_model
        self._replay_after = time.time() if fresh else None
        self._overrides = {"concurrency": concurrency, "rpm": rpm, "tpm": tpm}
        self._share = share  # (I, N): worker I of N processes that split every endpoint's limits
        self._batch = batch  # every endpoint with a batch API in batch mode (--batch)
        self._batch_deadline = None if batch_deadline_s is None else time.monotonic() + batch_deadline_s
        self._batch_retry_length = batch_retry_length
        self._ledger: BatchLedger | None = None
        self._notices: list[str] = []
        self._resolved: dict[str | None, ResolvedModel] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._pending: dict[str, asyncio.Future[tuple[ChatResult, float]]] = {}
        self._model_ids: dict[tuple[str, str, str], str] = {}

    @property
    def stats(self) -> GatewayStats:
        return self.accounting.stats

    @property
    def budget(self) -> Budget:
        return self.accounting.budget

    @property
    def prices(self) -> PriceTable:
        return self.accounting.prices

    # -- resolution -----------------------------------------------------------------------------

    def resolve(self, model: str | None) -> ResolvedModel:
        r = self._resolved.get(model)
        if r is None:
            r = self._resolved[model] = resolve_model(self.config, model or self.default_model)
        return r

    def _endpoint(self, r: ResolvedModel) -> _Endpoint:
        ep = self._endpoints.get(r.endpoint_name)
        if ep is None:
            limits, over = self.config.limits, self._overrides
            conc = over["concurrency"] or r.endpoint.concurrency or limits.concurrency
            rpm = over["rpm"] or r.endpoint.rpm or limits.rpm
            tpm = over["tpm"] or r.endpoint.tpm or limits.tpm
            if self._share is not None:
                conc, rpm, tpm = _share_of(conc, *self._share), rpm and rpm / self._share[1], tpm and tpm / self._share[1]
            replicas = [Replica(url, client, Limiter(conc, rpm, tpm, hard_cap=client.max_concurrency))
                        for url, client in build_clients(r.endpoint_name, r, conc)]
            online = OnlineTransport(r.endpoint_name, Replicas(replicas), self.accounting, limits.max_retries)
            batched = self._batch or r.endpoint.mode == "batch"
            batcher = self._batcher(r, online) if batched and batch_api(r.endpoint.kind) is not None else None
            ep = self._endpoints[r.endpoint_name] = _Endpoint(r.endpoint_name, online, batcher)
        return ep

    def _batcher(self, r: ResolvedModel, online: OnlineTransport) -> Batcher:
        """Batch mode for `r`'s endpoint: its provider's batch API, with this run's ledger, journal and budget."""
        from synthtrace.engine.batches import LEDGER, Batcher, BatchLedger

        if self._ledger is None:
            self._ledger = BatchLedger(self.journal.path.with_name(LEDGER))
        e, name = r.endpoint, r.endpoint_name
        if len(e.urls) > 1:
            e = replace(e, base_url=e.urls[0])  # a batch goes to the provider, not to one server of several
        api_class = batch_api(e.kind)
        assert api_class is not None
        stored = asdict(e)  # for `synthtrace batch status|cancel`: the endpoint, without secrets
        if stored.get("proxy") and "@" in str(stored["proxy"]):
            stored["proxy"] = None  # a proxy URL with credentials: those commands use HTTPS_PROXY & co.
        return Batcher(name, api_class(name, e), self._ledger, endpoint_config=stored, journal=self.journal,
                       accounting=self.accounting, online=online, window_s=e.batch_window_s, max_items=e.batch_max,
                       poll_s=e.batch_poll_s, deadline=self._batch_deadline, retry=e.batch_retry,
                       retry_length=self._batch_retry_length, max_retries=self.config.limits.max_retries,
                       say=self._notices.append)

    def slots(self, model: str | None) -> int:
        """Requests `model`'s endpoint takes at once, over all its replicas (in batch mode, a batch's worth)."""
        ep = self._endpoint(self.resolve(model))
        return ep.batcher.max_items if ep.batcher is not None else ep.online.slots

    def batch_stats(self) -> dict[str, int]:
        """What the batches of this run did, summed over its endpoints ({} without batch mode)."""
        out: dict[str, int] = {}
        for ep in self._endpoints.values():
            if ep.batcher is not None:
                for k in ep.batcher.stats.__slots__:
                    out[k] = out.get(k, 0) + getattr(ep.batcher.stats, k)
        return out

    # -- what the run says about its endpoints ----------------------------------------------------

    def notices(self) -> list[str]:
        """What happened since the last call, to be said: replicas taken out or back in service, batches
        submitted, adopted, cancelled."""
        said, self._notices[:] = list(self._notices), []
        for ep in self._endpoints.values():
            said += ep.online.replicas.notices
            ep.online.replicas.notices = []
        return said

    def stalls(self, window: float) -> list[tuple[str, float, str]]:
        """Endpoints that have answered nothing but refusals for `window` seconds or more:
        (name, seconds since the first refusal, what they said last)."""
        now = time.monotonic()
        return [(ep.name, now - ep.online.failing_since, ep.online.last_failure) for ep in self._endpoints.values()
                if ep.online.failing_since is not None and now - ep.online.failing_since >= window]

    def next_stall_in(self, window: float) -> float | None:
        """Seconds until the soonest endpoint now refusing would have done so for `window` (None: none is)."""
        now = time.monotonic()
        due = [ep.online.failing_since + window - now for ep in self._endpoints.values()
               if ep.online.failing_since is not None and not ep.online.stalled]
        return max(0.0, min(due)) if due else None

    def recovered(self) -> list[str]:
        """Endpoints marked stalled that have answered since; they are marked recovered."""
        back = [ep.online for ep in self._endpoints.values() if ep.online.stalled and ep.online.failing_since is None]
        for online in back:
            online.stalled = False
        return [online.name for online in back]

    def mark_stalled(self, name: str) -> bool:
        """Note that the run said `name` is stalled; False when it had said so already."""
        online = self._endpoints[name].online
        was, online.stalled = online.stalled, True
        return not was

    @property
    def in_flight(self) -> int:
        """Requests on their way: sent, or waiting in a provider batch."""
        return sum(ep.online.in_flight + (len(ep.batcher.waiting) if ep.batcher else 0)
                   for ep in self._endpoints.values())

    # -- the door -------------------------------------------------------------------------------

    async def chat(self, messages: list[Message], *, model: str | None = None,
                   schema: type[BaseModel] | dict[str, Any] | None = None, sample: int = 0,
                   reasks: int | None = None, **params: Any) -> Reply:
        r = self.resolve(model)
        merged = {**r.params, **{k: v for k, v in params.items() if v is not None}}
        spec = None
        if schema is not None:  # imported here: a run without schemas never needs pydantic's side of things
            from synthtrace.engine.structured import SchemaSpec

            spec = SchemaSpec.of(schema)
        reasks = self.config.limits.structured_reasks if reasks is None else reasks
        convo = list(messages)
        attempts = 0
        for ask in range(reasks + 1):
            result, cost, key, cached, n = await self._call(r, convo, merged, spec, sample)
            attempts += n
            reply = Reply(result.text, result.reasoning, None, r.alias, r.model, key, cached, attempts,
                          result.usage.prompt_tokens, result.usage.completion_tokens, cost, result.finish_reason)
            if spec is None:
                return reply
            try:
                reply.parsed = spec.parse(result)
                return reply
            except ValueError as e:
                problem = str(e)
                if ask == reasks:
                    raise StructuredOutputError(
                        f"{r.alias}: no valid {spec.name} after {reasks + 1} answer(s): {problem}", result.text
                    ) from None
                from synthtrace.engine.structured import reask_message

                convo = [*convo, {"role": "assistant", "content": result.text}, reask_message(problem)]
        raise AssertionError("unreachable")

    async def _call(self, r: ResolvedModel, messages: list[Message], params: dict[str, Any],
                    spec: SchemaSpec | None, sample: int) -> tuple[ChatResult, float, str, bool, int]:
        """The journal's layer: a call answered before is replayed, one in flight is shared, a new one
        goes to its endpoint's transport and is journaled before it is handed back."""
        ep = self._endpoint(r)
        key = request_key(self._model_id(r), messages, params, spec.schema if spec else None, sample)
        entry = self.journal.get(key, since=self._replay_after)
        if entry is not None:
            self.stats.replayed += 1
            return entry.result, entry.cost_usd, key, True, 0
        pending = self._pending.get(key)
        if pending is not None:  # the same request is already on its way: share its answer
            result, cost = await asyncio.shield(pending)
            return result, cost, key, True, 0
        fut: asyncio.Future[tuple[ChatResult, float]] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            request = {"messages": messages, "params": params, "schema": spec.name if spec else None}
            if sample and "seed" not in params and ep.online.local:  # in process: each sample its own seed
                params = {**params, "seed": sample}
            req = ChatRequest(r.model, messages, params, spec.schema if spec else None,
                              spec.name if spec else "response")
            result, cost, attempts = await ep.transport.send(Call(key, r, req, request))
            if not ep.transport.journals:
                await self.journal.record(key, ep.name, r.model, result, cost, more_coming=self.in_flight > 0,
                                          request=request)
            fut.set_result((result, cost))
            return result, cost, key, False, attempts
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._pending[key]

    def _model_id(self, r: ResolvedModel) -> str:
        """What the journal keys a model by: endpoint and model id; for weights on this machine (`local:`,
        `hf:`) also their files' sizes and times, so retraining into the same directory is a new model.
        Replicas are keyed by the first URL listed, whichever answered: adding or losing the others
        keeps every answer already paid for."""
        urls = r.endpoint.urls
        k = (r.endpoint.kind, urls[0] if urls else "", r.model)
        mid = self._model_ids.get(k)
        if mid is None:
            mid = f"{k[0]}:{k[1]}:{k[2]}"
            if r.is_local:
                mid += weights_fingerprint(r.endpoint.model_path or "")
            self._model_ids[k] = mid
        return mid

    async def aclose(self) -> None:
        for ep in self._endpoints.values():
            if ep.batcher is not None:
                await ep.batcher.aclose()
            await ep.online.aclose()
        self._endpoints.clear()
        if self._ledger is not None:
            self._ledger.close()


def weights_fingerprint(spec: str) -> str:
    """`@` + a short hash of the size and modification time of each weight file behind `spec` (a GGUF
    file, a model directory, or `DIR+ADAPTER_DIR`), or "" when none is on disk (e.g. the default model)."""
    from synthtrace.llm.hf import parse_spec

    paths = [spec] if os.path.isfile(spec) else [p for p in parse_spec(spec) if p and os.path.isdir(p)]
    stamps = []
    for path in paths:
        entries = [path] if os.path.isfile(path) else sorted(os.path.join(path, n) for n in os.listdir(path))
        for f in entries:
            if os.path.isfile(f):
                st = os.stat(f)
                stamps.append(f"{os.path.basename(f)}:{st.st_size}:{st.st_mtime_ns}")
    return "@" + hashlib.sha256("|".join(stamps).encode()).hexdigest()[:12] if stamps else ""


def _share_of(slots: int, index: int, count: int) -> int:
    """Worker `index` of `count`'s part of `slots`: together exactly `slots`, and at least one each."""
    return max(1, slots // count + (index < slots % count))


class RecordLLM(CallLog):
    """The `llm` handle a recipe receives for one record: the gateway, plus a log of its calls."""

    def __init__(self, gateway: Gateway, parent: RecordLLM | None = None):
        super().__init__(parent)
        self._gateway = gateway

    async def chat(self, messages: list[Message], **kwargs: Any) -> Reply:
        reply = await self._gateway.chat(messages, **kwargs)
        self._log(reply.call_record())
        return reply

    def fork(self) -> RecordLLM:
        """A handle whose calls are logged on their own and in this one (one per example of a record)."""
        return RecordLLM(self._gateway, parent=self)
