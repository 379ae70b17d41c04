"""The SFT exporter: a run's rows.jsonl → chat-format training files, split by source.

Rows are streamed one at a time; each becomes a training example through its recipe's `to_sft`
(the recipe named in `provenance.recipe`, found through the run's manifest or the registry), then
the checks every format needs, and the split, then out to the train or the validation file. The split
is decided per example from its group alone — `sha256(f"{seed}:{group}")` as a number in [0, 1),
validation when below `val_fraction` — so it needs no second pass, is the same on every run, and
keeps every example of one source note on the same side.

Formats, one JSON object per line:
  qwen3     {"messages": [system, user, {"role": "assistant", "content": "<think>\\n…\\n</think>\\n\\nANSWER"}]}
  messages  {"messages": [system, user, {"role": "assistant", "content": ANSWER, "reasoning_content": …}]}
  chatml    {"text": "<|im_start|>system\\n…<|im_end|>\\n<|im_start|>user\\n…<|im_end|>\\n<|im_start|>assistant…"}
All three render to the same text through a Qwen3-style chat template. `metadata` (note id, recipe,
role, task, label, error type, group) rides along unless switched off.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from synthtrace.engine.store import MANIFEST
from synthtrace.export import FORMATS
from synthtrace.inputs import BadInput, read_jsonl, record_id
from synthtrace.options import OptionError, option
from synthtrace.recipe import ChatExample, Recipe, RecipeNotFound, load_recipe

ROWS = "rows.jsonl"
# Text that would end a turn early or open a second think block once rendered.
RESERVED = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
THINK_TAGS = ("<think>", "</think>")
MAX_BAD_LINES_KEPT = 20
DEDUP_PARTS = ("question", "trace", "answer", "example")


class ExportError(Exception):
    """A problem with the export as a whole (no rows file, output over the input)."""


@dataclass(slots=True)
class RowOptions:
    """What every export of a run decides the same way: which rows go (verified, hinted), through which
    recipe, and what cleaning removes. `export sft` and `export hf` add their own options to these."""

    include_unverified: bool = option(False, "Keep rows that failed verification (verified: false).")
    include_hinted: bool = option(True, "Keep rows written with the reference given (hinted: true).")
    recipe: str | None = option(None, "The recipe of the rows (a name, package.module:Class or file.py[:Class]), "
                                      "when the run's manifest cannot say (its recipe file moved).", metavar="REF")
    # Cleaning (`synthtrace.quality`): removed examples go with their evidence to NAME.removed.jsonl
    # (export sft) or DIR/removed.jsonl (export hf) instead of the training files.
    decontaminate_against: list[Path] = option(
        [], "Evaluation set (JSONL, CSV or Parquet; MEDEC's CSVs as they are): examples that share a word n-gram "
            "with one of its items are removed, each kept with the n-gram in the removed file (NAME.removed.jsonl; "
            "export hf: DIR/removed.jsonl). Repeatable.",
        exists=True, path="any", metavar="FILE")
    eval_fields: list[str] = option([], "A text field of the evaluation sets (default: detected). Repeatable.",
                                    flags=("--eval-field",), metavar="NAME")
    ngram: int = option(13, "Words in a matching n-gram.", min=3, max=50)
    ngram_short: int = option(8, "… for evaluation items under twice --ngram words.", min=3, max=50)
    min_overlap: float = option(0.1, "Share of n-grams an example and an evaluation item have in common (of the "
                                     "smaller of the two) from which it is removed; 0: any shared n-gram.",
                                min=0, max=1)
    embedding_model: Path | None = option(
        None, "Also remove examples whose embedding (a local model, e.g. a BGE or E5 directory) is within "
              "--embedding-threshold cosine of an evaluation item's. Needs synthtrace[train].",
        exists=True, path="dir", metavar="DIR")
    embedding_threshold: float = option(0.9, min=-1, max=1)
    dedup: list[str] = option([], "Drop near-duplicates of an earlier example in this part (MinHash LSH; the first "
                                  "is kept). Repeatable; needs synthtrace[clean].", choices=DEDUP_PARTS)
    dedup_threshold: float = option(0.8, "Jaccard similarity of word 5-gram shingles from which two texts are "
                                         "near-duplicates.", min=0, max=1, min_open=True)


@dataclass(slots=True)
class ExportOptions(RowOptions):
    """The options of `synthtrace export sft` (its flags come from these fields)."""

    format: str = option("qwen3", "qwen3: think block in the assistant content; messages: reasoning in "
                                  "`reasoning_content`; chatml: one rendered `text` field.", choices=FORMATS)
    val_fraction: float = option(0.1, "Share of source notes held out for validation (0: no validation file).",
                                 min=0, max=1, max_open=True)
    seed: int = option(0, "Seed of the split.")
    with_metadata: bool = option(True, "A `metadata` object per line (recipe, group, and what the recipe adds: "
                                       "ids, role, label…).", flags=("--with-metadata/--no-metadata",))


@dataclass(slots=True)
class ExportResult:
    rows_path: Path
    train_path: Path
    val_path: Path | None
    rows_read: int = 0
    examples: Counter[str] = field(default_factory=Counter)  # split → examples
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)  # (split, kind) → examples
    groups: Counter[str] = field(default_factory=Counter)  # split → distinct groups
    skipped: Counter[str] = field(default_factory=Counter)  # reason → rows
    rebuilt_prompts: int = 0
    bad_line_count: int = 0
    bad_lines: list[str] = field(default_factory=list)  # the first few, "rows.jsonl:N: reason"
    warnings: list[str] = field(default_factory=list)
    removed_path: Path | None = None
    removed: Counter[str] = field(default_factory=Counter)  # "overlap with SET" / "near-duplicate QUESTION" → examples


def rows_file(run: Path) -> Path:
    """A run directory's rows.jsonl (or the file itself, when given one)."""
    path = run / ROWS if run.is_dir() else run
    if not path.is_file():
        raise ExportError(f"no {ROWS} in {run}")
    return path


def val_path_for(out: Path) -> Path:
    """`sft.jsonl` → `sft.val.jsonl`, beside it."""
    return out.with_name(f"{out.stem}.val{out.suffix}")


def removed_path_for(out: Path) -> Path:
    """`sft.jsonl` → `sft.removed.jsonl`, beside it: what cleaning took out, with the evidence."""
    return out.with_name(f"{out.stem}.removed{out.suffix}")



class Cleaner:
    """Decontamination and near-duplicate removal for one export: `why(example)` is None for a
    clean example (remembered for the near-duplicate check), else the removal's reason and evidence."""

    def __init__(self, options: RowOptions):
        self.index = None
        if options.decontaminate_against:
            from synthtrace.quality.contamination import ContaminationIndex

            self.index = ContaminationIndex.build(options.decontaminate_against, options.ngram, options.ngram_short,
                                                  options.eval_fields, options.min_overlap)
        self.embeddings = None
        if options.embedding_model is not None:
            if not options.decontaminate_against:
                raise ValueError("--embedding-model compares with the --decontaminate-against sets: name one")
            from synthtrace.quality.embeddings import EmbeddingIndex

            self.embeddings = EmbeddingIndex(options.embedding_model, options.decontaminate_against,
                                             options.embedding_threshold, options.eval_fields)
        self.options = options
        self.seen: dict[str, Any] = {}
        if options.dedup:
            from synthtrace.quality.neardup import NearDuplicates

            self.seen = {part: NearDuplicates(options.dedup_threshold) for part in options.dedup}

    @staticmethod
    def parts(ex: ChatExample) -> dict[str, str]:
        return {"question": ex.user, "trace": ex.reasoning, "answer": ex.answer,
                "example": "\n".join((ex.user, ex.reasoning, ex.answer))}

    def why(self, example_id: str, ex: ChatExample) -> dict[str, Any] | None:
        parts = self.parts(ex)
        if self.index is not None:
            for part in ("question", "trace", "answer"):
                hit = self.index.find(parts[part])
                if hit is not None:
                    return {"reason": f"overlap with {hit.eval_set}", "part": part,
                            "method": f"word {hit.n}-gram overlap", "threshold": self.options.min_overlap,
                            "evidence": hit.as_dict()}
        if self.embeddings is not None:
            for part in ("question", "trace", "answer"):
                near = self.embeddings.find(parts[part])
                if near is not None:
                    return {"reason": f"similar to {near.eval_set}", "part": part,
                            "method": f"embedding cosine ({self.embeddings.name}, mean-pooled)",
                            "threshold": self.options.embedding_threshold, "evidence": near.as_dict()}
        hits = {part: seen.check(example_id, parts[part]) for part, seen in self.seen.items()} if self.seen else {}
        for part, hit in hits.items():
            if hit is not None:
                return {"reason": f"near-duplicate {part}", "part": part,
                        "method": "MinHash LSH (128 permutations, 5-word shingles), Jaccard",
                        "threshold": self.options.dedup_threshold,
                        "evidence": {"neighbour": hit[0], "similarity": round(hit[1], 4)}}
        return None

    def close(self) -> None:
        for seen in self.seen.values():
            seen.close()


def cleaner_for(options: RowOptions) -> Cleaner | None:
    """The export's cleaner, None when no cleaning is asked for; a cleaning option that cannot work
    (an unknown part, an evaluation set that cannot be read) is an ExportError."""
    bad = [p for p in options.dedup if p not in DEDUP_PARTS]
    if bad:
        raise ExportError(f"--dedup: unknown part {bad[0]!r} (expected {', '.join(DEDUP_PARTS)})")
    if not (options.decontaminate_against or options.dedup or options.embedding_model):
        return None
    try:
        return Cleaner(options)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise ExportError(str(e)) from None


def readable_rows(rows_path: Path, result: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) for each readable line of `rows_path`, counted in `result.rows_read`; the others are
    counted in `result.bad_line_count` and the first few named in `result.bad_lines` (`rows.jsonl:N:
    why`), never fatal."""
    for item in read_jsonl(rows_path):
        if isinstance(item, BadInput):
            result.bad_line_count += 1
            if len(result.bad_lines) < MAX_BAD_LINES_KEPT:
                result.bad_lines.append(f"{rows_path}:{item.line}: {item.reason}")
            continue
        result.rows_read += 1
        yield item


def split_of(group: str, seed: int, val_fraction: float) -> str:
    """"val" or "train", from the group and the seed alone."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def think_block(reasoning: str) -> str:
    """Qwen3's think block; an empty one (`<think>\\n\\n</think>\\n\\n`) when there is no reasoning."""
    return f"<think>\n{reasoning}\n</think>\n\n"


def render(ex: ChatExample, fmt: str, with_metadata: bool = True) -> dict[str, Any]:
    """One output line (as a dict) for an example in format `fmt`."""
    head = ([{"role": "system", "content": ex.system}] if ex.system is not None else [])
    head.append({"role": "user", "content": ex.user})
    if fmt == "qwen3":
        line: dict[str, Any] = {"messages": [*head, {"role": "assistant",
                                                     "content": think_block(ex.reasoning) + ex.answer}]}
    elif fmt == "messages":
        line = {"messages": [*head, {"role": "assistant", "content": ex.answer, "reasoning_content": ex.reasoning}]}
    elif fmt == "chatml":
        turns = [*head, {"role": "assistant", "content": think_block(ex.reasoning) + ex.answer}]
        line = {"text": "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in turns)}
    else:
        raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if with_metadata:
        line["metadata"] = ex.meta
    return line


def check(ex: ChatExample) -> str | None:
    """What every format needs of an example, whatever its recipe; None when it is fine."""
    if ex.system is not None and not ex.system.strip():
        return "empty system prompt"
    if not ex.user.strip():
        return "empty user turn"
    if not ex.answer.strip():
        return "empty answer"
    if any(t in ex.reasoning or t in ex.answer for t in THINK_TAGS):
        return "think tag inside the reasoning or the answer"
    if any(t in text for t in RESERVED for text in (ex.system or "", ex.user, ex.reasoning, ex.answer)):
        return "chat-template token inside the text"
    return None


def export_sft(run: Path, out: Path, options: ExportOptions) -> ExportResult:
    """Stream `run`'s rows into `out` (train) and `val_path_for(out)` (validation, unless the fraction is 0)."""
    if options.format not in FORMATS:
        raise ExportError(f"unknown format {options.format!r} (expected one of {', '.join(FORMATS)})")
    if not 0 <= options.val_fraction < 1:
        raise ExportError(f"--val-fraction must be in [0, 1), got {options.val_fraction}")
    rows_path = rows_file(run)
    val_path = val_path_for(out) if options.val_fraction > 0 else None
    for target in filter(None, (out, val_path)):
        if target.resolve() == rows_path.resolve():
            raise ExportError(f"refusing to write over the rows themselves: {target}")
    result = ExportResult(rows_path, out, val_path)
    recipes = RunRecipes(rows_path, options.recipe, result.warnings)
    if val_path is None and val_path_for(out).exists():
        result.warnings.append(f"{val_path_for(out)} is from an earlier export (this one writes no validation "
                               "file); it may share sources with the new training file")

    cleaner = cleaner_for(options)
    out.parent.mkdir(parents=True, exist_ok=True)
    targets = {"train": out, **({"val": val_path} if val_path else {})}
    if cleaner is not None:
        result.removed_path = targets["removed"] = removed_path_for(out)
    temps = {split: path.with_name(f".{path.name}.tmp") for split, path in targets.items()}
    files: dict[str, IO[bytes]] = {}
    seen_groups: dict[str, set[str]] = {split: set() for split in targets}
    try:
        for split, tmp in temps.items():
            files[split] = open(tmp, "wb")
        for line, row in readable_rows(rows_path, result):
            example = example_of(row, options, recipes)
            if isinstance(example, str):
                result.skipped[example] += 1
                continue
            split = split_of(example.group, options.seed, options.val_fraction)
            rendered = render(example, options.format, options.with_metadata)
            if cleaner is not None:
                example_id = f"{rows_path.name}:{line}"
                removal = cleaner.why(example_id, example)
                if removal is not None:
                    result.removed[removal["reason"]] += 1
                    entry = {"id": example_id, "row_id": row.get("id", row.get("note_id")), "group": example.group,
                             "split": split, **removal, "example": rendered}
                    files["removed"].write(orjson.dumps(entry) + b"\n")
                    continue
            files[split].write(orjson.dumps(rendered) + b"\n")
            result.examples[split] += 1
            result.by_kind[(split, example.kind)] += 1
            result.rebuilt_prompts += example.rebuilt_prompt
            seen_groups[split].add(example.group)
        for f in files.values():
            f.close()
        for split, tmp in temps.items():
            os.replace(tmp, targets[split])
    except BaseException:
        for f in files.values():
            f.close()
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    finally:
        if cleaner is not None:
            cleaner.close()
    result.groups = Counter({split: len(groups) for split, groups in seen_groups.items()})
    if val_path is not None and sum(result.examples.values()):
        for split, name in (("train", "training"), ("val", "validation")):
            if not result.examples[split]:
                result.warnings.append(f"no source fell into the {name} split (too few sources for this fraction)")
    return result


class RunRecipes:
    """The recipe behind each row's `provenance.recipe`, loaded once per name: the run's own (from its
    manifest: where it lives and the options it ran with), else a registered recipe of that name."""

    def __init__(self, rows_path: Path, override: str | None, warnings: list[str]):
        self.warnings = warnings
        self._recipes: dict[str, Recipe | str] = {}
        self._manifest: dict[str, Any] = {}
        manifest = rows_path.parent / MANIFEST
        if manifest.is_file():
            try:
                self._manifest = orjson.loads(manifest.read_bytes())
            except orjson.JSONDecodeError:
                warnings.append(f"{manifest}: unreadable; recipes are looked up by name")
        self._override = override

    def get(self, name: str) -> Recipe | str:
        """The recipe, or why there is none (a skip reason)."""
        found = self._recipes.get(name)
        if found is None:
            found = self._recipes[name] = self._load(name)
        return found

    def _load(self, name: str) -> Recipe | str:
        own = self._manifest.get("recipe") == name
        ref = self._override or (self._manifest.get("recipe_ref") if own else None) or name
        try:
            cls = load_recipe(ref)
        except RecipeNotFound as e:
            self.warnings.append(f"rows of recipe {name!r} skipped: {e}" +
                                 ("" if self._override else " (--recipe REF names where it is)"))
            return f"unknown recipe {name!r}"
        options = self._manifest.get("options") if own and isinstance(self._manifest.get("options"), dict) else {}
        try:
            return cls(**options)
        except OptionError as e:
            self.warnings.append(f"recipe {name!r}: the run's options do not fit it now ({e}); "
                                 "exported with its defaults")
            return cls()


def example_of(row: dict[str, Any], options: RowOptions, recipes: RunRecipes) -> ChatExample | str:
    """The row as an example, or why it is skipped."""
    prov = row.get("provenance")
    name = prov.get("recipe") if isinstance(prov, dict) else None
    if not isinstance(name, str) or not name:
        return "row without provenance.recipe"
    if row.get("verified") is False and not options.include_unverified:
        return "unverified (--include-unverified keeps it)"
    if row.get("hinted") is True and not options.include_hinted:
        return "hinted (--no-include-hinted drops it)"
    recipe = recipes.get(name)
    if isinstance(recipe, str):
        return recipe
    example = recipe.to_sft(row)
    if example is None:
        return f"skipped by recipe {name!r}"
    if isinstance(example, str):
        return example
    if not isinstance(example, ChatExample):
        return f"recipe {name!r}: to_sft gave {type(example).__name__}, not a ChatExample"
    example.reasoning, example.answer = (example.reasoning or "").strip(), (example.answer or "").strip()
    example.group = example.group or record_id(prov.get("record_id")) or record_id(row.get("id")) or ""
    if not example.group:
        return "row without provenance.record_id or id"
    example.kind = example.kind or name
    example.meta = {"recipe": name, "group": example.group, **example.meta}
    return check(example) or example
