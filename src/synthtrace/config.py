"""Configuration: endpoints, model aliases, limits, prices and recipe options, from YAML and flags.

Secrets never live here: an endpoint names the environment variable that holds its key
(`api_key_env`), and the key is read only when the client is built. A `.env` file in the working
directory is honoured (it never overrides variables already set), as the earlier scripts' users expect.
Which client serves a model name is `llm.providers`' business.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

CONFIG_SEARCH = ("synthtrace.yaml", "synthtrace.yml", "~/.config/synthtrace/config.yaml")


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message says where."""


# Plain dataclasses, so that a run without a config file never imports pydantic (a slow import);
# a file is validated against these same classes by pydantic when it is read (see `load_config`).
# `__pydantic_config__` is how pydantic takes settings for a standard-library dataclass.
_STRICT_KEYS = {"extra": "forbid"}


@dataclass
class Endpoint:
    """Where and how to reach one provider: its API kind, URL, key variable and limits."""

    __pydantic_config__ = _STRICT_KEYS

    kind: str = ""  # a provider kind (`llm.providers`); "": an OpenAI-compatible server
    base_url: str | list[str] | None = None  # a list: replicas of one deployment (`engine.replicas`)
    api_key_env: str | None = None  # name of the environment variable holding the key
    timeout: float = 600.0
    concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    headers: dict[str, str] = field(default_factory=dict)  # non-secret extra headers
    model_path: str | None = None  # weights on this machine: a GGUF file, or DIR or DIR+ADAPTER_DIR
    proxy: str | None = None  # http://[USER:PASSWORD@]HOST:PORT, or "direct"; default: HTTPS_PROXY & co.
    ca_bundle: str | None = None  # certificates to trust beside the system's (and REQUESTS_CA_BUNDLE's)
    verify: bool = True  # False trusts any certificate: anyone on the path can read and change the traffic
    # batch: calls go out as provider batches at batch prices (`engine.batches`; a provider with a batch API)
    mode: Literal["online", "batch"] = "online"
    batch_window_s: float = 10.0  # a batch is submitted once no call has come for this long …
    batch_max: int = 10_000  # … or once this many wait
    batch_poll_s: float = 30.0  # how often a running batch's status is read
    batch_retry: Literal["batch", "online"] = "batch"  # where errored and expired items are asked again
    # The provider's own settings (its `Settings`, `llm.providers`): in a config file they sit beside
    # the keys above, under the endpoint, and are checked against the provider when the file is read.
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        """The base URLs, one per replica ([] for an endpoint without one, such as `local`)."""
        if isinstance(self.base_url, list):
            return list(self.base_url)
        return [self.base_url] if self.base_url else []


@dataclass
class ModelAlias:
    """A short name for a provider's model id on one endpoint, with default generation params."""

    __pydantic_config__ = _STRICT_KEYS

    endpoint: str
    model: str  # the provider's id
    params: dict[str, Any] = field(default_factory=dict)  # default generation params


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens, prompt and completion."""

    input: float  # USD per 1M prompt tokens
    output: float  # USD per 1M completion tokens


@dataclass
class Limits:
    """Run-wide defaults: concurrency, rate budgets, retries and structured-output re-asks."""

    __pydantic_config__ = _STRICT_KEYS

    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 6
    structured_reasks: int = 2
    # An endpoint that answers nothing but 429s or 5xx for this long is stalled: the run says so, then
    # keeps waiting ("wait") or stops with every finished row kept ("stop", exit status 4).
    stall_after_s: float = 30.0
    on_stall: Literal["wait", "stop"] = "wait"


@dataclass
class Config:
    """Everything a run reads from YAML and flags: endpoints, aliases, limits, prices, recipe options."""

    __pydantic_config__ = _STRICT_KEYS

    default_model: str | None = None
    default_endpoint: str | None = None
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    models: dict[str, ModelAlias] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str | None = None  # where it was read from (set by load_config)


def load_dotenv_file(path: str | os.PathLike[str] = ".env") -> None:
    """Honour a `.env` file in the working directory without overriding the real environment."""
    if Path(path).is_file():
        from dotenv import load_dotenv

        load_dotenv(path, override=False)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the YAML config at `path`, or the first of CONFIG_SEARCH that exists, or defaults."""
    candidates = [Path(path)] if path else [Path(p).expanduser() for p in CONFIG_SEARCH]
    for p in candidates:
        if not p.is_file():
            if path:
                raise ConfigError(f"config file not found: {p}")
            continue
        import yaml  # only when there is a file to read: it costs start-up time otherwise

        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{p}:{mark.line + 1}" if mark else str(p)
            raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
        from pydantic import TypeAdapter, ValidationError  # only when there is a file to check

        _gather_provider_settings(data)
        try:
            cfg = TypeAdapter(Config).validate_python(data)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise ConfigError(f"{p}: {loc}: {first['msg']} ({len(e.errors())} problem(s))") from None
        cfg.source = str(p)
        for name, alias in cfg.models.items():
            if alias.endpoint not in cfg.endpoints:
                raise ConfigError(f"{p}: models.{name}: unknown endpoint {alias.endpoint!r}")
        for name, ep in cfg.endpoints.items():
            if isinstance(ep.base_url, list) and (not ep.base_url or len(set(ep.base_url)) < len(ep.base_url)):
                raise ConfigError(f"{p}: endpoints.{name}.base_url: a list needs at least one URL, each once")
        return cfg
    return Config()


def _gather_provider_settings(data: Any) -> None:
    """Move the keys of each endpoint that are not common to every endpoint into its `settings`
    (the provider checks them: `llm.providers.check_endpoints`)."""
    import dataclasses

    common = {f.name for f in dataclasses.fields(Endpoint)}
    endpoints = data.get("endpoints") if isinstance(data, dict) else None
    for ep in (endpoints or {}).values() if isinstance(endpoints, dict) else ():
        if isinstance(ep, dict):
            own = {k: ep.pop(k) for k in [k for k in ep if k not in common]}
            if own:
                ep["settings"] = {**(ep.get("settings") or {}), **own}


def with_cli_endpoint(cfg: Config, base_url: str | list[str] | None, api_key_env: str | None = None) -> Config:
    """`--base-url` adds an OpenAI-compatible endpoint named `cli` and makes it the default; given
    more than once, its URLs are replicas of one deployment."""
    urls = [base_url] if isinstance(base_url, str) else list(dict.fromkeys(base_url or ()))
    if not urls:
        return cfg
    env = api_key_env or next((v for v in ("SYNTHTRACE_API_KEY", "OPENAI_API_KEY") if os.environ.get(v)), None)
    endpoints = {**cfg.endpoints, "cli": Endpoint(base_url=urls[0] if len(urls) == 1 else urls, api_key_env=env)}
    return replace(cfg, endpoints=endpoints, default_endpoint="cli")


def secret(env_name: str | None) -> str | None:
    """Read a secret from the environment; the value is never stored or logged by synthtrace."""
    return os.environ.get(env_name) if env_name else None
