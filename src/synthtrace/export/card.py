"""The dataset card (README.md) of `export hf`: YAML the Hub reads, prose written from the run, and
the merge that keeps what a person added to an earlier card.

    ---
    license: …                  the one the publisher gave (`--license`): there is no default
    annotations_creators: [machine-generated]
    size_categories, task_categories, tags (synthetic), source_datasets, language, pretty_name
    configs: [default, metadata, rejected]   with data_files per split
    dataset_info: […]                          features and line counts, per config and split
    ---
    (the user's text, kept)
    <!-- synthtrace:begin … -->   the generated part: the funnel, verification, models and prompt
    …                            versions, cost and tokens, decontamination, the command
    <!-- synthtrace:end -->
    (the user's text, kept)

`merge(earlier, new)` is the one rule for a second export into the same directory and for a push
onto a card already on the Hub: the fields synthtrace owns (licence, annotation creators, size,
its three configs and their `dataset_info`) are replaced whole — so no count or split of an earlier
export lingers, the stale-`dataset_info` trap of datasets#8608 — lists (tags, task categories,
languages, source datasets) are joined, every other field of the earlier card is kept, and so is its
text outside the generated part; sections of the new card's own text that the earlier one lacks
are added at the end. YAML goes through PyYAML (a dependency of synthtrace already).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import yaml

from synthtrace.version import __version__

CARD = "README.md"
OWNED_CONFIGS = ("default", "metadata", "rejected")
BEGIN = ("<!-- synthtrace:begin: written from the run by `synthtrace export hf`, replaced on each export; "
         "text outside this part is kept -->")
END = "<!-- synthtrace:end -->"
_BEGIN = re.compile(r"<!-- synthtrace:begin\b.*?-->", re.DOTALL)
_YAML = re.compile(r"\A\ufeff?\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_NUMBERS = re.compile(r"\d+")
_LOAD = re.compile(r'load_dataset\("[^"\n]*"')
OWNED = ("license", "annotations_creators", "size_categories")  # replaced by the new card's
JOINED = ("tags", "task_categories", "language", "source_datasets")  # the earlier card's, then the new ones
NEW_WINS = ("pretty_name",)  # the new card's when it has one, else the earlier one's
STAGES = {
    "input": "input lines that could not run",
    "generation": "the recipe gave up, or the model failed",
    "verification": "checked, and no answer verified",
    "decontamination": "overlapped an evaluation set during the run",
    "export": "left out at export",
    "cleaning": "removed at export by decontamination or near-duplicate removal",
}
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


class CardError(ValueError):
    """A card whose YAML header cannot be read."""


@dataclass(slots=True)
class SplitFile:
    name: str
    path: str  # relative to the dataset directory
    lines: int
    nbytes: int  # in memory, as Arrow holds it (`num_bytes`, as datasets records it)
    file_bytes: int  # on disk, compressed


@dataclass(slots=True)
class ConfigFiles:
    name: str
    splits: list[SplitFile]
    features: list[dict[str, Any]]


@dataclass(slots=True)
class RunFacts:
    """What the card says about a run, counted from its files by `export_hf`."""

    run_name: str = ""
    status: str = "complete"
    license: str = ""
    recipe: str = ""
    prompt_version: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    rows: int = 0  # readable lines of rows.jsonl
    records_with_rows: int = 0
    records_rejected: int = 0  # rejected whole: no row
    parts_rejected: int = 0  # parts of records that have rows
    bad_input: int = 0  # input lines that could not run
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, reason) → entries of rejected.jsonl
    bad_rejected_lines: int = 0
    verified: Counter[str] = field(default_factory=Counter)  # verified / failed / not checked → rows
    samples_drawn: int = 0
    samples_verified: int = 0
    sampled_records: int = 0
    exported: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason → rows left out at export
    removed: Counter[str] = field(default_factory=Counter)  # reason → rows removed by cleaning
    cleaning: dict[str, Any] | None = None
    run_decontaminated_against: list[str] = field(default_factory=list)
    bad_rows_lines: int = 0
    bad_rows_examples: list[str] = field(default_factory=list)
    prompt_versions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (recipe, version) → exported rows
    spend: list[dict[str, Any]] | None = None  # per endpoint and model, from the journal
    manifest_stats: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    command_rebuilt: bool = False
    export_command: str = ""
    configs: list[ConfigFiles] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    split_of_source: dict[str, str] = field(default_factory=dict)

    @property
    def input_records(self) -> int:
        return self.records_with_rows + self.records_rejected + self.bad_input


def reason_key(reason: str) -> str:
    """A reason with its numbers taken out, so that the same reason counts once."""
    return _NUMBERS.sub("#", reason)


def size_category(n: int) -> str:
    return next((name for bound, name in SIZES if n < bound), "n>1B")


_DTYPES = {"string": "string", "int64": "int64", "double": "float64", "bool": "bool"}


def features_yaml(schema: Any) -> list[dict[str, Any]]:
    """An Arrow schema as datasets writes `features` in a card (`Features._to_yaml_list`), for the
    few types the configs use."""
    return [{"name": f.name, **_feature(f.type)} for f in schema]


def _feature(t: Any) -> dict[str, Any]:
    import pyarrow as pa

    if pa.types.is_list(t):
        inner = t.value_type
        if pa.types.is_struct(inner):
            return {"list": [{"name": f.name, **_feature(f.type)} for f in inner]}
        return {"list": _DTYPES[str(inner)]}
    if pa.types.is_struct(t):
        return {"struct": [{"name": f.name, **_feature(f.type)} for f in t]}
    return {"dtype": _DTYPES[str(t)]}


# -- reading and writing a card --------------------------------------------------------------------

def split_card(text: str) -> tuple[dict[str, Any], str]:
    """(YAML header as a dict, the text after it)."""
    m = _YAML.match(text)
    if m is None:
        return {}, text
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        raise CardError(f"its YAML header cannot be read ({e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CardError("its YAML header is not a mapping")
    return data, text[m.end():]


def join_card(meta: dict[str, Any], body: str) -> str:
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    return f"---\n{head}---\n\n{body.lstrip(chr(10))}"


def license_of(text: str) -> str | None:
    try:
        value = split_card(text)[0].get("license")
    except CardError:
        return None
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str)), None)
    return value if isinstance(value, str) and value.strip() else None


def source_datasets_of(text: str) -> list[str]:
    value = split_card(text)[0].get("source_datasets")
    return [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]


def _body_parts(body: str) -> tuple[str, str | None, str]:
    """(text before the generated part, the generated part with its markers, text after); no
    generated part: (body, None, "")."""
    begin = _BEGIN.search(body)
    if begin is None:
        return body, None, ""
    end = body.find(END, begin.end())
    if end < 0:
        return body[:begin.start()], body[begin.start():], ""
    end += len(END)
    return body[:begin.start()], body[begin.start():end], body[end:]


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading line, the section's text) of markdown text; the text before the first heading has
    the heading ""."""
    out: list[tuple[str, str]] = []
    heading, lines = "", []
    fence = False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and line.startswith("#"):
            if heading or "".join(lines).strip():
                out.append((heading, "".join(lines)))
            heading, lines = line.strip(), []
        lines.append(line)
    if heading or "".join(lines).strip():
        out.append((heading, "".join(lines)))
    return out


def _by_config(earlier: Any, new: Any) -> list[Any]:
    """The new entries for synthtrace's configs, then the earlier card's other configs as they were."""
    new = [e for e in new or [] if isinstance(e, dict)]
    kept = [e for e in earlier or [] if not (isinstance(e, dict) and e.get("config_name") in OWNED_CONFIGS)]
    return [*new, *kept]


def _joined(earlier: Any, new: Any) -> Any:
    items = [earlier] if isinstance(earlier, str) else list(earlier or [])
    for v in [new] if isinstance(new, str) else new or []:
        if v not in items:
            items.append(v)
    return items


def merge(earlier: str | None, new: str, new_text: bool = False) -> str:
    """`new` (a generated card, or a local card being pushed) merged onto `earlier` (the card already
    in the directory, or on the Hub): see the module's docstring for the rule. `new_text`: the new
    card's own text counts as someone's writing (a push), and its sections the earlier card lacks are
    added; a generated card's title does not."""
    if earlier is None or not earlier.strip():
        return new
    old_meta, old_body = split_card(earlier)
    new_meta, new_body = split_card(new)
    meta = dict(old_meta)
    for key, value in new_meta.items():
        if key in OWNED or key in NEW_WINS:
            meta[key] = value
        elif key in ("configs", "dataset_info"):
            meta[key] = _by_config(old_meta.get(key), value)
        elif key in JOINED:
            meta[key] = _joined(old_meta.get(key), value)
        elif key not in meta:
            meta[key] = value
    for key in ("configs", "dataset_info"):  # synthtrace's configs that this export no longer has go
        if key in meta and key not in new_meta:
            meta[key] = _by_config(meta[key], [])
    before, block, after = _body_parts(old_body)
    new_before, new_block, new_after = _body_parts(new_body)
    if block is None:
        body = before.rstrip() + ("\n\n" if before.strip() else "") + (new_block or "") + "\n"
    else:
        body = before + (new_block or "") + after
    # Sections of the new card's own text that the earlier card lacks (written locally, then pushed);
    # a bare heading (the title of a generated card) is not writing.
    old = _sections(before + after)
    known = {h for h, _ in old} | {t.strip() for h, t in old if not h}
    extra = [t for h, t in _sections(new_before + new_after) if new_text and (h or t.strip()) not in known
             and t.strip() != h]
    if extra:
        body = body.rstrip() + "\n\n" + "\n".join(t.rstrip() + "\n" for t in extra)
    return join_card(meta, body)


def relocate(text: str, location: str) -> str:
    """The card with its `load_dataset("…"` examples pointing at `location` (a Hub repo id)."""
    before, block, after = _body_parts(text)
    if block is None:
        return text
    return before + _LOAD.sub(f'load_dataset("{location}"', block) + after


# -- the generated card ----------------------------------------------------------------------------

def generate(facts: RunFacts, pretty_name: str | None, language: list[str], source_datasets: list[str],
             location: str) -> str:
    """The card for a fresh export: its YAML and its generated part (no text of the user's)."""
    meta: dict[str, Any] = {}
    if pretty_name:
        meta["pretty_name"] = pretty_name
    meta["license"] = facts.license
    if language:
        meta["language"] = list(language)
    meta["annotations_creators"] = ["machine-generated"]
    meta["size_categories"] = [size_category(facts.exported)]
    meta["task_categories"] = ["text-generation"]
    meta["tags"] = ["synthetic", "synthtrace", "reasoning"]
    if source_datasets:
        meta["source_datasets"] = list(source_datasets)
    meta["configs"] = [{"config_name": c.name, **({"default": True} if c.name == "default" else {}),
                        "data_files": [{"split": s.name, "path": s.path} for s in c.splits]} for c in facts.configs]
    meta["dataset_info"] = [{"config_name": c.name, "features": c.features,
                             "splits": [{"name": s.name, "num_bytes": s.nbytes, "num_examples": s.lines}
                                        for s in c.splits],
                             "download_size": sum(s.file_bytes for s in c.splits),
                             "dataset_size": sum(s.nbytes for s in c.splits)} for c in facts.configs]
    title = pretty_name or facts.run_name
    return join_card(meta, f"# {title}\n\n{BEGIN}\n{prose(facts, location)}{END}\n")


def _n(n: int | float) -> str:
    return f"{n:,}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def _s(n: int, word: str, plural: str | None = None) -> str:
    return f"{_n(n)} {word if n == 1 else plural or word + 's'}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def prose(f: RunFacts, location: str) -> str:
    """The generated part of the card (the title above it is the user's to change)."""
    model = f.model.get("model") or f.model.get("alias") or "unknown"
    out = [f"Synthetic reasoning traces made by language models with synthtrace {__version__}: recipe "
           f"`{f.recipe}`" + (f" (prompt version {f.prompt_version})" if f.prompt_version else "")
           + f", model `{model}`" + (f" ({f.model['kind']})" if f.model.get("kind") else "")
           + (f", from {', '.join(f'`{i}`' for i in f.inputs)}" if f.inputs else "") + ". "
           + "Every line of `default` is a row the run kept, checked as the recipe checks it; what was "
             "left out, and why, is in `rejected`.\n"]
    if f.status != "complete":
        out.append(f"**The run did not finish** (its manifest says status: `{f.status}`): these are the rows it "
                   "had written.\n")
    out += _configs(f, location)
    out += _funnel(f)
    out += _verification(f)
    out += _models(f)
    out += _decontamination(f)
    out += _reproduce(f)
    out.append(f"## Licence\n\n`{f.license}`, as stated by the publisher of this dataset. The terms of the inputs "
               "and of the models that wrote the text apply as well.\n")
    return "\n".join(out)


def _configs(f: RunFacts, location: str) -> list[str]:
    what = {
        "default": "`id` and `messages` (system, user, assistant). The assistant turn opens with the reasoning in "
                   "a `<think>\\n…\\n</think>\\n\\n` block, which Qwen3's chat template and TRL's Qwen3 training "
                   "template read as the reasoning: TRL's SFTTrainer takes this config as it is.",
        "metadata": "One line per `default` line, the same `id`: verified, verdict, every sample's verdict, pass "
                    "rate, the recipe's checks and scores (`checks`, JSON), models, prompt version, source file and "
                    "line, calls, tokens and $ (those of the calls its provenance lists).",
        "rejected": "What did not make it: `stage` (" + ", ".join(STAGES) + "), `reason`, details (JSON), "
                    "every sample's verdict, tokens and $.",
    }
    lines = ["## Configs\n", "| config | what it holds | lines |", "|---|---|---|"]
    for c in f.configs:
        splits = ", ".join(f"{s.name}: {_n(s.lines)}" for s in c.splits)
        lines.append(f"| `{c.name}` | {what[c.name]} | {splits} |")
    missing = [name for name in OWNED_CONFIGS if name not in {c.name for c in f.configs}]
    if missing:
        lines.append("")
        lines.append(f"No {' or '.join(f'`{m}`' for m in missing)} config: it would be empty.")
    if len(f.split_of_source) > 1:
        lines.append("")
        lines.append("Splits are by input file: " + ", ".join(f"`{split}` ← `{_name(src)}`"
                                                             for src, split in f.split_of_source.items()) + ".")
    names = [c.name for c in f.configs]
    split = f.configs[0].splits[0].name if f.configs and f.configs[0].splits else "train"
    lines += ["", "```python", "from datasets import load_dataset", ""]
    lines += [f'{name} = load_dataset("{location}", "{name}", split="{split}")' for name in names
              if name in ("default", "metadata")]
    lines += ["```", ""]
    return lines


def _name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1] or "(unknown)"


def _funnel(f: RunFacts) -> list[str]:
    left_out = sum(f.skipped.values())
    removed = sum(f.removed.values())
    verified = f.verified["verified"]
    lines = ["## How it was made\n", "| step | count |", "|---|---|",
             f"| input records | {_n(f.input_records)} |",
             f"| records with rows | {_n(f.records_with_rows)} |",
             f"| rows generated | {_n(f.rows)} |",
             f"| rows verified | {_n(verified)} |",
             f"| rows exported | {_n(f.exported)} |",
             f"| records rejected whole | {_n(f.records_rejected)} |",
             f"| parts of records rejected | {_n(f.parts_rejected)} |",
             f"| input lines that could not run | {_n(f.bad_input)} |",
             f"| rows left out at export | {_n(left_out)} |",
             f"| rows removed by cleaning | {_n(removed)} |", ""]
    if f.bad_rows_lines:
        lines.append(f"Unreadable lines of `rows.jsonl`, in no config: {_n(f.bad_rows_lines)} ("
                     + "; ".join(f"`{_cell(_name(b))}`" for b in f.bad_rows_examples) + ").\n")
    if f.bad_rejected_lines:
        lines.append(f"{_s(f.bad_rejected_lines, 'line')} of `rejected.jsonl` could not be read.\n")
    reasons = [(stage, reason, n) for (stage, reason), n in f.rejected.items()]
    reasons += [("export", reason, n) for reason, n in f.skipped.items()]
    reasons += [("cleaning", reason, n) for reason, n in f.removed.items()]
    if reasons:
        lines += ["Left out, by stage and reason (numbers in a reason shown as #):\n",
                  "| stage | reason | count |", "|---|---|---|"]
        order = list(STAGES)
        for stage, reason, n in sorted(reasons, key=lambda r: (order.index(r[0]), -r[2], r[1])):
            lines.append(f"| {stage} | {_cell(reason)} | {_n(n)} |")
        lines.append("")
    else:
        lines.append("Nothing was rejected or left out.\n")
    return lines


def _verification(f: RunFacts) -> list[str]:
    v = f.verified
    checked = v["verified"] + v["failed"]
    lines = ["## Verification\n",
             f"- Rows: {_n(v['verified'])} verified, {_n(v['failed'])} failed, {_n(v['not checked'])} not checked "
             f"({_pct(v['verified'], checked)} of the rows checked verified)."]
    if f.samples_drawn:
        lines.append(f"- Samples: {_n(f.samples_verified)} of {_n(f.samples_drawn)} answers drawn verified "
                     f"({_pct(f.samples_verified, f.samples_drawn)}), over {_s(f.sampled_records, 'record')}; "
                     "each sample's verdict is in `verdicts` (`metadata`, `rejected`).")
    records = f.records_with_rows + f.records_rejected
    lines.append(f"- Records: {_n(f.records_with_rows)} of {_n(records)} gave at least one row "
                 f"({_pct(f.records_with_rows, records)}).\n")
    return lines


def _money(usd: float) -> str:
    return f"${usd:,.4f}"


def _models(f: RunFacts) -> list[str]:
    lines = ["## Models, prompts, tokens and cost\n"]
    if f.spend is not None:
        lines += ["| endpoint | model | calls | prompt tokens | completion tokens | $ |", "|---|---|---|---|---|---|"]
        for s in f.spend:
            lines.append(f"| {_cell(s['endpoint'])} | {_cell(s['model'])} | {_n(s['calls'])} | "
                         f"{_n(s['prompt_tokens'] or 0)} | {_n(s['completion_tokens'] or 0)} | "
                         f"{_money(s['cost_usd'] or 0.0)} |")
        total = {k: sum(s[k] or 0 for s in f.spend) for k in ("calls", "prompt_tokens", "completion_tokens",
                                                                "cost_usd")}
        lines += ["", f"In all: {_s(total['calls'], 'call')}, {_n(total['prompt_tokens'])} prompt tokens, "
                      f"{_n(total['completion_tokens'])} completion tokens, {_money(total['cost_usd'])} — every "
                      "answer the run paid for, once, as its journal holds them (a replayed answer costs nothing). "
                      "A price the run did not know counts as 0.\n"]
    elif f.manifest_stats:
        m = f.manifest_stats
        lines.append(f"The run's journal is missing; its manifest (the last invocation only) counts "
                     f"{_s(m.get('calls', 0), 'call')}, {_n(m.get('prompt_tokens', 0))} prompt tokens, "
                     f"{_n(m.get('completion_tokens', 0))} completion tokens, "
                     f"{_money(m.get('cost_usd_total', 0.0))}.\n")
    if f.prompt_versions:
        lines.append("Prompt versions of the exported rows: " + ", ".join(
            f"`{recipe}` version `{version}` ({_s(n, 'row')})" for (recipe, version), n in
            sorted(f.prompt_versions.items())) + ".\n")
    return lines


def _decontamination(f: RunFacts) -> list[str]:
    lines = ["## Decontamination\n"]
    during = sum(n for (stage, _), n in f.rejected.items() if stage == "decontamination")
    if f.run_decontaminated_against:
        lines.append(f"- During the run, against {', '.join(f'`{x}`' for x in f.run_decontaminated_against)} (word "
                     f"n-gram overlap): {_s(during, 'row')} rejected (stage `decontamination` in `rejected`, with "
                     "the evidence).")
    else:
        lines.append("- During the run: not asked for.")
    c = f.cleaning
    if c is None:
        lines.append("- At export: not asked for.\n")
        return lines
    how = []
    if c["against"]:
        how.append(f"against {', '.join(f'`{x}`' for x in c['against'])}: word {c['ngram']}-grams "
                   f"({c['ngram_short']}-grams for short items), removed from {c['min_overlap']:g} of the smaller "
                   "text's n-grams in common")
    if c["embedding_model"]:
        how.append(f"embedding cosine ≥ {c['embedding_threshold']:g} (`{c['embedding_model']}`)")
    if c["dedup"]:
        how.append(f"near-duplicate {', '.join(c['dedup'])} (MinHash LSH, Jaccard ≥ {c['dedup_threshold']:g}; the "
                   "first is kept)")
    removed = sum(f.removed.values())
    lines.append(f"- At export: {'; '.join(how)}. {_s(removed, 'row')} removed" +
                 (" (" + ", ".join(f"{_n(n)} {_cell(r)}" for r, n in f.removed.most_common()) + ")" if removed
                  else "") + ", each in `removed.jsonl` with its evidence and in `rejected` (stage `cleaning`).\n")
    return lines


def _reproduce(f: RunFacts) -> list[str]:
    lines = ["## Reproduce\n", "Local paths are shortened to file names.\n", "```bash", f.command,
             f.export_command, "```", ""]
    if f.command_rebuilt:
        lines.append("The run command is rebuilt from the run's manifest (the run was not started from the "
                     "command line).\n")
    lines.append("Every answer of the run is in its `journal.db` (in the run directory, not in this dataset). With "
                 "a copy of it in an empty output directory, the run command replays each answer from it: no "
                 "model is called, and the rows are made again from the same answers.\n")
    return lines
