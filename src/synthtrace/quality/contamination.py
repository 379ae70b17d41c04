r"""Decontamination: does a training text repeat part of an item of an evaluation set?

    index = ContaminationIndex.build(["MEDEC-MS-TestSet-with-GroundTruth-and-ErrorType.csv"])
    hit = index.find(example_text)   # None, or the item, the n-grams both contain, and how much they share

Texts are compared as lower-cased words (`\w+`: punctuation and spacing never hide a copy). An
evaluation item of `2 × n` words or more is indexed by its word n-grams (n = 13, as NeMo Curator and
the GPT-3 paper use); a shorter one by its `n_short`-grams (8, as s1 and open-r1 use), so that a
short question can match at all. A text overlaps an item by the share of n-grams they have in
common, over the smaller of the two (a text holding a whole item, and a text that is a piece of
one, both score 1); it is contaminated from `min_overlap` (0.1) up. A single shared n-gram is not
enough by default: clinical notes share boilerplate such as "respirations are 18 min and oxygen
saturation is 98 on room air" (`min_overlap=0` flags any shared n-gram). A hit names the n-gram,
the item and the overlap, never just a flag.

Evaluation files are JSONL, CSV/TSV or Parquet. Their text fields are the ones named; else those
of a known format (MEDEC's CSVs: `Text` and `Corrected Text`, so the official test set works as it
is); else the usual names (question, problem, prompt, text, passage, …); else every string field
of five words or more. An item's id is its `id` (or `Text ID`, `note_id` …), else FILE:LINE.

The index holds a 64-bit hash of each n-gram (a sum of per-word CRC-32s times fixed odd
multipliers, computed over all windows at once with numpy) beside the item it came from, sorted:
16 bytes per n-gram, looked up with one binary search per window. It is built once per set of files
and cached under ~/.cache/synthtrace/decontamination (plain `.npz` arrays, keyed by the files'
contents and the settings). Memory depends on the evaluation sets only, never on the rows checked.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from synthtrace.inputs import BadInput, read_table
from synthtrace.types import Struct

WORD = re.compile(r"\w+")
KNOWN_FORMATS = (("Text ID", ("Text", "Corrected Text")),)  # (a column that tells the format, its text fields)
TEXT_NAMES = ("question", "problem", "prompt", "text", "passage", "input", "content", "note", "context", "query")
ID_NAMES = ("id", "text id", "text_id", "note_id", "question_id", "problem_id", "uid", "idx")
MISSING = {"", "na", "n/a", "none", "null"}
CACHE_VERSION = 3


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class Match(Struct):
    """A training text's overlap with an evaluation item: the evidence a removal carries."""

    __slots__ = ("eval_set", "item", "field", "ngram", "n", "shared", "overlap")

    def __init__(self, eval_set: str, item: str, field: str, ngram: str, n: int, shared: int, overlap: float):
        self.eval_set = eval_set
        self.item = item
        self.field = field
        self.ngram = ngram  # the first n-gram both contain
        self.n = n
        self.shared = shared  # distinct n-grams both contain
        self.overlap = overlap  # shared / the n-grams of the smaller of the two

    def as_dict(self) -> dict[str, Any]:
        return {"eval_set": self.eval_set, "item": self.item, "eval_field": self.field, "ngram": self.ngram,
                "n": self.n, "shared_ngrams": self.shared, "overlap": round(self.overlap, 4)}


def eval_items(path: Path, fields: Iterable[str] = ()) -> Iterator[tuple[str, str, str]]:
    """(item id, field, text) for each evaluation text in `path`."""
    named = list(fields)
    for rec in read_table(path, lambda source, line, obj: _Item(f"{Path(source).name}:{line}", obj)):
        if isinstance(rec, BadInput):
            raise ValueError(f"{rec.source}:{rec.line}: {rec.reason}")
        obj = rec.data
        keys = {k.lower(): k for k in obj}
        item_id = next((str(obj[keys[n]]) for n in ID_NAMES if n in keys and str(obj[keys[n]]).strip()), rec.id)
        for field in named or _text_fields(obj):
            value = obj.get(field)
            if value is None and field.lower() in keys:
                value = obj[keys[field.lower()]]
            if isinstance(value, str) and value.strip().lower() not in MISSING:
                yield item_id, field, value


class _Item(Struct):
    __slots__ = ("id", "data")

    def __init__(self, id: str, data: dict[str, Any]):
        self.id = id
        self.data = data


def _text_fields(obj: dict[str, Any]) -> list[str]:
    for marker, text_fields in KNOWN_FORMATS:
        if marker in obj:
            return [f for f in text_fields if f in obj]
    lower = {k.lower(): k for k in obj}
    named = [lower[n] for n in TEXT_NAMES if n in lower and isinstance(obj[lower[n]], str)]
    if named:
        return named
    return [k for k, v in obj.items() if isinstance(v, str) and len(v.split()) >= 5]


MAX_N = 64
# Fixed odd multipliers: the same n-gram hashes alike in every process (the cache depends on it).
_MULTIPLIERS = [(0x9E3779B97F4A7C15 * (2 * i + 1) + 0xBF58476D1CE4E5B9 * i * i) % 2**64 | 1 for i in range(MAX_N)]


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ImportError("decontamination needs numpy: pip install 'synthtrace[clean]'") from None
    return numpy


def window_hashes(w: list[str], n: int) -> Any:
    """The 64-bit hash of every n-word window of `w`, in order (empty when `w` is shorter than n)."""
    np = _numpy()
    if len(w) < n:
        return np.empty(0, dtype=np.uint64)
    ids = np.fromiter(map(zlib.crc32, map(str.encode, w)), dtype=np.uint64, count=len(w))
    windows = np.lib.stride_tricks.sliding_window_view(ids, n)
    with np.errstate(over="ignore"):
        return (windows * np.array(_MULTIPLIERS[:n], dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


class ContaminationIndex:
    """The n-gram hashes of evaluation sets, each with the item it came from."""

    def __init__(self, n: int, n_short: int, items: list[tuple[str, str, str, int]], hashes: dict[int, Any],
                 owners: dict[int, Any], min_overlap: float = 0.1):
        if not (0 < n_short <= MAX_N and 0 < n <= MAX_N):
            raise ValueError(f"n-grams of 1 to {MAX_N} words")
        self.n = n
        self.n_short = n_short
        self.items = items  # (eval set, item id, field, its number of distinct n-grams)
        self.hashes = hashes  # n → sorted n-gram hashes
        self.owners = owners  # n → the item of each hash (same order)
        self.min_overlap = min_overlap
        self.sizes = sorted((k for k, v in hashes.items() if len(v)), reverse=True)

    @classmethod
    def build(cls, paths: Iterable[str | Path], n: int = 13, n_short: int = 8, fields: Iterable[str] = (),
              min_overlap: float = 0.1, cache: bool = True) -> ContaminationIndex:
        np = _numpy()
        paths = [Path(p) for p in paths]
        fields = list(fields)
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"evaluation set not found: {p}")
        cache_file = _cache_path(paths, n, n_short, fields) if cache else None
        if cache_file is not None and cache_file.exists():
            try:
                return cls._load(cache_file, n, n_short, min_overlap)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a damaged cache is rebuilt
        items: list[tuple[str, str, str, int]] = []
        parts: dict[int, list[Any]] = {n: [], n_short: []}
        owners: dict[int, list[Any]] = {n: [], n_short: []}
        for p in paths:
            for item_id, field, text in eval_items(p, fields):
                w = words(text)
                size = n if len(w) >= 2 * n else n_short
                own = np.unique(window_hashes(w, size))
                if not len(own):
                    continue
                parts[size].append(own)
                owners[size].append(np.full(len(own), len(items), dtype=np.int32))
                items.append((p.name, item_id, field, len(own)))
        hashes, owner = {}, {}
        for size in parts:
            h = np.concatenate(parts[size]) if parts[size] else np.empty(0, dtype=np.uint64)
            o = np.concatenate(owners[size]) if owners[size] else np.empty(0, dtype=np.int32)
            order = np.argsort(h, kind="stable")
            hashes[size], owner[size] = h[order], o[order]
        built = cls(n, n_short, items, hashes, owner, min_overlap)
        if cache_file is not None:
            built._save(cache_file)
        return built

    def find(self, text: str) -> Match | None:
        """The evaluation item `text` overlaps most, when that reaches `min_overlap`; else None."""
        np = _numpy()
        w = words(text)
        best: Match | None = None
        for size in self.sizes:
            own, first = np.unique(window_hashes(w, size), return_index=True)
            if not len(own):
                continue
            table = self.hashes[size]
            left, right = np.searchsorted(table, own, "left"), np.searchsorted(table, own, "right")
            found = np.nonzero(right > left)[0]
            if not len(found):
                continue
            shared: dict[int, int] = {}
            where: dict[int, int] = {}  # item → the first position in `w` of a window it shares
            for j in found:
                pos = int(first[j])
                for index in self.owners[size][left[j]:right[j]].tolist():
                    shared[index] = shared.get(index, 0) + 1
                    where[index] = min(where.get(index, pos), pos)
            for index, k in shared.items():
                eval_set, item, field, windows = self.items[index]
                overlap = k / min(windows, len(own))
                if overlap >= self.min_overlap and (best is None or overlap > best.overlap):
                    pos = where[index]
                    best = Match(eval_set, item, field, " ".join(w[pos:pos + size]), size, k, overlap)
        return best

    def __len__(self) -> int:
        return len(self.items)

    def _save(self, path: Path) -> None:
        np = _numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        arrays = {f"{kind}{size}": a for size in self.hashes
                  for kind, a in (("h", self.hashes[size]), ("o", self.owners[size]))}
        np.savez(tmp, items=np.frombuffer(orjson.dumps(self.items), dtype=np.uint8), **arrays)
        os.replace(tmp, path)

    @classmethod
    def _load(cls, path: Path, n: int, n_short: int, min_overlap: float) -> ContaminationIndex:
        np = _numpy()
        with np.load(path, allow_pickle=False) as data:
            items = [tuple(i) for i in orjson.loads(data["items"].tobytes())]
            hashes = {size: data[f"h{size}"] for size in {n, n_short}}
            owners = {size: data[f"o{size}"] for size in {n, n_short}}
        return cls(n, n_short, items, hashes, owners, min_overlap)  # type: ignore[arg-type]


def _cache_path(paths: list[Path], n: int, n_short: int, fields: list[str]) -> Path:
    h = hashlib.sha256(orjson.dumps([CACHE_VERSION, n, n_short, fields]))
    for p in paths:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synthtrace" / "decontamination"
    return root / f"{h.hexdigest()[:32]}.npz"
