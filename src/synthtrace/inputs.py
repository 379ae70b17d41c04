"""Streaming input: records one at a time with their line numbers, bad lines named and kept apart.

A file is read lazily, so a million-line input costs the memory of one line. Each problem (invalid
UTF-8, invalid JSON, not an object, a missing id) becomes a `BadInput` that names the file and line;
the run puts it in rejected.jsonl and goes on with the good lines (or stops first, with --strict).

`read_table` picks the reader by extension: JSON lines (`.jsonl`, `.json`, `.ndjson`), CSV / TSV
(one record per row, values as strings, the line where the row starts) and Parquet (row N, with
pyarrow, read a batch at a time).
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from synthtrace.types import Struct


class Record(Struct):
    """One good input line (or CSV row): its id, parsed data and where it came from.

        question = record.data["question"]          # in Recipe.process
        yield Record(str(n), {"text": text}, str(path), n)  # in a Recipe.records of your own
    """

    __slots__ = ("id", "data", "source", "line")

    def __init__(self, id: str, data: dict[str, Any], source: str, line: int):
        self.id = id
        self.data = data
        self.source = source
        self.line = line  # 1-based line (or CSV row) in `source`


class BadInput(Struct):
    """An input line that cannot run, with file, line and reason; it goes to rejected.jsonl.

        yield BadInput(str(path), n, "needs a `question` string", id=obj.get("id"))
    """

    __slots__ = ("source", "line", "reason", "raw", "id", "extra")

    def __init__(self, source: str, line: int, reason: str, raw: str = "", id: str | None = None,
                 extra: dict[str, Any] | None = None):
        self.source = source
        self.line = line
        self.reason = reason
        self.raw = raw
        self.id = id
        self.extra = {} if extra is None else extra

    def message(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"

    def to_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.id, "reason": self.reason, "source": self.source, "line": self.line}
        if self.raw:
            entry["raw"] = self.raw[:500]
        return entry | self.extra


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]] | BadInput]:
    """(line number, object) for each non-blank line, or a BadInput that says what is wrong."""
    source = str(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):  # files saved by Windows tools start with one
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadInput(source, n, f"invalid UTF-8 at byte {e.start}", raw[:200].decode("utf-8", "replace"))
                continue
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as e:
                yield BadInput(source, n, f"invalid JSON: {e}", text.strip())
                continue
            if not isinstance(obj, dict):
                yield BadInput(source, n, f"expected a JSON object, got {type(obj).__name__}", text.strip())
                continue
            yield n, obj


def read_records(path: str | Path, build: Callable[[str, int, dict[str, Any]], Record | BadInput]
                 ) -> Iterator[Record | BadInput]:
    """JSONL records: bad lines pass through; `build(source, line, obj)` makes each object a Record
    (or a BadInput that says what the recipe finds wrong with it)."""
    source = str(path)
    for item in read_jsonl(path):
        yield item if isinstance(item, BadInput) else build(source, *item)


Build = Callable[[str, int, dict[str, Any]], "Record | BadInput"]

CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}


def read_table(path: str | Path, build: Build | None = None) -> Iterator[Record | BadInput]:
    """Records from a JSONL, CSV/TSV or Parquet file (by extension), each object made a Record by
    `build(source, line, obj)` — by default `build_record`: an `id` is required."""
    build = build or build_record
    suffix = Path(path).suffix.lower()
    if suffix in CSV_DELIMITERS:
        return _read_csv(path, build, CSV_DELIMITERS[suffix])
    if suffix == ".parquet":
        return _read_parquet(path, build)
    return read_records(path, build)


def build_record(source: str, n: int, obj: dict[str, Any]) -> Record | BadInput:
    """The default rule: an object with a usable `id` (a string or an integer) is a record."""
    rid = record_id(obj.get("id"))
    if rid is None:
        return BadInput(source, n, "missing or empty `id` (a string or integer)", raw=_preview(obj))
    return Record(rid, obj, source, n)


def count_records(path: str | Path) -> int | None:
    """How many records a file holds, when that is cheap to know (JSON lines, Parquet), else None."""
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            return None
        return int(pq.ParquetFile(path).metadata.num_rows)
    if suffix in CSV_DELIMITERS:
        return None  # a quoted field may hold newlines: rows are not lines
    return count_lines(path)


def _read_csv(path: str | Path, build: Build, delimiter: str) -> Iterator[Record | BadInput]:
    source = str(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        line = 1
        try:
            if reader.fieldnames is None:  # reads the header: an empty file has none
                return
            line = reader.line_num + 1  # where the next row starts (a quoted field may span lines)
            for row in reader:
                start, line = line, reader.line_num + 1
                if None in row:
                    yield BadInput(source, start, f"{len(row[None])} more field(s) than the header has",
                                   id=record_id(row.get("id")))
                    continue
                if not any((v or "").strip() for v in row.values()):
                    continue  # a blank row
                yield build(source, start, {k: v for k, v in row.items() if v is not None})
        except csv.Error as e:
            yield BadInput(source, line, f"invalid CSV: {e}")
        except UnicodeDecodeError as e:
            yield BadInput(source, line, f"invalid UTF-8 at byte {e.start} of the row")


def _read_parquet(path: str | Path, build: Build) -> Iterator[Record | BadInput]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        yield BadInput(str(path), 1, "reading Parquet needs pyarrow: pip install pyarrow")
        return
    source = str(path)
    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for obj in batch.to_pylist():
            n += 1
            yield build(source, n, obj)


def _preview(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj, default=str).decode()[:200]


def record_id(value: Any) -> str | None:
    """An id as the run keys it: strings and integers, never empty."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int)):
        s = str(value)
        return s if s.strip() else None
    return None


def count_lines(path: str | Path) -> int:
    """Non-blank lines, counted fast (for progress totals)."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                n += 1
    return n
