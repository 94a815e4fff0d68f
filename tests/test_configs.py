"""Every recipe in configs/ loads, names its command first, and points at data that exists."""

from pathlib import Path

import pytest
import yaml

from toolken.training.config import extra_files, load_config
from conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads_and_documents_its_command(path, monkeypatch):
    monkeypatch.chdir(REPO)
    first = path.read_text().splitlines()
    assert any("toolken train" in line or "accelerate launch" in line for line in first[:4]), \
        f"{path.name} should begin with the command that runs it"
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= set(cfg.__dataclass_fields__)
    if not Path(cfg.train_file).exists():
        pytest.skip(f"{cfg.train_file} is not present here")
    for extra, _ in extra_files(cfg):
        if not Path(extra).exists():
            pytest.skip(f"{extra} is not present here (the recipe's header says how to make it)")
    if isinstance(cfg.tools, str):
        assert Path(cfg.tools).exists()
    if cfg.train_prompt:
        assert Path(cfg.train_prompt).exists(), f"{path.name}: train_prompt {cfg.train_prompt} is missing"
