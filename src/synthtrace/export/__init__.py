"""Exports: a run directory's rows as files a trainer reads.

    synthtrace export sft RUN --format qwen3|chatml|messages --out FILE

`sft.py` is the one exporter (streaming, the deterministic train/validation split, the output
formats); `adapters.py` holds one adapter per recipe, which turns a row into a `ChatExample`
(system, user, reasoning, answer, group) or says why it cannot. This module stays import-light so
the CLI can name the formats without loading the recipes.
"""

from __future__ import annotations

FORMATS = ("qwen3", "chatml", "messages")

__all__ = ["FORMATS"]
