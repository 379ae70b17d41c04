"""Test support: a fake LLM provider server with scripted answers and injected faults.

Used by the pytest suite (in-process or as a server for CLI subprocesses) and by `bench/`.
Names are imported lazily so that ``python -m synthtrace.testing.fake_provider`` runs cleanly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FakeProvider", "Fault", "RecordedRequest", "Script"]


def __getattr__(name: str) -> Any:
    if name == "Fault":
        from synthtrace.testing.faults import Fault
        return Fault
    if name in __all__:
        from synthtrace.testing import fake_provider
        return getattr(fake_provider, name)
    raise AttributeError(f"module 'synthtrace.testing' has no attribute {name!r}")
