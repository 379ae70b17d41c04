"""The gateway: the one door every LLM call goes through.

    await llm.chat(messages, model="judge", schema=Verdict, sample=k, temperature=0.7)

journal (replay, or record before returning) → budget → limiter → client, with bounded retries:
exponential backoff with jitter for 5xx, timeouts, dropped connections and malformed bodies; 429s
wait their Retry-After and feed the limiter's AIMD; other 4xx fail at once with the provider's
message. Structured output is validated here for every backend, with tolerant parsing and a
bounded number of re-asks. Identical requests in flight at the same time are sent once. An endpoint
with several base URLs spreads its requests over them (`engine.replicas`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from synthtrace.config import Config
from synthtrace.engine.cost import BATCH_DISCOUNT, Budget, PriceTable
from synthtrace.engine.journal import Journal, request_key
from synthtrace.engine.limiter import Limiter
from synthtrace.engine.replicas import Replica, Replicas
from synthtrace.llm.providers import ResolvedModel, build_clients, resolve_model
from synthtrace.types import (
    BudgetExceeded,
    ChatRequest,
    ChatResult,
    Disconnected,
    EndpointRefused,
    FatalError,
    Message,
    RateLimited,
    Reply,
    RetryableError,
    Struct,
    StructuredOutputError,
    Unreachable,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from synthtrace.engine.batches import Batcher, BatchLedger
    from synthtrace.engine.structured import SchemaSpec

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
DEFAULT_COMPLETION_GUESS = 512
SPORADIC_FAILURE_RATE = 0.25
BATCH_KINDS = ("openai", "anthropic")  # the endpoint kinds with a batch API (`llm.batches`)


class GatewayStats(Struct):
    """Counts for the run summary."""

    __slots__ = ("calls", "replayed", "retries", "throttled", "failures", "prompt_tokens", "completion_tokens",
                 "cost_usd", "started", "batch_calls", "batch_cost_usd")

    def __init__(self) -> None:
        self.calls = 0  # answered by a provider in this process
        self.replayed = 0  # answered from the journal
        self.retries = 0
        self.throttled = 0
        self.failures = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0  # paid in this process
        self.started = time.monotonic()
        self.batch_calls = 0  # of `calls`, answered in a provider batch
        self.batch_cost_usd = 0.0  # of `cost_usd`, paid at batch prices


class _Endpoint(Struct):
    """An endpoint's replicas (each a client with its limiter), and its health as the run sees it."""

    __slots__ = ("name", "replicas", "refused", "local", "failing_since", "opened", "answered_at", "last_failure",
                 "stalled", "batcher")

    def __init__(self, name: str, replicas: Replicas):
        self.name = name
        self.replicas = replicas
        self.batcher: Batcher | None = None  # batch mode: calls go out as provider batches
        self.local = bool(getattr(replicas.all[0].client, "in_process", False))  # free, and seeded per sample
        self.failing_since: float | None = None  # when the first request refused since its last answer was sent
        self.opened = time.monotonic()  # when the run first needed it
        self.answered_at: float | None = None  # monotonic time of its last answer
        self.last_failure = ""  # what it said last time it refused
        self.stalled = False  # the run has said it is stalled (and not yet that it recovered)
        self.refused: EndpointRefused | None = None  # a refusal of the whole run (bad key): nothing more is sent

    def refusing(self, e: BaseException, sent: float) -> None:
        """A 429 or a 5xx to a request sent at monotonic time `sent`: the endpoint has made no progress
        since then (or since its last answer, if that came later; since the run opened it, if it has
        never answered), until it answers again."""
        since = self.opened if self.answered_at is None else max(sent, self.answered_at)
        if self.failing_since is None or since < self.failing_since:
            self.failing_since = since
        self.last_failure = str(e)[:300]


class Gateway:
    def __init__(self, config: Config, journal: Journal, *, budget: Budget | None = None, fresh: bool = False,
                 concurrency: int | None = None, rpm: float | None = None, tpm: float | None = None,
                 default_model: str | None = None, share: tuple[int, int] | None = None, batch: bool = False,
                 batch_deadline_s: float | None = None, batch_retry_length: bool = False):
        self.config = config
        self.journal = journal
        self.budget = budget or Budget(None)
        self.prices = PriceTable(config.prices)
        self.default_model = default_model
        self.stats = GatewayStats()
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
        self._completion_avg: dict[str, float] = {}
        self._model_ids: dict[tuple[str, str, str], str] = {}

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
                        for url, client in build_clients(r.endpoint_name, r)]
            ep = self._endpoints[r.endpoint_name] = _Endpoint(r.endpoint_name, Replicas(replicas))
            if (self._batch or r.endpoint.mode == "batch") and r.endpoint.kind in BATCH_KINDS:
                ep.batcher = self._batcher(r)
        return ep

    def _batcher(self, r: ResolvedModel) -> Batcher:
        from synthtrace.engine.batches import LEDGER, Batcher, BatchLedger
        from synthtrace.llm.batches import BATCH_APIS

        if self._ledger is None:
            self._ledger = BatchLedger(self.journal.path.with_name(LEDGER))
        e, name = r.endpoint, r.endpoint_name
        if len(e.urls) > 1:
            e = replace(e, base_url=e.urls[0])  # a batch goes to the provider, not to one server of several
        api = BATCH_APIS[e.kind](name, e)

        async def record(key: str, model: str, result: ChatResult, cost: float, request: dict[str, Any]) -> None:
            await self.journal.record(key, name, model, result, cost, request={**request, "via": "batch"})
            self._count(model, result, cost, batch=True)

        async def online(w: Any) -> tuple[ChatResult, float]:
            result, cost, _ = await self._send(self._endpoint(r), r, w.req.messages, w.req.params, None, 0,
                                               req=w.req)
            await self.journal.record(w.key, name, w.model, result, cost, request=w.request)
            return result, cost

        def cost(model: str, result: ChatResult) -> float:
            u = result.usage
            return self.prices.cost(model, u.prompt_tokens, u.completion_tokens) * BATCH_DISCOUNT

        stored = asdict(e)  # for `synthtrace batch status|cancel`: the endpoint, without secrets
        if stored.get("proxy") and "@" in str(stored["proxy"]):
            stored["proxy"] = None  # a proxy URL with credentials: those commands use HTTPS_PROXY & co.
        return Batcher(name, api, self._ledger, endpoint_config=stored, record=record, online=online, cost=cost,
                       window_s=e.batch_window_s, max_items=e.batch_max, poll_s=e.batch_poll_s,
                       deadline=self._batch_deadline, retry=e.batch_retry, retry_length=self._batch_retry_length,
                       max_retries=self.config.limits.max_retries, say=self._notices.append)

    def slots(self, model: str | None) -> int:
        """Requests `model`'s endpoint takes at once, over all its replicas (in batch mode, a batch's worth)."""
        ep = self._endpoint(self.resolve(model))
        return ep.batcher.max_items if ep.batcher is not None else ep.replicas.slots

    def batch_stats(self) -> dict[str, int]:
        """What the batches of this run did, summed over its endpoints ({} without batch mode)."""
        out: dict[str, int] = {}
        for ep in self._endpoints.values():
            if ep.batcher is not None:
                for k in ep.batcher.stats.__slots__:
                    out[k] = out.get(k, 0) + getattr(ep.batcher.stats, k)
        return out

    def notices(self) -> list[str]:
        """What happened since the last call, to be said: replicas taken out or back in service, batches
        submitted, adopted, cancelled."""
        said, self._notices[:] = list(self._notices), []
        for ep in self._endpoints.values():
            said += ep.replicas.notices
            ep.replicas.notices = []
        return said

    def stalls(self, window: float) -> list[tuple[str, float, str]]:
        """Endpoints that have answered nothing but refusals for `window` seconds or more:
        (name, seconds since the first refusal, what they said last)."""
        now = time.monotonic()
        return [(ep.name, now - ep.failing_since, ep.last_failure) for ep in self._endpoints.values()
                if ep.failing_since is not None and now - ep.failing_since >= window]

    def next_stall_in(self, window: float) -> float | None:
        """Seconds until the soonest endpoint now refusing would have done so for `window` (None: none is)."""
        now = time.monotonic()
        due = [ep.failing_since + window - now for ep in self._endpoints.values()
               if ep.failing_since is not None and not ep.stalled]
        return max(0.0, min(due)) if due else None

    def recovered(self) -> list[str]:
        """Endpoints marked stalled that have answered since; they are marked recovered."""
        back = [ep for ep in self._endpoints.values() if ep.stalled and ep.failing_since is None]
        for ep in back:
            ep.stalled = False
        return [ep.name for ep in back]

    def mark_stalled(self, name: str) -> bool:
        """Note that the run said `name` is stalled; False when it had said so already."""
        ep = self._endpoints[name]
        was, ep.stalled = ep.stalled, True
        return not was

    @property
    def in_flight(self) -> int:
        """Requests on their way: sent, or waiting in a provider batch."""
        return sum(ep.replicas.in_flight + (len(ep.batcher.waiting) if ep.batcher else 0)
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
        ep = self._endpoint(r)
        model_id = self._model_id(r)
        key = request_key(model_id, messages, params, spec.schema if spec else None, sample)
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
            if ep.batcher is not None:  # journaled by the batcher as it reads the batch's results
                result, cost, attempts = await self._batched(ep.batcher, key, r, messages, params, spec, request)
            else:
                result, cost, attempts = await self._send(ep, r, messages, params, spec, sample)
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

    async def _reserve(self, r: ResolvedModel, messages: list[Message], params: dict[str, Any], local: bool,
                       discount: float = 1.0) -> tuple[float, int, int]:
        """Reserve a call's estimated cost in the budget (waiting for calls in flight to settle when
        that makes it fit): (estimate, prompt tokens, completion tokens) as guessed."""
        prompt_est = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
        while True:
            completion_est = int(params.get("max_tokens")
                                 or self._completion_avg.get(r.model, DEFAULT_COMPLETION_GUESS))
            estimate = 0.0 if local else self.prices.cost(r.model, prompt_est, completion_est) * discount
            if self.budget.reserve(estimate):
                return estimate, prompt_est, completion_est
            if not self.budget.holds:  # it would not fit even with nothing else in flight
                raise BudgetExceeded(f"--max-usd {self.budget.max_usd} would be passed "
                                     f"(spent ${self.budget.spent:.4f}, next call ~${estimate:.4f})")
            await self.budget.wait_settled()  # calls in flight hold estimates; their real cost decides

    async def _batched(self, batcher: Batcher, key: str, r: ResolvedModel, messages: list[Message],
                       params: dict[str, Any], spec: SchemaSpec | None, request: dict[str, Any]
                       ) -> tuple[ChatResult, float, int]:
        estimate, _, _ = await self._reserve(r, messages, params, False, BATCH_DISCOUNT)
        req = ChatRequest(r.model, messages, params, spec.schema if spec else None, spec.name if spec else "response")
        try:
            result, cost = await batcher.ask(key, r.model, req, request)
        except BaseException:
            self.budget.settle(estimate, 0.0)
            raise
        self.budget.settle(estimate, cost)
        return result, cost, 1

    def _count(self, model: str, result: ChatResult, cost: float, batch: bool = False) -> None:
        st, usage = self.stats, result.usage
        st.calls += 1
        st.prompt_tokens += usage.prompt_tokens
        st.completion_tokens += usage.completion_tokens
        st.cost_usd += cost
        if batch:
            st.batch_calls += 1
            st.batch_cost_usd += cost
        avg = self._completion_avg.get(model)
        self._completion_avg[model] = usage.completion_tokens if avg is None else 0.9 * avg + 0.1 * usage.completion_tokens

    async def _send(self, ep: _Endpoint, r: ResolvedModel, messages: list[Message], params: dict[str, Any],
                    spec: SchemaSpec | None, sample: int, req: ChatRequest | None = None
                    ) -> tuple[ChatResult, float, int]:
        local = ep.local
        estimate, prompt_est, completion_est = await self._reserve(r, messages, params, local)
        if req is None:
            req = ChatRequest(r.model, messages, params, spec.schema if spec else None,
                              spec.name if spec else "response")
        if sample and "seed" not in params and local:
            req.params = {**params, "seed": sample}
        max_retries = self.config.limits.max_retries
        errors = throttles = 0
        tokens_est = prompt_est + completion_est
        holding = False  # a sporadic failure's retry keeps the slot it already has
        replicas = ep.replicas
        rep = replicas.all[0]
        try:
            while True:
                if not holding:
                    rep = await replicas.acquire(tokens_est, first=errors + throttles > 0)
                holding = False
                limiter = rep.limiter
                sent = time.monotonic()
                try:
                    if ep.refused is not None:  # refused while this call waited for a slot
                        raise ep.refused
                    result = await rep.client.chat(req)
                except RateLimited as e:
                    ep.refusing(e, sent)
                    limiter.release_throttled(e.retry_after)
                    throttles += 1
                    self.stats.throttled += 1
                    if throttles > max_retries * 5:
                        raise
                    if not replicas.room_besides(rep):  # no other replica to take it now: wait as asked
                        await asyncio.sleep(_jitter(e.retry_after) if e.retry_after is not None
                                            else _backoff(throttles))
                    continue
                except RetryableError as e:
                    hopeless = isinstance(e, Unreachable) and (e.cause in ("dns", "tls", "proxy")
                                                               or (e.cause == "refused" and not rep.answered))
                    if isinstance(e, (Unreachable, Disconnected)) and replicas.take_out(rep, _gone_text(e), hopeless):
                        limiter.release()  # the others are in service: send it to one of them at once
                        errors += 1
                        if errors > max_retries:
                            self.stats.failures += 1
                            raise
                        self.stats.retries += 1
                        continue
                    if hopeless and replicas.hopeless():
                        # It cannot heal by retrying: stop here, leave every record for the next run.
                        limiter.release()
                        self.stats.failures += 1
                        where = f"none of its {len(replicas.all)} servers answers: " if replicas.several else ""
                        ep.refused = EndpointRefused(f"endpoint {ep.name!r}: {where}{_cause_text(e)}: {e}")
                        raise ep.refused from e
                    ep.refusing(e, sent)
                    rep.observe(True)
                    errors += 1
                    if errors > max_retries:
                        limiter.release()
                        self.stats.failures += 1
                        raise
                    self.stats.retries += 1
                    sporadic = rep.failure_rate < SPORADIC_FAILURE_RATE and not isinstance(e, Unreachable)
                    if sporadic and limiter.unmetered:
                        # A healthy endpoint's odd failure: ask again at once, in the same slot. Given
                        # back, the slot went to a waiting request and the retry waited for the next
                        # one to free — near the end of a burst of answers, a whole round.
                        holding = True
                        continue
                    limiter.release()
                    await asyncio.sleep(_backoff(errors, rep.failure_rate))
                    continue
                except BaseException as e:
                    limiter.release()
                    self.stats.failures += 1
                    if isinstance(e, FatalError) and e.run_level:
                        ep.refused = EndpointRefused(str(e), e.status)
                        raise ep.refused from e
                    if isinstance(e, EndpointRefused):
                        ep.refused = e
                    raise
                limiter.release()
                rep.observe(False)
                replicas.answered(rep)
                ep.failing_since, ep.answered_at = None, time.monotonic()
                usage = result.usage
                limiter.on_success(tokens_est, usage.total_tokens)
                break
        except BaseException:
            self.budget.settle(estimate, 0.0)
            raise
        cost = self.prices.cost(r.model, usage.prompt_tokens, usage.completion_tokens, local=local)
        self.budget.settle(estimate, cost)
        self._count(r.model, result, cost)
        return result, cost, errors + throttles + 1

    async def aclose(self) -> None:
        for ep in self._endpoints.values():
            if ep.batcher is not None:
                await ep.batcher.aclose()
            for rep in ep.replicas.all:
                await rep.client.aclose()
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


def _backoff(attempt: int, failure_rate: float = 1.0) -> float:
    """Exponential backoff with jitter: ~0.25–0.5 s, then 0.5–1 s, 1–2 s … capped.

    While failures are sporadic (under 25 % of the endpoint's recent answers fail), retries go almost
    at once: the endpoint is healthy, and waiting would only stretch the run's tail (a request that
    fails twice near the end would otherwise add a second or more). Systematic failures get the full
    exponential backoff; max_retries bounds both.
    """
    import random  # only a retry needs it: kept off the start-up path

    if failure_rate < SPORADIC_FAILURE_RATE:
        return random.uniform(0.0, 0.01 * attempt)  # a few ms (with a rate budget; otherwise no wait)
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def _cause_text(e: Unreachable) -> str:
    return {"dns": "the name does not resolve", "tls": "its TLS certificate is not accepted",
            "proxy": "the proxy does not let it through",
            "refused": "nothing listens there (connection refused) and it has not answered in this run"
            }.get(e.cause, "cannot connect")


def _share_of(slots: int, index: int, count: int) -> int:
    """Worker `index` of `count`'s part of `slots`: together exactly `slots`, and at least one each."""
    return max(1, slots // count + (index < slots % count))


def _gone_text(e: RetryableError) -> str:
    if isinstance(e, Disconnected):
        return "a connection dropped mid-answer"
    return {"dns": "the name does not resolve", "tls": "its TLS certificate is not accepted",
            "proxy": "the proxy does not let it through", "refused": "connection refused",
            "timeout": "connecting timed out"}.get(getattr(e, "cause", ""), "cannot connect")


def _jitter(retry_after: float) -> float:
    """Honour Retry-After, spreading the retries over a further 10 % so they do not arrive as one wave."""
    import random

    return min(retry_after, 300.0) * random.uniform(1.0, 1.1)


class RecordLLM:
    """The `llm` handle a recipe receives for one record: the gateway, plus a log of its calls."""

    def __init__(self, gateway: Gateway, parent: RecordLLM | None = None):
        self._gateway = gateway
        self._parent = parent
        self.calls: list[dict[str, Any]] = []

    async def chat(self, messages: list[Message], **kwargs: Any) -> Reply:
        reply = await self._gateway.chat(messages, **kwargs)
        self._log(reply.call_record())
        return reply

    def _log(self, call: dict[str, Any]) -> None:
        self.calls.append(call)
        if self._parent is not None:
            self._parent._log(call)

    def fork(self) -> RecordLLM:
        """A handle whose calls are logged on their own and in this one (one per example of a record)."""
        return RecordLLM(self._gateway, parent=self)

    def resolve(self, model: str | None) -> ResolvedModel:
        return self._gateway.resolve(model)

    @property
    def tokens(self) -> tuple[int, int]:
        return sum(c["prompt_tokens"] for c in self.calls), sum(c["completion_tokens"] for c in self.calls)

    @property
    def cost_usd(self) -> float:
        return sum(c["cost_usd"] for c in self.calls)
