"""KAMEL tool pack: the 234 Wikidata relations of ToolkenGPT's KAMEL benchmark (Hao et al.,
2023; Kalo & Fichtel, 2022) as tools, in the row order of ToolkenGPT's ``func_dict.json``.

    from toolken.tools import load_pack
    kamel = load_pack("tools/kamel.py", knowledge="data/kamel_knowledge.json")
    kamel["P5353"].call('"FGH Elementary School"').text   # 'District 1011'

Tool name = relation id (``P1408``); description = its line in ``api_desc.json``
(``broadcasted_places(station): gets the places where ...``); one string argument per name in
that signature (``station``; ``title/name`` becomes ``title_name``).

Facts come from a knowledge file, JSON ``{relation: {subject: answer}}`` (an answer is a
string or a list of strings), made by ``data/make_kamel_knowledge.py``. A relation with
several arguments is keyed by the arguments joined with ", " (``fact_key``). A fact that is
not there (or no knowledge file at all) gives ``ok=True``, ``value=None``, text ``unknown``
and an explanation in ``meta["explanation"]``: not knowing is an answer, not a tool failure.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from toolken.tools import PackError, Tool, ToolRegistry, ToolResult

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO.parent / "shared" / "benchmarks" / "toolkengpt" / "kamel"
SIGNATURE = re.compile(r"^\s*(\w+)\(([^)]*)\)\s*:")


def fact_key(args: Sequence[Any]) -> str:
    """The knowledge-file key of a call's arguments: ``"Nike"``, ``"2019, Boston Marathon"``."""
    return ", ".join(str(a).strip() for a in args)


@dataclass
class RelationLookup:
    """The function behind one relation tool: a dictionary lookup, exact then case-blind."""

    relation: str
    params: list[str]
    facts: dict[str, Any]
    source: str | None
    _folded: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._folded = {k.casefold(): k for k in self.facts}

    def __call__(self, **kwargs: str) -> Any:
        key = fact_key(kwargs[p] for p in self.params)
        hit = key if key in self.facts else self._folded.get(key.casefold())
        if hit is not None:
            return self.facts[hit]
        why = (f"no fact for {self.relation}({key!r}) in {self.source}" if self.source else
               f"no knowledge file was given (build(knowledge=path)), so {self.relation} "
               f"knows no facts")
        return ToolResult(ok=True, value=None, text="unknown", meta={"explanation": why})


def build(knowledge: str | Path | None = None, api_desc: str | Path | None = None) -> ToolRegistry:
    """The 234 relation tools. ``api_desc`` defaults to the shared ToolkenGPT KAMEL folder;
    the row order comes from ``func_dict.json`` beside it (else api_desc's own order)."""
    api_path = Path(api_desc) if api_desc is not None else DEFAULT_DIR / "api_desc.json"
    if not api_path.is_file():
        raise PackError(f"KAMEL api_desc.json not found: {api_path} (pass build(api_desc=...))")
    descriptions = json.loads(api_path.read_text(encoding="utf-8"))
    order = _relation_order(api_path, descriptions)
    facts, source = _load_knowledge(knowledge, set(order))
    return ToolRegistry(_relation_tool(rel, descriptions[rel], facts.get(rel, {}), source)
                        for rel in order)


def _relation_order(api_path: Path, descriptions: dict[str, str]) -> list[str]:
    func_dict = api_path.with_name("func_dict.json")
    if not func_dict.is_file():
        return list(descriptions)
    index = json.loads(func_dict.read_text(encoding="utf-8"))
    order = sorted(index, key=index.__getitem__)
    undescribed = [r for r in order if r not in descriptions]
    if undescribed:
        raise PackError(f"{func_dict}: relations without a description in {api_path}: "
                        f"{undescribed[:10]}")
    return order


def _relation_tool(relation: str, description: str, facts: dict, source: str | None) -> Tool:
    m = SIGNATURE.match(description)
    if not m:
        raise PackError(f"api_desc for {relation}: {description!r} does not start with a "
                        f"signature like 'name(arg): ...'")
    params = [re.sub(r"\W+", "_", a.strip()) for a in m.group(2).split(",") if a.strip()]
    schema = {"type": "object", "properties": {p: {"type": "string"} for p in params},
              "required": params, "x-order": params, "additionalProperties": False}
    return Tool(name=relation, description=description, parameters=schema,
                fn=RelationLookup(relation, params, facts, source),
                meta={"relation": relation, "function": m.group(1)})


def _load_knowledge(path: str | Path | None, relations: set[str]) -> tuple[dict, str | None]:
    if path is None:
        return {}, None
    path = Path(path)
    if not path.is_file():
        raise PackError(f"KAMEL knowledge file not found: {path} (make one with "
                        f"data/make_kamel_knowledge.py --out {path})")
    facts = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(facts, dict) or not all(isinstance(v, dict) for v in facts.values()):
        raise PackError(f"{path}: a knowledge file is JSON {{relation: {{subject: answer}}}}")
    unknown = sorted(set(facts) - relations)
    if unknown:
        warnings.warn(f"{path}: {len(unknown)} relation(s) are not KAMEL tools and are "
                      f"ignored: {unknown[:5]}", stacklevel=3)
    return facts, str(path)
