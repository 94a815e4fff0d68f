"""Sample training records so that no catalogue (or domain) dominates the toolken head.

    python data/balance.py --tools tools/apibench.py --by catalogue --per-group 3000 --upsample \\
        ../shared/benchmarks/apibench/apibench/torchhub_train.json:apibench \\
        outputs/apibench_synth.jsonl --out outputs/apibench_balanced.jsonl

Each input is ``PATH`` (canonical JSONL) or ``PATH:FORMAT`` (a format of
``toolken.training.convert``, e.g. ``apibench``). Records are grouped by the first call's tool:
``catalogue`` (the name's prefix before the first ".": ``hf``, ``torchhub``, ``tfhub``),
``domain`` (the tool's ``meta["domain"]`` in the pack, after its catalogue) or ``tool``;
records without a call form the group ``(none)``. Every group keeps ``--per-group`` records
(default: as many as the smallest group has): taken round-robin over its tools, each tool's
records in a seeded random order, so a cap drops records of the best-covered tools first and
keeps a record of every tool while it can. ``--upsample`` cycles through the records of a
smaller group until it has ``--per-group``. The output is canonical JSONL (``data_format:
canonical`` in a recipe); a summary of each group before and after goes to stdout.

Measured (RESULTS.md, APIBench on the test-style dev sets): 4,051 records per catalogue did not
make the head choose the right catalogue more often than today's data.
"""

from __future__ import annotations

import argparse
import random
import warnings
from collections import defaultdict
from pathlib import Path

from toolken.core.data import Record, save_jsonl
from toolken.tools.registry import load_pack
from toolken.training.convert import convert

BY = ("catalogue", "domain", "tool")
NONE = "(none)"


def group_of(record: Record, by: str, registry=None) -> str:
    """The record's group: of its first call's tool, or ``(none)`` without a call."""
    if not record.calls:
        return NONE
    tool = record.calls[0].tool
    if by == "tool":
        return tool
    catalogue = tool.split(".", 1)[0]
    if by == "catalogue":
        return catalogue
    if registry is None:
        raise ValueError("grouping by domain needs the tool pack (--tools)")
    return f"{catalogue}/{(registry[tool].meta or {}).get('domain') or '?'}"


def balance(records: list[Record], by: str, per_group: int | None = None, *, upsample: bool = False,
            seed: int = 0, registry=None) -> tuple[list[Record], dict[str, tuple[int, int]]]:
    """(the kept records, {group: (records before, after)}); module docstring. The kept
    records come group by group (groups sorted by name), in round-robin order inside one."""
    if by not in BY:
        raise ValueError(f"--by {by!r}: choose one of {', '.join(BY)}")
    groups: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[group_of(r, by, registry)][r.calls[0].tool if r.calls else NONE].append(r)
    if not groups:
        raise ValueError("no records to balance")
    sizes = {g: sum(map(len, tools.values())) for g, tools in groups.items()}
    cap = min(sizes.values()) if per_group is None else per_group
    if cap < 1:
        raise ValueError(f"--per-group {cap}: give a positive number of records per group")
    rng = random.Random(seed)
    kept, counts = [], {}
    for g in sorted(groups):
        order = _round_robin(groups[g], rng)
        take = order[:cap] if not upsample else [order[i % len(order)] for i in range(cap)]
        kept += take
        counts[g] = (sizes[g], len(take))
    return kept, counts


def _round_robin(tools: dict[str, list[Record]], rng: random.Random) -> list[Record]:
    """One record of each tool (tools in name order), then a second of each, ...; each tool's
    records shuffled with ``rng``."""
    queues = []
    for name in sorted(tools):
        q = list(tools[name])
        rng.shuffle(q)
        queues.append(q)
    out, depth = [], 0
    while any(len(q) > depth for q in queues):
        out += [q[depth] for q in queues if len(q) > depth]
        depth += 1
    return out


def read(spec: str, registry) -> list[Record]:
    path, _, fmt = spec.rpartition(":") if ":" in spec else (spec, "", "canonical")
    conv = convert(path, fmt or "canonical", registry)
    if fmt and fmt != "canonical":
        print(f"{path}: {conv.summary()}")
    return conv.records


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="PATH[:FORMAT]")
    p.add_argument("--tools", help="the tool pack (needed for --by domain and FORMAT apibench)")
    p.add_argument("--by", choices=BY, default="catalogue")
    p.add_argument("--per-group", type=int, help="records per group (default: the smallest group's)")
    p.add_argument("--upsample", action="store_true", help="repeat a smaller group's records up to --per-group")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the catalogue's repeated api_names
        registry = load_pack(a.tools) if a.tools else None
    records = [r for spec in a.inputs for r in read(spec, registry)]
    kept, counts = balance(records, a.by, a.per_group, upsample=a.upsample, seed=a.seed, registry=registry)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_jsonl(kept, a.out)
    for g, (before, after) in counts.items():
        print(f"{g}: {before} -> {after}")
    print(f"wrote {len(kept)} of {len(records)} records ({len(counts)} groups) to {a.out}")


if __name__ == "__main__":
    main()
