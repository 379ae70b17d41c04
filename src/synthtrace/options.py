"""Options declared once, as a dataclass; flags, `--help`, config checks and the manifest come from it.

    @dataclass
    class Options:
        samples: int = option(3, "Answers tried per problem.", flags=("--samples", "-k"), min=1, max=10)
        judge: str | None = option(None, "Model that scores the answers (default: --model).")
        keep_failed: bool = option(False, "Keep rows whose answer failed the check.")

A field's type gives its flag's type: `bool` (a switch; `--x/--no-x` when it defaults to True),
`int`, `float`, `str`, `Path`, a `Literal` of strings (a choice), `list[...]` or `tuple[..., ...]`
of one of those (the flag may be repeated, or with `sep` takes one separated value), and any of
these `| None`. The same conversion checks a value that comes from a config file
(`recipes.NAME:`) or from Python, so all three fail with the same message.

`parse_duration` reads the durations flags take (`90s`, `1h30m`, `7d`, or seconds).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

import click

_MISSING = dataclasses.MISSING
_SPECS: dict[type, list[Spec]] = {}
_PATHS: dict[tuple[bool, bool, bool], click.Path] = {}  # parameter types are stateless: shared
PathKind = Literal["file", "dir", "any"]


class OptionError(ValueError):
    """An option value (or name) that cannot be taken; the message says which and why."""


def option(default: Any = _MISSING, help: str = "", *, flags: tuple[str, ...] = (), min: float | None = None,
           max: float | None = None, min_open: bool = False, max_open: bool = False, exists: bool = False,
           path: PathKind | None = None, choices: tuple[str, ...] | None = None, sep: str | None = None,
           metavar: str | None = None, bare: Any = None) -> Any:
    """A dataclass field that is also an option: its default, its help, and optionally its flags
    (default `--field-name`; the value still goes to the field, so `--eval-field` can fill
    `eval_fields`), bounds for numbers (`min_open`/`max_open`: that bound itself is refused), for a
    `Path`, `exists` (it must exist) and `path`, what it must be: "file", "dir" or "any" (default:
    "file" when it must exist, else "any"); `choices`, the values a `str` (or list of `str`) may take;
    `sep`, for a list, that its flag takes one value split on it (`--modules q,v`) instead of being
    repeated; `metavar`, the value's name in `--help`; and `bare`: the value the flag takes when given
    without one (`--ray` alone, `--ray ADDRESS`). A list default is copied for each instance.

        samples: int = synthtrace.option(4, "Answers tried per problem.", flags=("--samples", "-k"), min=1)
    """
    metadata = {"help": help, "flags": tuple(flags), "min": min, "max": max, "min_open": min_open,
                "max_open": max_open, "exists": exists, "path": path, "choices": choices, "sep": sep,
                "metavar": metavar, "bare": bare}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a recipe that has none."""


class Spec:
    """One option as the CLI, a config file and Python see it."""

    __slots__ = ("name", "flags", "help", "type", "multiple", "sep", "nullable", "is_flag", "default", "required",
                 "bare", "metavar")

    def __init__(self, f: dataclasses.Field[Any], hint: Any, owner: str):
        meta = f.metadata
        self.name = f.name
        self.help = meta.get("help", "")
        self.bare = meta.get("bare")
        self.metavar = meta.get("metavar")
        self.required = f.default is _MISSING and f.default_factory is _MISSING
        self.default = (None if self.required else f.default if f.default is not _MISSING
                        else f.default_factory())  # type: ignore[misc]
        base, self.nullable = _unwrap_optional(hint)
        origin = typing.get_origin(base)
        listed = origin in (list, tuple)
        if listed:
            args = [a for a in typing.get_args(base) if a is not Ellipsis]
            base = args[0] if args else str
        self.sep = meta.get("sep")
        if self.sep is not None and not listed:
            raise TypeError(f"option {owner}.{f.name}: `sep` is for a list or tuple field")
        self.multiple = listed and self.sep is None
        self.is_flag = base is bool and not listed
        self.type = _click_type(base, meta, f"{owner}.{f.name}")
        if self.sep is not None:
            self.type = _Separated(self.type, self.sep, origin)
        long = "--" + f.name.replace("_", "-")
        self.flags = tuple(meta.get("flags") or ()) or ((f"{long}/--no-{long[2:]}",) if self.is_flag and
                                                        self.default else (long,))

    def click_option(self) -> click.Option:
        kwargs: dict[str, Any] = {"help": self.help, "required": self.required}
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        if self.is_flag and "/" in self.flags[0]:  # --x/--no-x: click makes it a switch pair
            kwargs.update(default=bool(self.default), show_default=True)
        elif self.is_flag:
            kwargs.update(is_flag=True, default=bool(self.default))
        elif self.multiple:
            default = tuple(self.default or ())
            kwargs.update(multiple=True, type=self.type, default=default,
                          show_default=", ".join(map(str, default)) if default else False)
        elif self.required:
            kwargs["type"] = self.type
        elif self.bare is not None:
            kwargs.update(type=self.type, default=self.default, is_flag=False, flag_value=self.bare)
        elif self.sep is not None:  # shown as it is typed: q_proj,v_proj
            default = None if self.default is None else self.sep.join(map(str, self.default))
            kwargs.update(type=self.type, default=default, show_default=default is not None)
        else:
            kwargs.update(type=self.type, default=self.default, show_default=self.default is not None)
        return click.Option([*self.flags, self.name], **kwargs)

    def convert(self, value: Any, where: str) -> Any:
        """`value` checked and converted to this option's type; OptionError naming `where` otherwise."""
        if value is None:
            if self.nullable or not self.required and self.default is None:
                return None
            raise OptionError(f"{where}: a value is needed")
        try:
            if self.multiple:
                if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                    raise click.BadParameter(f"expected a list, got {type(value).__name__} {value!r}")
                return [self.type.convert(v, None, None) for v in value]
            if self.is_flag and not isinstance(value, (bool, str)):
                raise click.BadParameter(f"expected true or false, got {type(value).__name__} {value!r}")
            if isinstance(self.type, (click.types.IntParamType, click.types.FloatParamType)):
                if isinstance(value, bool):
                    raise click.BadParameter(f"expected a number, got {value!r}")
                if isinstance(self.type, click.types.IntParamType) and isinstance(value, float):
                    if not value.is_integer():
                        raise click.BadParameter(f"expected an integer, got {value!r}")
                    value = int(value)
            return self.type.convert(value, None, None)
        except click.BadParameter as e:
            raise OptionError(f"{where}: {e.message}") from None


def specs(cls: type) -> list[Spec]:
    """The options of dataclass `cls`, in declaration order (fields with `init=False`, or with
    `metadata={"internal": True}`, are set by code and are not options)."""
    cached = _SPECS.get(cls)
    if cached is None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__qualname__} must be a dataclass (decorate it with @dataclass)")
        hints = typing.get_type_hints(cls)
        cached = _SPECS[cls] = [Spec(f, hints[f.name], cls.__qualname__) for f in dataclasses.fields(cls)
                                 if f.init and not f.metadata.get("internal")]
    return cached


def build(cls: type, values: Mapping[str, Any], where: str = "option") -> Any:
    """An instance of options class `cls` from `values` (converted and checked; unknown names refused)."""
    by_name = {s.name: s for s in specs(cls)}
    unknown = [k for k in values if k not in by_name]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(by_name), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(by_name) or "none"
        raise OptionError(f"{where}: unknown option {unknown[0]!r} (known: {known}){hint}")
    kwargs = {k: by_name[k].convert(v, f"{where} {k}") for k, v in values.items()}
    missing = [s.name for s in by_name.values() if s.required and s.name not in kwargs]
    if missing:
        raise OptionError(f"{where}: missing required option {missing[0]!r}")
    return cls(**kwargs)


def as_dict(options: Any) -> dict[str, Any]:
    """Options as JSON-ready values (paths as strings), for the manifest."""
    return {k: _plain(v) for k, v in dataclasses.asdict(options).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _click_type(base: Any, meta: Mapping[str, Any], where: str) -> click.ParamType:
    lo, hi = meta.get("min"), meta.get("max")
    bounds = {"min_open": bool(meta.get("min_open")), "max_open": bool(meta.get("max_open"))}
    choices = meta.get("choices")
    if choices is not None and base is not str:
        raise TypeError(f"option {where}: `choices` is for a str field (or use a Literal)")
    if base is bool:
        return click.BOOL
    if base is int:
        return click.IntRange(lo, hi, **bounds) if lo is not None or hi is not None else click.INT
    if base is float:
        return click.FloatRange(lo, hi, **bounds) if lo is not None or hi is not None else click.FLOAT
    if base is str:
        return click.Choice(tuple(choices)) if choices is not None else click.STRING
    if base is Path:
        exists = bool(meta.get("exists"))
        kind = meta.get("path") or ("file" if exists else "any")
        if kind not in ("file", "dir", "any"):
            raise TypeError(f"option {where}: `path` is 'file', 'dir' or 'any', not {kind!r}")
        key = (exists, kind != "dir", kind != "file")
        if key not in _PATHS:
            _PATHS[key] = click.Path(exists=exists, file_okay=key[1], dir_okay=key[2], path_type=Path)
        return _PATHS[key]
    if typing.get_origin(base) is Literal and all(isinstance(a, str) for a in typing.get_args(base)):
        return click.Choice(typing.get_args(base))
    raise TypeError(f"option {where}: type {base!r} is not supported "
                    "(bool, int, float, str, Path, a Literal of strings, a list of one of those, or optional)")


class _Separated(click.ParamType):
    """A list given as one value, split on `sep` (`q_proj,v_proj`); blank items are dropped. A list
    or tuple (from a config file or Python) is taken item by item."""

    def __init__(self, item: click.ParamType, sep: str, container: Any):
        self.item, self.sep, self.container = item, sep, container
        self.name = item.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            items: list[Any] = [v.strip() for v in value.split(self.sep) if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            self.fail(f"expected a {self.sep!r}-separated string or a list, got {type(value).__name__} {value!r}",
                      param, ctx)
        return self.container(self.item.convert(v, param, ctx) for v in items)


_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_NUMBER = r"\d+(?:\.\d+)?"
# Units largest first, each at most once, spaces allowed around them: 1h30m, 2d 12h, 90s.
_DURATION = re.compile(r"\s*".join(rf"(?:(?P<{unit}>{_NUMBER})\s*{unit})?" for unit in _DURATION_UNITS))


def parse_duration(text: str | float | None, what: str = "duration") -> float | None:
    """Seconds in `text` (None for None): a plain number of seconds (`90`, `1.5`), or numbers with units
    w, d, h, m, s, alone or combined largest first (`90s`, `30m`, `2h`, `1h30m`, `7d`), any case.
    A ValueError names `what` (the flag, say) and the value, with examples, otherwise."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text >= 0:
        return float(text)
    t = str(text).strip().lower()
    if re.fullmatch(_NUMBER, t):
        return float(t)
    match = _DURATION.fullmatch(t)
    if match is None or not any(match.groupdict().values()):
        raise ValueError(f"{what}: expected a duration such as 90s, 30m, 2h, 1h30m or 7d (or a number of "
                         f"seconds, e.g. 90), got {text!r}")
    return sum(float(n) * _DURATION_UNITS[u] for u, n in match.groupdict().items() if n)
