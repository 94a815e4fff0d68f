"""``ToolkenModel``: a frozen base causal LM plus a toolken head.

Logits are ``cat(lm_head(h), head(h))`` of shape (B, T, V + K); id V + i is tool i.
Saved and loaded like a PEFT adapter::

    model = ToolkenModel.from_pretrained("outputs/funcqa")            # base named in the folder
    model = ToolkenModel.from_pretrained("outputs/funcqa", base=base)  # an already loaded base
    model.save_pretrained("outputs/copy")
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import os
from pathlib import Path

import torch
from torch import nn

from .core.base import Base, load_base
from .core.card import model_card
from .core.checkpoint import (CARD_NAME, CONFIG_NAME, PACK_NAME, WEIGHTS_NAME, check_base,
                              load_checkpoint, save_checkpoint)
from .core.data import Record, load_jsonl, record_lines
from .core.head import INITS, ToolkenHead, base_softcap, init_from_embeddings
from .core.predictor import has_predictor, load_predictor
from .generation.config import GENERATION_CONFIG_NAME, GenerationConfig
from .generation.decode import Generation, generate, generate_batch, stream
from .generation.demos import DemoPool
from .generation.prefix import PrefixStore
from .generation.tool_mode import ToolMode
from .tools.registry import ToolRegistry, load_pack

DEMOS_NAME = "toolken_demos.jsonl"


class ToolkenModel(nn.Module):
    def __init__(self, base: Base, tools: list[str], head: ToolkenHead | None = None,
                 bias: bool = False, manifest: list[dict] | None = None,
                 generation_config: GenerationConfig | None = None):
        super().__init__()
        if len(set(tools)) != len(tools):
            dup = sorted({t for t in tools if tools.count(t) > 1})
            raise ValueError(f"duplicate tool names: {dup}")
        self.base = base
        self.tools = list(tools)
        self.head = head or ToolkenHead(len(tools), base.hidden_size, bias=bias,
                                        softcap=base_softcap(base.model.config))
        self.head.to(base.device)
        self.generation_config = generation_config or GenerationConfig()  # generation_config.json
        self.manifest = manifest  # tool descriptions/schemas (set when built from a registry)
        self.extra_config: dict = {}
        self.registry = None  # the tools' callables (attach_tools)
        self.pack_file: Path | None = None  # the pack's file, copied at save (remember_pack)
        self.tool_pack: dict | None = None  # where it came from: {"source": absolute path, ...}
        self.demo_records: list[Record] | None = None  # retrieved demos' pool (toolken_demos.jsonl)
        self.prefix_store = PrefixStore()  # recent prompts' KV caches (the base is frozen)
        self._tool_modes: dict = {}  # (registry, tool-mode options) -> ToolMode
        self._demo_pools: dict = {}  # (registry, retriever) -> DemoPool
        self._digit_ids: torch.Tensor | None = None
        self.predictor = None  # description -> toolken map (core.predictor), if fitted

    # ------------------------------------------------------------------ shapes and logits
    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size

    @property
    def tokenizer(self):
        return self.base.tokenizer

    def toolken_id(self, tool: str) -> int:
        return self.vocab_size + self.tools.index(tool)

    def logits_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """(..., d) final hidden states -> (..., V + K) logits, fp32."""
        zv = self.base.model.get_output_embeddings()(h).float()
        softcap = self.head.softcap
        if softcap:
            zv = softcap * torch.tanh(zv / softcap)
        return torch.cat([zv, self.head(h)], dim=-1)

    def decode(self, input_ids, cache=None, **kw):
        """The frozen decoder without its LM head over ``input_ids``, continuing ``cache`` (a
        transformers ``Cache``, extended in place); returns its ``BaseModelOutputWithPast``."""
        decoder = self.base.model.base_model
        return decoder(input_ids=input_ids, use_cache=True, **{_cache_arg(type(decoder)): cache}, **kw)

    def forward(self, input_ids, attention_mask=None, past_key_values=None, **kw):
        """Returns (logits (B, T, V + K), past_key_values)."""
        out = self.decode(input_ids, past_key_values, attention_mask=attention_mask, **kw)
        return self.logits_from_hidden(out.last_hidden_state), out.past_key_values

    def print_trainable_parameters(self) -> None:
        trainable = sum(p.numel() for p in self.head.parameters())
        total = trainable + sum(p.numel() for p in self.base.model.parameters())
        print(f"trainable params: {trainable:,} || all params: {total:,} "
              f"|| trainable%: {100 * trainable / total:.4f}")

    # ------------------------------------------------------------------ tools
    def add_tools(self, tools: list, init: str = "random", texts: list[str] | None = None,
                  guard: bool = True) -> range:
        """Append rows for new tools (old rows untouched). Returns the new rows' indices.

        ``tools``: names, ``Tool`` objects or manifest dicts. ``init``: random | embedding (the
        mean input embedding of ``texts``, default ``name: description``) | predicted (the
        checkpoint's description -> toolken map, ``self.predictor``, reads each tool's text;
        with ``guard`` and a predictor that keeps one, each new row also gets a bias that keeps
        it from winning the trained tools' questions: ``ToolkenPredictor.guard_offsets``; the
        head gains a bias if it had none, zero for the old rows)."""
        names = [t if isinstance(t, str) else t["name"] if isinstance(t, dict) else t.name
                 for t in tools]
        if init not in INITS:
            raise ValueError(f"init={init!r} is not one of {list(INITS)}")
        if init == "predicted" and self.predictor is None:
            raise ValueError("init='predicted' needs a toolken predictor: this checkpoint has none "
                             "(`toolken fit-predictor --toolkens DIR` fits one)")
        clash = sorted(set(names) & set(self.tools))
        if clash:
            raise ValueError(f"tools already in the checkpoint: {clash}")
        start = len(self.tools)
        predicted = offsets = None
        if init == "predicted" and names:
            predicted = self.predictor.predict(self.base, tools)
            if guard and self.predictor.has_guard:
                offsets = self.predictor.guard_offsets(predicted, self.head, self.toolken_bias)
        self.head.append(len(names))
        self.tools += list(names)
        rows = range(start, len(self.tools))
        if init == "embedding":
            texts = texts or [t if isinstance(t, str) else f"{n}: {_description(t)}"
                              for n, t in zip(names, tools)]
            init_from_embeddings(self.head, self.base, texts, rows)
        elif predicted is not None:
            with torch.no_grad():
                self.head.weight[start:] = predicted.to(self.head.weight)
                if offsets is not None and bool((offsets != 0).any()):
                    if self.head.bias is None:
                        self.head.bias = nn.Parameter(self.head.weight.new_zeros(len(self.tools)))
                    self.head.bias[start:] = offsets.to(self.head.bias)
        return rows

    def attach_tools(self, pack, **options) -> "ToolkenModel":
        """Attach callables from a pack (a path, module or ToolRegistry) whose tools are this
        checkpoint's, in the same order; a pack that differs is refused, naming the tools.
        ``options`` go to the pack's ``build()``; by default the ones the checkpoint's recipe
        trained with (``tool_options``, e.g. ``catalogues=[...]`` of tools/apibench.py)."""
        options = options or self.recipe_tool_options()
        registry = pack if isinstance(pack, ToolRegistry) else load_pack(pack, **options)
        registry.check_same(self.tools, what="the checkpoint")
        self.registry = registry
        if not isinstance(pack, ToolRegistry):
            self.remember_pack(pack)
        return self

    def recipe_tool_options(self) -> dict:
        """The options of the pack's ``build()`` the checkpoint's recipe trained with
        (``tool_options``; {} when none were stored)."""
        stored = self.extra_config.get("training", {}).get("config", {}).get("tool_options")
        return dict(stored) if isinstance(stored, dict) else {}

    def tools_openai(self) -> list[dict]:
        """The checkpoint's tools in the OpenAI function schema, row order (from the attached
        pack if any, else the stored manifest); for a server's ``tools`` or
        ``tokenizer.apply_chat_template(tools=...)``."""
        if self.registry is not None:
            return self.registry.to_openai()
        if not self.manifest:
            raise ValueError("this checkpoint stores no tool manifest (names only: "
                             f"{self.tools[:5]}...); attach the pack with attach_tools(PACK)")
        return ToolRegistry.from_manifest(self.manifest).to_openai()

    def missing_pack(self, where: str) -> str:
        """The error for a call without a tool pack: the checkpoint never chooses which code is
        imported (it is data; see README, Security), but it may say which pack it was trained with."""
        named = (self.tool_pack or {}).get("source") or (
            self.extra_config.get("training", {}).get("config", {}).get("tools"))
        hint = (f"; {where} was trained with the pack {named!r}: pass --tools {named} if you "
                f"trust that file" if isinstance(named, str) else "")
        if (Path(where) / PACK_NAME).is_file():
            hint += f"; --tools checkpoint runs the copy of it saved in {where} ({PACK_NAME})"
        return (f"give the tool pack with --tools PACK.py (a checkpoint is data and never "
                f"chooses which code runs{hint})")

    def tool_mode(self, registry, config: GenerationConfig) -> ToolMode:
        """The ``ToolMode`` (per-tool prompt caches) kept across calls for a registry and the
        tool-mode fields of a generation config."""
        key = (id(registry), config.tool_mode_key)
        if key not in self._tool_modes or self._tool_modes[key].registry is not registry:
            self._tool_modes[key] = ToolMode(self, registry, config)
        return self._tool_modes[key]

    def demo_pool(self, registry, retriever: str = "bm25") -> DemoPool:
        """The pool of retrieved demos: the checkpoint's ``toolken_demos.jsonl`` (its training
        records minus dev), kept across calls."""
        if self.demo_records is None:
            raise ValueError("retrieved demos (arg_demos, prompt_demos) need the checkpoint's demo "
                             "pool, toolken_demos.jsonl, and this model has none (train it with "
                             "toolken train, or set model.demo_records)")
        key = (id(registry), retriever)
        if key not in self._demo_pools:
            self._demo_pools[key] = DemoPool(self.demo_records, registry, retriever, self)
        return self._demo_pools[key]

    def digit_token_ids(self) -> torch.Tensor:
        """The ids of the vocabulary tokens that start with a digit (``close_results``)."""
        if self._digit_ids is None:
            n = min(len(self.tokenizer), self.vocab_size)
            pieces = self.tokenizer.convert_ids_to_tokens(list(range(n)))
            self._digit_ids = torch.tensor([i for i, p in enumerate(pieces) if p and p[0].isdigit()],
                                           dtype=torch.long)
        return self._digit_ids

    @property
    def toolken_bias(self) -> float:
        """The bias added to toolken logits at generation (``generation_config.toolken_bias``)."""
        return self.generation_config.toolken_bias

    @toolken_bias.setter
    def toolken_bias(self, value: float) -> None:
        self.generation_config = self.generation_config.replace(toolken_bias=float(value))

    def generate(self, prompt, config: GenerationConfig | None = None, *, question: str | None = None,
                 **overrides) -> Generation:
        """Generate with tools (``toolken.generation.decode``): ``config`` (default: this
        checkpoint's ``generation_config``) with ``overrides`` replacing their fields."""
        return generate(self, prompt, config, question=question, **overrides)

    def stream(self, prompt, config: GenerationConfig | None = None, *, question: str | None = None,
               **overrides):
        """Like ``generate``, yielding ``Event``s as they happen, then the ``Generation``."""
        return stream(self, prompt, config, question=question, **overrides)

    def generate_batch(self, prompts: list, config: GenerationConfig | None = None, *,
                       questions: list | None = None, progress: bool = False,
                       **overrides) -> list[Generation]:
        """Many prompts in lockstep, ``batch_size`` at a time (same options as ``generate``)."""
        return generate_batch(self, prompts, config, questions=questions, progress=progress,
                              **overrides)

    # ------------------------------------------------------------------ save / load
    def remember_pack(self, pack, options: dict | None = None) -> None:
        """Note the tool pack (a .py path, or a module that is one file): ``save_pretrained``
        copies that file into the folder as ``toolken_tools.py`` and records its absolute path,
        so the folder keeps the tools' code after the training files move. A package or a
        module inside one is not copied."""
        source = _pack_file(pack)
        if source is not None and source != self.pack_file:  # a loaded copy keeps its record
            self.pack_file = source
            self.tool_pack = {"source": str(source), "options": dict(options or {})}

    def checkpoint_config(self) -> dict:
        return {"base_model": self.base.name, "base_fingerprint": self.base.fingerprint,
                "base_revision": self.base.revision, "hidden_size": self.base.hidden_size,
                "vocab_size": self.vocab_size, "tools": self.tools, "bias": self.head.bias is not None,
                "softcap": self.head.softcap, "manifest": self.manifest, "tool_pack": self.tool_pack,
                **self.extra_config}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the checkpoint folder atomically: ``toolken_config.json``,
        ``toolken_model.safetensors``, ``generation_config.json``, the model card ``README.md``,
        and when known ``toolken_demos.jsonl`` (the demo pool) and ``toolken_tools.py`` (a copy
        of the tool pack)."""
        tensors = {"weight": self.head.weight}
        if self.head.bias is not None:
            tensors["bias"] = self.head.bias
        config, generation = self.checkpoint_config(), self.generation_config.to_dict()
        files = {GENERATION_CONFIG_NAME: json.dumps(generation, indent=2, sort_keys=True) + "\n"}
        if self.demo_records is not None:
            files[DEMOS_NAME] = "".join(record_lines(self.demo_records))
        if self.pack_file is not None and self.pack_file.is_file():
            files[PACK_NAME] = self.pack_file.read_bytes()
            config["tool_pack"] = {**(self.tool_pack or {}), "file": PACK_NAME,
                                   "sha256": hashlib.sha256(files[PACK_NAME]).hexdigest()}
        defaults = GenerationConfig().to_dict()
        files[CARD_NAME] = model_card(config, {k: v for k, v in generation.items() if v != defaults.get(k)},
                                      files=[*files, CARD_NAME, CONFIG_NAME, WEIGHTS_NAME])
        out = save_checkpoint(directory, tensors, config, files=files)
        if self.predictor is not None:  # toolken_predictor.{safetensors,json} (core.predictor)
            self.predictor.save(out, self.base)
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, base: Base | str | None = None,
                        dtype=None, device=None, tools=None) -> "ToolkenModel":
        directory = Path(directory)
        cfg, tensors = load_checkpoint(directory)
        if not isinstance(base, Base):  # by default the recorded base, at its recorded commit
            revision = None if base else cfg.get("base_revision")
            base = load_base(base or cfg["base_model"], dtype=dtype, device=device, revision=revision)
        check_base(cfg, base, str(directory))
        head = ToolkenHead(len(cfg["tools"]), base.hidden_size, bias=cfg.get("bias", False),
                           softcap=cfg.get("softcap"))
        head.load_state_dict(tensors)
        known = {"base_model", "base_fingerprint", "base_revision", "hidden_size", "vocab_size",
                 "tools", "bias", "toolken_bias", "softcap", "manifest", "tool_pack",
                 "format_version", "toolken_version"}
        if (directory / GENERATION_CONFIG_NAME).exists():
            gen = GenerationConfig.load(directory)
        else:  # written before generation_config.json: the recipe's section and the bias
            recipe = cfg.get("training", {}).get("config", {}).get("generation") or {}
            gen = GenerationConfig.from_dict(recipe, where=f"{directory}: training.config.generation")
            gen = gen.replace(toolken_bias=float(cfg.get("toolken_bias", 0.0)))
        model = cls(base, cfg["tools"], head, manifest=cfg.get("manifest"), generation_config=gen)
        model.extra_config = {k: v for k, v in cfg.items() if k not in known}
        if (directory / DEMOS_NAME).exists():
            model.demo_records = load_jsonl(directory / DEMOS_NAME)
        if isinstance(cfg.get("tool_pack"), dict) and (directory / PACK_NAME).is_file():
            model.pack_file, model.tool_pack = directory / PACK_NAME, cfg["tool_pack"]  # kept by a later save
        if has_predictor(directory):
            model.predictor = load_predictor(directory, base)
        if tools is not None:
            model.attach_tools(tools)
        return model


def _pack_file(pack) -> Path | None:
    """The file of a pack given as a .py path or a top-level one-file module (else None: a
    package, or a module inside one, whose relative imports a lone copy could not follow)."""
    if isinstance(pack, (str, os.PathLike)):
        text = os.fspath(pack)
        if isinstance(pack, os.PathLike) or text.endswith(".py") or os.sep in text or "/" in text:
            return Path(text).expanduser().resolve()
        try:
            spec = importlib.util.find_spec(text)
        except (ImportError, ValueError):
            return None
    else:
        spec = getattr(pack, "__spec__", None)  # a module object
    origin = getattr(spec, "origin", None)
    if (spec is None or origin is None or spec.submodule_search_locations is not None
            or spec.parent or not origin.endswith(".py")):
        return None  # a package, a module in one, a namespace, a built-in: not one file
    return Path(origin).resolve()


def _description(tool) -> str:
    return tool.get("description", "") if isinstance(tool, dict) else tool.description


@functools.cache
def _cache_arg(decoder_class) -> str:
    """The name the decoder's forward gives the KV cache: ``cache`` in recent transformers 5
    releases, ``past_key_values`` (deprecated there) before."""
    params = inspect.signature(decoder_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
