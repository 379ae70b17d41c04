"""Which client serves a model name: name resolution, and the provider registry's clients.

Model names resolve, in order: `local` / `local:PATH.gguf` (llama.cpp in-process); `hf:DIR` /
`hf:DIR+ADAPTER` (transformers in-process); an alias under `models:`; `KIND:ID` for a provider kind
with a default endpoint (`openai:`, `anthropic:`, `argo:`; a configured endpoint of that name wins);
the configured `default_endpoint` (which `--base-url` sets); and, with nothing of that matching, a
provider's own ids when its credentials are set (`gpt-…`, `o3…` to OpenAI with `OPENAI_API_KEY`,
`claude-…` to Anthropic with `ANTHROPIC_API_KEY`, Argo's `claudesonnet4`, `gpt4o` … with `ARGO_USER`).

An endpoint's `kind` names its client class in `synthtrace.registry.PROVIDERS`, so a new provider
is one module plus one registration line (or an entry point).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from synthtrace.config import Config, ConfigError, Endpoint
from synthtrace.llm.base import Client
from synthtrace.registry import BUILTIN_PROVIDERS, PROVIDERS, NotRegistered
from synthtrace.types import Struct


def provider(kind: str) -> Any:
    """The client class registered for an endpoint kind."""
    try:
        return PROVIDERS.load(kind)
    except NotRegistered as e:
        raise ConfigError(str(e)) from None


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


def build_clients(name: str, resolved: ResolvedModel) -> list[tuple[str, Client]]:
    """(URL, client) for each replica of an endpoint (one, with URL "", for an endpoint without a
    URL); keys are read from the environment there and nowhere else."""
    ep = resolved.endpoint
    cls = provider(ep.kind)
    urls = ep.urls
    if len(urls) <= 1:
        return [(urls[0] if urls else "", cls.from_endpoint(name, ep))]
    return [(url, cls.from_endpoint(f"{name} ({url})", replace(ep, base_url=url))) for url in urls]


def resolve_model(cfg: Config, name: str | None) -> ResolvedModel:
    """Bind a model name to an endpoint; `None` means the configured default or the embedded model."""
    name = name or cfg.default_model or "local"
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
    for kind in BUILTIN_PROVIDERS:  # a provider's own model ids, when its credentials are there
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
