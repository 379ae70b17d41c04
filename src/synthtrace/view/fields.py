"""Which row fields a page shows as source, question, trace, answer and verdicts.

What a recipe declares (`Recipe.view`, a `ViewFields`) comes first; the recipe is found from the
run's manifest, as `export sft` finds it. What it leaves unset is guessed from common field names:
the page takes the first candidate a row has.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from synthtrace.recipe import load_recipe

CANDIDATES = {
    "source": ("passage", "note", "context", "document", "provenance.passage"),
    "question": ("question", "prompt", "messages", "input", "user_interaction.question", "problem"),
    "trace": ("reasoning", "reasoning_trace", "thought", "thinking", "trace"),
    "answer": ("answer", "final_answer", "completion", "output", "response", "solution"),
    "verdicts": ("verification", "quality", "judge", "judges", "answer_grades", "grades", "scores", "check"),
}


def view_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """{"declared": {...}, "candidates": {...}} for the page, from the run's recipe where it can be loaded."""
    declared: dict[str, Any] = {}
    ref = manifest.get("recipe_ref") or manifest.get("recipe")
    if isinstance(ref, str) and ref:
        try:
            view = load_recipe(ref).view
        except Exception:  # a moved file, a broken plugin (RecipeNotFound or worse): guess instead
            view = None
        if view is not None:
            declared = {k: (list(map(list, v)) if k == "marks" else list(v) if isinstance(v, tuple) else v)
                        for k, v in dataclasses.asdict(view).items()}
    return {"declared": declared, "candidates": {k: list(v) for k, v in CANDIDATES.items()}}
