"""Near-duplicates: MinHash LSH over word shingles, the first of a cluster kept.

    seen = NearDuplicates(threshold=0.8)
    hit = seen.check("ex-2", text)   # None (kept, and remembered), or (the earlier id, its similarity)

The signatures are datasketch's `MinHash` (128 permutations over 5-word shingles; datasketch is the
library distilabel and many dedup scripts use, pure Python on numpy), and the band layout is the one
datasketch's `MinHashLSH` chooses for the threshold (b bands of r rows, weighing false positives and
negatives alike). The bands live in a SQLite file rather than in datasketch's in-memory tables, so
memory stays flat however many texts are checked; a candidate sharing a band is confirmed by the
Jaccard similarity its signature estimates, which is the similarity reported.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from synthtrace.quality.contamination import words

SHINGLE = 5


class NearDuplicates:
    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle: int = SHINGLE, seed: int = 1):
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError:
            raise ImportError("near-duplicate removal needs datasketch: pip install 'synthtrace[clean]'") from None
        import numpy as np

        self._np = np
        self._minhash = MinHash
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle = shingle
        self.seed = seed
        layout = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.bands, self.rows = layout.b, layout.r
        self._dir = tempfile.TemporaryDirectory(prefix="synthtrace-dedup-")
        self._db = sqlite3.connect(Path(self._dir.name) / "bands.db", isolation_level=None)
        self._db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16000;"
                               "CREATE TABLE bands (band INTEGER, bucket BLOB, id TEXT, PRIMARY KEY (band, bucket, id))"
                               " WITHOUT ROWID; CREATE TABLE sigs (id TEXT PRIMARY KEY, sig BLOB) WITHOUT ROWID;")
        self._db.execute("BEGIN")
        self._pending = 0

    def signature(self, text: str) -> Any:
        w = words(text)
        shingles = {" ".join(w[i:i + self.shingle]).encode() for i in range(max(1, len(w) - self.shingle + 1))}
        m = self._minhash(num_perm=self.num_perm, seed=self.seed)
        m.update_batch(list(shingles))
        return m

    def check(self, item_id: str, text: str) -> tuple[str, float] | None:
        """The earlier text `text` nearly repeats, with the similarity; None when it is new (it is then kept)."""
        if not text.strip():
            return None
        m = self.signature(text)
        sig = m.hashvalues
        r = self.rows
        buckets = [sig[b * r:(b + 1) * r].tobytes() for b in range(self.bands)]
        seen: set[str] = set()
        best: tuple[str, float] | None = None
        for b, bucket in enumerate(buckets):
            for (other,) in self._db.execute("SELECT id FROM bands WHERE band = ? AND bucket = ?", (b, bucket)):
                if other in seen:
                    continue
                seen.add(other)
                raw = self._db.execute("SELECT sig FROM sigs WHERE id = ?", (other,)).fetchone()[0]
                similarity = float(self._np.mean(self._np.frombuffer(raw, dtype=sig.dtype) == sig))
                if similarity >= self.threshold and (best is None or similarity > best[1]):
                    best = (other, similarity)
        if best is not None:
            return best
        self._db.executemany("INSERT OR IGNORE INTO bands VALUES (?, ?, ?)",
                             [(b, bucket, item_id) for b, bucket in enumerate(buckets)])
        self._db.execute("INSERT OR REPLACE INTO sigs VALUES (?, ?)", (item_id, sig.tobytes()))
        self._pending += 1
        if self._pending >= 5000:  # commit now and then: the journal stays small
            self._db.execute("COMMIT")
            self._db.execute("BEGIN")
            self._pending = 0
        return None

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()
