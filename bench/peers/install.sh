#!/usr/bin/env bash
# Install the tools that bench/peers.py compares synthtrace with, each into its own virtualenv under
# bench/.peers-venv/ (gitignored), so that none of them, nor their dependencies, touches synthtrace's
# .venv or each other:
#
#   bench/.peers-venv/openai      the official openai SDK, with its aiohttp extra
#   bench/.peers-venv/curator     bespokelabs-curator
#   bench/.peers-venv/distilabel  distilabel with its openai extra (OpenAILLM)
#
# Each also gets orjson (the runners' I/O). One venv per tool because they disagree on the openai
# SDK: curator's litellm pins an older openai release, while the SDK itself, and distilabel, would
# get the newest one, whose HTTP stack differs. Every venv uses the interpreter .venv was built
# from, so that all the tools run on the same CPython. Nothing is pinned; the versions installed
# are printed at the end.
#
#     bash bench/peers/install.sh                 # create or update all three
#     bash bench/peers/install.sh curator         # just one
set -euo pipefail
cd "$(dirname "$0")/../.."

declare -A packages=(
  [openai]="openai[aiohttp] orjson"
  [curator]="bespokelabs-curator orjson"
  [distilabel]="distilabel[openai] requests orjson"  # distilabel imports requests without requiring it
)
tools=("$@")
(( ${#tools[@]} )) || tools=(openai curator distilabel)

# The interpreter .venv was built from (its base, not the venv's own python), else $PYTHON or python3.11.
py="${PYTHON:-}"
if [[ -z "$py" && -x .venv/bin/python ]]; then
  py=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
fi
py="${py:-python3.11}"

for tool in "${tools[@]}"; do
  [[ -n "${packages[$tool]:-}" ]] || { echo "unknown tool: $tool (openai, curator, distilabel)" >&2; exit 2; }
  venv="bench/.peers-venv/$tool"
  echo "== $venv: ${packages[$tool]}"
  [[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
  pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
  "${pip[@]}" install --upgrade pip >/dev/null
  # shellcheck disable=SC2086  # the package list is meant to split
  "${pip[@]}" install --upgrade ${packages[$tool]}
done

for tool in "${tools[@]}"; do
  venv="bench/.peers-venv/$tool"
  echo "$venv (Python $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')):"
  "$venv/bin/python" -m pip list --disable-pip-version-check --format freeze 2>/dev/null \
    | grep -i -E '^(openai|bespokelabs-curator|distilabel|litellm|aiohttp|httpx|httpx2|httpx-aiohttp|orjson)==' \
    | sed 's/^/    /'
done
