"""Shared fixtures: a tiny random Llama (seconds on a CPU); no hub, no network."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "benchmarks"


def shared_path(*parts: str) -> Path:
    """A file under ../shared/benchmarks, or skip the test saying it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"benchmark data {path} is not present")
    return path


@pytest.fixture(scope="session")
def tiny_base():
    from toolken.core.base import load_base

    return load_base("tiny-random-llama")


@pytest.fixture(scope="session")
def smol_base():
    from toolken.core.base import load_base

    return load_base("SmolLM2-135M-Instruct")
