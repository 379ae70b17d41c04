"""The code rung: a model's Python answer run against the reference's tests, in a sandboxed subprocess.

The reference is a dict: `{"tests": "<Python: asserts, or test_* functions>", "setup": "<optional>"}`;
any other reference is not this rung's to judge (None). The answer's code is its last fenced
```python / ```py / bare ``` block, else the whole text when that looks like code.

Each check runs `sys.executable -I -B main.py` in a fresh private directory: the reference's setup,
the candidate and the tests share one `__main__` namespace (test_* functions of the tests, and
unittest cases they define, are called afterwards). The walls, from the inside out:

- an audit hook (`sys.addaudithook`, installed before any of the candidate's code) refuses the
  network (`socket.*` but AF_UNIX socket pairs, and the http/ftp/smtp… clients), writes, renames,
  deletions and mode changes outside the directory (and `os.open` of a path outside it), links,
  `chdir`, new processes (`os.fork`, `os.forkpty`, `os.posix_spawn`, `os.exec*`, `os.system`,
  `subprocess.Popen`, and `_posixsubprocess.fork_exec`, which has no event of its own), ctypes
  (every `ctypes.*` event but the `dlopen(None)` of `import ctypes`), native modules loaded from the
  directory, signals to other processes, `resource.setrlimit`, tracing, gc introspection and changes
  to the hook itself. A refusal raises PermissionError in the candidate and is reported to the
  parent at once, so that a candidate that swallows the error is still `incorrect`, with the reason;
- resource limits set in the child before exec: RLIMIT_AS, RLIMIT_CPU (a little above the wall
  limit), RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE=0 and RLIMIT_NPROC (the tasks its user has, plus
  `max_processes`: the limit counts all of a user's processes, and binds nobody who is root, hence
  the hook's own refusal of forks);
- where the system allows it, found by a probe once per process and otherwise silently left out: a
  network namespace of its own (util-linux `unshare --net` as root, `unshare --user --map-root-user
  --net` otherwise, or `os.unshare` on Python >= 3.12), and, as root, the unprivileged `user`
  (default "nobody"), for whom RLIMIT_NPROC holds and root's files are out of reach;
- its own session (`start_new_session`): the whole process group is killed (SIGKILL) at the wall
  limit and after every run; the directory is removed afterwards. The environment is scrubbed to a
  minimal PATH with HOME and TMPDIR in the directory; stdin is /dev/null, stdout is discarded.

The wall clock counts from the child's start: checks wait for one of `max_concurrency` slots
(default: the usable CPUs) first, so that many concurrent checks queue instead of timing out.
Verdicts: all tests pass → `correct`; a failing assert or any exception → `incorrect` with the last
line of its traceback and the line of ours it came from; a refusal → `incorrect` naming what was
refused; the wall limit → `timeout`; a sandbox that does not start → `error`; a reference whose
tests do not compile → `unparseable_reference`. An audit hook is no security boundary against a
program written to defeat this one (it can read the harness's frames); it stops accidents and the
ordinary ways out, and the namespace and the unprivileged user are the walls behind it.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthtrace.verify.verdict import Verdict, Verification

try:
    import resource
except ImportError:  # not a POSIX system: every check is an error, said once per check
    resource = None  # type: ignore[assignment]

REASON_CHARS = 300

# -- the answer's code ----------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
_OPEN_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*)\Z", re.MULTILINE | re.DOTALL)
_PYTHON_TAGS = ("", "python", "py", "python3", "py3")
_CODE_LINE = re.compile(
    r"^\s*(?:def\s|class\s|import\s|from\s+\S+\s+import\s|return\b|async\s+def\s|@\w|print\(|assert\s|"
    r"(?:for|while|if|with)\s.*:\s*$|try:\s*$|[A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*(?:[-+*/%|&^]|//|\*\*)?=(?!=))",
    re.MULTILINE)


def extract_code(answer: str) -> str | None:
    """The code of a model's answer: its last fenced Python (or bare) block, else the whole text when
    it looks like code; None when there is none (no text, or prose, or only other languages' blocks)."""
    if not isinstance(answer, str):
        return None
    blocks = list(_FENCE.finditer(answer))
    found = [m.group(2) for m in blocks if m.group(1).lower() in _PYTHON_TAGS]
    unclosed = _OPEN_FENCE.search(answer[blocks[-1].end():] if blocks else answer)  # a cut-off last block
    if unclosed is not None and unclosed.group(1).lower() in _PYTHON_TAGS:
        found.append(unclosed.group(2))
    if found:
        return found[-1] if found[-1].strip() else None
    if blocks or unclosed is not None:
        return None
    return answer if answer.strip() and _looks_like_code(answer) else None


def _looks_like_code(text: str) -> bool:
    """Unfenced text is code when a line reads like a statement, or when it parses as Python that does
    something (a call, an assignment, a loop…): not prose, not one bare word or number."""
    if _CODE_LINE.search(text):
        return True
    try:
        tree = ast.parse(text)
    except Exception:  # noqa: BLE001 - SyntaxError, or too deep to parse: not read as code
        return False
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, (ast.Name, ast.Constant)))
               for node in tree.body)


# -- the program that runs in the sandbox ---------------------------------------------------------

# main.py, with __BOX__ and __NONCE__ filled in. Every function takes what it uses as default
# arguments (bound before any of the candidate's code runs), so that rebinding a builtin or a global
# cannot change the hook; reading or setting those defaults is itself refused.
_PROGRAM = (Path(__file__).with_name("sandbox_main.py")).read_text(encoding="utf-8")


# -- what a run said ------------------------------------------------------------------------------

@dataclass
class _Transcript:
    """The records the sandbox program wrote to stderr, and the tail of everything else."""

    started: bool = False
    refused: list[str] = field(default_factory=list)
    result: tuple[str, str] | None = None
    broken: str | None = None
    tail: bytes = b""

    def record(self, line: bytes) -> None:
        kind, _, text = line.decode("utf-8", "replace").partition(" ")
        if kind == "started":
            self.started = True
        elif kind == "refused":
            if len(self.refused) < 20:
                self.refused.append(text)
        elif kind == "broken":
            self.broken = self.broken or text
        elif kind in ("ok", "fail", "syntax", "reference", "setup"):
            self.result = (kind, text)

    def last_line(self, marker: bytes) -> str:
        lines = [line.strip() for line in self.tail.decode("utf-8", "replace").splitlines()
                 if line.strip() and marker.decode() not in line]
        return lines[-1] if lines else ""


async def _collect(stream: asyncio.StreamReader, nonce: str) -> _Transcript:
    """Read stderr to its end: the sandbox's records (a marker, a kind, a text) and a 4 KiB tail."""
    marker = b"\x1e" + nonce.encode() + b" "
    transcript = _Transcript()
    pending = b""
    while chunk := await stream.read(65536):
        transcript.tail = (transcript.tail + chunk)[-4096:]
        pending += chunk
        while True:
            i = pending.find(marker)
            if i < 0:
                pending = pending[-(len(marker) - 1):]  # a marker may straddle two chunks
                break
            j = pending.find(b"\n", i)
            if j < 0:
                pending = pending[i:] if len(pending) - i <= 16384 else b""  # a record not finished yet
                break
            transcript.record(pending[i + len(marker):j])
            pending = pending[j + 1:]
    return transcript


# -- how a sandbox is started on this machine ----------------------------------------------------

@dataclass(frozen=True)
class _Launch:
    """One way of starting the sandbox: a command prefix, and what the child does before exec."""

    prefix: tuple[str, ...] = ()
    user: tuple[int, int] | None = None  # (uid, gid) the sandbox runs as, when it drops root
    unshare_in_child: bool = False  # os.unshare(CLONE_NEWNET) in the child (Python >= 3.12, root)
    drop_in_child: bool = False  # setgid/setuid in the child (no unshare binary doing it)
    measures: tuple[str, ...] = ()


_LAUNCHES: dict[tuple[Any, ...], _Launch] = {}  # per (euid, user, interpreter): probed once per process


def _tasks_of(uid: int) -> int:
    """Tasks (processes and threads) whose real uid is `uid`: what RLIMIT_NPROC counts."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        real = threads = None
        for line in status.splitlines():
            if line.startswith(b"Uid:"):
                real = int(line.split()[1])
            elif line.startswith(b"Threads:"):
                threads = int(line.split()[1])
        if real == uid:
            count += threads or 1
    return count


def _remove(box: str) -> None:
    """Remove a sandbox dir, even parts the candidate made unreadable (chmod 000) to its own user."""
    def unlock(_func: Any, path: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            pass

    if not os.path.isdir(box):
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(box, onexc=unlock)
    else:
        shutil.rmtree(box, onerror=unlock)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- the rung -------------------------------------------------------------------------------------

class CodeRung:
    """Python answers checked by running them against the reference's tests in a sandbox (see the module)."""

    name = "code"

    def __init__(self, time_limit_s: float = 10.0, memory_mb: int = 512, max_processes: int = 64,
                 max_file_mb: int = 16, max_open_files: int = 256, max_concurrency: int | None = None,
                 user: str | None = "nobody"):
        self.time_limit_s = time_limit_s
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.max_file_mb = max_file_mb
        self.max_open_files = max_open_files
        self.max_concurrency = max_concurrency or max(1, len(os.sched_getaffinity(0)) if hasattr(
            os, "sched_getaffinity") else (os.cpu_count() or 1))
        self.user = user  # who the sandbox runs as when started by root (None: stay root)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._probing: asyncio.Lock | None = None

    async def check(self, answer: str, reference: Any) -> Verification | None:
        if not isinstance(reference, dict) or "tests" not in reference:
            return None
        tests, setup = reference["tests"], reference.get("setup") or ""
        if not isinstance(tests, str) or not tests.strip() or not isinstance(setup, str):
            return Verification(Verdict.UNPARSEABLE_REFERENCE, "the reference's tests are no Python source",
                                self.name)
        code = extract_code(answer)
        if code is None:
            return Verification(Verdict.UNPARSEABLE_ANSWER, "no Python code in the answer", self.name)
        if resource is None or not sys.executable:
            return Verification(Verdict.ERROR, "the code rung needs a POSIX system and a Python executable",
                                self.name)
        self._bind_loop()
        assert self._slots is not None
        async with self._slots:  # queueing here does not count toward the time limit
            return await self._run(code, tests, setup)

    async def sandbox_measures(self) -> list[str]:
        """The sandbox's walls on this machine, in words (the probe runs once per process)."""
        self._bind_loop()
        launch = await self._launch()
        return [
            "audit hook: network, writes outside the sandbox dir, new processes, ctypes, links, chdir, "
            "signals to others, setrlimit, tracing refused and reported",
            f"rlimits: AS {self.memory_mb} MiB, CPU {self._cpu_limit()} s, FSIZE {self.max_file_mb} MiB, "
            f"NOFILE {self.max_open_files}, CORE 0, NPROC (user's tasks + {self.max_processes})",
            "own session; the process group is SIGKILLed at the wall limit and after each run",
            "python -I -B in a private temp dir (cwd, HOME, TMPDIR); env: PATH only; stdin /dev/null",
            *launch.measures,
        ]

    # -- one run ----------------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        """Semaphore and lock for the running loop (a rung may serve several loops one after another)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._slots, self._probing = loop, asyncio.Semaphore(self.max_concurrency), asyncio.Lock()

    def _cpu_limit(self) -> int:
        return int(self.time_limit_s) + 2  # a little above the wall limit: the wall clock decides

    async def _run(self, code: str, tests: str, setup: str) -> Verification:
        started = time.perf_counter()
        try:
            launch = await self._launch()
            box = self._make_box(launch)
        except Exception as e:  # noqa: BLE001 - no sandbox: the check's error, not the answer's fault
            return Verification(Verdict.ERROR, f"could not prepare the sandbox: {type(e).__name__}: {e}"[
                :REASON_CHARS], self.name, time.perf_counter() - started)
        nonce = secrets.token_hex(8)
        collector: asyncio.Future[_Transcript] | None = None
        try:
            for name, text in (("solution.py", code), ("tests.py", tests), ("setup.py", setup),
                               ("main.py", _PROGRAM.replace('"__BOX__"', repr(box)).replace('"__NONCE__"', repr(nonce)))):
                with open(os.path.join(box, name), "w", encoding="utf-8", errors="backslashreplace") as f:
                    f.write(text)
            try:
                proc = await self._spawn(launch, box, [os.path.join(box, "main.py")])
            except (OSError, subprocess.SubprocessError) as e:
                return Verification(Verdict.ERROR, f"could not start the sandbox: {type(e).__name__}: {e}"[
                    :REASON_CHARS], self.name, time.perf_counter() - started)
            assert proc.stderr is not None
            collector = asyncio.ensure_future(_collect(proc.stderr, nonce))
            timed_out = False
            try:
                await asyncio.wait_for(proc.wait(), self.time_limit_s)  # from the child's start
            except asyncio.TimeoutError:
                timed_out = True
            finally:
                _kill_group(proc.pid)  # the whole group, on every way out (a timeout, a cancel, an exit)
            await proc.wait()
            try:
                transcript = await asyncio.wait_for(collector, 5.0)
            except asyncio.TimeoutError:
                transcript = _Transcript()
            return self._verdict(transcript, proc.returncode, timed_out, nonce, time.perf_counter() - started)
        finally:
            if collector is not None and not collector.done():
                collector.cancel()
            await asyncio.to_thread(_remove, box)

    def _verdict(self, t: _Transcript, rc: int | None, timed_out: bool, nonce: str, seconds: float) -> Verification:
        def v(verdict: Verdict, reason: str) -> Verification:
            return Verification(verdict, reason[:REASON_CHARS], self.name, seconds)

        if t.broken:
            return v(Verdict.ERROR, f"the sandbox's audit hook failed: {t.broken}")
        if t.refused:  # a refusal decides even when the candidate caught the error, or then hung
            more = f" (and {len(t.refused) - 1} more)" if len(t.refused) > 1 else ""
            return v(Verdict.INCORRECT, f"sandbox refused: {t.refused[0]}{more}")
        if timed_out:
            return v(Verdict.TIMEOUT, f"no result within {self.time_limit_s:g} s: killed")
        if not t.started:
            tail = t.last_line(b"\x1e" + nonce.encode())
            return v(Verdict.ERROR, f"the sandbox did not start (exit status {rc}){': ' + tail if tail else ''}")
        if t.result is not None:
            kind, text = t.result
            if kind == "ok" and rc == 0:
                return v(Verdict.CORRECT, "all tests passed")
            if kind == "reference":
                return v(Verdict.UNPARSEABLE_REFERENCE, f"the tests do not compile: {text}")
            if kind == "setup":
                return v(Verdict.ERROR, f"the reference's setup failed: {text}")
            if kind in ("fail", "syntax"):
                return v(Verdict.INCORRECT, text)
        if rc is not None and rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.valid_signals() else f"signal {-rc}"
            if -rc == getattr(signal, "SIGXCPU", -1):
                return v(Verdict.TIMEOUT, f"CPU time limit ({self._cpu_limit()} s): killed by {name}")
            return v(Verdict.INCORRECT, f"the program was killed by {name}")
        return v(Verdict.INCORRECT, f"the program ended (exit status {rc}) before the tests finished")

    # -- starting the child -----------------------------------------------------------------------

    def _make_box(self, launch: _Launch) -> str:
        box = os.path.realpath(tempfile.mkdtemp(prefix="synthtrace-code-"))
        if launch.user is not None:
            os.chown(box, *launch.user)
        return box

    def _env(self, box: str) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": box, "TMPDIR": box, "LANG": "C.UTF-8",
                # one thread per numerical library: no oversubscription, and RLIMIT_AS holds
                "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    async def _spawn(self, launch: _Launch, box: str, args: list[str],
                     stdout: int = subprocess.DEVNULL) -> asyncio.subprocess.Process:
        uid = launch.user[0] if launch.user is not None else os.getuid()
        if os.geteuid() == 0 and launch.user is None:
            nproc = self.max_processes  # root: RLIMIT_NPROC binds nobody, the hook refuses forks
        else:
            nproc = await asyncio.to_thread(_tasks_of, uid) + self.max_processes
        return await asyncio.create_subprocess_exec(
            *launch.prefix, sys.executable, "-I", "-B", *args,
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, cwd=box, env=self._env(box),
            start_new_session=True, preexec_fn=self._preexec(launch, nproc))

    def _preexec(self, launch: _Launch, nproc: int) -> Callable[[], None]:
        """What the child does between fork and exec: limits, then a namespace and a user if so launched."""
        assert resource is not None
        mib = 1024 * 1024
        wanted = [("RLIMIT_AS", self.memory_mb * mib, self.memory_mb * mib),
                  ("RLIMIT_CPU", self._cpu_limit(), self._cpu_limit() + 1),
                  ("RLIMIT_FSIZE", self.max_file_mb * mib, self.max_file_mb * mib),
                  ("RLIMIT_NOFILE", self.max_open_files, self.max_open_files),
                  ("RLIMIT_CORE", 0, 0),
                  ("RLIMIT_NPROC", nproc, nproc)]
        limits = [(getattr(resource, n), soft, hard) for n, soft, hard in wanted if hasattr(resource, n)]
        infinity = resource.RLIM_INFINITY

        def preexec() -> None:
            for which, soft, hard in limits:
                _, current = resource.getrlimit(which)
                if current != infinity:  # never above what the parent may set
                    hard = min(hard, current)
                    soft = min(soft, hard)
                resource.setrlimit(which, (soft, hard))
            if launch.unshare_in_child:
                os.unshare(os.CLONE_NEWNET)  # type: ignore[attr-defined]  # Python >= 3.12
            if launch.drop_in_child and launch.user is not None:
                os.setgroups([])
                os.setgid(launch.user[1])
                os.setuid(launch.user[0])

        return preexec

    def _user_ids(self) -> tuple[int, int] | None:
        if os.geteuid() != 0 or not self.user:
            return None
        import pwd

        try:
            entry = pwd.getpwnam(self.user)
        except KeyError:
            return None
        return (entry.pw_uid, entry.pw_gid) if entry.pw_uid != 0 else None

    def _options(self) -> list[_Launch]:
        """The ways to start the sandbox, strongest first; the first that works is kept."""
        unshare = shutil.which("unshare") or next(
            (p for p in ("/usr/bin/unshare", "/bin/unshare") if os.access(p, os.X_OK)), None)
        ids = self._user_ids()
        who = f"runs as {self.user} (uid {ids[0]}, gid {ids[1]})" if ids else ""
        options: list[_Launch] = []
        if os.geteuid() == 0:
            if unshare and ids:
                options.append(_Launch((unshare, "--net", "--setgid", str(ids[1]), "--setuid", str(ids[0]), "--"),
                                       ids, measures=("network namespace (unshare --net)", who)))
            if hasattr(os, "unshare") and ids:
                options.append(_Launch((), ids, True, True, ("network namespace (os.unshare)", who)))
            if unshare:
                options.append(_Launch((unshare, "--net", "--"), measures=("network namespace (unshare --net)",)))
            if hasattr(os, "unshare"):
                options.append(_Launch((), None, True, measures=("network namespace (os.unshare)",)))
            if ids:
                options.append(_Launch((), ids, drop_in_child=True, measures=(who,)))
        elif unshare:
            options.append(_Launch((unshare, "--user", "--map-root-user", "--net", "--"),
                                   measures=("network namespace (unshare --user --map-root-user --net)",)))
        return options

    async def _launch(self) -> _Launch:
        """How to start the sandbox here: the strongest option that runs Python, probed once per process."""
        key = (os.geteuid(), self.user, sys.executable)
        if key in _LAUNCHES:
            return _LAUNCHES[key]
        assert self._probing is not None
        async with self._probing:
            if key not in _LAUNCHES:
                chosen = _Launch()
                for option in self._options():
                    if await self._works(option):
                        chosen = option
                        break
                _LAUNCHES[key] = chosen
        return _LAUNCHES[key]

    async def _works(self, launch: _Launch) -> bool:
        """Whether Python starts, and says so, when launched so (in a box like a check's)."""
        box = self._make_box(launch)
        try:
            proc = await self._spawn(launch, box, ["-c", "print('sandbox-ok')"], stdout=subprocess.PIPE)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), 10.0)
            except asyncio.TimeoutError:
                _kill_group(proc.pid)
                await proc.wait()
                return False
            return proc.returncode == 0 and out.strip() == b"sandbox-ok"
        except (OSError, subprocess.SubprocessError):
            return False
        finally:
            shutil.rmtree(box, ignore_errors=True)
