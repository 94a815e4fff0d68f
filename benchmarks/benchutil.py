"""Helpers shared by the benchmark scripts: one measurement per child process (so that its
peak RSS is its own), the setup toolken's trainer does, and appending a report.

A child prints one line ``RESULT {json}``; the parent runs it with ``run_child``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark (``ru_maxrss``), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_result(res: dict) -> None:
    """Print a child's result, with its peak RSS, for ``run_child``."""
    res["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(res), flush=True)


def run_child(script: str, args: list[str], name: str) -> dict:
    """Run ``python script *args`` and return the dict of its ``RESULT`` line."""
    cmd = [sys.executable, script, *args]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode or not line:
        sys.exit(f"{name} failed:\n{r.stderr[-3000:]}")
    res = json.loads(line[-1][7:])
    print(f"   {res}", flush=True)
    return res


def command_line() -> str:
    """This run's command as given, with its OMP_NUM_THREADS."""
    return f"env OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} python {' '.join(sys.argv)}"


def machine() -> str:
    import torch

    load = os.getloadavg()[2]  # other work on the machine slows every figure down
    return (f"{platform.machine()}, {os.cpu_count()} CPU threads, torch {torch.__version__}, "
            f"load average {load:.1f} (15 min, at the end)")


def append_report(path: str, text: str) -> None:
    """Print a report and append it to ``path`` (BENCHMARKS.md, RESULTS.md)."""
    print(text)
    with open(path, "a") as fh:
        fh.write(text.rstrip("\n") + "\n\n")


def prepare(cfg):
    """Base, model and labelled data exactly as ``toolken.training.trainer.train`` makes them."""
    from toolken.core.base import load_base
    from toolken.training.pipeline import load_records, prepare_data, prepare_model

    base = load_base(cfg.base_model, dtype=cfg.dtype, device=cfg.device)
    train_r, dev_r, digest = load_records(cfg, verbose=False)
    model, _ = prepare_model(cfg, base, train_r, verbose=False)
    data = prepare_data(cfg, base, model.tools, train_r, dev_r, digest, verbose=False)
    return base, model, data
