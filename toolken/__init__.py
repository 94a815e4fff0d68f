"""toolken: teach a frozen causal LM to use tools with one learned output row per tool.

ToolkenGPT (Hao et al., NeurIPS 2023), made exact and fast: the frozen model's hidden states
and vocabulary log-sum-exp are computed once, and only the toolken rows are trained.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "load_base": "base", "Base": "base", "DEFAULT_BASE_MODEL": "base",
    "ToolkenHead": "head", "ToolkenModel": "model",
    "TrainConfig": "config", "load_config": "config",
    "train": "trainer", "TrainResult": "trainer",
    "Record": "data", "ToolCall": "data", "load_jsonl": "data", "label_records": "data",
    "Tool": "tools", "tool": "tools", "ToolRegistry": "registry", "load_pack": "registry",
    "HFModelTool": "hf_tools", "load_catalog": "catalog",
    "generate_batch": "batch", "calibrate": "calibrate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):  # lazy: `import toolken` stays cheap (no torch/transformers import)
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'toolken' has no attribute {name!r}")
