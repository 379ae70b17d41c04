"""synthtrace: verified reasoning-trace training data from your own sources, with any LLM.

    import synthtrace

    class Shout(synthtrace.Recipe):
        \"\"\"Answers in capitals.\"\"\"

        async def process(self, record, llm):
            reply = await llm.chat([{"role": "user", "content": record.data["prompt"]}])
            return [{"id": record.id, "answer": reply.text.upper()}]

    result = synthtrace.run(Shout, "in.jsonl", "runs/shout", base_url="http://localhost:8000/v1", model="qwen")

The same file runs from the command line: `synthtrace run ./shout.py -i in.jsonl -o runs/shout`.
Names are imported on first use, so `import synthtrace` costs almost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from synthtrace.version import __version__ as __version__

_WHERE = {
    "Recipe": "synthtrace.recipe", "LLM": "synthtrace.recipe", "ChatExample": "synthtrace.recipe",
    "ViewFields": "synthtrace.recipe", "gather_parts": "synthtrace.recipe", "option": "synthtrace.options",
    "Record": "synthtrace.inputs", "BadInput": "synthtrace.inputs", "Reply": "synthtrace.types",
    "Rejected": "synthtrace.types", "RecordOutcome": "synthtrace.types", "run": "synthtrace.api",
    "arun": "synthtrace.api", "RunResult": "synthtrace.engine.runner", "Estimate": "synthtrace.engine.estimate",
    # what can go wrong: in a recipe's calls (LLMError and its kinds, RunStopped and its kinds), and in
    # run() / arun() before or instead of a run (a config, an option, a recipe reference, a recipe's bug, Ray)
    "LLMError": "synthtrace.types", "RetryableError": "synthtrace.types", "FatalError": "synthtrace.types",
    "StructuredOutputError": "synthtrace.types", "RunStopped": "synthtrace.types",
    "BudgetExceeded": "synthtrace.types", "EndpointRefused": "synthtrace.types", "Stalled": "synthtrace.types",
    "RecipeError": "synthtrace.types", "ConfigError": "synthtrace.config", "OptionError": "synthtrace.options",
    "RecipeNotFound": "synthtrace.recipe", "RayUnavailable": "synthtrace.engine.ray_run",
}

__all__ = ["Recipe", "option", "Record", "BadInput", "LLM", "Reply", "Rejected", "RecordOutcome", "gather_parts",
           "ChatExample", "ViewFields", "run", "arun", "RunResult", "Estimate", "LLMError", "RetryableError",
           "FatalError", "StructuredOutputError", "RunStopped", "BudgetExceeded", "EndpointRefused", "Stalled",
           "RecipeError", "ConfigError", "OptionError", "RecipeNotFound", "RayUnavailable"]

if TYPE_CHECKING:
    from synthtrace.api import arun, run
    from synthtrace.config import ConfigError
    from synthtrace.engine.estimate import Estimate
    from synthtrace.engine.ray_run import RayUnavailable
    from synthtrace.engine.runner import RunResult
    from synthtrace.inputs import BadInput, Record
    from synthtrace.options import OptionError, option
    from synthtrace.recipe import LLM, ChatExample, Recipe, RecipeNotFound, ViewFields, gather_parts
    from synthtrace.types import (
        BudgetExceeded,
        EndpointRefused,
        FatalError,
        LLMError,
        RecipeError,
        RecordOutcome,
        Rejected,
        Reply,
        RetryableError,
        RunStopped,
        Stalled,
        StructuredOutputError,
    )


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'synthtrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
