"""The house's layering holds: no module imports a layer above its own (docs/ARCHITECTURE.md).

The contract lives in pyproject.toml (`[tool.importlinter]`) and is checked by import-linter, the
tool made for it; the second test shows the check catches an upward import when there is one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (the test extra has it)")


def lint(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_no_module_imports_a_layer_above_its_own():
    done = lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Imports point down only KEPT" in done.stdout and " 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src" / "synthtrace", tmp_path / "synthtrace",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "synthtrace" / "recipe.py", "a", encoding="utf-8") as f:
        f.write("\nfrom synthtrace.engine import runner  # the contract must refuse this\n")
    done = lint(pythonpath=tmp_path)
    assert done.returncode != 0, done.stdout
    assert "synthtrace.recipe is not allowed to import synthtrace.engine" in done.stdout
