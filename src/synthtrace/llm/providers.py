"""Which client serves a model name: name resolution, and the provider registry's clients.

Model names resolve, in order: `local` / `local:PATH.gguf` (llama.cpp in-process); `hf:DIR` /
`hf:DIR+ADAPTER` (transformers in-process); an alias under `models:`; `KIND:ID` for a provider kind
with a default endpoint (`openai:`, `anthropic:`, `argo:`; a configured endpoint of that name wins);
the configured `default_endpoint` (which `--base-url` sets); and, with nothing of that matching, a
provider's own ids when its credentials are set (`gpt-…`, `o3…` to OpenAI with `OPENAI_API_KEY`,
`claude-…` to Anthropic with `ANTHROPIC_API_KEY`, Argo's `claudesonnet4`, `gpt4o` … with `ARGO_USER`).

An endpoint's `kind` names its provider: a client class registered here (`BUILTIN_PROVIDERS`) or
by a plugin (an entry point in the `synthtrace.providers` group), so a new provider is one module
plus one registration line. What a provider can do it declares on its class, and a plugin's class
gets all of it:

- `from_endpoint(name, endpoint)` builds the client (see `llm.base.Client`);
- `claims(model) -> bool`: bare model ids it serves when nothing configured routes them;
- `default_endpoint() -> Endpoint`: where `KIND:MODEL` and its claimed ids go;
- `batch_api`: its batch API class, or its `module:Class` reference (batch mode, `engine.batches`);
- `Settings`: a dataclass of its own endpoint settings, written beside the common ones under the
  endpoint in the config; `llm.base.own_settings(cls, endpoint)` reads them in `from_endpoint`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from synthtrace.config import Config, ConfigError, Endpoint
from synthtrace.llm.base import Client
from synthtrace.registry import NotRegistered, Registry, load_reference
from synthtrace.types import Struct

# Built-in providers: endpoint kinds a plugin cannot take over. The first is the default kind (an
# endpoint that names none is an OpenAI-compatible server).
BUILTIN_PROVIDERS = {
    "openai": "synthtrace.llm.openai:OpenAIClient",
    "anthropic": "synthtrace.llm.anthropic:AnthropicClient",
    "argo": "synthtrace.llm.argo:ArgoClient",
    "local": "synthtrace.llm.local:LocalClient",
    "hf": "synthtrace.llm.hf:HFClient",
}
DEFAULT_KIND = next(iter(BUILTIN_PROVIDERS))
PROVIDERS = Registry("synthtrace.providers", BUILTIN_PROVIDERS, "provider kind")


def provider(kind: str) -> Any:
    """The client class registered for an endpoint kind ("" is the default kind)."""
    try:
        return PROVIDERS.load(kind or DEFAULT_KIND)
    except NotRegistered as e:
        raise ConfigError(str(e)) from None


def batch_api(kind: str) -> Any:
    """The batch API class of an endpoint kind's provider, or None when it has none."""
    ref = getattr(provider(kind), "batch_api", None)
    return load_reference(ref) if isinstance(ref, str) else ref


def check_endpoints(cfg: Config) -> Config:
    """Every endpoint's kind known, its provider's own settings valid, batch mode only where the
    provider has a batch API; a ConfigError names the file and the key."""
    where = f"{cfg.source}: " if cfg.source else ""
    for name, ep in cfg.endpoints.items():
        at = f"{where}endpoints.{name}"
        if ep.kind and ep.kind not in PROVIDERS:
            raise ConfigError(f"{at}.kind: {PROVIDERS.unknown(ep.kind)}")
        cls = provider(ep.kind)
        ep.settings = _checked_settings(cls, ep, at)
        if ep.mode == "batch" and batch_api(ep.kind) is None:
            raise ConfigError(f"{at}.mode: batch needs a provider with a batch API; "
                              f"kind {ep.kind or DEFAULT_KIND!r} has none")
    return cfg


def _checked_settings(cls: Any, ep: Endpoint, at: str) -> dict[str, Any]:
    """`ep.settings` validated against the provider's `Settings` (types coerced as pydantic does)."""
    if not ep.settings:
        return ep.settings
    settings_type = getattr(cls, "Settings", None)
    known = {f.name for f in dataclasses.fields(settings_type)} if settings_type is not None else set()
    unknown = [k for k in ep.settings if k not in known]
    if unknown:
        mine = f"its own: {', '.join(sorted(known))}" if known else "none of its own"
        raise ConfigError(f"{at}.{unknown[0]}: not a setting of a {ep.kind or DEFAULT_KIND!r} endpoint ({mine})")
    from pydantic import TypeAdapter, ValidationError  # only when there are settings to check

    try:
        value = TypeAdapter(settings_type).validate_python(ep.settings)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{at}.{loc}: {first['msg']}") from None
    return {k: getattr(value, k) for k in ep.settings}


class ResolvedModel(Struct):
    """A model name as the user wrote it, bound to an endpoint and the provider's id."""

    __slots__ = ("alias", "endpoint_name", "endpoint", "model", "params", "chosen_by_name")

    def __init__(self, alias: str, endpoint_name: str, endpoint: Endpoint, model: str, params: dict[str, Any]):
        self.alias = alias
        self.endpoint_name = endpoint_name
        self.endpoint = endpoint
        self.model = model
        self.params = params
        self.chosen_by_name = False  # routed by its id alone (`gpt-4o` to OpenAI), nothing configured

    @property
    def is_local(self) -> bool:
        """Served in this process (llama.cpp, transformers): free, and seeded per sample."""
        return bool(provider(self.endpoint.kind).in_process)

    @property
    def engine(self) -> str:
        """What serves it, in words: its provider's `description`, else its kind."""
        return str(getattr(provider(self.endpoint.kind), "description", self.endpoint.kind))


def build_clients(name: str, resolved: ResolvedModel, concurrency: int | None = None) -> list[tuple[str, Client]]:
    """(URL, client) for each replica of an endpoint (one, with URL "", for an endpoint without a
    URL); keys are read from the environment there and nowhere else. `concurrency`: what the run
    sends each at once, as the client sees it in its endpoint (the embedded model sizes its slots by it)."""
    ep = resolved.endpoint
    if concurrency is not None:
        ep = replace(ep, concurrency=concurrency)
    cls = provider(ep.kind)
    urls = ep.urls
    if len(urls) <= 1:
        return [(urls[0] if urls else "", cls.from_endpoint(name, ep))]
    return [(url, cls.from_endpoint(f"{name} ({url})", replace(ep, base_url=url))) for url in urls]


def _claimants() -> Iterator[str]:
    """Provider kinds that may claim a bare model id: the built-ins, then (read only if needed) plugins."""
    yield from BUILTIN_PROVIDERS
    yield from sorted(PROVIDERS.plugins())


def resolve_model(cfg: Config, name: str | None) -> ResolvedModel:
    """Bind a model name to an endpoint; `None` means the configured default or the embedded model."""
    r = _resolve(cfg, name or cfg.default_model or "local")
    if not r.endpoint.kind:
        r.endpoint = replace(r.endpoint, kind=DEFAULT_KIND)
    return r


def _resolve(cfg: Config, name: str) -> ResolvedModel:
    if name == "local" or name.startswith("local:"):
        path = name.partition(":")[2] or None
        ep = cfg.endpoints.get("local") or Endpoint(kind="local")
        if path:
            ep = replace(ep, model_path=path)
        return ResolvedModel(name, "local", ep, path or ep.model_path or "smollm2-135m-instruct", {})
    if name.startswith("hf:"):
        spec = name.partition(":")[2]
        if not spec:
            raise ConfigError("hf: needs a model directory: hf:DIR or hf:DIR+ADAPTER_DIR")
        ep = replace(cfg.endpoints.get("hf") or Endpoint(kind="hf"), kind="hf", model_path=spec)
        return ResolvedModel(name, name, ep, spec, {})  # one endpoint (and loaded model) per spec
    if name in cfg.models:
        alias = cfg.models[name]
        return ResolvedModel(name, alias.endpoint, cfg.endpoints[alias.endpoint], alias.model, dict(alias.params))
    prefix, sep, rest = name.partition(":")
    if sep and "/" not in prefix and prefix in PROVIDERS:
        default = getattr(provider(prefix), "default_endpoint", None)
        if default is not None:
            return ResolvedModel(name, prefix, cfg.endpoints.get(prefix) or default(), rest, {})
    if cfg.default_endpoint:
        if cfg.default_endpoint not in cfg.endpoints:
            raise ConfigError(f"default_endpoint {cfg.default_endpoint!r} is not among the endpoints")
        return ResolvedModel(name, cfg.default_endpoint, cfg.endpoints[cfg.default_endpoint], name, {})
    for kind in _claimants():  # a provider's own model ids, when its credentials are there
        cls = provider(kind)
        claims = getattr(cls, "claims", None)
        if claims is not None and claims(name):
            r = ResolvedModel(name, kind, cfg.endpoints.get(kind) or cls.default_endpoint(), name, {})
            r.chosen_by_name = True
            return r
    raise ConfigError(
        f"no endpoint for model {name!r}: give --base-url URL, define it under `models:` in a config "
        f"file, write it as openai:{name} / anthropic:{name} / argo:{name}, or use `local`"
    )
