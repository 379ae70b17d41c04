"""Exports: a run directory's rows as files a trainer reads.

    synthtrace export sft RUN --format qwen3|chatml|messages --out FILE

`sft.py` is the one exporter (streaming, the deterministic train/validation split, the output
formats). What a row becomes is its recipe's business (`Recipe.to_sft`); nothing here knows a
recipe by name. This module stays import-light so the CLI can name the formats without loading
the exporter.
"""

from __future__ import annotations

FORMATS = ("qwen3", "chatml", "messages")

__all__ = ["FORMATS"]
