"""`synthtrace report RUN --out report.html`: one self-contained HTML file about a run.

The figures are computed here from the run's index and journal; the file carries them as JSON
beside the page code and its vendored libraries, all inline, so it opens offline and can be mailed.
Its Content-Security-Policy allows only its own inline scripts (by hash) and no connection at all.
The rows it samples are drawn by the same code as the viewer, as text.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson

from synthtrace.engine.journal import Journal
from synthtrace.engine.store import JOURNAL
from synthtrace.view import query
from synthtrace.view.fields import view_fields
from synthtrace.view.index import RunIndex

STATIC = Path(__file__).with_name("static")
SCRIPTS = ("vendor/htm-preact.umd.js", "vendor/uPlot.iife.min.js", "render.js", "report.js")
STYLES = ("vendor/uPlot.min.css", "style.css")
SCORE_PREFIXES = ("quality.", "answer_grades.", "judge.", "grades.", "scores.", "verification.", "sampling.",
                  "metadata.")
TIME_BUCKETS = 60


REMOVED_SHOWN = 50  # removed examples listed with their evidence (all are counted)


def build_report(run: Path, sample: int = 20, removed: list[Path] | None = None) -> dict[str, Any]:
    """Everything the report shows, as plain data; `removed`: the NAME.removed.jsonl files of exports
    of this run (`export sft --decontaminate-against / --dedup`)."""
    index = RunIndex(run)
    try:
        data = _figures(index, sample)
    finally:
        index.close()
    if removed:
        data["removed"] = _removed(removed)
    return data


def _removed(paths: list[Path]) -> dict[str, Any]:
    """What cleaning took out of this run's exports: counts by reason, and the first ones with evidence."""
    from synthtrace.inputs import BadInput, read_jsonl

    reasons: Counter[str] = Counter()
    shown: list[dict[str, Any]] = []
    for path in paths:
        for item in read_jsonl(path):
            if isinstance(item, BadInput):
                continue
            entry = item[1]
            reasons[str(entry.get("reason"))] += 1
            if len(shown) < REMOVED_SHOWN:
                ev = entry.get("evidence") or {}
                shown.append({"file": path.name, "id": entry.get("id"), "row": entry.get("row_id"),
                              "reason": entry.get("reason"), "part": entry.get("part"), "method": entry.get("method"),
                              "evidence": ev.get("ngram") or ev.get("neighbour"),
                              "item": ev.get("item"), "score": ev.get("overlap", ev.get("similarity"))})
    return {"reasons": [[k, v] for k, v in reasons.most_common()], "entries": shown, "total": sum(reasons.values())}


def _figures(index: RunIndex, sample: int) -> dict[str, Any]:
    db, cols = index.db, index.columns
    m = index.manifest
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM docs GROUP BY kind"))
    result = m.get("result") or {}
    data: dict[str, Any] = {
        "run": str(index.run), "recipe": m.get("recipe"), "status": m.get("status"),
        "model": (m.get("model") or {}).get("alias") or (m.get("model") or {}).get("model"),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"), "options": m.get("options") or {},
        "view": view_fields(m),
        "funnel": {"records done": result.get("records_done"), "from earlier runs": result.get("records_skipped"),
                   "records rejected": result.get("records_rejected"), "bad input lines": result.get("bad_input"),
                   "rows kept": kinds.get("row", 0), "rejected entries": kinds.get("rejected", 0)},
        "reasons": query.reasons(index, {})[:20],
        "stages": _stages(index),
    }
    facets = query.facets(index, {"kind": "row"})["fields"]
    data["distributions"] = {p: f for p, f in facets.items() if f["type"] == "number" and f["max"] > f["min"]
                             and (p.startswith(SCORE_PREFIXES) or p in ("trace_words", "provenance.cost_usd",
                                                                        "attempts"))}
    qt, lvl = cols.get("user_interaction.question_type"), cols.get("user_interaction.difficulty_level")
    if qt and lvl:
        data["mix"] = [list(r) for r in db.execute(
            f"SELECT {qt}, {lvl}, COUNT(*) FROM docs WHERE kind = 'row' AND {qt} IS NOT NULL GROUP BY 1, 2")]
    data["verified"] = _verified(index)
    data["spend"], data["calls"] = _spend(index)
    rows = kinds.get("row", 0)
    data["per_example"] = {"calls": round(data["calls"] / rows, 2) if rows else None,
                           "usd": round(data["spend"]["usd"] / rows, 6) if rows and data["spend"] else None}
    step = max(1, rows // max(sample, 1)) if sample else 0
    data["sample"] = [] if not sample else [
        index.doc(n) for (n,) in db.execute("SELECT n FROM docs WHERE kind = 'row' AND (n - 1) % ? = 0 ORDER BY n "
                                            "LIMIT ?", (step, sample))]
    return data


def _stages(index: RunIndex) -> list[list[Any]]:
    """Rejected entries by the part of the record they gave up on (`record` when it was all of it)."""
    cols = index.columns
    part, rid = cols.get("part"), cols.get("record_id") or cols.get("id")
    if part is None or rid is None:
        n = index.count("rejected")
        return [["record", n]] if n else []
    stages: Counter[str] = Counter()
    for p, r in index.db.execute(f"SELECT {part}, {rid} FROM docs WHERE kind = 'rejected'"):
        if p is None:
            stages["record"] += 1
        else:
            rest = str(p)[len(str(r)):] if r is not None and str(p).startswith(str(r)) else str(p)
            stages[re.sub(r"\d+", "#", rest.strip("_/-#")) or "part"] += 1
    return [[k, v] for k, v in stages.most_common()]


def _verified(index: RunIndex) -> dict[str, Any] | None:
    """Verified rate per error type (or label) and per attempt, for runs whose rows say `verified`."""
    cols = index.columns
    verified = cols.get("verified")
    if verified is None:
        return None
    by = cols.get("error_type") or cols.get("label")
    label, attempts = cols.get("label"), cols.get("attempts")
    per_type: dict[str, Counter[str]] = defaultdict(Counter)
    per_attempt: Counter[Any] = Counter()
    db = index.db
    sql = (f"SELECT {by or 'NULL'}, {label or 'NULL'}, {verified}, {attempts or 'NULL'} FROM docs "
           f"WHERE kind = 'row' AND {verified} IS NOT NULL")
    for etype, lab, ok, k in db.execute(sql):
        key = etype or ("none" if lab == "CORRECT" else str(lab or "all"))
        per_type[key]["verified" if ok == "true" else "unverified"] += 1
        if ok != "true":
            per_attempt["not verified"] += 1
        elif k is not None:
            per_attempt[int(k)] += 1
    # Parts given up on after every attempt: unverified, under the error type of their source.
    part = cols.get("part")
    if part is not None:
        types = dict(db.execute(f"SELECT grp, MAX({by}) FROM docs WHERE kind = 'row' GROUP BY grp")) if by else {}
        for grp, p in db.execute(f"SELECT grp, {part} FROM docs WHERE kind = 'rejected' AND {part} IS NOT NULL"):
            if "critic" in str(p) or not by:
                key = ("none" if str(p).endswith("_correct") else types.get(grp) or "all")
                per_type[key]["unverified"] += 1
                per_attempt["not verified"] += 1
    return {"by": [[k, c["verified"], c["verified"] + c["unverified"]] for k, c in sorted(per_type.items())],
            "attempts": [[str(k), v] for k, v in sorted(per_attempt.items(), key=lambda kv: str(kv[0]))]}


def _spend(index: RunIndex) -> tuple[dict[str, Any], int]:
    """Tokens and dollars over the run's time, from its journal; and how many calls it made."""
    path = index.run / JOURNAL
    if not path.exists():
        return {}, 0
    journal = Journal(path)
    try:
        rows = journal.spending()
    finally:
        journal.close()
    if not rows:
        return {}, 0
    start, end = rows[0][0], rows[-1][0]
    width = max((end - start) / TIME_BUCKETS, 1.0)
    xs, tokens, usd = [], [], []
    total_t = total_u = 0.0
    i = 0
    for b in range(TIME_BUCKETS + 1):
        edge = start + (b + 1) * width
        while i < len(rows) and rows[i][0] < edge:
            total_t += rows[i][1]
            total_u += rows[i][2]
            i += 1
        xs.append(round((edge - start) / 60, 3))
        tokens.append(total_t)
        usd.append(round(total_u, 6))
        if i >= len(rows):
            break
    return {"minutes": xs, "tokens": tokens, "usd_series": usd, "usd": round(total_u, 6), "tokens_total": total_t}, \
        len(rows)


def render_html(data: dict[str, Any]) -> str:
    """The report's one HTML file: styles, scripts and data inline, under a CSP that allows nothing else."""
    scripts = [(STATIC / s).read_text(encoding="utf-8") for s in SCRIPTS]
    styles = "\n".join((STATIC / s).read_text(encoding="utf-8") for s in STYLES)
    # JSON inside <script type="application/json">: a "<" could close the element, so it is escaped.
    payload = orjson.dumps(data, default=str).decode().replace("<", "\\u003c")
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    csp = (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    title = f"synthtrace report: {data.get('recipe') or ''} · {Path(str(data.get('run'))).name}"
    return "".join([
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>{_escape(title)}</title><style>{styles}</style></head><body class=\"report\">",
        "<div id=\"app\"><p>This report needs JavaScript.</p></div>",
        f"<script type=\"application/json\" id=\"data\">{payload}</script>",
        *(f"<script>{s}</script>" for s in scripts),
        "</body></html>\n",
    ])


def write_report(run: Path, out: Path, sample: int = 20, removed: list[Path] | None = None) -> Path:
    html = render_html(build_report(run, sample, removed))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
