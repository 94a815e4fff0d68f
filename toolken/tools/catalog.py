"""Model-API catalogues as tools: Gorilla's APIBench (Patil et al., 2023) documentation
records (``{huggingface,torchhub,tensorflowhub}_api.jsonl``), one toolken per record.

    from toolken.tools.catalog import load_catalog
    cat = load_catalog(["huggingface_api.jsonl", "torchhub_api.jsonl"],
                       local_models={"sentence-transformers/all-MiniLM-L6-v2": folder})
    cat["hf.sentence-transformers.all-MiniLM-L6-v2"].meta["api_call"]
    # "SentenceTransformer('sentence-transformers/all-MiniLM-L6-v2')"

Names: ``<provider>.<api_name>``, provider ``hf`` / ``torchhub`` / ``tfhub`` (from the file
name: ``huggingface_api.jsonl`` -> ``hf``; another file -> its stem without ``_api``), and
the api_name with ``/`` -> ``.`` and any run of other characters outside ``[A-Za-z0-9_.-]``
-> ``_`` (an api_name written as a call, ``CLIPModel.from_pretrained('laion/CLIP...')``,
gives its quoted id). APIBench repeats api_names (``model_id`` 181 times in TF Hub), so
names are made unique in file order: the first record keeps the name, the next ones get
``-2``, ``-3``, ... (skipping any name already taken). Nothing is merged: every record is a
tool. The renamed records are reported (``Catalog.duplicates``, a warning, each tool's
``meta["duplicate_of"]``), or refused with ``on_duplicate="error"``.

Each tool keeps ``meta["api_call"]`` (the fixed call it stands for, never generated),
``meta["record"]`` (the whole record) and ``meta["source"]`` (``file:line``); records with
the same api_call name the first such tool in ``meta["same_api_call_as"]``. Calling a
HuggingFace record runs its model through ``HFModelTool`` when ``local_models`` maps its hub
id to a local folder and its domain is a supported task; otherwise, and for Torch Hub and TF
Hub records, the call gives ``ok=False`` saying why. A record is a HuggingFace one when it
comes from ``huggingface_api.jsonl`` or its ``framework`` says "Hugging Face".
"""

from __future__ import annotations

import difflib
import json
import os
import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from ..core.data import json_lines
from .hf_tools import SUPPORTED_TASKS, HFModelTool, task_parameters
from .registry import ToolRegistry
from .tool import Tool, ToolError, ToolResult

__all__ = ["Catalog", "CatalogError", "load_catalog", "read_catalog", "hub_ids", "domain_task",
           "base_name", "unique_names", "is_hf"]

PROVIDERS = {"huggingface": "hf", "torchhub": "torchhub", "tensorflowhub": "tfhub"}
AREAS = ("Natural Language Processing ", "Computer Vision ", "Multimodal ", "Audio ",
         "Tabular ", "Reinforcement Learning ")
INPUT_SCHEMA = {"type": "object", "properties": {"input": {
    "type": "string", "description": "the input: text, or a path or URL for other media"}},
    "required": ["input"], "x-order": ["input"]}
_HUB_ID = re.compile(r"""(?:['"]|model=)([A-Za-z0-9][\w.\-]*/[\w.\-]+)""")


class CatalogError(ToolError):
    """A catalogue file cannot be read (the message gives file:line) or is inconsistent."""


class Catalog(ToolRegistry):
    """A ToolRegistry that also reports what loading found.

    ``duplicates``: base name -> the tool names its records got (groups of 2 or more);
    ``bad_lines``: ``"file:line: why"`` for each skipped line (``on_bad_line="collect"``).
    """

    def __init__(self, tools: Iterable[Tool] = (), duplicates: dict | None = None,
                 bad_lines: list[str] | None = None) -> None:
        super().__init__(tools)
        self.duplicates: dict[str, list[str]] = dict(duplicates or {})
        self.bad_lines: list[str] = list(bad_lines or [])

    def report(self) -> str:
        """One line per provider: records, repeated api_names, skipped lines."""
        by_provider: dict[str, int] = defaultdict(int)
        for t in self:
            by_provider[t.meta["provider"]] += 1
        lines = []
        for provider, n in by_provider.items():
            groups = [g for b, g in self.duplicates.items() if b.startswith(provider + ".")]
            renamed = sum(len(g) - 1 for g in groups)
            lines.append(f"{provider}: {n} tools; {len(groups)} names repeat, {renamed} records "
                         f"renamed with a -N suffix")
        if self.bad_lines:
            lines.append(f"{len(self.bad_lines)} bad line(s) skipped: {self.bad_lines[0]}, ...")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- reading
def read_catalog(path: str | os.PathLike, on_bad_line: str = "raise",
                 bad_lines: list[str] | None = None) -> list[tuple[str, dict]]:
    """``[(file:line, record)]`` of one JSON-lines catalogue. A line that is not a JSON
    object with string ``api_name`` and ``api_call`` raises CatalogError naming every bad
    line as file:line (``on_bad_line="raise"``) or is appended to ``bad_lines`` and skipped
    (``"collect"``). Blank lines are skipped."""
    if on_bad_line not in ("raise", "collect"):
        raise ValueError(f"on_bad_line must be 'raise' or 'collect', got {on_bad_line!r}")
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalogue file not found: {path}")
    records, bad = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, record in json_lines(f):
            where = f"{path}:{lineno}"
            if isinstance(record, json.JSONDecodeError):
                bad.append(f"{where}: not valid JSON ({record.msg} at column {record.colno})")
                continue
            if not isinstance(record, dict) or not all(
                    isinstance(record.get(k), str) and record[k].strip()
                    for k in ("api_name", "api_call")):
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                bad.append(f"{where}: a record must be an object with non-empty string "
                           f"api_name and api_call, got {keys}")
                continue
            records.append((where, record))
    if bad and on_bad_line == "raise":
        shown = "\n  ".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10
                                          else "")
        raise CatalogError(f"{len(bad)} bad line(s) in catalogue {path}:\n  {shown}")
    if bad_lines is not None:
        bad_lines.extend(bad)
    return records


def provider_of(path: str | os.PathLike) -> str:
    stem = Path(path).stem.lower().removesuffix("_api")
    return PROVIDERS.get(stem) or re.sub(r"[^a-z0-9_\-]+", "_", stem).strip("_") or "api"


def base_name(provider: str, record: dict) -> str:
    """``<provider>.<sanitised api_name>``, valid under the registry's name rule."""
    raw = record["api_name"].strip()
    if "(" in raw:  # an api_name written as a call: take its quoted id
        quoted = re.search(r"""['"]([^'"]+)['"]""", raw)
        raw = quoted.group(1) if quoted else raw
    clean = re.sub(r"[^A-Za-z0-9_.\-]+", "_", raw.replace("/", ".")).strip("_.-")
    return f"{provider}.{clean or 'api'}"


def unique_names(bases: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """First occurrence keeps its name, later ones get -2, -3, ... (never a taken name).
    Returns (names, {base: names given to its records} for repeated bases)."""
    taken, names = set(bases), []
    next_k: dict[str, int] = defaultdict(lambda: 2)
    groups: dict[str, list[str]] = defaultdict(list)
    for b in bases:
        if not groups[b]:
            name = b
        else:
            while f"{b}-{next_k[b]}" in taken:
                next_k[b] += 1
            name = f"{b}-{next_k[b]}"
            taken.add(name)
        groups[b].append(name)
        names.append(name)
    return names, {b: g for b, g in groups.items() if len(g) > 1}


def hub_ids(record: dict) -> list[str]:
    """Hugging Face hub ids a record names: its api_name if it looks like one, then every
    ``'org/name'`` (or ``model=org/name``) in its api_call."""
    ids = [record["api_name"]] if re.fullmatch(r"[\w.\-]+/[\w.\-]+", record["api_name"]) else []
    return ids + [i for i in _HUB_ID.findall(record["api_call"]) if i not in ids]


def is_hf(provider: str, record: dict) -> bool:
    """A HuggingFace record: from ``huggingface_api.jsonl`` or framework "Hugging Face ..."."""
    return provider == "hf" or "hugging face" in str(record.get("framework", "")).lower()


def domain_task(domain: str) -> str:
    """``"Natural Language Processing Sentence Similarity"`` -> ``"sentence-similarity"``."""
    for area in AREAS:
        if domain.startswith(area):
            domain = domain[len(area):]
            break
    return re.sub(r"\s+", "-", domain.strip().lower())


# ---------------------------------------------------------------------------- tools
class CatalogAPI:
    """The function behind a catalogue tool: runs the record's model when it is local."""

    def __init__(self, name: str, provider: str, record: dict, hub_id: str | None,
                 task: str | None, folder: str | None) -> None:
        self.name, self.provider, self.record, self.hub_id = name, provider, record, hub_id
        self.task, self.folder = task, folder
        self._tool: Tool | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tool": None}

    def __call__(self, **kwargs: Any) -> ToolResult:
        call = self.record["api_call"]
        if not is_hf(self.provider, self.record):
            framework = self.record.get("framework") or self.provider
            return ToolResult.failure(f"{call}: a {framework} API; toolken documents it but "
                                      f"cannot run it (only local HuggingFace models run)")
        if self.folder is None:
            return ToolResult.failure(
                f"model {self.hub_id or self.record['api_name']!r} is not available locally "
                f"({call}); pass local_models={{hub id: folder}} to run it")
        if self.task not in SUPPORTED_TASKS:
            return ToolResult.failure(f"model {self.hub_id!r}: domain {self.record['domain']!r} "
                                      f"is not a task HFModelTool runs ({list(SUPPORTED_TASKS)})")
        if self._tool is None:
            self._tool = HFModelTool(self.folder, task=self.task, name=self.name)
        return self._tool.call(kwargs)


def _description(record: dict) -> str:
    domain = str(record.get("domain") or "").strip()
    func = record.get("functionality") or ""
    func = ", ".join(map(str, func)) if isinstance(func, list) else str(func).strip()
    head = f"{domain} ({func})" if func and func.lower() not in domain.lower() else domain
    text = str(record.get("description") or "").strip()
    return f"{head}: {text}" if head and text else head or text or record["api_name"]


def _check_local_models(local: dict, hf_ids: set[str]) -> None:
    for key in local:
        if key not in hf_ids:
            near = difflib.get_close_matches(key, sorted(hf_ids), n=3)
            raise CatalogError(f"local_models key {key!r} is the hub id of no HuggingFace "
                               f"record in the catalogue" + (f"; close: {near}" if near else ""))


def load_catalog(paths: str | os.PathLike | Iterable[str | os.PathLike],
                 local_models: dict[str, str] | None = None, *, on_bad_line: str = "raise",
                 on_duplicate: str = "warn") -> Catalog:
    """Every record of the catalogue files, in file order, as a Catalog of tools.

    ``local_models``: hub id -> local folder for the HuggingFace records that can run here
    (a key that no record names is an error). ``on_bad_line``: "raise" (CatalogError listing
    file:line) or "collect" (skip, warn, keep in ``Catalog.bad_lines``). ``on_duplicate``:
    "warn" (suffix, warn once), "suffix" (suffix quietly; still in ``Catalog.duplicates``)
    or "error" (CatalogError listing the repeated names and where they are).
    """
    if on_duplicate not in ("warn", "suffix", "error"):
        raise ValueError(f"on_duplicate must be 'warn', 'suffix' or 'error', got {on_duplicate!r}")
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    entries, bad = [], []
    for path in paths:
        provider = provider_of(path)
        entries += [(provider, where, rec) for where, rec in read_catalog(path, on_bad_line, bad)]
    if bad:
        warnings.warn(f"load_catalog: skipped {len(bad)} bad line(s): {bad[0]}, ...", stacklevel=2)
    names, duplicates = unique_names([base_name(p, r) for p, _, r in entries])
    where_of = dict(zip(names, (w for _, w, _ in entries)))
    if duplicates:
        renamed = sum(len(g) - 1 for g in duplicates.values())
        example = next(iter(duplicates.items()))
        message = (f"{len(duplicates)} tool name(s) repeat across {renamed + len(duplicates)} "
                   f"records; {renamed} renamed with a -N suffix, e.g. {example[0]!r} at "
                   f"{', '.join(where_of[n] for n in example[1][:3])}")
        if on_duplicate == "error":
            listing = "\n  ".join(f"{b}: {', '.join(where_of[n] for n in g)}"
                                  for b, g in list(duplicates.items())[:20])
            raise CatalogError(f"{message}\n  {listing}")
        if on_duplicate == "warn":
            warnings.warn(f"load_catalog: {message} (see Catalog.duplicates)", stacklevel=2)
    local = dict(local_models or {})
    _check_local_models(local, {i for p, _, r in entries if is_hf(p, r) for i in hub_ids(r)})
    duplicate_of = {n: g[0] for g in duplicates.values() for n in g[1:]}
    first_call: dict[tuple[str, str], str] = {}  # (provider, api_call) -> first tool name
    tools = [_make_tool(name, provider, where, record, local, first_call, duplicate_of.get(name))
             for name, (provider, where, record) in zip(names, entries)]
    return Catalog(tools, duplicates=duplicates, bad_lines=bad)


def _make_tool(name: str, provider: str, where: str, record: dict, local: dict,
               first_call: dict, duplicate_of: str | None) -> Tool:
    hf = is_hf(provider, record)
    ids = hub_ids(record) if hf else []
    hub_id = next((i for i in ids if i in local), ids[0] if ids else None)
    task = domain_task(str(record.get("domain", ""))) if hf else None
    runnable = task in SUPPORTED_TASKS
    call = record["api_call"]
    same = first_call.setdefault((provider, call), name)
    meta = {"provider": provider, "api_name": record["api_name"], "api_call": call,
            "domain": record.get("domain"), "source": where, "record": record,
            "hub_id": hub_id, "task": task, "local_model": local.get(hub_id)}
    if duplicate_of is not None:
        meta["duplicate_of"] = duplicate_of
    if same != name:
        meta["same_api_call_as"] = same
    return Tool(name=name, description=_description(record),
                parameters=task_parameters(task) if runnable else _input_schema(),
                fn=CatalogAPI(name, provider, record, hub_id, task, local.get(hub_id)), meta=meta)


def _input_schema() -> dict:
    return json.loads(json.dumps(INPUT_SCHEMA))
