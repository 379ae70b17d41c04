"""The code rung: real sandboxed subprocesses, no mocks.

A right and a wrong solution, no code, references it abstains on, and the walls: an endless loop is
killed at the time limit, a connection to a socket the test listens on is refused (nothing connects),
a write outside the sandbox is refused (no file appears), a fork bomb is stopped (the machine's
process count comes back), and 16 concurrent checks queue for their slots instead of timing out.
"""

from __future__ import annotations

import asyncio
import glob
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from synthtrace.verify.code import CodeRung, extract_code
from synthtrace.verify.verdict import Verdict

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts processes in /proc")

ADD = {"tests": "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"}


def check(answer: str, reference, rung: CodeRung | None = None):
    return asyncio.run((rung or CodeRung(time_limit_s=5.0)).check(answer, reference))


def boxes() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "synthtrace-code-*")))


def processes() -> int:
    return len(glob.glob("/proc/[0-9]*"))


def test_correct_solution_and_the_sandbox_dir_is_removed():
    before = boxes()
    v = check("Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.", ADD)
    assert v.verdict is Verdict.CORRECT, v
    assert v.rung == "code" and v.seconds > 0
    assert boxes() <= before  # its private dir is gone


def test_wrong_solution_names_the_failing_assertion():
    v = check("```py\ndef add(a, b):\n    return a - b\n```", ADD)
    assert v.verdict is Verdict.INCORRECT
    assert "AssertionError" in v.reason and "assert add(2, 3) == 5" in v.reason, v.reason


def test_setup_then_test_functions_are_all_called():
    reference = {"setup": "import math\n", "tests": "def test_one():\n    assert area(1) == math.pi\n\n"
                 "def test_two():\n    assert area(2) == 4 * math.pi, 'radius 2'\n"}
    assert check("def area(r):\n    return math.pi * r * r\n", reference).verdict is Verdict.CORRECT
    v = check("def area(r):\n    return math.pi * r\n", reference)
    assert v.verdict is Verdict.INCORRECT and "radius 2" in v.reason and "tests.py:5" in v.reason, v.reason


def test_a_syntax_error_is_incorrect_and_no_code_is_unparseable():
    v = check("```python\ndef add(a, b)\n    return a + b\n```", ADD)
    assert v.verdict is Verdict.INCORRECT and "SyntaxError" in v.reason
    assert check("I am not sure how to do this.", ADD).verdict is Verdict.UNPARSEABLE_ANSWER
    assert check("```bash\necho hi\n```", ADD).verdict is Verdict.UNPARSEABLE_ANSWER
    assert check("   ", ADD).verdict is Verdict.UNPARSEABLE_ANSWER
    assert extract_code("```python\nx = 1\n```\nthen\n```\ny = 2\n```") == "y = 2\n"  # the last block


def test_references_without_tests_are_not_this_rungs():
    assert check("def add(a, b): return a + b", "5") is None
    assert check("def add(a, b): return a + b", {"answer": "5"}) is None
    v = check("def add(a, b): return a + b", {"tests": "assert add(2, 3) =="})
    assert v.verdict is Verdict.UNPARSEABLE_REFERENCE


def test_exiting_before_the_tests_is_not_a_pass():
    for exit_call in ("import sys\nsys.exit(0)", "import os\nos._exit(0)"):
        v = check(f"def add(a, b):\n    return 0\n{exit_call}\n", ADD)
        assert v.verdict is Verdict.INCORRECT and "exited" in v.reason, v


def test_an_endless_loop_times_out_within_the_limit():
    rung = CodeRung(time_limit_s=1.0)
    asyncio.run(rung.sandbox_measures())  # the one-off probe of how to start a sandbox, not timed here
    started = time.monotonic()
    v = check("def add(a, b):\n    while True:\n        pass\n", ADD, rung)
    elapsed = time.monotonic() - started
    assert v.verdict is Verdict.TIMEOUT, v
    assert elapsed < 1.0 + 1.0, elapsed


def test_a_connection_to_a_listening_socket_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        answer = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), 1).sendall(b'hi')\n"
                  "except OSError:\n    pass  # swallowed: still reported\n"
                  f"s = socket.socket()\ntry:\n    s.connect(('127.0.0.1', {port}))\nexcept OSError:\n    pass\n"
                  "def add(a, b):\n    return a + b\n")
        v = check(answer, ADD)
        assert v.verdict is Verdict.INCORRECT, v
        assert "network is not allowed" in v.reason, v.reason
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing connected


def test_a_write_outside_the_sandbox_is_refused(tmp_path: Path):
    target = tmp_path / "pwned.txt"
    v = check(f"open({str(target)!r}, 'w').write('pwned')\ndef add(a, b):\n    return a + b\n", ADD)
    assert v.verdict is Verdict.INCORRECT, v
    assert "writing outside the sandbox is not allowed" in v.reason, v.reason
    assert not target.exists()
    # inside its own dir (cwd, TMPDIR) it may write as it likes
    inside = ("import tempfile\nopen('notes.txt', 'w').write('x')\ntempfile.NamedTemporaryFile().write(b'x')\n"
              "def add(a, b):\n    return a + b\n")
    assert check(inside, ADD).verdict is Verdict.CORRECT


def test_a_fork_bomb_is_stopped_and_leaves_no_process():
    rung = CodeRung(time_limit_s=3.0)
    asyncio.run(rung.sandbox_measures())  # probe first: its processes are not the bomb's
    before = processes()
    v = check("import os\nwhile True:\n    os.fork()\n", ADD, rung)
    assert v.verdict is Verdict.INCORRECT, v
    assert "starting processes is not allowed (os.fork)" in v.reason, v.reason
    deadline = time.monotonic() + 2.0
    while processes() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    # others may start a process meanwhile on a shared machine: a bomb's would be hundreds
    assert processes() <= before + 2, (before, processes())
    leftovers = [p for p in glob.glob("/proc/[0-9]*/cmdline") if b"synthtrace-code-" in _read(p)]
    assert not leftovers


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_concurrent_checks_queue_instead_of_timing_out():
    # 16 checks of 0.3 s each on 2 slots take ~2.4 s in all: longer than the 1 s limit, which each
    # run only starts counting once it has a slot
    rung = CodeRung(time_limit_s=1.0, max_concurrency=2)
    answer = "import time\ntime.sleep(0.3)\ndef add(a, b):\n    return a + b\n"

    async def many():
        return await asyncio.gather(*(rung.check(answer, ADD) for _ in range(16)))

    started = time.monotonic()
    verdicts = asyncio.run(many())
    assert [v.verdict for v in verdicts] == [Verdict.CORRECT] * 16, [v.reason for v in verdicts]
    assert time.monotonic() - started >= 16 * 0.3 / 2
    assert CodeRung().max_concurrency == len(os.sched_getaffinity(0))
