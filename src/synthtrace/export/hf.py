"""`synthtrace export hf RUN --out DIR --license ID`: a finished run as a dataset the Hugging Face Hub
shows and `datasets.load_dataset(DIR, CONFIG)` loads, with a card that says how it was made.

    DIR/README.md                               the card (`card.py`): YAML the Hub reads, prose from the run
    DIR/default/SPLIT-00000-of-00001.parquet    id, messages: ready to train
    DIR/metadata/SPLIT-00000-of-00001.parquet   one line per exported row, the same id: verdicts, checks,
                                                tokens, $, model, prompt version, provenance
    DIR/rejected/SPLIT-00000-of-00001.parquet   what did not make it: at which stage, and why
    DIR/removed.jsonl                           what cleaning took out, with its evidence (when asked for)

Rows become examples exactly as in `export sft` (`sft.example_of`: the recipe's `to_sft`, the same
checks, the same cleaning). The reasoning travels as a `<think>\\n…\\n</think>\\n\\n` block at the head
of the assistant content — export sft's `qwen3` format — not in `reasoning_content`: Qwen3's own
template and TRL's Qwen3 training template (`qwen3_training.jinja`) split that block back out, so
TRL's SFTTrainer tokenises the `default` config as it is, and a template that knows nothing of
`reasoning_content` (most others) still trains on the reasoning instead of silently dropping it. The
Parquet schema stays `{role, content}` for every turn, with no null column on the other turns.

Splits are by source: the input file each row's record came from (`provenance.source.file`, which
every row carries; a merged run may hold several). One source gives the single split `train`, ready
to train; several give one split each, named after the file (`gsm8k_test.jsonl` → `gsm8k_test`,
reduced to the Hub's `\\w+(\\.\\w+)*`). `metadata` and `rejected` use the same names. A config with no
lines is left out (datasets cannot read an empty Parquet file), and the card says so.

Each export replaces the configs and `removed.jsonl` in DIR whole, so no split or file of an earlier
export lingers; the card is merged with the one already there (`card.merge`).

`export_hf` runs a `HubExport` in three steps: its checks (nothing is written if one fails), the
files (`write_files`, a row at a time in `_add_row`), the card (`write_card`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import orjson

from synthtrace.engine.store import JOURNAL, MANIFEST, REJECTED, ROWS
from synthtrace.export import card as C
from synthtrace.export.sft import (
    ExportError,
    RowOptions,
    RunRecipes,
    cleaner_for,
    example_of,
    readable_rows,
    render,
)
from synthtrace.inputs import read_jsonl, record_id
from synthtrace.options import option, specs

CONFIGS = ("default", "metadata", "rejected")
REMOVED = "removed.jsonl"
BATCH = 1000  # lines per Parquet row group
SINGLE_SPLIT = "train"
TMP = ".synthtrace-export.tmp"
_SPLIT_CHARS = re.compile(r"\W+")


class HubExtraMissing(ExportError):
    """pyarrow (or huggingface_hub, for push) is not installed."""


@dataclass(slots=True)
class HfOptions(RowOptions):
    """The options of `synthtrace export hf` (its flags come from these fields), after the row
    selection and cleaning it shares with `export sft`."""

    license: str | None = option(
        None, "The licence of the data, as the Hub names it (apache-2.0, cc-by-4.0, mit, other…). Required: "
              "there is no default. Kept from the card already in --out when not given.", metavar="ID")
    pretty_name: str | None = option(None, "The dataset's name on the Hub (default: the card's, else none).")
    language: list[str] = option([], "A language of the text (ISO 639-1, e.g. en). Repeatable.", metavar="CODE")
    source_datasets: list[str] = option(
        [], "A dataset the inputs came from (a Hub id, e.g. openai/gsm8k). Repeatable.",
        flags=("--source-dataset",), metavar="ID")
    allow_unfinished: bool = option(False, "Export a run that did not finish (its card says so).")


@dataclass(slots=True)
class HfResult:
    out: Path
    rows_path: Path
    rows_read: int = 0
    bad_line_count: int = 0
    bad_lines: list[str] = field(default_factory=list)
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # config → split → lines
    skipped: Counter[str] = field(default_factory=Counter)  # reason → rows
    removed: Counter[str] = field(default_factory=Counter)  # reason → rows
    removed_path: Path | None = None
    license: str = ""
    warnings: list[str] = field(default_factory=list)
    facts: C.RunFacts | None = None


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise HubExtraMissing("export hf writes Parquet with pyarrow: pip install 'synthtrace[hub]'") from None
    return pa


def schemas(pa: Any) -> dict[str, Any]:
    """The Arrow schema of each config (fixed, so every split of a config has the same columns)."""
    s, i, f, b, strings = pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.list_(pa.string())
    message = pa.struct([("role", s), ("content", s)])
    return {
        "default": pa.schema([("id", s), ("messages", pa.list_(message))]),
        "metadata": pa.schema([
            ("id", s), ("record_id", s), ("recipe", s), ("prompt_version", s), ("kind", s), ("group", s),
            ("source", s), ("source_line", i), ("models", strings), ("verified", b), ("verdict", s),
            ("verdicts", strings), ("pass_rate", f), ("samples", i), ("hinted", b), ("attempts", i),
            ("checks", s), ("meta", s), ("calls", i), ("prompt_tokens", i), ("completion_tokens", i),
            ("cost_usd", f), ("synthtrace", s)]),
        "rejected": pa.schema([
            ("id", s), ("record_id", s), ("stage", s), ("reason", s), ("part", s), ("source", s), ("line", i),
            ("verdicts", strings), ("calls", i), ("prompt_tokens", i), ("completion_tokens", i), ("cost_usd", f),
            ("details", s)]),
    }


class _Writers:
    """One Parquet file per (config, source) under `tmp`, written in row groups of BATCH lines; the
    files are renamed to their split names once every source is known."""

    def __init__(self, pa: Any, tmp: Path):
        self.pa, self.tmp, self.schemas = pa, tmp, schemas(pa)
        self.sources: dict[str, int] = {}  # source → its index, in order of appearance
        self.pending: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.writers: dict[tuple[str, int], Any] = {}
        self.counts: dict[tuple[str, int], int] = Counter()
        self.nbytes: dict[tuple[str, int], int] = Counter()

    def add(self, config: str, source: str, line: dict[str, Any]) -> None:
        key = (config, self.sources.setdefault(source, len(self.sources)))
        batch = self.pending.setdefault(key, [])
        batch.append(line)
        self.counts[key] += 1
        if len(batch) >= BATCH:
            self._flush(key)

    def _flush(self, key: tuple[str, int]) -> None:
        batch = self.pending.pop(key, [])
        if not batch:
            return
        import pyarrow.parquet as pq

        table = self.pa.Table.from_pylist(batch, schema=self.schemas[key[0]])
        self.nbytes[key] += table.nbytes
        writer = self.writers.get(key)
        if writer is None:
            path = self.tmp / key[0] / f"{key[1]}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = self.writers[key] = pq.ParquetWriter(path, self.schemas[key[0]], compression="zstd")
        writer.write_table(table, row_group_size=BATCH)

    def close(self, flush: bool = True) -> None:
        if flush:
            for key in list(self.pending):
                self._flush(key)
        for writer in self.writers.values():
            if writer.is_open:
                writer.close()

    def split_names(self) -> dict[int, str]:
        return split_names(list(self.sources))

    def finish(self, out: Path) -> list[C.ConfigFiles]:
        """Move the files into `out` under their split names; what each config holds."""
        names = self.split_names()
        configs = []
        for config in CONFIGS:
            keys = sorted((k for k in self.writers if k[0] == config), key=lambda k: names[k[1]])
            splits = []
            for key in keys:
                name = names[key[1]]
                rel = f"{config}/{name}-00000-of-00001.parquet"
                (out / config).mkdir(parents=True, exist_ok=True)
                src = self.tmp / config / f"{key[1]}.parquet"
                os.replace(src, out / rel)
                splits.append(C.SplitFile(name, rel, self.counts[key], self.nbytes[key], (out / rel).stat().st_size))
            if splits:
                configs.append(C.ConfigFiles(config, splits, C.features_yaml(self.schemas[config])))
        return configs


def split_names(sources: list[str]) -> dict[int, str]:
    """Source index → split name: `train` for a single source, else the file's stem reduced to the
    Hub's `\\w+(\\.\\w+)*` (made unique with a number)."""
    if len(sources) <= 1:
        return {0: SINGLE_SPLIT}
    names: dict[int, str] = {}
    taken: set[str] = set()
    for i, source in enumerate(sources):
        stem = Path(source).name.split(".")[0] if source else "unknown"
        base = _SPLIT_CHARS.sub("_", stem).strip("_") or "source"
        if base == "all":  # datasets reserves it for all splits at once
            base = "all_"
        name, n = base, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        names[i] = name
    return names


def _name(path: str) -> str | None:
    """A file's name without its directories: the card and the configs never publish local paths."""
    return (path.replace("\\", "/").rsplit("/", 1)[-1] or None) if path else None


def _source_of(row: dict[str, Any]) -> tuple[str, int | None]:
    prov = row.get("provenance") if isinstance(row.get("provenance"), dict) else {}
    src = prov.get("source")
    if isinstance(src, dict):
        line = src.get("line")
        return str(src.get("file") or ""), line if isinstance(line, int) and not isinstance(line, bool) else None
    return (str(src) if isinstance(src, str) else ""), None


def _verdicts(obj: dict[str, Any]) -> list[str]:
    """Every sample's verdict (OpenR1's per-sample lists), else the one verdict, else none."""
    sampling = obj.get("sampling")
    if isinstance(sampling, dict) and isinstance(sampling.get("samples"), list):
        return [str(s.get("verdict")) for s in sampling["samples"] if isinstance(s, dict) and s.get("verdict")]
    verification = obj.get("verification")
    if isinstance(verification, dict) and isinstance(verification.get("verdict"), str):
        return [verification["verdict"]]
    return []


def _calls(calls: Any) -> tuple[int, int, int, float, list[str]]:
    """(calls, prompt tokens, completion tokens, $, distinct models) of a list of call records."""
    n = pt = ct = 0
    usd = 0.0
    models: list[str] = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):
            continue
        n += 1
        pt += _int(call.get("prompt_tokens")) or 0
        ct += _int(call.get("completion_tokens")) or 0
        usd += _num(call.get("cost_usd")) or 0.0
        model = call.get("provider_model") or call.get("model")
        if isinstance(model, str) and model not in models:
            models.append(model)
    return n, pt, ct, usd, models


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _json(v: Any) -> str:
    return orjson.dumps(v, default=str, option=orjson.OPT_SORT_KEYS).decode()


def _at(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _checks(row: dict[str, Any], recipe: Any) -> dict[str, Any]:
    """The fields the recipe names as its checks, judges' scores and grades (`view.verdicts`), else
    `verification`."""
    view = getattr(type(recipe), "view", None)
    paths = tuple(getattr(view, "verdicts", ()) or ()) or ("verification",)
    return {p: v for p in paths if (v := _at(row, p)) is not None}


def stage_of(entry: dict[str, Any]) -> str:
    """Where a rejected.jsonl entry left the run: `input` (a line that could not run), `decontamination`
    (it overlapped an evaluation set), `verification` (its answers were checked and failed), else
    `generation` (the recipe gave up on it, or the model failed)."""
    if "record_id" not in entry:
        return "input"
    if "method" in entry and str(entry.get("reason", "")).startswith(("overlap with", "similar to")):
        return "decontamination"
    if isinstance(entry.get("sampling"), dict) or isinstance(entry.get("verification"), dict):
        return "verification"
    return "generation"


def _load_manifest(run: Path) -> dict[str, Any]:
    path = run / MANIFEST
    if not path.is_file():
        raise ExportError(f"{run} is not a run directory: no {MANIFEST} (export hf reads the run's manifest "
                          "for the card)")
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise ExportError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ExportError(f"{path}: not a run manifest")
    return manifest


def export_hf(run: Path, out: Path, options: HfOptions) -> HfResult:
    """Write `run`'s exported rows, their metadata, its rejections and a card into `out`."""
    export = HubExport(run, out, options)
    export.write_files()
    export.write_card()
    return export.result


class HubExport:
    """One `export hf`, in the order it happens: `__init__` checks the run, the card already in `out`
    and the licence, and writes nothing; `write_files` streams the rows into the three configs (and
    `removed.jsonl`) through a temporary folder, then replaces the earlier export's files;
    `write_card` merges the card from what was counted."""

    def __init__(self, run: Path, out: Path, options: HfOptions):
        self.run, self.out, self.options = run, out, options
        self.rows_path = run / ROWS
        self.manifest = self._checked_manifest()
        self.status = str(self.manifest.get("status", "unknown"))
        self.card_path = out / C.CARD
        self.existing_card = self._readable_card()
        self.license = self._license()
        self.pa = _pyarrow()
        self.cleaner = cleaner_for(options)
        self.result = HfResult(out, self.rows_path, license=self.license)
        self.recipes = RunRecipes(self.rows_path, options.recipe, self.result.warnings)
        self.facts = C.RunFacts(run_name=run.resolve().name, status=self.status, license=self.license)
        self.rows_per_record: Counter[str] = Counter()  # record id → rows read, for `record_id#k`
        self.sampled: set[str] = set()  # records whose samples are counted
        self.tmp = out / TMP  # where the files are written before they replace the earlier export's
        self.writers = _Writers(self.pa, self.tmp)
        self.removed_file: BinaryIO | None = None  # removed.jsonl, when cleaning was asked for
        self.configs: list[C.ConfigFiles] = []

    # -- the checks: all made before anything is written ----------------------------------------

    def _checked_manifest(self) -> dict[str, Any]:
        run, out = self.run, self.out
        if not run.is_dir():
            raise ExportError(f"{run}: export hf takes a run directory (with {ROWS}, {MANIFEST} and {JOURNAL})")
        if not self.rows_path.is_file():
            raise ExportError(f"{run} is not a run directory: no {ROWS}")
        manifest = _load_manifest(run)
        status = str(manifest.get("status", "unknown"))
        if status != "complete" and not self.options.allow_unfinished:
            raise ExportError(f"{run} did not finish (its manifest says status: {status}): run the same command "
                              "again to finish it, or pass --allow-unfinished to publish what it has")
        if out.resolve() == run.resolve():
            raise ExportError(f"refusing to write the dataset into the run directory itself: {out}")
        return manifest

    def _readable_card(self) -> str | None:
        """The card already in `out`, which the new one is merged with; refused if it cannot be read."""
        if not self.card_path.is_file():
            return None
        existing = self.card_path.read_text(encoding="utf-8")
        try:
            C.split_card(existing)
        except C.CardError as e:
            raise ExportError(f"{self.card_path}: {e}: fix it, or remove it for a new card (nothing was written)"
                              ) from None
        return existing

    def _license(self) -> str:
        """--license, else the existing card's: there is no default."""
        existing = self.existing_card
        license = self.options.license or (C.license_of(existing) if existing else None)
        if not license:
            raise ExportError("no licence given: say under which licence the data may be used, e.g. --license "
                              "apache-2.0 (a Hub licence id: cc-by-4.0, mit, other…). The terms of your inputs and "
                              "of the models that wrote the rows limit what you may choose.")
        return license

    # -- the files: the three configs and removed.jsonl -----------------------------------------

    def write_files(self) -> None:
        """Stream rows.jsonl and rejected.jsonl into Parquet under a temporary folder, then move the
        files into `out` in place of the earlier export's. With nothing to export, `out` is left as it
        was (and removed if this export made it)."""
        created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.removed_file = open(tmp / REMOVED, "wb") if self.cleaner is not None else None
        try:
            for line, row in readable_rows(self.rows_path, self.result):
                self._add_row(line, row)
            self.facts.records_with_rows = len(self.rows_per_record)
            _read_rejected(self.run / REJECTED, self.writers, self.facts, set(self.rows_per_record), self.sampled)
            self.writers.close()
            if self.removed_file is not None:
                self.removed_file.close()
            if not self.facts.exported:
                self._nothing_to_export(created)
            self._replace_files()
        finally:
            self.writers.close(flush=False)
            if self.removed_file is not None and not self.removed_file.closed:
                self.removed_file.close()
            if self.cleaner is not None:
                self.cleaner.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def _add_row(self, line: int, row: dict[str, Any]) -> None:
        """One row of rows.jsonl into `default` and `metadata`, or into `rejected` with why: left out
        by the row selection (stage `export`) or removed by cleaning (stage `cleaning`)."""
        rid = record_id(_at(row, "provenance.record_id")) or record_id(row.get("id")) or f"{ROWS}:{line}"
        row_id = f"{rid}#{self.rows_per_record[rid]}"
        self.rows_per_record[rid] += 1
        source, source_line = _source_of(row)
        self._count_row(rid, row)
        prov = row.get("provenance") if isinstance(row.get("provenance"), dict) else {}
        tokens, models = _tokens(prov)
        verdicts = _verdicts(row)
        about = {"id": row_id, "record_id": rid, "source": _name(source)}  # what every config's line starts with
        example = example_of(row, self.options, self.recipes)
        if isinstance(example, str):
            self.result.skipped[example] += 1
            self.writers.add("rejected", source, {
                **about, "stage": "export", "reason": example, "line": source_line, "verdicts": verdicts, **tokens,
                "details": _json({})})
            return
        removal = self.cleaner.why(row_id, example) if self.cleaner is not None else None
        if removal is not None:
            self._remove(source, about, example, removal, {"line": source_line, "verdicts": verdicts, **tokens})
            return
        self.writers.add("default", source, {"id": row_id,
                                             "messages": render(example, "qwen3", with_metadata=False)["messages"]})
        recipe = self.recipes.get(str(prov.get("recipe")))
        self.writers.add("metadata", source, {
            **about, "source_line": source_line, "models": models, "verdicts": verdicts,
            **_row_metadata(row, prov, example, recipe), **tokens})
        self.facts.exported += 1
        self.facts.prompt_versions[(str(prov.get("recipe")), str(prov.get("prompt_version")))] += 1

    def _count_row(self, rid: str, row: dict[str, Any]) -> None:
        """A row read, for the card's funnel: verified or not, and its record's samples."""
        self.facts.rows += 1
        verified = row.get("verified")
        self.facts.verified[("verified" if verified is True else "failed" if verified is False
                             else "not checked")] += 1
        _count_samples(self.facts, rid, row, self.sampled)

    def _remove(self, source: str, about: dict[str, Any], example: Any, removal: dict[str, Any],
                rest: dict[str, Any]) -> None:
        """A row cleaning took out: into removed.jsonl with its evidence, and into `rejected`."""
        self.result.removed[removal["reason"]] += 1
        messages = render(example, "qwen3", with_metadata=False)["messages"]
        assert self.removed_file is not None
        self.removed_file.write(orjson.dumps({"id": about["id"], "record_id": about["record_id"],
                                              "group": example.group, **removal,
                                              "example": {"messages": messages}}) + b"\n")
        self.writers.add("rejected", source, {
            **about, "stage": "cleaning", "reason": removal["reason"], "part": removal.get("part"), **rest,
            "details": _json({k: removal.get(k) for k in ("method", "threshold", "evidence")})})

    def _nothing_to_export(self, created: bool) -> NoReturn:
        result = self.result
        why = "; ".join(f"{n:,} {reason}" for reason, n in (result.skipped + result.removed).most_common(3))
        if created:
            shutil.rmtree(self.out, ignore_errors=True)
        raise ExportError(f"nothing to export: {result.rows_read:,} row(s) read from {self.rows_path}"
                          + (f", none kept ({why})" if why else ""))

    def _replace_files(self) -> None:
        """The earlier export's configs and removed.jsonl go whole: no stale split or file is left behind."""
        out = self.out
        for config in CONFIGS:
            shutil.rmtree(out / config, ignore_errors=True)
        self.configs = self.writers.finish(out)
        (out / REMOVED).unlink(missing_ok=True)
        if self.removed_file is not None:
            os.replace(self.tmp / REMOVED, out / REMOVED)
            self.result.removed_path = out / REMOVED

    # -- the card -------------------------------------------------------------------------------

    def write_card(self) -> None:
        """The card from what was counted, merged with the one already in `out`."""
        result, facts, options = self.result, self.facts, self.options
        result.splits = {c.name: {s.name: s.lines for s in c.splits} for c in self.configs}
        self._finish_facts()
        result.facts = facts
        location = str(self.out) if not self.out.is_absolute() else self.out.name  # as typed; never a local path
        facts.export_command = export_command(facts.run_name, location, options, self.license)
        generated = C.generate(facts, options.pretty_name, options.language, options.source_datasets, location)
        self.card_path.write_text(C.merge(self.existing_card, generated), encoding="utf-8")
        if not options.source_datasets and not C.source_datasets_of(self.card_path.read_text(encoding="utf-8")):
            result.warnings.append("the card names no source dataset: --source-dataset ID names the dataset(s) the "
                                   "inputs came from (or add source_datasets to the card)")

    def _finish_facts(self) -> None:
        """What the card says beyond the rows' counts: the files, the splits' sources, the cleaning,
        the manifest's and the journal's figures."""
        facts, result, writers = self.facts, self.result, self.writers
        facts.configs = self.configs
        facts.sources = list(writers.sources)
        facts.split_of_source = {s: writers.split_names()[i] for s, i in writers.sources.items()}
        facts.skipped = result.skipped
        facts.removed = result.removed
        facts.cleaning = _cleaning(self.options) if self.cleaner is not None else None
        facts.bad_rows_lines = result.bad_line_count
        facts.bad_rows_examples = result.bad_lines[:3]
        _from_manifest(facts, self.manifest, self.recipes)
        facts.spend = spend_of(self.run / JOURNAL)


def _tokens(prov: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A row's calls, tokens and $ (the provenance's totals where it has them, else the sum of its
    calls), and the models it called."""
    n_calls, pt, ct, usd, models = _calls(prov.get("calls"))
    prompt_tokens = _int(prov.get("prompt_tokens"))
    completion_tokens = _int(prov.get("completion_tokens"))
    cost = _num(prov.get("cost_usd"))
    return {"calls": n_calls, "prompt_tokens": pt if prompt_tokens is None else prompt_tokens,
            "completion_tokens": ct if completion_tokens is None else completion_tokens,
            "cost_usd": round(usd if cost is None else cost, 8)}, models


def _row_metadata(row: dict[str, Any], prov: dict[str, Any], example: Any, recipe: Any) -> dict[str, Any]:
    """The `metadata` columns read off the row itself: its recipe and prompt version, its verdicts and
    checks, what its example says of it."""
    version = prov.get("prompt_version")
    sampling = row.get("sampling") if isinstance(row.get("sampling"), dict) else {}
    verification = row.get("verification") if isinstance(row.get("verification"), dict) else {}
    verified, hinted, synthtrace = row.get("verified"), row.get("hinted"), prov.get("synthtrace")
    return {"recipe": str(prov.get("recipe")), "prompt_version": None if version is None else str(version),
            "kind": example.kind, "group": example.group, "verified": verified if isinstance(verified, bool) else None,
            "verdict": verification.get("verdict") if isinstance(verification.get("verdict"), str) else None,
            "pass_rate": _num(sampling.get("pass_rate")), "samples": _int(sampling.get("drawn")),
            "hinted": hinted if isinstance(hinted, bool) else None, "attempts": _int(row.get("attempts")),
            "checks": _json(_checks(row, recipe)), "meta": _json(example.meta),
            "synthtrace": None if synthtrace is None else str(synthtrace)}


def _count_samples(facts: C.RunFacts, rid: str, obj: dict[str, Any], sampled: set[str]) -> None:
    """A record's samples, once per record (its rows each carry the same `sampling`)."""
    sampling = obj.get("sampling")
    if rid in sampled or not isinstance(sampling, dict):
        return
    sampled.add(rid)
    drawn, ok = _int(sampling.get("drawn")), _int(sampling.get("verified"))
    if drawn is not None and ok is not None:
        facts.samples_drawn += drawn
        facts.samples_verified += ok
        facts.sampled_records += 1


def _read_rejected(path: Path, writers: _Writers, facts: C.RunFacts, with_rows: set[str], sampled: set[str]) -> None:
    """rejected.jsonl's entries into the `rejected` config, counted by stage and reason."""
    if not path.is_file():
        return
    whole: set[str] = set()
    for item in read_jsonl(path):
        if not isinstance(item, tuple):
            facts.bad_rejected_lines += 1
            continue
        _, entry = item
        stage = stage_of(entry)
        reason = str(entry.get("reason") or "no reason given")
        rid = record_id(entry.get("record_id"))
        facts.rejected[(stage, C.reason_key(reason))] += 1
        if stage == "input":
            facts.bad_input += 1
        elif rid is not None and rid not in with_rows and entry.get("part") is None:
            whole.add(rid)
            _count_samples(facts, rid, entry, sampled)
        elif rid is not None:
            facts.parts_rejected += 1
        n_calls, pt, ct, usd, _ = _calls(entry.get("calls"))
        source = entry.get("source")
        line = _int(entry.get("line"))
        known = {"id", "record_id", "reason", "part", "source", "line", "calls"}
        writers.add("rejected", str(source or ""), {
            "id": str(entry.get("id") or rid or f"{source}:{line}"), "record_id": rid, "stage": stage,
            "reason": reason, "part": None if entry.get("part") is None else str(entry.get("part")),
            "source": None if source is None else _name(str(source)), "line": line, "verdicts": _verdicts(entry),
            "calls": n_calls, "prompt_tokens": pt, "completion_tokens": ct, "cost_usd": round(usd, 8),
            "details": _json({k: v for k, v in entry.items() if k not in known})})
    facts.records_rejected = len(whole)


def _cleaning(options: RowOptions) -> dict[str, Any]:
    return {"against": [Path(p).name for p in options.decontaminate_against], "ngram": options.ngram,
            "ngram_short": options.ngram_short, "min_overlap": options.min_overlap,
            "embedding_model": Path(options.embedding_model).name if options.embedding_model else None,
            "embedding_threshold": options.embedding_threshold, "dedup": list(options.dedup),
            "dedup_threshold": options.dedup_threshold}


def _from_manifest(facts: C.RunFacts, manifest: dict[str, Any], recipes: RunRecipes) -> None:
    facts.recipe = str(manifest.get("recipe") or "")
    facts.prompt_version = None if manifest.get("prompt_version") is None else str(manifest["prompt_version"])
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    facts.model = {k: model.get(k) for k in ("alias", "kind", "model") if model.get(k)}
    settings = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
    facts.run_decontaminated_against = [Path(p).name for p in settings.get("decontaminate_against") or []]
    facts.inputs = [Path(str(manifest.get("input"))).name] if manifest.get("input") else []
    recipe = recipes.get(facts.recipe) if facts.recipe else None
    facts.command, facts.command_rebuilt = command_of(manifest, None if isinstance(recipe, str) else recipe)
    result = manifest.get("result") if isinstance(manifest.get("result"), dict) else {}
    stats = result.get("stats") if isinstance(result.get("stats"), dict) else {}
    facts.manifest_stats = {k: stats[k] for k in ("calls", "prompt_tokens", "completion_tokens", "cost_usd_total")
                            if k in stats}


def spend_of(journal: Path) -> list[dict[str, Any]] | None:
    """Calls, tokens and $ per endpoint and model, from the run's journal (each answer paid for once);
    None without one."""
    if not journal.is_file():
        return None
    from synthtrace.engine.journal import Journal

    j = Journal(journal, replay_earlier=False)
    try:
        return [{k: s[k] for k in ("endpoint", "model", "calls", "prompt_tokens", "completion_tokens", "cost_usd")}
                for s in j.stats()]
    finally:
        j.close()


def command_of(manifest: dict[str, Any], recipe: Any) -> tuple[str, bool]:
    """The command that made the run: as it was typed (the manifest's `argv`), or, for a run started
    from Python, rebuilt from the manifest (recipe, input, output, model, the options that differ from
    their defaults); and whether it was rebuilt."""
    argv = manifest.get("argv")
    if isinstance(argv, list) and argv and argv[0] in ("run", "eval"):
        return shlex.join(["synthtrace", *(_short(str(a)) for a in argv)]), False
    settings = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
    parts = ["synthtrace", "run", _short(str(manifest.get("recipe_ref") or manifest.get("recipe") or "RECIPE")),
             "-i", _short(str(settings.get("input") or manifest.get("input") or "INPUT")),
             "-o", _short(str(settings.get("output") or "OUTDIR"))]
    if settings.get("config"):
        parts += ["--config", _short(str(settings["config"]))]
    model = settings.get("model") or (manifest.get("model") or {}).get("alias")
    if model:
        parts += ["--model", str(model)]
    if settings.get("max_records") is not None:
        parts += ["--max-records", str(settings["max_records"])]
    for path in settings.get("decontaminate_against") or []:
        parts += ["--decontaminate-against", _short(str(path))]
    if settings.get("batch"):
        parts.append("--batch")
    values = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
    options_cls = getattr(type(recipe), "Options", None) if recipe is not None else None
    if options_cls is not None:
        parts += flags_of(options_cls, values)
    return shlex.join(parts), True


def export_command(run_name: str, location: str, options: HfOptions, license: str) -> str:
    """This export as a command: the options that differ from their defaults, paths as file names."""
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)} | {"license": license}
    return shlex.join(["synthtrace", "export", "hf", run_name, "--out", location, *flags_of(HfOptions, values)])


def flags_of(options_cls: type, values: dict[str, Any]) -> list[str]:
    """The flags that give options class `options_cls` these values (those at their default left out)."""
    parts: list[str] = []
    for spec in specs(options_cls):
        value = values.get(spec.name)
        if spec.name not in values or value == spec.default or (isinstance(value, list) and
                                                                 list(value) == list(spec.default or [])):
            continue
        flag = spec.flags[0]
        if spec.is_flag:
            on, _, off = flag.partition("/")
            if value or off:
                parts.append(on if value else off)
        elif spec.multiple:
            for v in value or []:
                parts += [flag, _short(str(v))]
        elif spec.sep is not None:
            parts += [flag, spec.sep.join(map(str, value or []))]
        elif value is not None:
            parts += [flag, _short(str(value))]
    return parts


def _short(arg: str) -> str:
    """An absolute path as its file name (`/x/recipe.py:Class` → `recipe.py:Class`): the card never
    publishes where the files were."""
    return (_name(arg) or arg) if os.path.isabs(arg) else arg
