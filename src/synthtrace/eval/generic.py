"""`synthtrace eval RECIPE`: a model on held-out items of any recipe that verifies, with intervals.

A recipe that can be evaluated defines `async def evaluate(self, record, llm)`: the verdicts of the
model's answers to one item (each a `synthtrace.verify.Verification`), the greedy answer's first,
then those of its samples. `evaluation_of(cls)` runs it through the engine (journal, resume,
limits, every backend) with one row per item holding those verdicts; `score` turns the rows into
greedy pass@1 (Wilson interval), pass@k over the samples (unbiased per item, normal interval over
items) and the per-item verdicts; `compare` pairs two evaluations of the same items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from synthtrace.engine.store import REJECTED, ROWS, write_atomic
from synthtrace.eval.stats import mean_interval, paired, pass_at_k, wilson
from synthtrace.inputs import BadInput, Record, read_jsonl
from synthtrace.recipe import LLM, Recipe

METRICS = "metrics.json"


class NotEvaluable(ValueError):
    """A recipe without `evaluate(record, llm)`."""


def evaluation_of(cls: type[Recipe]) -> type[Recipe]:
    """Recipe class `cls` run as an evaluation: each record's verdicts instead of its rows."""
    if not callable(getattr(cls, "evaluate", None)):
        raise NotEvaluable(f"recipe {cls.name!r} cannot be evaluated: it defines no evaluate(record, llm) "
                           "(the verdicts of a model's answers to one item)")

    class Evaluation(cls):  # type: ignore[valid-type, misc]
        async def process(self, record: Record, llm: LLM) -> list[dict[str, Any]]:
            verdicts = await self.evaluate(record, llm)  # type: ignore[attr-defined]
            return [{"id": record.id, "verdicts": [v.as_dict() for v in verdicts]}]

    Evaluation.__name__ = Evaluation.__qualname__ = f"{cls.__name__}Evaluation"
    Evaluation.__doc__ = (f"A model on held-out {cls.name} items: greedy pass@1 and pass@k over the samples, "
                          "with 95 % intervals and every verdict.")
    return Evaluation


def score(run: Path, compare_with: Path | None = None) -> dict[str, Any]:
    """The figures of evaluation run dir `run`, and with `compare_with` (an earlier evaluation's run
    dir) the paired comparison; they are written to its metrics.json."""
    items: dict[str, list[bool]] = {}
    for line in _lines(run / ROWS):
        items[str(line["id"])] = [v.get("verdict") == "correct" for v in line.get("verdicts") or []]
    missing = sorted({str(e.get("record_id") or e.get("id")) for e in _lines(run / REJECTED)} - set(items))
    for item in missing:  # no answer could be had: wrong on every count
        items[item] = []
    greedy = [bool(v and v[0]) for v in items.values()]
    n = min((len(v) for v in items.values() if v), default=0)
    out: dict[str, Any] = {"items": len(items), "missing": missing, "samples_per_item": n,
                           "pass@1": wilson(sum(greedy), len(greedy)).as_dict()}
    if n > 1:
        per_item = [pass_at_k(n, sum(v[:n]), n) if v else 0.0 for v in items.values()]
        out[f"pass@{n}"] = mean_interval(per_item).as_dict()
    out["per_item"] = {k: [bool(x) for x in v] for k, v in items.items()}
    if compare_with is not None:
        base = orjson.loads((compare_with / METRICS).read_bytes())
        out["compared_with"] = {"run": str(compare_with), **compare(base, out)}
    write_atomic(run / METRICS, orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return out


def compare(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """`other` against `base` on the items both evaluated: the paired difference in greedy pass@1."""
    common = [k for k in base["per_item"] if k in other["per_item"]]
    a = [bool(base["per_item"][k][:1] == [True]) for k in common]
    b = [bool(other["per_item"][k][:1] == [True]) for k in common]
    return paired(a, b).as_dict()


def _lines(path: Path) -> list[dict[str, Any]]:
    """The readable lines of a run file (none when it does not exist)."""
    if not path.exists():
        return []
    return [item[1] for item in read_jsonl(path) if not isinstance(item, BadInput)]
