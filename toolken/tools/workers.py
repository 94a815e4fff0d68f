"""Where tool functions run: a pool of persistent worker processes, or threads.

``Tool.call`` hands every call to a ``ToolRunner`` (``default_runner()``, set with
``configure``). In ``"process"`` mode (the default) a call runs in one of ``workers``
long-lived processes, each a fresh Python interpreter (not a fork: safe when the caller
runs torch threads; nothing of the caller's main script is imported; about 0.3 s to start,
and a replacement is started as soon as one is lost). A worker keeps each function it was
sent, so an ``HFModelTool`` loads its model once per worker, not once per call. It contains
what a tool can do:

- a call past its timeout: the worker is killed (SIGKILL) and replaced on the next call;
- ``os._exit``, a segfault, a killed worker: ``ok=False`` naming the exit code or signal;
- memory: each worker's private memory is capped (``memory_limit_mb``, RLIMIT_DATA), so
  a runaway allocation is a ``MemoryError`` inside the worker, never the caller's;
- output: the worker's stdout and stderr (file descriptors 1 and 2, so C code too) go to a
  file, returned with the call (``ToolResult.output``), never to the caller's stdout.

How a worker gets the function: a tool from ``load_pack`` is rebuilt there from its pack
(same file, same options, loaded once per worker); otherwise a module-level function is
imported by name, and any other callable is pickled (sent once per worker). A callable with
a ``load()`` method has it called when a worker first takes it up, outside the call's
timeout. A function that cannot be sent (a lambda, a closure, a local class) runs in a thread
instead, with a warning, unless the call asked for ``isolation="process"``.

``"thread"`` mode runs the function in a daemon thread of the calling process. It cannot
contain much: a thread past its timeout is abandoned and keeps running (a busy loop keeps a
core), ``os._exit`` or a crash ends the whole process, memory is shared and unbounded, and
only Python-level ``print``s of the tool's own thread are captured (not C code's, not those
of threads it starts). Use it for tools whose state cannot leave the process.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
import weakref
from pathlib import Path
from multiprocessing.connection import Connection
from typing import Any, Callable

from .tool_run import (MAX_OUTPUT_CHARS, Outcome, cap, describe_exception, in_worker,
                       run_in_thread)

__all__ = ["ToolRunner", "Outcome", "configure", "default_runner", "describe_exception",
           "MODES"]

MODES = ("process", "thread")


# ---------------------------------------------------------------------------- the pool side
class _Died(Exception):
    pass


class _Worker:
    """One worker process (a fresh interpreter: nothing of the caller's main script is
    imported there), the pipes to it, and the functions it already holds."""

    def __init__(self, memory_mb: int | None) -> None:
        fd, path = tempfile.mkstemp(prefix="toolken-tool-", suffix=".out")
        os.unlink(path)  # no file left behind, whatever happens; both ends keep it open
        self.out = os.dup(fd)  # to read what a worker printed before it died
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        alive_r, self.alive_w = os.pipe()
        root = str(Path(__file__).resolve().parents[2])  # the folder holding toolken/
        code = (f"import sys; sys.path.insert(0, {root!r}); "
                f"from toolken.tools.tool_run import _serve; _serve({req_r}, {rep_w}, {alive_r})")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                pass_fds=(req_r, rep_w, alive_r), start_new_session=True)  # no Ctrl-C
        except BaseException:
            for f in (req_w, rep_r, self.alive_w, self.out):
                os.close(f)
            raise
        finally:
            for f in (fd, req_r, rep_w, alive_r):
                os.close(f)
        self.requests = Connection(req_w, readable=False)
        self.conn = Connection(rep_r, writable=False)
        self.requests.send({"path": list(sys.path), "memory_mb": memory_mb})
        self.known: set = set()
        self.stopped = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, message: Any) -> None:
        try:
            self.requests.send(message)
        except (OSError, ValueError):
            raise _Died() from None

    def reply(self, timeout: float | None) -> tuple | None:
        """The worker's next message, None on timeout; _Died if it died."""
        try:
            if not self.conn.poll(timeout):
                return None
            return self.conn.recv()
        except (EOFError, OSError):
            raise _Died() from None

    def death(self) -> str:
        try:
            code = self.proc.wait(2)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "the worker process stopped answering"
        if code < 0:
            try:
                return f"the worker process died (killed by signal {signal.Signals(-code).name})"
            except ValueError:
                return f"the worker process died (killed by signal {-code})"
        return f"the worker process died (exit code {code})"

    def leftover_output(self) -> str:
        try:
            data = os.pread(self.out, 4 * MAX_OUTPUT_CHARS, 0)
        except OSError:
            return ""
        return cap(data.decode("utf-8", errors="replace"))

    def stop(self, kill: bool = False) -> None:
        """Ask it to end (kill: end it now); close the pipes. Safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        if not kill and self.alive():
            try:
                self.requests.send(None)
                self.proc.wait(1)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        self.requests.close()
        self.conn.close()
        os.close(self.alive_w)
        os.close(self.out)


class ToolRunner:
    """Runs tool functions: ``mode="process"`` in a pool of at most ``workers`` persistent
    processes (each capped at ``memory_limit_mb`` of private memory; None: no cap), or
    ``mode="thread"``. ``setup_timeout`` bounds how long a worker may take to load a
    function (a pack's ``build()``, a model's ``load()``) before its first call."""

    def __init__(self, mode: str = "process", workers: int = 1, memory_limit_mb: int | None = 4096,
                 setup_timeout: float = 120.0) -> None:
        if mode not in MODES:
            raise ValueError(f"tool isolation mode must be one of {list(MODES)}, got {mode!r}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if memory_limit_mb is not None and (not isinstance(memory_limit_mb, int)
                                            or memory_limit_mb < 64):
            raise ValueError(f"memory_limit_mb must be an int >= 64 or None, "
                             f"got {memory_limit_mb!r}")
        self.mode, self.workers, self.memory_limit_mb = mode, workers, memory_limit_mb
        self.setup_timeout = setup_timeout
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        # (id(fn), id(origin)) -> (fn, origin, key, loader or None, why not)
        self._sources: dict[tuple, tuple] = {}
        self._warned: set = set()
        self._closed = False
        _RUNNERS.add(self)

    def __repr__(self) -> str:
        return (f"ToolRunner(mode={self.mode!r}, workers={self.workers}, "
                f"memory_limit_mb={self.memory_limit_mb})")

    def run(self, fn: Callable, a: tuple, kw: dict, timeout: float | None, *, name: str,
            origin: Any = None, isolation: str | None = None) -> Outcome:
        """Run ``fn(*a, **kw)`` (the tool ``name``; ``origin`` from load_pack) in ``isolation``
        (None: this runner's mode, falling back to a thread for a function that cannot be sent
        to a worker; "process": no fallback). Never raises for what the function does."""
        mode = isolation or self.mode
        if mode not in MODES:
            raise ValueError(f"isolation must be one of {list(MODES)}, got {mode!r}")
        if mode == "thread" or in_worker():
            return run_in_thread(fn, a, kw, timeout, name)
        key, loader, why = self._source(fn, origin, name)
        if loader is not None:
            outcome = self._in_worker(key, loader, a, kw, timeout)
            if outcome.status == "no-worker":
                why = outcome.message  # not remembered: the next call tries again
            elif outcome.status == "setup-error":
                why = f"the worker could not load it: {outcome.message}"
                with self._cond:
                    self._sources[(id(fn), id(origin))] = (fn, origin, key, None, why)
            else:
                return outcome
        if isolation == "process":
            return Outcome("error", message=f"cannot run in a worker process: {why}; load it "
                           f"from a pack or use isolation='thread'", mode="process")
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"tool {name} runs in a thread, not in a worker process ({why}); "
                          f"a thread cannot be killed on timeout or limited in memory. Define "
                          f"it in a tool pack (load_pack) or at module level, or set "
                          f"isolation='thread' to silence this", RuntimeWarning, stacklevel=3)
        return run_in_thread(fn, a, kw, timeout, name)

    def _source(self, fn: Callable, origin: Any, name: str) -> tuple:
        """(key, loader or None, why not) of how a worker gets ``fn``; cached."""
        cache_key = (id(fn), id(origin))
        hit = self._sources.get(cache_key)
        if hit is not None and hit[0] is fn and hit[1] is origin:
            return hit[2:]
        if origin is not None and origin.made(name, fn):
            key = ("pack", getattr(origin, "key", id(origin)), name)
            found = (key, ("pack", origin, name), None)
        else:
            found = _module_source(fn) or _pickle_source(fn)
        with self._cond:
            self._sources[cache_key] = (fn, origin, *found)
        return found

    def _in_worker(self, key: Any, loader: tuple, a: tuple, kw: dict,
                   timeout: float | None) -> Outcome:
        try:
            worker = self._acquire()
        except Exception as e:  # noqa: BLE001 - e.g. no usable sys.executable
            return Outcome("no-worker", message=f"no worker process could be started "
                           f"({describe_exception(e)})")
        done = False
        try:
            outcome, done = self._exchange(worker, key, loader, a, kw, timeout)
            return outcome
        except _Died:
            return Outcome("error", message=worker.death(), output=worker.leftover_output(),
                           mode="process")
        finally:
            self._release(worker, broken=not done)

    def _exchange(self, worker: _Worker, key: Any, loader: tuple, a: tuple, kw: dict,
                  timeout: float | None) -> tuple[Outcome, bool]:
        """(outcome, whether the worker is fit for another call)."""
        sending = key not in worker.known
        worker.send((key, loader if sending else None, a, kw, os.getcwd()))
        if sending:
            reply = worker.reply(self.setup_timeout)
            if reply is None:
                return Outcome("error", message=f"the worker process did not load the tool "
                               f"within {self.setup_timeout} s", mode="process"), False
            if reply[0] == "setup-error":
                return Outcome("setup-error", message=reply[1], output=reply[2]), True
            worker.known.add(key)
        reply = worker.reply(timeout)
        if reply is None:
            return Outcome("timeout", message="the worker process was killed",
                           output=worker.leftover_output(), mode="process"), False
        status, payload, output = reply
        if status == "error":
            if payload.startswith("MemoryError") and self.memory_limit_mb:
                payload += f" (a worker may use {self.memory_limit_mb} MB)"
            return Outcome("error", message=payload, output=output, mode="process"), True
        try:
            value = pickle.loads(payload)
        except BaseException as e:  # noqa: BLE001 - e.g. a class only the worker has
            return Outcome("error", message=f"its result could not be read back from the worker "
                           f"process: {describe_exception(e)}", output=output,
                           mode="process"), True
        return Outcome("ok", value=value, output=output, mode="process"), True

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        self._busy.add(worker)
                        return worker
                    worker.stop(kill=True)
                    continue
                if len(self._busy) < self.workers:
                    self._closed = False
                    worker = _Worker(self.memory_limit_mb)
                    self._busy.add(worker)
                    return worker
                self._cond.wait()

    def _release(self, worker: _Worker, broken: bool) -> None:
        """Back to the pool; a broken worker is killed and a spare started at once, so the
        next call does not wait for an interpreter to start."""
        if broken:
            worker.stop(kill=True)
        with self._cond:
            self._busy.discard(worker)
            if not broken:
                self._idle.append(worker)
            elif not self._closed and len(self._idle) + len(self._busy) < self.workers:
                try:
                    self._idle.append(_Worker(self.memory_limit_mb))
                except OSError:
                    pass  # the next call starts one (or reports why it cannot)
            self._cond.notify()

    def pids(self) -> list[int]:
        """The process ids of the idle workers (for tests and monitoring)."""
        with self._cond:
            return [w.pid for w in self._idle]

    def close(self) -> None:
        """Stop every worker (idle ones are asked, busy ones killed)."""
        with self._cond:
            self._closed = True
            idle, busy = self._idle, list(self._busy)
            self._idle, self._busy = [], set()
            self._cond.notify_all()
        for w in idle:
            w.stop()
        for w in busy:
            w.stop(kill=True)


def _module_source(fn: Callable) -> tuple | None:
    """A module-level function (or the function of a module-level @tool) by name."""
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str) or "<" in qual:
        return None
    obj: Any = sys.modules.get(mod)
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn and getattr(obj, "fn", None) is not fn:
        return None
    if mod == "__main__":  # run as `python -m pkg.mod`: importable as pkg.mod
        mod = getattr(getattr(sys.modules["__main__"], "__spec__", None), "name", None)
        if not mod or mod.endswith("__main__"):
            return (("unsendable", id(fn)), None, "it is defined in the script being run "
                    "(__main__), which a worker does not import; put it in a tool pack")
    return ("attr", mod, qual), ("attr", mod, qual), None


def _pickle_source(fn: Callable) -> tuple:
    try:
        data = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as e:  # noqa: BLE001
        return ("unsendable", id(fn)), None, f"it cannot be pickled: {describe_exception(e)}"
    return ("pickle", id(fn)), ("pickle", data), None


# ---------------------------------------------------------------------------- the default
_RUNNERS: weakref.WeakSet = weakref.WeakSet()
_DEFAULT: ToolRunner | None = None
_DEFAULT_LOCK = threading.Lock()


def default_runner() -> ToolRunner:
    """The runner ``Tool.call`` uses (process mode, one worker, 4096 MB, unless configured)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = ToolRunner()
        return _DEFAULT


def configure(mode: str = "process", workers: int = 1, memory_limit_mb: int | None = 4096,
              setup_timeout: float = 120.0) -> ToolRunner:
    """Set the default runner (an old one with other settings is closed); return it."""
    global _DEFAULT
    settings = (mode, workers, memory_limit_mb, setup_timeout)
    with _DEFAULT_LOCK:
        old = _DEFAULT
        if old is not None and (old.mode, old.workers, old.memory_limit_mb,
                                old.setup_timeout) == settings:
            return old
        runner = _DEFAULT = ToolRunner(*settings)
    if old is not None:
        old.close()
    return runner


@atexit.register
def _close_all() -> None:
    for runner in list(_RUNNERS):
        runner.close()
