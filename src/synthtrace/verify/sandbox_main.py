"""The program the code rung runs in its sandbox (read as text by `verify.code`, never imported):
an audit hook first, then the reference's setup, the candidate and the tests."""
import _imp
import builtins
import collections
import io
import linecache
import os
import posix
import sys
import traceback
import types
from importlib.machinery import ModuleSpec

try:
    import _posixsubprocess
except ImportError:
    _posixsubprocess = None

BOX = "__BOX__"  # the sandbox dir, filled in by code.py
NONCE = "__NONCE__"  # marks this run's records on stderr, filled in by code.py
MAIN = BOX + "/main.py"
OURS = ("setup.py", "solution.py", "tests.py")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
DEVICES = frozenset({"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/stdout",
                     "/dev/stderr"})
PROCESS_EVENTS = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.system", "os.spawn",
                            "os.startfile", "subprocess.Popen", "pty.spawn"})
NETWORK_PREFIXES = ("socket.", "http.client.", "urllib.", "ftplib.", "smtplib.", "poplib.", "imaplib.",
                    "nntplib.", "telnetlib.", "webbrowser.")
# events that change files: (index of a path argument, index of its dir_fd argument or -1)
FILE_EVENTS = types.MappingProxyType({
    "os.mkdir": ((0, 2),), "os.rmdir": ((0, 1),), "os.remove": ((0, 1),), "os.rename": ((0, 2), (1, 3)),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),), "os.truncate": ((0, -1),),
    "os.setxattr": ((0, -1),), "os.removexattr": ((0, -1),), "shutil.rmtree": ((0, 1),),
    "shutil.copyfile": ((1, -1),), "shutil.copytree": ((1, -1),), "shutil.move": ((0, -1), (1, -1)),
    "shutil.chown": ((0, -1),), "shutil.make_archive": ((0, -1),)})
REFUSED_EVENTS = types.MappingProxyType({
    "os.link": "links are not allowed", "os.symlink": "links are not allowed",
    "os.chdir": "changing directory is not allowed",
    "resource.setrlimit": "changing resource limits is not allowed",
    "resource.prlimit": "changing resource limits is not allowed",
    "gc.get_objects": "gc introspection is not allowed", "gc.get_referrers": "gc introspection is not allowed",
    "gc.get_referents": "gc introspection is not allowed"})
# modules no fresh copy of may be made (their patched functions would come back), and modules that
# write files, fork or signal without an audit event (native code: uvloop, which synthtrace itself
# installs, spawns processes through libuv): importing them fails as if they were not installed
NO_COPY = frozenset({"posix", "_posixsubprocess", "_imp"})
NO_IMPORT = frozenset({"_dbm", "_gdbm", "readline", "uvloop", "psutil"})


def _report(kind, text="", _write=posix.write, _pre="\n\x1e" + NONCE + " ", _str=str, _BE=BaseException):
    data = _str.encode(_pre + kind + " " + _str.replace(_str(text), "\n", " ")[:2000] + "\n", "utf-8",
                       "backslashreplace")
    try:
        while data:
            data = data[_write(2, data):]
    except _BE:
        pass


def _norm(path, _split=str.split, _join=str.join):
    """An absolute path without `.`, `..` and repeated slashes (lexically: no links can exist in BOX)."""
    parts = []
    for part in _split(path, "/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + _join("/", parts)


def _where(path, dir_fd=None, _norm=_norm, _box=BOX, _type=type, _issub=issubclass, _str=str, _bytes=bytes,
           _int=int, _fspath=posix.fspath, _readlink=posix.readlink, _starts=str.startswith, _BE=BaseException):
    """The absolute path a path argument names (an fd: the file it is open on), or None if unknown."""
    try:
        if _issub(_type(path), _int):
            path = _readlink("/proc/self/fd/" + _str(_int.__int__(path)))
        elif not _issub(_type(path), (_str, _bytes)):
            path = _fspath(path)
        path = _str.__str__(path) if _issub(_type(path), _str) else _bytes.decode(path, "utf-8", "surrogateescape")
        if not _starts(path, "/"):
            base = _box
            if dir_fd is not None and dir_fd != -1:
                base = _readlink("/proc/self/fd/" + _str(_int.__int__(dir_fd)))
            path = base + "/" + path
        return _norm(path)
    except _BE:
        return None


def _inside(where, _box=BOX, _boxs=BOX + "/", _starts=str.startswith):
    return where is not None and (where == _box or _starts(where, _boxs))


def _ours(obj, _type=type, _fn=types.FunctionType, _main=MAIN):
    return _type(obj) is _fn and obj.__code__.co_filename == _main


def _show(obj, _type=type):
    """A candidate's object in a reason, without calling its own __repr__."""
    return "<" + _type(obj).__name__ + ">"


def _judge(event, args, _where=_where, _inside=_inside, _ours=_ours, _show=_show, _type=type, _issub=issubclass,
           _int=int, _str=str, _len=len, _starts=str.startswith, _getpid=posix.getpid, _getpgrp=posix.getpgrp,
           _write_flags=WRITE_FLAGS, _devices=DEVICES, _process=PROCESS_EVENTS, _network=NETWORK_PREFIXES,
           _files=FILE_EVENTS, _refused=REFUSED_EVENTS, _no_copy=NO_COPY, _no_import=NO_IMPORT, _IE=ImportError):
    """Why `event` is refused, or None when it may go on."""
    if event == "open":
        path, mode, flags = args[0], args[1], args[2]
        if _issub(_type(path), _int):
            return None  # an fd already open: its own mode decides
        where = _where(path)
        if _inside(where) or where in _devices:
            return None
        if flags & _write_flags or (_type(mode) is _str and ("w" in mode or "a" in mode or "x" in mode
                                                            or "+" in mode)):
            return f"writing outside the sandbox is not allowed (open {where or _show(path)})"
        if mode is None:  # os.open: a directory fd outside would let dir_fd paths escape
            return f"os.open outside the sandbox is not allowed ({where or _show(path)})"
        return None
    spec = _files.get(event)
    if spec is not None:
        for at, fd_at in spec:
            if at < _len(args):
                where = _where(args[at], args[fd_at] if 0 <= fd_at < _len(args) else None)
                if not _inside(where):
                    shown = where or _show(args[at])
                    return f"changing files outside the sandbox is not allowed ({event} {shown})"
        return None
    if event in _process or event == "_posixsubprocess.fork_exec":
        return f"starting processes is not allowed ({event})"
    if _starts(event, "ctypes."):
        if event == "ctypes.dlopen" and args[0] is None:
            return None  # `import ctypes` opens the running program; any use of it is refused
        return f"ctypes is not allowed ({event})"
    if _starts(event, _network):
        if event == "socket.__new__" and _len(args) > 1 and args[1] == 1:
            return None  # AF_UNIX: asyncio's self-pipe; connect and bind are refused still
        return f"network is not allowed ({event})"
    if event == "import":
        name, filename = args[0], args[1]
        if name in _no_import:
            raise _IE(f"module {name!r} is not available in the sandbox")
        if name in _no_copy:
            raise _IE(f"a second copy of module {name!r} is not allowed in the sandbox")
        if filename is not None and _inside(_where(filename)):
            return f"loading native code from the sandbox is not allowed ({_where(filename)})"
        return None
    if event == "os.kill":
        mine = args[0] == 0 or args[0] == _getpid()
        return None if mine else f"signalling other processes is not allowed ({event})"
    if event == "os.killpg":
        mine = args[0] == 0 or args[0] == _getpgrp()
        return None if mine else f"signalling other processes is not allowed ({event})"
    if event == "sqlite3.connect":
        name = args[0]
        if _issub(_type(name), _str):
            if name == "" or name == ":memory:" or _starts(name, "file::memory:"):
                return None
            if _starts(name, "file:"):
                name = _str.split(_str.split(name[5:], "?")[0], "#")[0]
        where = _where(name)
        return None if _inside(where) else f"writing outside the sandbox is not allowed ({event} {where})"
    if _starts(event, "syslog."):
        return f"syslog is not allowed ({event})"
    if event == "object.__getattr__":
        if (args[1] == "__defaults__" or args[1] == "__kwdefaults__") and _ours(args[0]):
            return "reading the sandbox's own functions is not allowed"
        return None
    if event == "object.__setattr__" or event == "object.__delattr__":
        return "changing the sandbox's own functions is not allowed" if _ours(args[0]) else None
    return _refused.get(event)


def _hook(event, args, _judge=_judge, _report=_report, _type=type, _PE=PermissionError, _IE=ImportError,
          _BE=BaseException):
    try:
        why = _judge(event, args)
    except _IE:
        raise
    except _BE as e:  # the hook's own failure: the parent calls the run an error, not the candidate's fault
        _report("broken", f"{event}: {_type(e).__name__}: {e}")
        raise
    if why is not None:
        _report("refused", why)
        raise _PE("sandbox: " + why)


def _no_process(*args, _hook=_hook, **kwargs):
    _hook("_posixsubprocess.fork_exec", args)


def _no_device(*args, _report=_report, _PE=PermissionError, **kwargs):
    _report("refused", "device files and chroot are not allowed")
    raise _PE("sandbox: device files and chroot are not allowed")


def _no_pidfd(*args, _report=_report, _PE=PermissionError, **kwargs):
    _report("refused", "signalling other processes is not allowed (os.pidfd_open)")
    raise _PE("sandbox: signalling other processes is not allowed (os.pidfd_open)")


def _exit_raises(status=0, _SystemExit=SystemExit):
    raise _SystemExit(status)  # os._exit: the harness sees the exit and whose it was


def _create_builtin(spec, _orig=_imp.create_builtin, _MS=ModuleSpec, _no=NO_COPY, _type=type, _issub=issubclass,
                    _str=str, _IE=ImportError, _BE=BaseException):
    """_imp.create_builtin on a private copy of `spec`, refusing fresh copies of the patched modules."""
    name = spec.name
    name = _str.__str__(name) if _issub(_type(name), _str) else None
    err = None
    if name is None or name in _no:
        err = _IE(f"a second copy of module {name!r} is not allowed in the sandbox")
    else:
        try:
            return _orig(_MS(name, spec.loader, origin=spec.origin))
        except _BE as e:
            err = e
    del _orig  # not left in a frame a traceback can reach
    raise err


def _innermost(exc, _deque=collections.deque, _reversed=reversed, _ours=OURS, _BE=BaseException):
    """(file, line) of the innermost frame of `exc`'s traceback in setup/solution/tests, or None.
    Only the last 200 entries are read: a RecursionError's million frames would outlast the limit."""
    try:
        last = _deque(maxlen=200)
        tb = exc.__traceback__
        while tb is not None:
            last.append(tb)
            tb = tb.tb_next
        for tb in _reversed(last):
            filename = tb.tb_frame.f_code.co_filename
            if filename in _ours:
                return filename, tb.tb_lineno
    except _BE:
        pass
    return None


def _describe(exc, _type=type, _str=str, _issub=issubclass, _only=traceback.format_exception_only,
              _innermost=_innermost, _getline=linecache.getline, _BE=BaseException, _SyntaxError=SyntaxError):
    """The last line of `exc`'s traceback, and the line of setup/solution/tests it came from."""
    try:
        if _issub(_type(exc), _SyntaxError):
            return f"{_type(exc).__name__}: {exc}"
        text = _str.strip(_only(_type(exc), exc)[-1])
    except _BE:
        return _type(exc).__name__
    try:
        where = _innermost(exc)
        if where is not None:
            line = _str.strip(_getline(where[0], where[1]))
            text += f" ({where[0]}:{where[1]}: {line})" if line else f" ({where[0]}:{where[1]})"
    except _BE:
        pass
    return text


def _blame(exc, _innermost=_innermost):
    """Which of our files an exception was last raised in."""
    where = _innermost(exc)
    return where[0] if where is not None else None


def _test_cases(ns, _list=list, _type=type, _issub=issubclass, _vars=vars, _sys=sys, _fn=types.FunctionType,
                _BE=BaseException):
    """unittest.TestCase classes the tests defined (when they imported unittest)."""
    unittest = _sys.modules.get("unittest")
    found = []
    if unittest is None:
        return found
    for value in _list(ns.values()):
        try:
            if not _issub(_type(value), _type) or not _issub(value, unittest.TestCase):
                continue
            for member in _list(_vars(value).values()):
                if _type(member) is _fn and member.__code__.co_filename == "tests.py":
                    found.append(value)
                    break
        except _BE:
            continue
    return found


def _refuse_tracer(what, _report=_report, _PE=PermissionError):
    _report("refused", f"tracing is not allowed ({what})")
    raise _PE(f"sandbox: tracing is not allowed ({what})")


# sys.settrace and friends: None only (doctest restores it so); a tracer could rewrite the hook's
# locals. Each wrapper drops the original before refusing, so no traceback leads back to it.
def _settrace(func, _orig=sys.settrace, _refuse=_refuse_tracer):
    if func is not None:
        del _orig
        _refuse("sys.settrace")
    _orig(None)


def _setprofile(func, _orig=sys.setprofile, _refuse=_refuse_tracer):
    if func is not None:
        del _orig
        _refuse("sys.setprofile")
    _orig(None)


def _settrace_all(func, _orig=getattr(sys, "_settraceallthreads", None), _refuse=_refuse_tracer):
    if func is not None:
        del _orig
        _refuse("sys._settraceallthreads")
    _orig(None)


def _setprofile_all(func, _orig=getattr(sys, "_setprofileallthreads", None), _refuse=_refuse_tracer):
    if func is not None:
        del _orig
        _refuse("sys._setprofileallthreads")
    _orig(None)


def _main(_report=_report, _exit=posix._exit, _compile=compile, _exec=exec, _open=open, _list=list, _type=type,
          _str=str, _int=int, _bool=bool, _issub=issubclass, _starts=str.startswith, _fn=types.FunctionType,
          _coroutine=types.CoroutineType, _describe=_describe, _blame=_blame, _test_cases=_test_cases,
          _module=types.ModuleType, _sys=sys, _io=io, _builtins=builtins, _NoneType=type(None),
          _SystemExit=SystemExit, _BE=BaseException):
    _report("started")
    sources = {}
    for name in OURS:
        try:
            with _open(name, encoding="utf-8") as f:
                sources[name] = f.read()
        except FileNotFoundError:
            sources[name] = ""
    try:  # the reference first: tests that do not compile are no verdict on the answer
        setup = _compile(sources["setup.py"], "setup.py", "exec", dont_inherit=True)
        tests = _compile(sources["tests.py"], "tests.py", "exec", dont_inherit=True)
    except _BE as e:
        _report("reference", _describe(e))
        _exit(3)
    try:
        solution = _compile(sources["solution.py"], "solution.py", "exec", dont_inherit=True)
    except _BE as e:
        _report("syntax", _describe(e))
        _exit(1)
    module = _module("__main__")
    module.__file__ = BOX + "/solution.py"
    module.__builtins__ = _builtins
    _sys.modules["__main__"] = module
    _sys.argv = ["solution.py"]
    ns = module.__dict__
    try:
        _exec(setup, ns)
    except _BE as e:
        _report("setup", _describe(e))
        _exit(3)
    try:
        _exec(solution, ns)
    except _SystemExit as e:
        _report("fail", f"the candidate exited (SystemExit: {e.code!r}) before the tests ran")
        _exit(1)
    except _BE as e:
        _report("fail", _describe(e))
        _exit(1)
    try:
        _exec(tests, ns)
        for name, value in _list(ns.items()):
            if _starts(name, "test_") and _type(value) is _fn and value.__code__.co_filename == "tests.py":
                result = value()
                if _type(result) is _coroutine:
                    import asyncio
                    asyncio.run(result)
        cases = _test_cases(ns)
        if cases:
            import unittest
            suite = unittest.TestSuite([unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in cases])
            outcome = unittest.TextTestRunner(stream=_io.StringIO(), verbosity=0).run(suite)
            problems = _list(outcome.failures) + _list(outcome.errors)
            if problems:
                test, text = problems[0]
                last = [line for line in _str.splitlines(text) if _str.strip(line)][-1:]
                _report("fail", f"{test.id()}: {last[0].strip() if last else 'failed'}")
                _exit(1)
    except _SystemExit as e:  # unittest.main() ends so; a candidate's sys.exit does not pass the tests
        code = e.code
        if _blame(e) == "solution.py" or _type(code) not in (_int, _bool, _NoneType) or code:
            where = "the candidate" if _blame(e) == "solution.py" else "the tests"
            _report("fail", f"{where} exited (SystemExit: {code!r})")
            _exit(1)
    except _BE as e:
        _report("fail", _describe(e))
        _exit(1)
    _report("ok")
    _exit(0)  # at once: no atexit handler, no thread the candidate left running


sys.addaudithook(_hook)
if _posixsubprocess is not None:
    _posixsubprocess.fork_exec = _no_process
for _m in (os, posix):
    _m._exit = _exit_raises
    for _name in ("mknod", "chroot"):
        if hasattr(_m, _name):
            setattr(_m, _name, _no_device)
    if hasattr(_m, "pidfd_open"):
        _m.pidfd_open = _no_pidfd
_imp.create_builtin = _create_builtin
sys.settrace, sys.setprofile = _settrace, _setprofile
if hasattr(sys, "_settraceallthreads"):  # Python >= 3.12
    sys._settraceallthreads, sys._setprofileallthreads = _settrace_all, _setprofile_all
_main()
