"""Hostile tools for tests/test_workers.py, loaded by path as a pack (as a user's pack is)."""

import os
import sys

from toolken.tools import tool

SETUPS = []


@tool
def pid() -> int:
    """The worker's process id."""
    return os.getpid()


@tool
def spin(n: int) -> int:
    """Busy-loop forever."""
    while True:
        n += 1


@tool
def hog(mb: int) -> int:
    """Allocate mb megabytes, 10 at a time."""
    chunks = [bytearray(10 * 2 ** 20) for _ in range(mb // 10)]
    return len(chunks)


def deeper(n):
    block = bytearray(2 ** 20)
    return deeper(n + 1) + len(block)


@tool
def recurse(n: int) -> int:
    """Unbounded recursion, each frame holding a megabyte."""
    sys.setrecursionlimit(10 ** 6)
    return deeper(n)


@tool
def quit_hard(code: int) -> int:
    """os._exit(code)."""
    print("last words", flush=True)
    os._exit(code)


@tool
def segfault(n: int) -> int:
    """A real segmentation fault (CPython's own test helper)."""
    import faulthandler
    faulthandler._sigsegv()
    return n


@tool
def exit_soft(code: int) -> int:
    """sys.exit(code)."""
    sys.exit(code)


@tool
def chatty(n: int) -> int:
    """Print on every channel, then answer."""
    print("to stdout", n)
    print("to stderr", n, file=sys.stderr)
    os.write(1, b"raw fd 1\n")
    return n + 1


@tool
def nothing(n: int) -> int:
    """Return None."""
    return None


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


@tool
def bad_error(n: int) -> int:
    """Raise an exception whose __str__ raises."""
    raise Unprintable()


@tool
def nested(depth: int) -> list:
    """A list nested depth deep."""
    value = []
    for _ in range(depth):
        value = [value]
    return value


class Expensive:
    """Like HFModelTool: an expensive load() (counted), then cheap calls."""

    def __init__(self):
        self.model = None

    def load(self):
        if self.model is None:
            SETUPS.append(os.getpid())
            self.model = {"weights": 2}
        return self.model

    def __call__(self, x):
        return {"value": self.load()["weights"] * x, "setups": len(SETUPS), "pid": os.getpid()}


def build():
    from toolken.tools import Tool
    model = Tool("model", "doubles x", {"type": "object", "properties": {"x": {"type": "number"}},
                                        "required": ["x"]}, fn=Expensive())
    return [pid, spin, hog, recurse, quit_hard, segfault, exit_soft, chatty, nothing, bad_error,
            nested, model]
