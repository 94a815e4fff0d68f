"""APIBench scoring (Gorilla, Patil et al., 2023): match a produced API call against the
API documentation (``api/{huggingface,torchhub,tensorflowhub}_api.jsonl``).

    apis = ApiIndex.from_file("huggingface_api.jsonl")
    apis.match("<<<api_call>>>: AutoModel.from_pretrained('YituTech/conv-bert-base')").record

Identity of an API. A produced call is parsed with ``ast.parse`` (parsed, never executed),
and the identity is read from each call's arguments, as Gorilla's AST scorer does:

- HuggingFace: the model id: ``pipeline(task, model=...)``'s model, else the
  ``pretrained_model_name_or_path`` (or ``repo_id``, ``model``, ...) keyword or the first
  string argument of any call (``from_pretrained``, ``SentenceTransformer``, ``YOLO`` ...).
- TorchHub: ``repo/model`` of ``torch.hub.load(repo_or_dir, model)``, positional or keyword,
  a ``:tag`` on the repo ignored; then ``repo`` alone (two documentation records, fairseq and
  pytorch-transformers, name only a repo).
- TF Hub: the URL given to ``hub.KerasLayer`` / ``hub.load`` (also nested, as in
  ``tf.keras.Sequential([hub.KerasLayer(url)])``), query and trailing ``/`` dropped.

Matching. A generation is cut to what follows ``<<<api_call>>>:`` on its line when present
(Gorilla's output format); if the text does not parse as a whole, each line is parsed alone.
The first identity, in source order, that some documentation record has is the match.
Records sharing an identity are one API carrying all their domains (TF Hub lists
universal-sentence-encoder/4 under 5 domains; 29 HuggingFace records are
``joblib.load('model.joblib')``); the first one names it.

Documentation calls are read leniently (:func:`doc_key`), because a few are not Python (a
trailing ``.``, shell commands, MEAL-V2's ``repo_or_dir=..., 'meal_v2', model=...``);
produced calls strictly: one that does not parse is a hallucination, unless it is a
documented call copied verbatim (spaces, an assignment and a trailing ``.`` aside), so that
copying a broken documented call (as a toolken that inserts it does) still matches.

Metrics (:func:`score_api`): *hallucination*: no documentation record matches;
*domain accuracy* (Gorilla's "accuracy"): the gold ``domain`` is among the matched API's
domains; *exact API accuracy*: the matched identity is the gold record's identity (so an
exact match is always domain-correct).
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..core.data import DataError

__all__ = ["PROVIDERS", "ApiIndex", "ApiMatch", "extract_api_call", "call_keys", "doc_key",
           "score_api"]

PROVIDERS = ("huggingface", "torchhub", "tensorflowhub")
_API_CALL = re.compile(r"<<<\s*api_call\s*>>>\s*:?\s*(.*?)(?=<<<|\n|$)", re.S)
_HF_ARGS = ("pretrained_model_name_or_path", "model_name_or_path", "repo_id", "model_id",
            "model", "model_name", "source")


def extract_api_call(text: str) -> str:
    """The call part of a generation: what follows ``<<<api_call>>>:`` on its line, if
    present, else the whole text without Markdown code fences."""
    m = _API_CALL.search(text)
    if m:
        return m.group(1).strip()
    lines = text.splitlines()
    return "\n".join(s for s in lines if not s.strip().startswith("```")).strip()


def _statements(code: str) -> list[ast.stmt] | None:
    """Parsed statements of ``code``; if it does not parse, those of each line that does;
    None if nothing parses."""
    try:
        return ast.parse(code.strip()).body
    except (SyntaxError, ValueError):
        pass
    stmts = []
    for line in code.splitlines():
        try:
            stmts += ast.parse(line.strip()).body
        except (SyntaxError, ValueError):
            continue
    return stmts or None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _arg(call: ast.Call, pos: int, names: Sequence[str]) -> str | None:
    """A string argument, by keyword (first of ``names`` present) or else by position."""
    for name in names:
        for kw in call.keywords:
            if kw.arg == name:
                v = kw.value
                return v.value.strip() if isinstance(v, ast.Constant) and isinstance(
                    v.value, str) else None
    if len(call.args) > pos and isinstance(call.args[pos], ast.Constant):
        v = call.args[pos].value
        return v.strip() if isinstance(v, str) else None
    return None


def _norm_url(url: str) -> str:
    return re.split(r"[?#]", url.strip(), maxsplit=1)[0].rstrip("/")


def _keys(provider: str, call: ast.Call) -> list[str]:
    """Identities one call names, most specific first (TorchHub: repo/model, then repo)."""
    name = _dotted(call.func)
    last = name.rsplit(".", 1)[-1]
    if provider == "huggingface":
        key = _arg(call, 1, ("model",)) if last == "pipeline" else _arg(call, 0, _HF_ARGS)
        return [key] if key else []
    if provider == "torchhub":
        if not name.endswith("hub.load"):
            return []
        repo = _arg(call, 0, ("repo_or_dir", "github", "repo"))
        model = _arg(call, 1, ("model",))
        repo = repo.split(":", 1)[0] if repo else None
        return ([f"{repo}/{model}"] if repo and model else []) + ([repo] if repo else [])
    if provider == "tensorflowhub":
        if last not in ("KerasLayer", "load", "Module", "resolve"):
            return []
        url = _arg(call, 0, ("handle", "module_handle", "model_url"))
        return [_norm_url(url)] if url and re.match(r"https?://", url) else []
    raise ValueError(f"unknown provider {provider!r}; choose one of: {', '.join(PROVIDERS)}")


def call_keys(provider: str, code: str) -> list[str] | None:
    """The API identities named by the calls in ``code``, in order; None if it does not
    parse. A TorchHub call gives ``repo/model`` then ``repo`` (two documentation records,
    fairseq and pytorch-transformers, name a repo only)."""
    stmts = _statements(code)
    if stmts is None:
        return None
    keys: list[str] = []
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                keys += [k for k in _keys(provider, node) if k not in keys]
    return keys


_DOC_FALLBACK = {  # for documentation calls that are not Python (a few records)
    "huggingface": re.compile(r"([A-Za-z0-9][\w.\-]*/[\w.\-]+)"),
    "torchhub": re.compile(r"repo_or_dir\s*=\s*['\"]([^'\"]+)['\"].*?"
                           r"model\s*=\s*['\"]([^'\"]+)['\"]", re.S),
    "tensorflowhub": re.compile(r"(https?://[^\s'\")]+)"),
}


def doc_key(provider: str, api_call: str, api_name: str | None = None) -> str | None:
    """The identity of a documentation (or gold) record; lenient, because some recorded
    calls are not valid Python (a trailing ``.``, a shell command, MEAL-V2's keyword order).
    Without any identity in the call, a HuggingFace record falls back on its api_name."""
    for code in (api_call, api_call.strip().rstrip(".")):
        keys = call_keys(provider, code)
        if keys:
            return keys[0]
    m = _DOC_FALLBACK[provider].search(api_call)
    if m:
        if provider == "torchhub":
            return f"{m.group(1).split(':', 1)[0]}/{m.group(2)}"
        return _norm_url(m.group(1)) if provider == "tensorflowhub" else m.group(1)
    return api_name.strip() if provider == "huggingface" and api_name else None


def _verbatim(call: str) -> str:
    """A call reduced for verbatim comparison: no assignment, spaces or trailing dot."""
    call = re.sub(r"^\s*[A-Za-z_]\w*\s*=(?!=)", "", call)
    return re.sub(r"\s+", "", call).rstrip(".")


@dataclass
class ApiMatch:
    parsed: bool  # the produced call parsed (as a whole or line by line)
    key: str | None  # identity of the matched API, else the first identity found
    records: list[dict]  # documentation records with that identity; [] = hallucination

    @property
    def record(self) -> dict | None:
        return self.records[0] if self.records else None


class ApiIndex:
    """The API documentation of one provider, indexed by identity.

    Records sharing an identity are one API (TF Hub lists universal-sentence-encoder/4
    under 5 domains): a match carries all of them, the first one names it."""

    def __init__(self, provider: str, records: Iterable[dict]):
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; choose one of: "
                             f"{', '.join(PROVIDERS)}")
        self.provider, self.records = provider, list(records)
        self.by_key: dict[str, list[int]] = {}
        self.by_call: dict[str, str] = {}  # verbatim api_call -> identity
        self.unkeyed: list[int] = []  # records with no identity: matched only verbatim
        for i, r in enumerate(self.records):
            call = str(r.get("api_call", ""))
            k = doc_key(provider, call, r.get("api_name"))
            if k is None:
                self.unkeyed.append(i)
                k = f"#{i}"  # its own identity, reachable only verbatim
            self.by_key.setdefault(k, []).append(i)
            self.by_call.setdefault(_verbatim(call), k)

    @classmethod
    def from_file(cls, path: str | os.PathLike, provider: str | None = None) -> "ApiIndex":
        """Read ``<provider>_api.jsonl`` (provider taken from the file name if not given)."""
        path = Path(path)
        provider = provider or path.stem.removesuffix("_api")
        records = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: invalid JSON ({e.msg})") from None
        return cls(provider, records)

    def match(self, text: str) -> ApiMatch:
        """Match a produced call (or a generation holding ``<<<api_call>>>: ...``)."""
        call = extract_api_call(text)
        keys = call_keys(self.provider, call)
        for k in keys or []:
            if k in self.by_key:
                return ApiMatch(True, k, self._records(k))
        k = self.by_call.get(_verbatim(call)) if call else None
        if k is not None:  # a documented call copied verbatim, valid Python or not
            return ApiMatch(keys is not None, k, self._records(k))
        return ApiMatch(keys is not None, keys[0] if keys else None, [])

    def identity(self, api_call: str, api_name: str | None = None) -> str | None:
        """The identity of a gold record's call (as for documentation records)."""
        return doc_key(self.provider, api_call, api_name) or self.by_call.get(_verbatim(api_call))

    def _records(self, key: str) -> list[dict]:
        return [self.records[i] for i in self.by_key[key]]


def score_api(prediction: str, gold: dict, apis: ApiIndex) -> dict:
    """Score one generation against a gold record ``{"api_call", "api_name", "domain"}``:
    ``{"correct" (domain), "hallucination", "exact", "parsed", "key", "matched"}``."""
    m = apis.match(prediction)
    gold_key = apis.identity(gold["api_call"], gold.get("api_name"))
    matched = bool(m.records)
    return {"correct": matched and any(r.get("domain") == gold["domain"] for r in m.records),
            "hallucination": not matched,
            "exact": matched and gold_key is not None and m.key == gold_key,
            "parsed": m.parsed, "key": m.key,
            "matched": m.record.get("api_name") if matched else None}
