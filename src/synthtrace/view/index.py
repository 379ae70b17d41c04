"""An index of a run directory, built once, so a viewer never holds the run in memory.

Every line of `rows.jsonl` and `rejected.jsonl` is a document: its kind, where it lies in its file
(offset and length, so it is read back on demand), its line, its group (the source note or question
its samples share), and every scalar field as a column — top-level scalars and those one level
down (`quality.mean_overall`, `verification.verified`, `provenance.cost_usd`), plus two derived
ones: the length of the trace and, for rejected entries, the reason with its numbers taken out, so
that entries that failed the same way group together. Strings of any length also go into a
full-text index (SQLite FTS5). The index lives beside the run (`view-index.db`), or in the cache
folder when the run is read-only; it is brought up to date when the files grow, and rebuilt when
they change otherwise.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from synthtrace.engine.store import MANIFEST, REJECTED, ROWS

INDEX = "view-index.db"
SCHEMA_VERSION = "2"
MAX_FACET_VALUES = 60  # a text field with more distinct values is searched, not listed
MAX_LABEL_CHARS = 120  # longer strings are text, not a value to filter on
SKIP = {"provenance.calls", "provenance.stages", "provenance.passage", "calls", "raw", "traceback"}
TRACE_FIELDS = ("reasoning", "reasoning_trace", "completion", "trace", "answer")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def flatten(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(scalar fields by dotted path, every string in the document) for one row or entry."""
    fields: dict[str, Any] = {}
    texts: list[str] = []

    def walk(value: Any, path: str, depth: int) -> None:
        if path in SKIP:
            if depth <= 1 and isinstance(value, str):
                texts.append(value)
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k), depth + 1)
        elif isinstance(value, list):
            if depth <= 2:
                for v in value[:50]:
                    if isinstance(v, (str, dict)):
                        walk(v, path + "[]", depth + 3)  # text only: a list is no filter
        elif isinstance(value, str):
            texts.append(value)
            if depth <= 2 and len(value) <= MAX_LABEL_CHARS and "[]" not in path:
                fields[path] = value
        elif isinstance(value, bool):  # a value to choose, not a number: "true" / "false"
            if depth <= 2 and "[]" not in path:
                fields[path] = "true" if value else "false"
        elif isinstance(value, (int, float)) and depth <= 2 and "[]" not in path:
            fields[path] = value

    walk(doc, "", 0)
    return fields, texts


def reason_group(reason: str) -> str:
    """A rejection reason with its numbers taken out: entries that failed the same way share it."""
    return _NUMBER.sub("#", reason)[:160]


def trace_length(doc: dict[str, Any]) -> int | None:
    for name in TRACE_FIELDS:
        value = doc.get(name)
        if isinstance(value, str) and value:
            return len(value.split())
    return None


def group_of(doc: dict[str, Any]) -> str | None:
    """The source a row shares with its sibling samples: the note, passage question or record."""
    prov = doc.get("provenance") if isinstance(doc.get("provenance"), dict) else {}
    ui = doc.get("user_interaction") if isinstance(doc.get("user_interaction"), dict) else {}
    for value in (ui.get("question"), doc.get("question"), prov.get("source_note_id"), prov.get("record_id"),
                  doc.get("record_id"), doc.get("id")):
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


class RunIndex:
    """The index of one run directory; all queries go through it (see `view.query`)."""

    def __init__(self, run: Path, cache_dir: Path | None = None):
        self.run = Path(run)
        if not (self.run / ROWS).exists() and not (self.run / REJECTED).exists():
            raise FileNotFoundError(f"{self.run}: no {ROWS} or {REJECTED} (is it a run directory?)")
        self.path = self._index_path(cache_dir)
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.manifest = _read_json(self.run / MANIFEST) or {}
        self.columns: dict[str, str] = {}  # field path → column name
        self._matches: dict[str, str] = {}  # full-text query → its temporary table, the latest few
        self.refresh()

    def _index_path(self, cache_dir: Path | None) -> Path:
        if os.access(self.run, os.W_OK):
            return self.run / INDEX
        base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synthtrace" / "view"
        base.mkdir(parents=True, exist_ok=True)
        return base / (hashlib.sha256(str(self.run.resolve()).encode()).hexdigest()[:16] + ".db")

    # -- building -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the index up to date with the run's files: append what was added, rebuild what changed."""
        db = self.db
        db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        meta = dict(db.execute("SELECT k, v FROM meta"))
        if meta.get("schema") != SCHEMA_VERSION:
            self._reset()
            meta = {}
        self.columns = dict(db.execute("SELECT path, col FROM fields"))
        changed = False
        for kind, name in (("row", ROWS), ("rejected", REJECTED)):
            path = self.run / name
            size = path.stat().st_size if path.exists() else 0
            done = int(meta.get(f"{kind}.size", 0))
            if size == done and _head(path, done) == meta.get(f"{kind}.head", ""):
                continue
            changed = True
            if size < done or _head(path, done) != meta.get(f"{kind}.head", ""):  # rewritten: start it over
                self._drop(kind)
                done = 0
            done = self._append(kind, path, done)
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?), (?, ?)",
                       (f"{kind}.size", str(done), f"{kind}.head", _head(path, done)))
        db.commit()
        if changed:
            self._classify()
            for name in self._matches.values():
                db.execute(f"DROP TABLE IF EXISTS temp.{name}")
            self._matches.clear()

    def _reset(self) -> None:
        db = self.db
        for table in ("docs", "fields", "fts", "meta", "stats"):
            db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT)")
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        db.execute("CREATE TABLE docs (n INTEGER PRIMARY KEY, kind TEXT NOT NULL, off INTEGER NOT NULL, "
                   "len INTEGER NOT NULL, line INTEGER NOT NULL, grp TEXT)")
        db.execute("CREATE INDEX docs_kind ON docs (kind, n)")
        db.execute("CREATE INDEX docs_grp ON docs (grp)")
        db.execute("CREATE TABLE fields (path TEXT PRIMARY KEY, col TEXT NOT NULL, type TEXT, distinct_values INTEGER)")
        db.execute("CREATE VIRTUAL TABLE fts USING fts5(body, content='', tokenize='unicode61')")
        db.commit()
        self.columns = {}

    def _drop(self, kind: str) -> None:
        """Forget one kind's documents. A contentless FTS index cannot delete; its entries for them stay,
        matching no document, since numbers are never given out twice (`meta.next`)."""
        self.db.execute("DELETE FROM docs WHERE kind = ?", (kind,))

    def _column(self, path: str) -> str:
        col = self.columns.get(path)
        if col is None:
            col = f"c{len(self.columns)}"
            self.db.execute(f"ALTER TABLE docs ADD COLUMN {col}")
            self.db.execute("INSERT INTO fields (path, col) VALUES (?, ?)", (path, col))
            self.columns[path] = col
        return col

    def _append(self, kind: str, path: Path, start: int) -> int:
        """Index the complete lines of `path` from byte `start`; return where the last one ends."""
        if not path.exists():
            return 0
        end = start
        batch: list[tuple[list[str], list[Any], str]] = []
        for off, length, line, doc in _read_lines(path, start):
            end = off + length
            fields, texts = flatten(doc)
            fields["kind"] = kind
            if kind == "rejected" and isinstance(doc.get("reason"), str):
                fields["reason_group"] = reason_group(doc["reason"])
            words = trace_length(doc)
            if words is not None:
                fields["trace_words"] = words
            cols = [self._column(p) for p in fields]
            values = [off, length, line, group_of(doc), *fields.values()]
            batch.append((cols, values, "\n".join(texts)))
            if len(batch) >= 2000:
                self._insert(kind, batch)
                batch = []
        if batch:
            self._insert(kind, batch)
        return end

    def _insert(self, kind: str, batch: list[tuple[list[str], list[Any], str]]) -> None:
        """Write a batch: docs with the same fields go in one statement; their text into the FTS index."""
        db = self.db
        first = int(dict(db.execute("SELECT k, v FROM meta")).get("next", 1))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('next', ?)", (str(first + len(batch)),))
        by_shape: dict[tuple[str, ...], list[list[Any]]] = {}
        for i, (cols, values, _) in enumerate(batch):
            by_shape.setdefault(tuple(cols), []).append([first + i, kind, *values])
        for cols, rows in by_shape.items():
            names = ", ".join(["n", "kind", "off", "len", "line", "grp", *cols])
            db.executemany(f"INSERT INTO docs ({names}) VALUES ({', '.join('?' * (len(cols) + 6))})", rows)
        db.executemany("INSERT INTO fts (rowid, body) VALUES (?, ?)",
                       ((first + i, body) for i, (_, _, body) in enumerate(batch)))

    def _classify(self) -> None:
        """Each field's type (number, value or text), and per kind of document how many have it, how
        many values it takes and its range: what the filters offer, known without a scan per question."""
        db = self.db
        db.execute("DROP TABLE IF EXISTS stats")
        db.execute("CREATE TABLE stats (path TEXT, kind TEXT, present INTEGER, distinct_values INTEGER, lo, hi, "
                   "PRIMARY KEY (path, kind))")
        for path, col in list(self.columns.items()):
            numeric, texts, distinct = db.execute(
                f"SELECT SUM(typeof({col}) IN ('integer', 'real')), SUM(typeof({col}) = 'text'), "
                f"COUNT(DISTINCT {col}) FROM docs").fetchone()
            kind = "number" if numeric and not texts else "value" if distinct <= MAX_FACET_VALUES else "text"
            db.execute("UPDATE fields SET type = ?, distinct_values = ? WHERE path = ?", (kind, distinct, path))
            if kind != "text":
                db.execute(f"CREATE INDEX IF NOT EXISTS docs_kind_{col} ON docs (kind, {col})")
                db.execute(f"INSERT INTO stats SELECT ?, kind, COUNT({col}), COUNT(DISTINCT {col}), MIN({col}), "
                           f"MAX({col}) FROM docs GROUP BY kind", (path,))
        db.commit()

    def stats(self, kind: str) -> dict[str, tuple[int, int, Any, Any]]:
        """field path → (documents that have it, distinct values, lowest, highest) among `kind`."""
        return {p: (n, d, lo, hi) for p, n, d, lo, hi in
                self.db.execute("SELECT path, present, distinct_values, lo, hi FROM stats WHERE kind = ?", (kind,))}

    def matches(self, fts_query: str) -> str:
        """The name of a temporary table of the documents matching a full-text query: the page asks
        for the same words several times in a row (the list, its counts), and matches once."""
        name = self._matches.get(fts_query)
        if name is None:
            if len(self._matches) >= 4:
                old = self._matches.pop(next(iter(self._matches)))
                self.db.execute(f"DROP TABLE IF EXISTS temp.{old}")
            name = self._matches[fts_query] = f"match_{hashlib.sha256(fts_query.encode()).hexdigest()[:12]}"
            self.db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (n INTEGER PRIMARY KEY)")
            self.db.execute(f"INSERT OR IGNORE INTO {name} SELECT rowid FROM fts WHERE fts MATCH ?", (fts_query,))
        return name

    def count(self, kind: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM docs WHERE kind = ?", (kind,)).fetchone()[0]

    # -- reading --------------------------------------------------------------------------------

    def fields(self) -> list[dict[str, Any]]:
        return [{"path": p, "col": c, "type": t, "distinct": d}
                for p, c, t, d in self.db.execute("SELECT path, col, type, distinct_values FROM fields ORDER BY path")]

    def doc(self, n: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT kind, off, len, line FROM docs WHERE n = ?", (n,)).fetchone()
        if row is None:
            return None
        kind, off, length, line = row
        with open(self.run / (ROWS if kind == "row" else REJECTED), "rb") as f:
            f.seek(off)
            return {"n": n, "kind": kind, "line": line, "data": orjson.loads(f.read(length))}

    def close(self) -> None:
        self.db.close()


def _head(path: Path, indexed: int) -> str:
    """A fingerprint of the start of what was indexed (up to 4 KiB): appending keeps it, rewriting not."""
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(min(4096, indexed))).hexdigest()[:16]


def _read_lines(path: Path, start: int) -> Iterator[tuple[int, int, int, dict[str, Any]]]:
    """(offset, length, line number, object) for each readable JSON object line from byte `start`."""
    line = 0
    with open(path, "rb") as f:
        if start:  # count the lines before it, for their numbers
            remaining = start
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                line += chunk.count(b"\n")
                remaining -= len(chunk)
        off = start
        for raw in f:
            line += 1
            length = len(raw)
            if raw.endswith(b"\n"):
                try:
                    doc = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    doc = None
                if isinstance(doc, dict):
                    yield off, length, line, doc
            off += length


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
