"""toolken: teach a frozen causal LM to use tools with one learned output row per tool.

ToolkenGPT (Hao et al., NeurIPS 2023), made exact and fast: the frozen model's hidden states
and vocabulary log-sum-exp are computed once, and only the toolken rows are trained.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "load_base": "core.base", "Base": "core.base", "DEFAULT_BASE_MODEL": "core.base",
    "ToolkenHead": "core.head", "ToolkenModel": "model",
    "Record": "core.data", "ToolCall": "core.data", "load_jsonl": "core.data",
    "label_records": "core.data",
    "Tool": "tools.tool", "tool": "tools.tool", "ToolRegistry": "tools.registry",
    "load_pack": "tools.registry", "HFModelTool": "tools.hf_tools", "load_catalog": "tools.catalog",
    "generate_batch": "generation.decode", "GenerationConfig": "generation.config",
    "TrainConfig": "training.config", "load_config": "training.config",
    "train": "training.trainer", "TrainResult": "training.trainer",
    "calibrate": "training.calibrate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):  # lazy: `import toolken` stays cheap (no torch/transformers import)
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'toolken' has no attribute {name!r}")
