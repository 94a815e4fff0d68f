"""Running one tool function where it is told to: in a daemon thread of this process
(thread mode), or inside a worker process (``_serve``, the loop ``toolken.tools.workers`` starts in
a fresh interpreter). Both turn whatever the function does into an ``Outcome``.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

__all__ = ["Outcome", "describe_exception", "run_in_thread", "in_worker", "MAX_OUTPUT_CHARS"]

MAX_OUTPUT_CHARS = 20_000  # a call's captured stdout+stderr beyond this is cut


def describe_exception(e: BaseException) -> str:
    """``"TypeName: message"``, even when the exception's ``__str__`` itself raises."""
    try:
        text = str(e)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = "<the exception's message could not be shown>"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass
class Outcome:
    """What running a function gave: ``status`` "ok" (``value``), "error" or "timeout"
    (``message``); ``output`` is what it printed; ``mode`` where it ran."""

    status: str
    value: Any = None
    message: str = ""
    output: str = ""
    mode: str = "thread"


def cap(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more chars)"


# ---------------------------------------------------------------------------- threads
class _ThreadOutput:
    """Stands in for sys.stdout / sys.stderr: writes from a registered thread go to that
    thread's buffer, all others to the stream it replaced."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.buffers: dict[int, list[str]] = {}

    def write(self, text: str) -> int:
        buf = self.buffers.get(threading.get_ident())
        if buf is None:
            return self.target.write(text)
        if sum(map(len, buf)) < MAX_OUTPUT_CHARS:
            buf.append(str(text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def _thread_streams() -> tuple[_ThreadOutput, _ThreadOutput]:
    for name in ("stdout", "stderr"):
        if not isinstance(getattr(sys, name), _ThreadOutput):
            setattr(sys, name, _ThreadOutput(getattr(sys, name)))
    return sys.stdout, sys.stderr  # type: ignore[return-value]


def run_in_thread(fn: Callable, a: tuple, kw: dict, timeout: float | None, name: str) -> Outcome:
    """Run ``fn(*a, **kw)`` in a daemon thread; on timeout it is abandoned (still running)."""
    box: dict[str, Any] = {}
    printed: list[str] = []
    streams = _thread_streams()

    def target() -> None:
        me = threading.get_ident()
        for s in streams:
            s.buffers[me] = printed
        try:
            box["value"] = fn(*a, **kw)
        except BaseException as e:  # noqa: BLE001 - a tool's failure becomes a result
            box["error"] = describe_exception(e)
        finally:
            for s in streams:
                s.buffers.pop(me, None)

    worker = threading.Thread(target=target, name=f"toolken-tool-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    output = cap("".join(printed))
    if worker.is_alive():
        return Outcome("timeout", output=output, message="the worker thread was abandoned and "
                       "may still be running")
    if "error" in box:
        return Outcome("error", message=box["error"], output=output)
    return Outcome("ok", value=box.get("value"), output=output)


# ---------------------------------------------------------------------------- the worker side
_IN_WORKER = False


def in_worker() -> bool:
    """Whether this process is a tool worker (a tool's own Tool.call then runs in a thread)."""
    return _IN_WORKER


def _serve(fd_in: int, fd_out: int, fd_alive: int) -> None:
    """A worker's loop (its stdout and stderr are the capture file): receive
    (key, loader or None, args, kwargs, cwd), reply ("ready" after a loader, then the result)."""
    global _IN_WORKER
    _IN_WORKER = True  # a tool calling Tool.call in here runs that call in a thread
    requests, replies = Connection(fd_in, writable=False), Connection(fd_out, readable=False)
    init = requests.recv()
    sys.path[:] = init["path"]
    if init["memory_mb"]:
        import resource

        limit = init["memory_mb"] * 2 ** 20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    threading.Thread(target=_exit_with_parent, args=(fd_alive,), daemon=True).start()
    out = os.dup(1)  # the capture file, even if a tool closes or redirects fd 1
    functions: dict[Any, Callable] = {}
    while True:
        try:
            message = requests.recv()
        except (EOFError, OSError):
            return
        except Exception as e:  # noqa: BLE001 - a loader that cannot be unpickled here
            replies.send(("setup-error", describe_exception(e), _drain(out)))
            continue
        if message is None:
            return
        key, loader, a, kw, cwd = message
        if cwd != _getcwd():
            os.chdir(cwd)
        if key not in functions:
            try:
                functions[key] = _take_up(loader)
            except BaseException as e:  # noqa: BLE001
                replies.send(("setup-error", describe_exception(e), _drain(out)))
                continue
            replies.send(("ready", None, ""))
        replies.send(_run_here(functions[key], a, kw, out))


def _getcwd() -> str | None:
    """The working directory, None when it was deleted (the caller then moved elsewhere)."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


def _exit_with_parent(fd_alive: int) -> None:
    """End the worker when the process that owns the pool dies (its end of the pipe closes),
    even in the middle of a busy tool."""
    while os.read(fd_alive, 1):
        pass
    os._exit(0)


def _take_up(loader: tuple) -> Callable:
    kind = loader[0]
    if kind == "pack":
        fn = loader[1].function(loader[2])
    elif kind == "attr":
        fn = importlib.import_module(loader[1])
        for part in loader[2].split("."):
            fn = getattr(fn, part)
        fn = getattr(fn, "fn", fn)  # a Tool made by @tool: its function
    else:
        fn = pickle.loads(loader[1])
    if not callable(fn):
        raise TypeError(f"{loader[:3] if kind != 'pickle' else 'the pickled object'} gave "
                        f"{type(fn).__name__}, not a callable")
    if callable(getattr(fn, "load", None)):
        try:
            fn.load()  # e.g. an HFModelTool's model, loaded before the first call's timeout
        except Exception:  # noqa: BLE001 - the call itself reports a model that won't load
            pass
    return fn


def _run_here(fn: Callable, a: tuple, kw: dict, fd: int) -> tuple[str, Any, str]:
    try:
        value = fn(*a, **kw)
    except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included
        return "error", describe_exception(e), _drain(fd)
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as e:  # noqa: BLE001 - unpicklable or nested too deeply
        what = "is nested too deeply to" if isinstance(e, RecursionError) else "cannot"
        return "error", (f"returned a {type(value).__name__} that {what} be sent back from the "
                         f"worker process ({describe_exception(e)}); return plain data"), _drain(fd)
    return "ok", data, _drain(fd)


def _drain(fd: int) -> str:
    """What the call printed (and empty the file for the next one)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a tool may have closed or replaced it
            pass
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return ""
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, min(size, 4 * MAX_OUTPUT_CHARS))
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return cap(data.decode("utf-8", errors="replace"))
