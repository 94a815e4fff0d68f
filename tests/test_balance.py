"""data/balance.py: per-group caps, round-robin over tools, upsampling, on fresh random records."""

import importlib.util
import json
import random
from collections import Counter

import pytest

from toolken.core.data import Record, ToolCall, load_jsonl, save_jsonl
from toolken.tools import Tool
from toolken.tools.registry import ToolRegistry
from conftest import REPO, shared_path

spec = importlib.util.spec_from_file_location("balance", REPO / "data" / "balance.py")
balance_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(balance_mod)


def _records(rng: random.Random) -> list[Record]:
    out = []
    for cat, n_tools in (("hf", 7), ("torchhub", 3), ("tfhub", 5)):
        for t in range(n_tools):
            for i in range(rng.randint(1, 9)):
                text = f"{cat} {t} {i} {rng.random()} -> r"
                out.append(Record(text=text, calls=[ToolCall(tool=f"{cat}.t{t}", args=None,
                                                             start=len(text) - 1, end=len(text), result="r")]))
    out += [Record(text=f"plain {i}", calls=[]) for i in range(rng.randint(1, 4))]
    rng.shuffle(out)
    return out


def _tool(r: Record) -> str:
    return r.calls[0].tool if r.calls else "(none)"


@pytest.mark.parametrize("seed", range(5))
def test_cap_keeps_round_robin_over_tools(seed):
    rng = random.Random(seed)
    records = _records(rng)
    cap = rng.randint(1, 30)
    kept, counts = balance_mod.balance(records, "catalogue", cap, seed=seed)
    groups = Counter(_tool(r).split(".")[0] if r.calls else "(none)" for r in records)
    assert counts == {g: (n, min(n, cap)) for g, n in sorted(groups.items())}
    assert len({id(r) for r in kept}) == len(kept) and all(any(r is x for x in records) for r in kept)
    for g in groups:  # round robin: a tool has fewer kept than another only when exhausted
        have = Counter(_tool(r) for r in records if (_tool(r).split(".")[0] if r.calls else "(none)") == g)
        took = Counter(_tool(r) for r in kept if (_tool(r).split(".")[0] if r.calls else "(none)") == g)
        for a in have:
            for b in have:
                assert took[a] >= min(have[a], took[b] - 1)
    again, _ = balance_mod.balance(records, "catalogue", cap, seed=seed)
    assert [r.text for r in again] == [r.text for r in kept]


def test_default_is_the_smallest_group_and_upsample_fills_every_group():
    records = _records(random.Random(7))
    sizes = Counter(_tool(r).split(".")[0] if r.calls else "(none)" for r in records)
    _, counts = balance_mod.balance(records, "catalogue")
    assert {after for _, after in counts.values()} == {min(sizes.values())}
    cap = max(sizes.values()) + 3
    kept, counts = balance_mod.balance(records, "catalogue", cap, upsample=True)
    assert all(after == cap for _, after in counts.values())
    uses = Counter(id(r) for r in kept)
    for g, n in sizes.items():  # each record of a group used floor or ceil of cap / n times
        members = [r for r in records if (_tool(r).split(".")[0] if r.calls else "(none)") == g]
        assert {uses[id(r)] for r in members} <= {cap // n, -(-cap // n)}


def test_domain_groups_and_errors():
    rng = random.Random(3)
    records = [r for r in _records(rng) if r.calls]
    doms = {f"{c}.t{t}": rng.choice(["vision", "text"]) for c in ("hf", "torchhub", "tfhub") for t in range(7)}
    reg = ToolRegistry([Tool(name=n, description="d", fn=lambda: 0, meta={"domain": d}) for n, d in doms.items()])
    kept, counts = balance_mod.balance(records, "domain", 2, registry=reg)
    want = Counter(f"{_tool(r).split('.')[0]}/{doms[_tool(r)]}" for r in records)
    assert {g: b for g, (b, _) in counts.items()} == dict(want)
    assert Counter(f"{_tool(r).split('.')[0]}/{doms[_tool(r)]}" for r in kept) == {g: min(2, n) for g, n in want.items()}
    with pytest.raises(ValueError, match="needs the tool pack"):
        balance_mod.balance(records, "domain", 2)
    with pytest.raises(ValueError, match="--by 'hub'"):
        balance_mod.balance(records, "hub", 2)
    with pytest.raises(ValueError, match="--per-group 0"):
        balance_mod.balance(records, "tool", 0)


def test_cli_reads_apibench_and_canonical(tmp_path, capsys):
    train = shared_path("apibench", "apibench", "torchhub_train.json")
    extra = tmp_path / "synth.jsonl"
    save_jsonl([Record(text="Load it -> x", calls=[ToolCall(tool="hf.distilgpt2", args=None, start=11,
                                                             end=12, result="x")])], extra)
    out = tmp_path / "new" / "b.jsonl"  # a folder that does not exist yet
    balance_mod.main([f"{train}:apibench", str(extra), "--tools", str(REPO / "tools" / "apibench.py"),
                      "--per-group", "4", "--out", str(out)])
    kept = load_jsonl(out)
    assert Counter(r.calls[0].tool.split(".")[0] for r in kept) == {"torchhub": 4, "hf": 1}
    assert "wrote 5 of" in capsys.readouterr().out
