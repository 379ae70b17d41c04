"""What the peer runners share: their command line, the offline environment, and prompt/row I/O.

Each runner (`openai_sdk.py`, `curator_run.py`, `distilabel_run.py`) runs on its tool's own venv
under bench/.peers-venv/ (made by install.sh), without synthtrace, and is started by bench/peers.py:

    python bench/peers/RUNNER.py --input prompts.jsonl --output rows.jsonl \
        --base-url http://127.0.0.1:PORT/v1 --model fake --concurrency N

It reads `{"id", "prompt"}` lines, sends one chat completion per prompt through its tool and writes
`{"id", "completion"}` lines for the answers it got; a prompt whose request failed is left out. Its
last line on stdout is a JSON summary (`{"summary": {...}}`) with what the tool said about failures.

`isolate()` must run before the tool is imported: several of these libraries read their telemetry
and cache switches from the environment at import time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

# Switches read by the tools or their dependencies, so that nothing talks to a host other than the
# fake server on 127.0.0.1: no telemetry, no model-price or tokenizer downloads, no dataset hub.
OFFLINE_ENV = {
    "TELEMETRY_ENABLED": "false",                 # curator: its PostHog telemetry client
    "CURATOR_VIEWER": "0",                        # curator: no hosted viewer sessions
    "BESPOKE_CURATOR_TRACKER_DISABLED": "1",      # curator: its code-executor tracker
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",       # litellm (under curator): the bundled price map,
                                                  # not a download at import
    "HF_HUB_OFFLINE": "1",                        # huggingface_hub / datasets (curator, distilabel)
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def isolate(cache_dir: Path) -> None:
    """Offline switches on, proxies off, and every cache the tools keep under `cache_dir`."""
    for name in PROXY_VARS:
        os.environ.pop(name, None)
    os.environ.update(OFFLINE_ENV)
    os.environ.setdefault("OPENAI_API_KEY", "sk-fake-bench")
    os.environ["HOME"] = str(cache_dir)  # ~/.cache/... of any library that does not say otherwise
    os.environ["XDG_CACHE_HOME"] = str(cache_dir / ".cache")
    os.environ["HF_HOME"] = str(cache_dir / "hf")
    os.environ["HF_DATASETS_CACHE"] = str(cache_dir / "hf" / "datasets")


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], Any] | None = None) -> argparse.Namespace:
    """The shared command line; `extra` may add a runner's own options to the parser."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", required=True, type=Path, help="prompts: JSONL lines {id, prompt}")
    parser.add_argument("--output", required=True, type=Path, help="rows: JSONL lines {id, completion}")
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:PORT/v1")
    parser.add_argument("--model", default="fake")
    parser.add_argument("--concurrency", type=int, required=True, help="requests in flight at most")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the tool may keep its caches (default: beside --output)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.cache_dir is None:
        args.cache_dir = args.output.parent / "tool-cache"
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    return args


def read_prompts(path: Path) -> list[dict[str, str]]:
    """The input lines, in order, as {"id", "prompt"} dicts."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def write_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    """(id, completion) pairs as JSONL, the shape bench/run_bench.py's `verify` reads."""
    with path.open("wb") as fh:
        for rid, completion in rows:
            fh.write(orjson.dumps({"id": rid, "completion": completion}) + b"\n")


def report(**summary: Any) -> None:
    """The runner's last stdout line: what the tool said about its run (peers.py keeps it)."""
    sys.stdout.flush()
    print(json.dumps({"summary": summary}, default=str), flush=True)
