"""The science tool's output files, kept as its users know them, rebuilt from the run's rows.

`--output traces.json` or `traces.jsonl` puts the run itself (rows.jsonl, rejected.jsonl, journal)
in `traces.json.run/` and writes the file from its rows:

  .json   {"metadata": {generation_timestamp, total_traces_generated, status, …},
           "questions": [{source_paper, user_interaction, reasoning_trace, final_answer,
                          answer_grades, metadata, id, provenance}, …]}
  .jsonl  one such trace per line

The file is rewritten atomically (temp file, then rename) while traces finish and once at the end,
streaming from rows.jsonl, so it is always whole and memory stays flat however long the run.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from synthtrace.inputs import read_jsonl

SUFFIXES = (".json", ".jsonl")


def run_dir_for(output: Path) -> Path:
    """Where the run lives for an --output path: the path itself, or `FILE.run/` beside a trace file."""
    return output.with_name(output.name + ".run") if output.suffix in SUFFIXES else output


def legacy_trace(row: dict[str, Any]) -> dict[str, Any]:
    ui = row.get("user_interaction", {})
    return {
        "source_paper": {k: v for k, v in row.get("source_paper", {}).items() if k in ("title", "domain", "section")},
        "user_interaction": ui,
        "reasoning_trace": row.get("reasoning_trace"),
        "final_answer": row.get("final_answer"),
        "answer_grades": row.get("answer_grades"),
        "metadata": {**row.get("metadata", {}), "quality": row.get("quality"), "target_audience":
                     ui.get("target_audience")},
        "id": row.get("id"),
        "provenance": row.get("provenance"),
    }


class TraceFile:
    """Publishes a run's rows as the legacy `.json` document or `.jsonl` file at `path`."""

    def __init__(self, path: Path, info: dict[str, Any], max_traces: int | None = None):
        self.path = path
        self.info = info
        self.max_traces = max_traces
        self.started = time.time()

    def publish(self, rows_path: Path, status: str) -> int:
        """Rewrite the file from `rows_path`; return how many traces it holds."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with open(tmp, "wb") as f:
            as_json = self.path.suffix == ".json"
            if as_json:
                f.write(b'{"questions": [\n')
            for item in (read_jsonl(rows_path) if rows_path.exists() else ()):
                if isinstance(item, tuple) and "reasoning_trace" in item[1]:
                    if self.max_traces is not None and n >= self.max_traces:
                        break
                    f.write((b",\n" if as_json and n else b"") + orjson.dumps(legacy_trace(item[1])))
                    if not as_json:
                        f.write(b"\n")
                    n += 1
            if as_json:
                meta = {"generation_timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "total_traces_generated": n, "status": status, **self.info}
                f.write(b'\n],\n"metadata": ' + orjson.dumps(meta) + b"}\n")
        tmp.replace(self.path)
        return n
