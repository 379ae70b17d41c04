"""Decontamination by meaning: cosine similarity of text embeddings from a model on this machine.

    index = EmbeddingIndex("/models/bge-small-en-v1.5", ["heldout.jsonl"], threshold=0.9)
    hit = index.find(text)    # None, or the evaluation item most like `text` and the similarity

Catches what shares no n-gram with an item: a paraphrase, a translation. The model is any
transformers model directory (a sentence-embedding model such as BGE, E5 or MiniLM is what the
threshold assumes); a text's embedding is the mean of its last hidden states over its tokens (up to
`max_tokens`), L2-normalised. The evaluation items' embeddings are one matrix in memory (items ×
width floats, 1.5 MB for 1,000 items of a 384-wide model); each text checked is one forward pass on
the CPU or the GPU torch finds, so this costs far more per row than the n-gram check. It needs the
train extra (torch, transformers).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from synthtrace.quality.contamination import eval_items
from synthtrace.types import Struct


class EmbeddingMatch(Struct):
    __slots__ = ("eval_set", "item", "field", "similarity")

    def __init__(self, eval_set: str, item: str, field: str, similarity: float):
        self.eval_set = eval_set
        self.item = item
        self.field = field
        self.similarity = similarity

    def as_dict(self) -> dict[str, Any]:
        return {"eval_set": self.eval_set, "item": self.item, "eval_field": self.field,
                "similarity": round(self.similarity, 4)}


class EmbeddingIndex:
    def __init__(self, model_dir: str | Path, paths: Iterable[str | Path], threshold: float = 0.9,
                 fields: Iterable[str] = (), max_tokens: int = 512, batch: int = 16):
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise ImportError("embedding similarity needs torch and transformers: pip install 'synthtrace[train]'"
                              ) from None
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"embedding model directory not found: {model_dir}")
        self.name = model_dir.name
        self.threshold = threshold
        self.max_tokens = max_tokens
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token or self._tokenizer.unk_token
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = AutoModel.from_pretrained(model_dir).to(self._device).eval()
        self.items: list[tuple[str, str, str]] = []
        texts: list[str] = []
        for p in paths:
            p = Path(p)
            for item_id, field, text in eval_items(p, fields):
                self.items.append((p.name, item_id, field))
                texts.append(text)
        chunks = [self._embed(texts[i:i + batch]) for i in range(0, len(texts), batch)]
        self._matrix = torch.cat(chunks) if chunks else torch.empty(0)

    def _embed(self, texts: list[str]) -> Any:
        torch = self._torch
        enc = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        enc = {k: v.to(self._device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            hidden = self._model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    def find(self, text: str) -> EmbeddingMatch | None:
        if not text.strip() or not len(self._matrix):
            return None
        sims = self._matrix @ self._embed([text])[0]
        best = int(sims.argmax())
        similarity = float(sims[best])
        if similarity < self.threshold:
            return None
        return EmbeddingMatch(*self.items[best], similarity)

    def __len__(self) -> int:
        return len(self.items)
