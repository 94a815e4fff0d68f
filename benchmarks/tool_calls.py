"""What running tools in worker processes costs, side by side with threads and direct calls.

    python benchmarks/tool_calls.py [--calls 2000] [--report BENCHMARKS.md]

(a) per-call time of FuncQA's ``add`` (microseconds of work) called directly, in a thread
(``isolation="thread"``) and in the worker pool (``"process"``), interleaved rounds, median;
(b) a fresh worker's first call (interpreter start + loading the pack) and the first call
after a timeout killed the worker (a spare was started at once);
(c) the issue-13 hazard: six calls of a busy-looping tool time out (0.2 s each), then a fixed
pure-Python workload in the caller is timed; each mode in its own child process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.benchutil import append_report, machine  # noqa: E402

SPIN = '''
from toolken.tools import tool

@tool
def spin(n: int) -> int:
    """Busy-loop forever."""
    while True:
        n += 1

def build():
    return [spin]
'''


def per_call(calls: int) -> dict[str, float]:
    from toolken.tools.registry import load_pack
    from toolken.tools.workers import ToolRunner

    add = load_pack(REPO / "tools" / "funcqa.py")["add"]
    runner = ToolRunner("process")
    add.call([1, 2], timeout=60, runner=runner)  # warm: the worker is up, the pack loaded
    ways = {"direct (fn)": lambda i: add.fn(i, 2),
            "thread": lambda i: add.call([i, 2], timeout=5, isolation="thread"),
            "process": lambda i: add.call([i, 2], timeout=5, runner=runner)}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(5):  # interleaved rounds: load changes hit every way alike
        for name, fn in ways.items():
            t = time.perf_counter()
            for i in range(calls // 5):
                fn(i)
            times[name].append((time.perf_counter() - t) / (calls // 5) * 1e6)
    runner.close()
    return {k: statistics.median(v) for k, v in times.items()}


def start_costs(tmp: Path) -> dict[str, float]:
    from toolken.tools.registry import load_pack
    from toolken.tools.workers import ToolRunner

    add = load_pack(REPO / "tools" / "funcqa.py")["add"]
    (tmp / "spin.py").write_text(SPIN)
    spin = load_pack(tmp / "spin.py")["spin"]
    runner = ToolRunner("process")
    t = time.perf_counter()
    assert add.call([1, 2], timeout=60, runner=runner).ok
    cold = time.perf_counter() - t
    assert not spin.call([0], timeout=0.2, runner=runner).ok
    t = time.perf_counter()
    assert add.call([1, 2], timeout=60, runner=runner).ok
    after = time.perf_counter() - t
    runner.close()
    return {"first call, fresh worker (s)": cold, "first call after a kill (s)": after}


def hazard_child(mode: str, tmp: str) -> None:
    """Six timed-out busy loops, then the caller's own work; prints seconds before/after."""
    from toolken.tools.registry import load_pack
    from toolken.tools.workers import ToolRunner

    def work() -> float:
        t = time.perf_counter()
        sum(i * i for i in range(2_000_000))
        return time.perf_counter() - t

    spin = load_pack(Path(tmp) / "spin.py")["spin"]
    runner = ToolRunner(mode)
    before = min(work() for _ in range(3))
    for _ in range(6):
        assert not spin.call([0], timeout=0.2, runner=runner).ok
    after = min(work() for _ in range(3))
    print(f"RESULT {before} {after}", flush=True)
    os._exit(0)  # abandoned threads would keep the interpreter from exiting


def hazard(tmp: Path) -> dict[str, tuple[float, float]]:
    out = {}
    for mode in ("thread", "process"):
        r = subprocess.run([sys.executable, __file__, "--hazard-child", mode, str(tmp)],
                           capture_output=True, text=True, timeout=600)
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            sys.exit(f"hazard child ({mode}) failed:\n{r.stderr[-3000:]}")
        before, after = map(float, line[-1].split()[1:])
        out[mode] = (before, after)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--report", default=None, help="append the report here (e.g. BENCHMARKS.md)")
    p.add_argument("--hazard-child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.hazard_child:
        return hazard_child(*args.hazard_child)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        calls = per_call(args.calls)
        starts = start_costs(Path(tmp))
        hz = hazard(Path(tmp))
    rows = "\n".join(f"| {k} | {v:.1f} |" for k, v in calls.items())
    text = (f"## Tool calls: worker processes vs threads — {time.strftime('%Y-%m-%d')}\n\n"
            f"`python benchmarks/tool_calls.py --calls {args.calls}` on {machine()}.\n\n"
            f"(a) FuncQA `add`, median of 5 interleaved rounds of {args.calls // 5} calls "
            f"(argument validation included in thread and process):\n\n"
            f"| how | µs per call |\n|---|---:|\n{rows}\n\n"
            f"(b) " + "; ".join(f"{k}: {v:.2f}" for k, v in starts.items()) + ".\n\n"
            f"(c) a pure-Python loop in the caller, before / after six busy-looping tool calls "
            f"timed out (0.2 s each): " +
            "; ".join(f"{m}: {b:.3f} s / {a:.3f} s ({a / b:.1f}x)" for m, (b, a) in hz.items())
            + ".\n")
    if args.report:
        append_report(args.report, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
