"""Test support: a fake LLM provider server with scripted answers and injected faults.

Used by the pytest suite (in-process or as a server for CLI subprocesses) and by `bench/`.
Names are imported lazily so that ``python -m synthtrace.testing.fake_provider`` runs cleanly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Batch", "BatchFaults", "BatchItem", "FakeProvider", "Fault", "RecordedRequest", "Script"]
_BATCH_NAMES = frozenset({"Batch", "BatchFaults", "BatchItem"})


def __getattr__(name: str) -> Any:
    if name == "Fault":
        from synthtrace.testing.faults import Fault
        return Fault
    if name in _BATCH_NAMES:
        from synthtrace.testing import fake_batches
        return getattr(fake_batches, name)
    if name in __all__:
        from synthtrace.testing import fake_provider
        return getattr(fake_provider, name)
    raise AttributeError(f"module 'synthtrace.testing' has no attribute {name!r}")
