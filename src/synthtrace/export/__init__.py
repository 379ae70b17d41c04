"""Exports: a run directory's rows as files a trainer reads, or as a dataset to publish.

    synthtrace export sft RUN --format qwen3|chatml|messages --out FILE
    synthtrace export hf RUN --out DIR --license ID        synthtrace push DIR OWNER/NAME

`sft.py` is the SFT exporter (streaming, the deterministic train/validation split, the output
formats) and holds what every export shares: which rows go, through which recipe, and cleaning.
`hf.py` writes Parquet configs for the Hugging Face Hub, `card.py` their dataset card (and the
merge with an earlier one), `push.py` the upload. What a row becomes is its recipe's business
(`Recipe.to_sft`); nothing here knows a recipe by name. This module stays import-light so the CLI
can name the formats without loading the exporter.
"""

from __future__ import annotations

FORMATS = ("qwen3", "chatml", "messages")

__all__ = ["FORMATS"]
