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
    "Rejected": "synthtrace.types", "RecordOutcome": "synthtrace.types", "LLMError": "synthtrace.types",
    "StructuredOutputError": "synthtrace.types", "RunStopped": "synthtrace.types", "run": "synthtrace.api",
    "arun": "synthtrace.api", "RunResult": "synthtrace.engine.runner", "Estimate": "synthtrace.engine.estimate",
}

__all__ = ["Recipe", "option", "Record", "BadInput", "LLM", "Reply", "Rejected", "RecordOutcome", "gather_parts",
           "ChatExample", "ViewFields", "run", "arun", "RunResult", "Estimate", "LLMError", "StructuredOutputError",
           "RunStopped"]

if TYPE_CHECKING:
    from synthtrace.api import arun, run
    from synthtrace.engine.estimate import Estimate
    from synthtrace.engine.runner import RunResult
    from synthtrace.inputs import BadInput, Record
    from synthtrace.options import option
    from synthtrace.recipe import LLM, ChatExample, Recipe, ViewFields, gather_parts
    from synthtrace.types import LLMError, RecordOutcome, Rejected, Reply, RunStopped, StructuredOutputError


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'synthtrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
