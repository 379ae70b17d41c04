"""Questions the viewer asks an index: a page of documents under filters, the counts beside every
filter, histograms, rejections grouped by reason, and the samples of one source.

A filter is `{"kind": "row" | "rejected", "q": "words", "fields": {PATH: {"in": [values]} |
{"min": x, "max": y}}}`: kind, full-text words (all of them, the last as a prefix) and fields,
combined with AND. Counts beside a field's own filter are taken without that filter, so the other
values stay visible and choosable.
"""

from __future__ import annotations

import re
from typing import Any

from synthtrace.view.index import RunIndex

HIST_BINS = 20
PAGE_MAX = 200
SUMMARY = ("id", "note_id", "role", "label", "error_type", "verified", "hinted", "attempts", "reason", "part",
           "user_interaction.question", "user_interaction.question_type", "quality.mean_overall",
           "answer_grades.overall", "provenance.cost_usd", "trace_words", "reason_group")


class BadFilter(ValueError):
    """A filter the index cannot answer (an unknown field, a value of the wrong shape)."""


def _fts_query(text: str) -> str | None:
    words = re.findall(r"\w+", text, re.UNICODE)
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " AND ".join(quoted)


def where(index: RunIndex, spec: dict[str, Any], skip: str | None = None) -> tuple[str, list[Any]]:
    """SQL conditions (and their arguments) for a filter spec, leaving out field `skip`."""
    clauses, args = ["kind = ?"], [spec.get("kind") or "row"]
    match = _fts_query(str(spec.get("q") or ""))
    if match:
        clauses.append(f"n IN (SELECT n FROM temp.{index.matches(match)})")
    for path, cond in (spec.get("fields") or {}).items():
        if path == skip:
            continue
        col = index.columns.get(path)
        if col is None:
            raise BadFilter(f"no field {path!r} in this run")
        if not isinstance(cond, dict):
            raise BadFilter(f"{path}: expected {{'in': [...]}} or {{'min': x, 'max': y}}")
        if "in" in cond:
            values = cond["in"] if isinstance(cond["in"], list) else [cond["in"]]
            parts = []
            if None in values:
                parts.append(f"{col} IS NULL")
            rest = [v for v in values if v is not None]
            if rest:
                parts.append(f"{col} IN ({', '.join('?' * len(rest))})")
                args.extend(int(v) if isinstance(v, bool) else v for v in rest)
            clauses.append("(" + " OR ".join(parts or ["0"]) + ")")
        for bound, op in (("min", ">="), ("max", "<=")):
            if cond.get(bound) is not None:
                clauses.append(f"{col} {op} ?")
                args.append(float(cond[bound]))
    return " AND ".join(clauses), args


def page(index: RunIndex, spec: dict[str, Any], offset: int = 0, size: int = 50) -> dict[str, Any]:
    """The documents matching `spec`, `size` from `offset`, with a few fields each for the list."""
    cond, args = where(index, spec)
    db = index.db
    total = db.execute(f"SELECT COUNT(*) FROM docs WHERE {cond}", args).fetchone()[0]
    shown = [p for p in SUMMARY if p in index.columns]
    cols = ", ".join(index.columns[p] for p in shown)
    rows = db.execute(f"SELECT n, line, grp{', ' + cols if cols else ''} FROM docs WHERE {cond} ORDER BY n "
                      f"LIMIT ? OFFSET ?", [*args, max(1, min(size, PAGE_MAX)), max(0, offset)]).fetchall()
    items = [{"n": r[0], "line": r[1], "group": r[2], "fields": dict(zip(shown, r[3:]))} for r in rows]
    return {"total": total, "offset": offset, "items": items}


def facets(index: RunIndex, spec: dict[str, Any]) -> dict[str, Any]:
    """Per field: its values with counts (value fields) or its range and a histogram (numbers), under
    the other filters; the kinds with their counts. Fields that do not split this kind of document
    (one value that every document has) are left out."""
    db = index.db
    kind = spec.get("kind") or "row"
    stats, docs_of_kind = index.stats(kind), index.count(kind)
    active = set(spec.get("fields") or {})
    fields = sorted((f for f in index.fields() if f["type"] in ("value", "number") and f["path"] != "kind"
                     and f["path"] in stats and (_splits(stats[f["path"]], docs_of_kind) or f["path"] in active)),
                    key=lambda f: (f["path"].count("."), f["path"]))  # the row's own fields before nested ones
    filtered = bool(active) or bool(_fts_query(str(spec.get("q") or "")))
    if filtered:
        cond, args = where(index, spec)
        db.execute("DROP TABLE IF EXISTS temp.hits")
        db.execute("CREATE TEMP TABLE hits (n INTEGER PRIMARY KEY)")
        db.execute(f"INSERT INTO hits SELECT n FROM docs WHERE {cond}", args)
        total = db.execute("SELECT COUNT(*) FROM hits").fetchone()[0]
    else:
        total = docs_of_kind
    out: dict[str, Any] = {}
    for f in fields:
        col, path = f["col"], f["path"]
        if path in active:  # counted without its own filter
            cond, args = where(index, spec, skip=path)
            source, source_args = f"docs WHERE {cond} AND", args
        elif filtered:
            source, source_args = "docs WHERE n IN (SELECT n FROM hits) AND", []
        else:  # every document of the kind: the (kind, field) index answers alone
            source, source_args = "docs WHERE kind = ? AND", [kind]
        if f["type"] == "value":
            counts = db.execute(f"SELECT {col}, COUNT(*) FROM {source} {col} IS NOT NULL GROUP BY {col} "
                                f"ORDER BY 2 DESC", source_args).fetchall()
            ids = len(counts) > 5 and counts[0][1] == 1  # every value once: an id, found by search instead
            if (counts and not ids) or path in active:
                out[path] = {"type": "value", "values": [[v, c] for v, c in counts]}
        else:
            _, _, lo, hi = stats[path]
            width = (hi - lo) / HIST_BINS or 1.0
            bins = [0] * HIST_BINS
            for b, c in db.execute(f"SELECT MIN(CAST(({col} - ?) / ? AS INTEGER), ?), COUNT(*) FROM {source} "
                                   f"{col} IS NOT NULL GROUP BY 1", [lo, width, HIST_BINS - 1, *source_args]):
                bins[int(b)] = c
            out[path] = {"type": "number", "min": lo, "max": hi, "width": width, "bins": bins}
    kinds = {k: index.count(k) for k in ("row", "rejected")}
    return {"fields": out, "total": total, "kinds": kinds}


def _splits(stat: tuple[int, int, Any, Any], docs: int) -> bool:
    present, distinct, _, _ = stat
    return distinct > 1 or 0 < present < docs


def reasons(index: RunIndex, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Rejected entries grouped by reason (numbers taken out), most frequent first, with an example."""
    col = index.columns.get("reason_group")
    if col is None:
        return []
    cond, args = where(index, {**spec, "kind": "rejected"}, skip="reason_group")
    rows = index.db.execute(f"SELECT {col}, COUNT(*), MIN(n) FROM docs WHERE {cond} GROUP BY {col} ORDER BY 2 DESC",
                            args).fetchall()
    return [{"reason": r, "count": c, "example": n} for r, c, n in rows]


def siblings(index: RunIndex, n: int, limit: int = 100) -> list[dict[str, Any]]:
    """Every row and rejected entry that shares document `n`'s group (the samples of one source), with
    the fields the list shows."""
    row = index.db.execute("SELECT grp FROM docs WHERE n = ?", (n,)).fetchone()
    if row is None or row[0] is None:
        return []
    shown = [p for p in SUMMARY if p in index.columns]
    cols = "".join(", " + index.columns[p] for p in shown)
    rows = index.db.execute(f"SELECT n, kind, line{cols} FROM docs WHERE grp = ? ORDER BY kind DESC, n LIMIT ?",
                            (row[0], limit)).fetchall()
    return [{"n": r[0], "kind": r[1], "line": r[2], "fields": dict(zip(shown, r[3:]))} for r in rows]
