"""When is a provider that refuses everything from its first request reported as stalled?

    python bench/stall_check.py [--window 30] [--status 429]

A fake provider answers every request with `--status` (Retry-After 1 s for a 429). The CLI runs
`completions` on 20 prompts with `--stall-after WINDOW --on-stall stop`. Printed: when the
"stalled:" line reached the CLI's output, in seconds after the CLI process started (imports
included) and after the run's start (`started` in its manifest.json), and when the run ended. The
run's model endpoint is opened just before the manifest is written, and the watchdog decides the
moment the window has passed; what follows is the console rendering the line and the pipe. Exit
status 0 when the line came within WINDOW + 0.1 s of the run's start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from synthtrace.testing import FakeProvider, Fault  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--status", type=int, default=429)
    ap.add_argument("extra", nargs="*", help="more flags for the CLI (after --), e.g. -- -q")
    args = ap.parse_args()
    with FakeProvider() as fp, tempfile.TemporaryDirectory() as tmp:
        fp.script(lambda body: True, Fault.status(args.status, retry_after=1 if args.status == 429 else None),
                  repeat_last=True)
        inp, out = Path(tmp) / "in.jsonl", Path(tmp) / "run"
        inp.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"p {i}"}) + "\n" for i in range(20)))
        cmd = [sys.executable, "-m", "synthtrace.cli", "run", "completions", "-i", str(inp), "-o", str(out),
               "--base-url", fp.openai_base, "--model", "fake", "--stall-after", str(args.window),
               "--on-stall", "stop", *args.extra]
        started = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, "OPENAI_API_KEY": "sk-fake"})
        said, output = None, b""
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):  # raw reads: no buffering delays the line
            output += chunk
            if said is None and b"stalled:" in output:
                said = time.time()
        print(output.decode(errors="replace").strip())
        proc.wait()
        ended = time.time()
        run_start = json.loads((out / "manifest.json").read_text())["started"]
    if said is None:
        print(f"no stall line (exit {proc.returncode})")
        return 1
    print(f"stall line: {said - started:.2f} s after the CLI started, {said - run_start:.3f} s after the run's "
          f"start; window {args.window:g} s; the run ended (exit {proc.returncode}) at {ended - started:.2f} s")
    return 0 if said - run_start <= args.window + 0.1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
