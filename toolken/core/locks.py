"""Inter-process locks on folders that two runs must not write at once.

A lock is ``filelock.FileLock`` on ``.<folder>.lock`` beside the folder (an OS lock: a killed
holder releases it, so it is never stale). Who holds it (pid, host, start time, command) is
written to ``.<folder>.lock.json`` once it is held, so that a second run can name the holder:
``FileLock`` truncates its own file when it tries to take it, so that file cannot carry it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout


class LockedError(RuntimeError):
    """The folder is in use by another run; the message names the holder."""


def holder(lock: Path) -> str:
    """``pid N on HOST since TIME (COMMAND)`` from the lock's holder file, or a fallback."""
    try:
        h = json.loads(Path(str(lock) + ".json").read_text())
        return (f"pid {h['pid']} on {h['host']} since {h['since']} "
                f"({' '.join(h.get('argv', []))[:120]})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its holder file is missing)"


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str, wait: bool) -> Iterator[Path]:
    """Hold the lock of ``folder`` for the block. ``wait``: block until it is free (saying
    who holds it); else raise ``LockedError`` naming the holder at once."""
    folder = Path(folder)
    lock_path = folder.with_name(f".{folder.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = holder(lock_path)
        if not wait:
            raise LockedError(f"{what} {folder} is in use by {who} (lock {lock_path}); wait for "
                              f"that run to end or choose another folder") from None
        print(f"toolken: waiting for {what} {folder}, in use by {who}", file=sys.stderr)
        lock.acquire()
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": sys.argv}
        Path(str(lock_path) + ".json").write_text(json.dumps(info) + "\n")
        yield lock_path
    finally:
        lock.release()
