"""Feed toolken each defect listed in issue 13 and say, for each, whether it is handled now.

    OMP_NUM_THREADS=2 python benchmarks/hostile_sweep.py [--out outputs/hostile_sweep.json]

On the tiny model, in a scratch folder. "Handled" means the clear error (toolken's own error
type, naming the file / line / field / key the probe expects) or the survival the issue asks
for; anything else (a traceback of another type, a wrong or missing message, code run, a lost
checkpoint, a run taken down) is "NOT handled". Tool probes (issue 13, part 2) each run in a
child process, so that a tool that spins, grows or exits cannot disturb the others. Prints one
line per defect and the count; ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from toolken.core.checkpoint import CheckpointError  # noqa: E402
from toolken.training.config import ConfigError, load_config  # noqa: E402
from toolken.core.data import DataError  # noqa: E402

OURS = (ConfigError, DataError, CheckpointError, ValueError, RuntimeError)
GOOD = {"text": "1+2=3", "calls": [{"tool": "add", "args": [1, 2], "start": 4, "end": 5, "result": "3"}]}


def expect(fn, *needles, types=OURS) -> tuple[bool, str]:
    """Handled when ``fn`` raises one of ``types`` whose message holds every needle."""
    try:
        fn()
    except types as e:
        msg = str(e)
        missing = [n for n in needles if n not in msg]
        return not missing, (f"missing {missing} in: " if missing else "") + msg.splitlines()[0][:110]
    except BaseException as e:  # noqa: BLE001 — a raw traceback is what we look for
        return False, f"raw {type(e).__name__}: {str(e)[:100]}"
    return False, "no error"


class Sweep:
    def __init__(self, root: Path):
        self.root, self.n = root, 0
        lines = (REPO / "data/tiny/train.jsonl").read_text().splitlines()[:30]
        self.data = root / "train.jsonl"
        self.data.write_text("\n".join(lines) + "\n")

    def dir(self, name: str) -> Path:
        self.n += 1
        return self.root / f"{self.n:02d}-{name}"

    def cfg(self, out: Path, *overrides: str, **values):
        base = {"train_file": str(self.data), "output_dir": str(out), "cache_dir": str(self.root / "cache"),
                "epochs": 1, "progress": False, **values}
        return load_config(REPO / "configs/tiny.yaml", [f"{k}={v}" for k, v in base.items()] + list(overrides))

    def train(self, out: Path, *overrides: str, **values):
        from toolken.training.trainer import train

        return train(self.cfg(out, *overrides, **values))

    def checkpoint(self, name: str) -> Path:
        from toolken.core.base import load_base
        from toolken.model import ToolkenModel

        folder = self.dir(name)
        ToolkenModel(load_base("tiny-random-llama"), ["add"]).save_pretrained(folder)
        return folder


# ---------------------------------------------------------------- 1, 3: code, concurrency


def state_pt_runs_code(s: Sweep):
    import torch

    out, marker = s.dir("state"), s.root / "ran"
    (out / "training").mkdir(parents=True)

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    torch.save({"rows": Payload()}, out / "training" / "state.pt")
    ok, detail = expect(lambda: s.train(out), "state.pt")
    return ok and not marker.exists(), ("code ran; " if marker.exists() else "") + detail


def two_runs_one_output_dir(s: Sweep):
    from toolken.core.locks import folder_lock

    out = s.dir("busy")
    with folder_lock(out, "output_dir", wait=False):
        return expect(lambda: s.train(out), "in use by pid", "since")


def two_builders_one_cache(s: Sweep, rounds: int = 3):
    """Two `toolken train` processes at once on one (new) feature cache, ``rounds`` times."""
    failures = []
    for r in range(rounds):
        cache = s.dir("cache")
        cmd = lambda i: [sys.executable, "-m", "toolken.cli", "train", str(REPO / "configs/tiny.yaml"),  # noqa: E731
                         f"train_file={s.data}", f"cache_dir={cache}", f"output_dir={cache}-out{i}",
                         "epochs=1", "progress=false"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [subprocess.Popen(cmd(i), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for i in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=300)
            if p.returncode:
                failures.append(f"round {r}: exit {p.returncode}: {err.strip()[-100:]}")
    return not failures, "; ".join(failures) or f"{rounds} rounds of 2 processes, all trained"


# ---------------------------------------------------------------- 4: configs


def config_probes(s: Sweep):
    (s.root / "c.yaml").write_text(f"train_file: {s.data}\nlr: 1e-3\n")
    lr = load_config(s.root / "c.yaml").lr
    (s.root / "file").write_text("x")
    return [
        ("4 lr: 1e-3 in YAML is a number", (lr == 0.001, f"lr={lr!r}")),
        ("4 lr=abc", expect(lambda: s.cfg(s.dir("x"), "lr=abc"), "lr='abc'", "must be a number")),
        ("4 epochs=abc", expect(lambda: s.cfg(s.dir("x"), "epochs=abc"), "epochs='abc'", "integer")),
        ("4 epochs=2.5 before compute", expect(lambda: s.cfg(s.dir("x"), "epochs=2.5"), "epochs=2.5", "integer")),
        ("4 max_length=1", expect(lambda: s.cfg(s.dir("x"), "max_length=1"), "max_length=1")),
        ("4 max_length=4 (nothing labelled)", expect(lambda: s.train(s.dir("x"), "max_length=4"),
                                                      "no record could be labelled")),
        ("4 output_dir is a file", expect(lambda: s.train(s.root / "file"), "is a file")),
        ("4 output_dir not writable", expect(lambda: s.train(Path("/proc/toolken-out")), "not a writable folder")),
    ]


# ---------------------------------------------------------------- 5: checkpoints


def checkpoint_probes(s: Sweep):
    from toolken.core.base import load_base
    from toolken.model import ToolkenModel

    base = load_base("tiny-random-llama")
    out = []
    for what, edit in (("truncated", lambda b: b[:-30]), ("empty", lambda b: b""),
                       ("garbage", lambda b: b"not a safetensors file")):
        ck = s.checkpoint(what)
        w = ck / "toolken_model.safetensors"
        w.write_bytes(edit(w.read_bytes()))
        out.append((f"5 {what} safetensors", expect(lambda: ToolkenModel.from_pretrained(ck, base=base), str(w))))
    ck = s.checkpoint("nan")
    m = ToolkenModel.from_pretrained(ck, base=base)
    m.head.weight.data[0, 0] = float("nan")
    m.save_pretrained(ck)
    out.append(("5 NaN weights", expect(lambda: ToolkenModel.from_pretrained(ck, base=base), "'weight'", "NaN")))
    for what, edit, field in (("no base_model", lambda c: c.pop("base_model"), "base_model"),
                              ("list, not object", lambda c: [c], "JSON object"),
                              ('softcap: "x"', lambda c: c.update(softcap="x"), "softcap"),
                              ('"tools": "add"', lambda c: c.update(tools="add"), "'tools'")):
        ck = s.checkpoint(what.split()[0].strip('"'))
        cfg = json.loads((ck / "toolken_config.json").read_text())
        new = edit(cfg)
        (ck / "toolken_config.json").write_text(json.dumps(new if isinstance(new, list) else cfg))
        out.append((f"5 config {what}", expect(lambda: ToolkenModel.from_pretrained(ck, base=base), field)))
    out.append(("5 the checkpoint chooses the pack", pack_chosen_by_checkpoint(s, base)))
    out += interrupted_save(s)
    return out


def pack_chosen_by_checkpoint(s: Sweep, base):
    from toolken.cli import main
    from toolken.model import ToolkenModel

    marker, pack = s.root / "imported", s.root / "evil_pack.py"
    pack.write_text(f"open({str(marker)!r}, 'w').write('x')\nTOOLS = []\n")
    m = ToolkenModel(base, ["add"])
    m.extra_config = {"training": {"config": {"tools": str(pack)}}}
    ck = s.dir("evil")
    m.save_pretrained(ck)
    code = main(["generate", "--toolkens", str(ck), "hi"])
    return code == 2 and not marker.exists(), f"exit {code}, pack imported: {marker.exists()}"


def interrupted_save(s: Sweep):
    import toolken.training.trainer as T

    out = s.dir("crash")
    save = T._save_state

    def die(path, *a):
        save(path, *a)
        raise KeyboardInterrupt

    T._save_state = die
    try:
        s.train(out, epochs=2, dev_fraction=0.0)
    except KeyboardInterrupt:
        pass
    finally:
        T._save_state = save
    os.replace(out, out.with_name(f".{out.name}.old-deadbeef"))  # killed between the renames
    out.with_name(f".{out.name}.tmp-cafef00d").mkdir()
    res = s.train(out, epochs=2, dev_fraction=0.0)
    epochs = [h["epoch"] for h in res.history]
    left = sorted(p.name for p in s.root.glob(f".{out.name}.*-*"))
    return [("5 crash between renames resumes", (epochs == [1, 2], f"history epochs {epochs}")),
            ("5 .old-*/.tmp-* cleaned", (not left, f"left: {left}"))]


# ---------------------------------------------------------------- 6: messages


def message_probes(s: Sweep):
    from toolken.cli import main
    from toolken.core.data import load_jsonl
    from toolken.evaluation.loaders import load_benchmark
    from toolken.evaluation.run import EvalConfig, evaluate

    extra = s.root / "extra.jsonl"
    div = dict(GOOD, calls=[dict(GOOD["calls"][0], tool="div")])
    extra.write_text(json.dumps(GOOD) + "\n" + json.dumps(div) + "\n")
    bad8 = s.root / "bad8.jsonl"
    bad8.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\n")
    notjson, schema = s.root / "notjson.json", s.root / "schema.json"
    notjson.write_text("hello\n")
    schema.write_text('[{"q": 1}]')
    dup, nan = s.root / "dup.jsonl", s.root / "nan.jsonl"
    dup.write_text('{"text": "a", "text": "b", "calls": []}\n')
    nan.write_text(json.dumps(GOOD).replace("[1, 2]", "[NaN, 2]") + "\n")
    return [
        ("6 unknown tool in extra_train_files", expect(
            lambda: s.train(s.dir("x"), extra_train_files=f"[{extra}]"), f"{extra}:2", "'div'")),
        ("6 non-UTF-8 training data", expect(lambda: load_jsonl(bad8), f"{bad8}:2", "UTF-8")),
        ("6 non-UTF-8 eval data", expect(lambda: load_benchmark("funcqa-oh", bad8), f"{bad8}:2", "UTF-8")),
        ("6 eval file not JSON", expect(lambda: evaluate(EvalConfig("funcqa-oh", str(notjson), "cot")),
                                        str(notjson), "invalid JSON", "record is")),
        ("6 eval file wrong schema", expect(lambda: evaluate(EvalConfig("funcqa-oh", str(schema), "cot")),
                                            str(schema), "'question' missing", "record is")),
        ("6 --limit -1", (main(["eval", "funcqa-oh", "--data", str(schema), "--method", "cot",
                                "--limit", "-1"]) == 2, "exit 2 expected")),
        ("6 duplicate JSON keys", expect(lambda: load_jsonl(dup), f"{dup}:1", "duplicate key")),
        ("6 NaN argument", expect(lambda: load_jsonl(nan), f"{nan}:1", "NaN")),
    ]


# ---------------------------------------------------------------- 2: tools (child processes)

PACK = '''import os, time

from toolken.tools import tool


@tool
def probe(a: int) -> int:
    """A hostile tool."""
{body}


TOOLS = [probe]
'''

CHILD = '''
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
from toolken.core.base import load_base
from toolken.model import ToolkenModel
from toolken.tools.registry import load_pack

m = ToolkenModel(load_base("tiny-random-llama"), ["probe"])
m.attach_tools(load_pack({pack!r}))  # a pack file, as users load tools: run in a worker process
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
g = m.generate("Q: 2? A:", max_new_tokens=4, toolken_bias=1e4, max_tool_calls=1, tool_timeout=0.5)
t0 = time.process_time(); time.sleep(2.0); spin = time.process_time() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c = g.calls[0]
print("RESULT " + json.dumps({{"cpu_after": round(spin, 2), "grew_mb": round((rss - rss0) / 1024),
                               "error": c.error, "result": c.result}}))
os._exit(0)  # an abandoned thread would otherwise keep the child alive
'''


TOOLS = {
    "busy loop keeps spinning after its timeout": ("while True: pass", lambda r: r["cpu_after"] < 0.3),
    "runaway growth after its timeout": (
        "x = []\nwhile len(x) < 40: x.append(bytearray(20 << 20)); time.sleep(0.05)\nreturn 1",
        lambda r: r["grew_mb"] < 300),
    "os._exit(7) ends the process": ("os._exit(7)", lambda r: True),  # handled if output came
    "returns None": ("return None", lambda r: r["error"] is not None),
    "exception whose __str__ raises": (
        "class E(Exception):\n    def __str__(self): raise RuntimeError('no str')\nraise E()",
        lambda r: r["error"] is not None),
    "deeply nested result": (
        "x = []\nfor _ in range(100000): x = [x]\nreturn x",
        lambda r: r["error"] is not None and not r["error"].startswith("arguments")),
}


def tool_probe(body: str, ok) -> tuple[bool, str]:
    body = "\n".join("    " + line for line in body.split("\n"))
    pack = Path(tempfile.mkdtemp()) / "hostile_probe.py"
    pack.write_text(PACK.format(body=body))
    code = CHILD.format(repo=str(REPO), pack=str(pack))
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "the child did not finish in 120 s"
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    r = json.loads(lines[-1][7:]) if lines else None
    if r is None:
        return False, f"exit {p.returncode}, no output: {p.stderr.strip()[-100:]}"
    return bool(ok(r)), json.dumps(r)[:150]


def printing_tool_json(s: Sweep):
    from toolken.core.base import load_base
    from toolken.model import ToolkenModel

    pack = s.root / "noisy.py"
    pack.write_text("from toolken import tool\n\n@tool\ndef probe(a: int) -> int:\n"
                    "    \"\"\"Prints.\"\"\"\n    print('noise from the tool')\n    return a\n\nTOOLS = [probe]\n")
    ck = s.dir("noisy")
    ToolkenModel(load_base("tiny-random-llama"), ["probe"]).save_pretrained(ck)
    p = subprocess.run([sys.executable, "-m", "toolken.cli", "generate", "--toolkens", str(ck), "--tools",
                        str(pack), "--json", "--toolken-bias", "10000", "--max-new-tokens", "3", "2?"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    bad = []
    for line in p.stdout.splitlines():
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    return p.returncode == 0 and not bad, f"exit {p.returncode}; non-JSON lines: {bad[:2]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    rows = []

    def add(name, outcome):
        rows.append({"defect": name, "handled": bool(outcome[0]), "detail": outcome[1]})
        print(f"{'handled    ' if outcome[0] else 'NOT handled'}  {name}: {outcome[1]}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TOOLKEN_HOME"] = str(Path(tmp) / "home")
        s = Sweep(Path(tmp))
        add("1 crafted state.pt runs code", state_pt_runs_code(s))
        for name, (body, ok) in TOOLS.items():
            add(f"2 tool: {name}", tool_probe(body, ok))
        add("2 tool that prints corrupts --json", printing_tool_json(s))
        add("3 two trainings build one feature cache", two_builders_one_cache(s))
        add("3 two runs into one output_dir", two_runs_one_output_dir(s))
        for name, outcome in config_probes(s) + checkpoint_probes(s) + message_probes(s):
            add(name, outcome)
    n = sum(r["handled"] for r in rows)
    print(f"\nhandled {n} of {len(rows)} defects listed in issue 13")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"handled": n, "total": len(rows), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
