"""Hostile tools against the worker pool (toolken.tools.workers) and thread mode: each one ends as
a ToolResult with ok=False (or ok=True with its output captured), never as a dead, slowed or
corrupted caller."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from toolken.tools.registry import load_pack
from toolken.tools import Tool, ToolResult, tool
from toolken.tools.workers import ToolRunner

REPO = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def pack():
    return load_pack(REPO / "tests" / "assets" / "hostile_pack.py")


@pytest.fixture(scope="module")
def runner():
    r = ToolRunner("process", workers=1, memory_limit_mb=512, setup_timeout=60)
    yield r
    r.close()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def call(pack, runner, name, *args, timeout=30.0):
    return pack[name].call(list(args), timeout=timeout, runner=runner)


def test_a_busy_loop_is_killed_and_its_worker_replaced(pack, runner):
    before = call(pack, runner, "pid").value
    r = call(pack, runner, "spin", 0, timeout=0.5)
    assert not r.ok and "timed out after 0.5 s" in r.error and "killed" in r.error
    assert gone(before)  # not abandoned: the process that spun is no more
    after = call(pack, runner, "pid")
    assert after.ok and after.value != before and not gone(after.value)


def test_runaway_memory_is_a_memory_error_in_the_worker(pack, runner):
    r = call(pack, runner, "hog", 2000)
    assert not r.ok and "MemoryError" in r.error and "512 MB" in r.error
    assert call(pack, runner, "hog", 50).value == 5  # same worker, still fine


def test_runaway_recursion_is_contained(pack, runner):
    r = call(pack, runner, "recurse", 0)
    assert not r.ok and ("MemoryError" in r.error or "RecursionError" in r.error
                         or "died" in r.error)
    assert call(pack, runner, "pid").ok


@pytest.mark.parametrize("name, arg, words", [
    ("quit_hard", 7, "exit code 7"), ("segfault", 0, "signal SIGSEGV")])
def test_a_dying_worker_is_an_error_and_replaced(pack, runner, name, arg, words):
    before = call(pack, runner, "pid").value
    r = call(pack, runner, name, arg)
    assert not r.ok and "died" in r.error and words in r.error
    assert name != "quit_hard" or r.output == "last words\n"  # printed before it died
    assert gone(before)
    assert call(pack, runner, "pid").value != before


def test_sys_exit_is_an_error(pack, runner):
    r = call(pack, runner, "exit_soft", 3)
    assert not r.ok and "SystemExit: 3" in r.error
    assert call(pack, runner, "pid").ok


def test_printing_goes_to_the_result_not_to_stdout(pack, runner, capfd):
    r = call(pack, runner, "chatty", 1)
    assert r.ok and r.text == "2"
    for line in ("to stdout 1", "to stderr 1", "raw fd 1"):
        assert line in r.output
    out, err = capfd.readouterr()
    assert "to stdout" not in out + err and "raw fd" not in out + err
    assert "to stdout" not in call(pack, runner, "chatty", 2).output.replace("to stdout 2", "")


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_odd_results_are_errors_not_successes(pack, runner, isolation):
    def run(name, *args):
        return pack[name].call(list(args), timeout=30, runner=runner, isolation=isolation)

    r = run("nothing", 1)
    assert not r.ok and "returned nothing" in r.error
    r = run("bad_error", 1)
    assert not r.ok and "Unprintable" in r.error
    r = run("nested", 100_000)
    assert not r.ok and "nested too deeply" in r.error and r.text == ""
    assert run("nested", 3).ok


def test_setup_runs_once_per_worker(pack, runner):
    results = [call(pack, runner, "model", x).value for x in range(5)]
    assert [r["value"] for r in results] == [0, 2, 4, 6, 8]
    assert {r["pid"] for r in results} == {results[0]["pid"]}
    assert {r["setups"] for r in results} == {1}  # load() ran once, in the worker
    fresh = ToolRunner("process", workers=2)
    try:
        pids = {pack["model"].call([1], runner=fresh).value["pid"] for _ in range(3)}
        assert all(pack["model"].call([1], runner=fresh).value["setups"] == 1 for _ in range(3))
        assert len(pids) == 1  # calls one after another reuse one worker
    finally:
        fresh.close()


def test_threads_share_a_pool_of_two(pack):
    import threading

    runner = ToolRunner("process", workers=2)
    results = []

    def work():
        results.extend(pack["model"].call([x], runner=runner).value for x in range(3))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runner.close()
    assert len(results) == 12 and all(r["setups"] == 1 for r in results)
    assert 1 <= len({r["pid"] for r in results}) <= 2


def test_close_stops_every_worker(pack):
    r = ToolRunner("process", workers=1)
    pid = pack["pid"].call([], runner=r).value
    r.close()
    assert gone(pid)
    assert pack["pid"].call([], runner=r).value != pid  # a closed runner starts again if used


READER = '''
from pathlib import Path
from toolken.tools import Tool

def build(facts="facts.txt"):
    text = Path(facts).read_text()
    return [Tool("fact", "the fact", fn=lambda: text.strip())]
'''


def test_a_pack_option_keeps_the_folder_it_was_given_in(tmp_path, monkeypatch, runner):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "facts.txt").write_text("water is wet\n")
    (tmp_path / "reader.py").write_text(READER)
    monkeypatch.chdir(tmp_path / "a")
    fact = load_pack(tmp_path / "reader.py", facts="facts.txt")["fact"]
    monkeypatch.chdir(tmp_path)  # facts.txt means a/facts.txt, as when the pack was loaded
    r = fact.call([], runner=runner, isolation="process")
    assert r.ok and r.text == "water is wet", r.error


# ---------------------------------------------------------------------------- not from a pack
@tool
def module_level(x: int) -> int:
    """Module-level: a worker imports it by name."""
    return os.getpid()


def test_a_module_level_tool_runs_in_a_worker(runner):
    assert module_level.call([1], runner=runner).value != os.getpid()


def test_a_closure_falls_back_to_a_thread_with_a_warning(runner):
    offset = 10

    @tool
    def local(x: int) -> int:
        """A closure: cannot be sent to a worker."""
        return x + offset

    with pytest.warns(RuntimeWarning, match="runs in a thread"):
        assert local.call([1], runner=runner).value == 11
    r = local.call([1], runner=runner, isolation="process")
    assert not r.ok and "cannot run in a worker process" in r.error
    quiet = Tool(local.name, local.description, local.parameters, fn=local.fn, isolation="thread")
    assert quiet.call([2], runner=runner).value == 12


def test_no_worker_process_means_a_thread_unless_process_was_asked(pack, monkeypatch):
    runner = ToolRunner("process")
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.warns(RuntimeWarning, match="no worker process could be started"):
        assert pack["pid"].call([], runner=runner).value == os.getpid()
    r = pack["pid"].call([], runner=runner, isolation="process")
    assert not r.ok and "no worker process could be started" in r.error
    monkeypatch.undo()
    assert pack["pid"].call([], runner=runner).value != os.getpid()  # tried again: a worker
    runner.close()


SCRIPT = '''
import sys, warnings
sys.path.insert(0, {repo!r})
from toolken.tools import tool

@tool
def double(x: int) -> int:
    """Twice x."""
    return 2 * x

with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    print(double.call([4]).text, "|", *[w.message for w in seen])
'''


def test_a_tool_of_the_script_being_run_runs_in_a_thread(tmp_path):
    import subprocess

    (tmp_path / "script.py").write_text(SCRIPT.format(repo=str(REPO)))
    run = subprocess.run([sys.executable, str(tmp_path / "script.py")], capture_output=True,
                         text=True, timeout=120)
    text, _, warning = run.stdout.partition(" | ")
    assert text == "8" and "runs in a thread" in warning and "__main__" in warning


def test_a_replaced_function_is_not_taken_from_the_pack(pack, runner):
    import dataclasses

    swapped = dataclasses.replace(pack["pid"], fn=lambda: -1)
    with pytest.warns(RuntimeWarning):
        assert swapped.call([], runner=runner).value == -1


# ---------------------------------------------------------------------------- thread mode
def test_thread_mode_captures_prints_and_abandons_on_timeout(capfd):
    runner = ToolRunner("thread")

    @tool
    def talk(x: int) -> int:
        """Prints."""
        print("hello from a thread")
        return x

    @tool
    def slow(x: float) -> float:
        """Sleeps."""
        time.sleep(x)
        return x

    r = talk.call([4], runner=runner)
    assert r.ok and r.output == "hello from a thread\n"
    assert "hello from a thread" not in capfd.readouterr().out
    print("the caller still prints")
    assert "the caller still prints" in capfd.readouterr().out
    r = slow.call([2.0], timeout=0.1, runner=runner)
    assert not r.ok and "abandoned" in r.error


def test_the_default_runner_is_process_mode():
    from toolken.tools import workers

    assert workers.default_runner().mode == "process"
    with pytest.raises(ValueError, match="isolation mode"):
        ToolRunner("fork")


# ---------------------------------------------------------------------------- lifetime
OWNER = '''
import os, signal, sys
sys.path.insert(0, {repo!r})
from toolken.tools.registry import load_pack
pid = load_pack({pack!r})["pid"].call([], timeout=30)
print(pid.value, flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
'''


def running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_workers_end_with_the_process_that_owns_them(pack, tmp_path, how):
    import subprocess

    script = tmp_path / "owner.py"
    script.write_text(OWNER.format(repo=str(REPO), pack=str(pack["pid"].origin.source)))
    out = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True,
                         timeout=120).stdout
    worker = int(out.split()[0])
    deadline = time.time() + 10
    while running(worker) and time.time() < deadline:
        time.sleep(0.05)
    assert not running(worker)


# ---------------------------------------------------------------------------- generate --json
CHATTY_PACK = '''
import sys
from toolken import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers, chattily."""
    print("adding", a, b)
    print("to stderr too", file=sys.stderr)
    return a + b

TOOLS = [add]
'''


def test_a_printing_tool_keeps_generate_json_valid(tiny_base, tmp_path, capfd):
    import torch

    from toolken.cli import main
    from toolken.model import ToolkenModel

    (tmp_path / "pack.py").write_text(CHATTY_PACK)
    torch.manual_seed(0)
    m = ToolkenModel(tiny_base, [])
    m.add_tools(["add"])
    m.attach_tools(load_pack(tmp_path / "pack.py"))
    m.save_pretrained(tmp_path / "ckpt")
    capfd.readouterr()
    assert main(["generate", "--toolkens", str(tmp_path / "ckpt"), "--tools",
                 str(tmp_path / "pack.py"), "--bias", "10000", "--max-new-tokens", "4",
                 "--max-tool-calls", "1", "--json", "2 and 3?", "4 and 4?"]) == 0
    out, err = capfd.readouterr()
    lines = [json.loads(x) for x in out.splitlines()]  # every stdout line is JSON
    assert len(lines) == 2
    call = lines[0]["calls"][0]
    assert call["result"] == str(sum(call["arguments"]))
    assert call["output"].startswith("adding ") and "to stderr too" in call["output"]
    assert "adding" not in err
