"""Cached features: one frozen forward pass, then exact toolken training on the cache alone.

The base model never changes and toolkens are never fed back as input, so for every labelled
position the final hidden state h and the vocabulary's log-sum-exp A are constants. One
``no_grad`` pass stores, per position:

    h      (d,)  final hidden state (after the last norm), as the LM head sees it
    lse    ()    logsumexp of the vocabulary logits, fp32, computed in vocabulary chunks
    zt     ()    the target's vocabulary logit (0 when the target is a toolken)
    vmax   ()    the largest vocabulary logit, and ``vargmax`` its id (for precision/recall)
    label  ()    the target: a token id < V, or V + tool index
    seq    ()    which labelled sequence the position belongs to (for dev splits)

Training then minimises ``logaddexp(lse, logsumexp(h W^T + b)) - z_target``, which equals the
cross-entropy over the full concatenated logits ``[vocab ; toolkens]`` exactly.

The cache lives in ``$TOOLKEN_HOME/features/<key>`` (plain column files, ``feature_store``),
keyed by a fingerprint of everything that determines it. The frozen pass writes each batch
as it goes, so building a cache needs no more memory than one batch. A folder whose
``meta.json`` is missing or disagrees with its files is treated as corrupt and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.locks import folder_lock
from .feature_store import (H_DTYPES, Features, FeatureView, PartWriter, dtype_name, part_is_whole,
                            write_meta)

FORMAT = 2  # 2: column files read by row range (1: Arrow through datasets)
__all__ = ["Features", "FeatureView", "build_or_load", "compute_features", "dtype_name", "vocab_stats"]


def cache_key(**parts) -> str:
    """Stable hash of everything that determines the cache (sorted JSON of the parts)."""
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sequences_digest(input_ids: list[list[int]], labels: list[list[int]]) -> str:
    """Hash of the token rows and their labels: what the frozen pass reads, so a change in how
    texts are laid out (the prompt read before them, its retrieved demos) is a new cache even
    where the files and the recipe are the same."""
    h = hashlib.sha256()
    for ids, lab in zip(input_ids, labels, strict=True):
        h.update(len(ids).to_bytes(4, "little"))
        h.update(np.asarray(ids, dtype=np.int64).tobytes())
        h.update(np.asarray(lab, dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


def tokenizer_digest(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ the frozen pass


@torch.no_grad()
def vocab_stats(h: torch.Tensor, lm_weight: torch.Tensor, lm_bias: torch.Tensor | None,
                target: torch.Tensor, softcap: float | None = None, chunk: int = 8192):
    """Log-sum-exp, max, argmax and target logit of ``h @ lm_weight^T`` without [N, V] logits.

    h (N, d), lm_weight (V, d), target (N,) with ids >= V meaning "no vocabulary target".
    Products run in the weights' dtype; every reduction is fp32.
    """
    n, v = h.shape[0], lm_weight.shape[0]
    lse = torch.full((n,), float("-inf"), device=h.device)
    vmax = torch.full((n,), float("-inf"), device=h.device)
    vargmax = torch.zeros(n, dtype=torch.long, device=h.device)
    hw = h.to(lm_weight.dtype)
    for s in range(0, v, chunk):
        z = (hw @ lm_weight[s:s + chunk].T).float()  # (N, c)
        if lm_bias is not None:
            z += lm_bias[s:s + chunk].float()
        if softcap:
            z = softcap * torch.tanh(z / softcap)
        lse = torch.logaddexp(lse, torch.logsumexp(z, dim=-1))
        m, am = z.max(dim=-1)
        better = m > vmax
        vmax = torch.where(better, m, vmax)
        vargmax = torch.where(better, am + s, vargmax)
    is_vocab = target < v
    t = target.clamp(max=v - 1)
    zt = (hw.float() * lm_weight[t].float()).sum(-1)
    if lm_bias is not None:
        zt += lm_bias[t].float()
    if softcap:
        zt = softcap * torch.tanh(zt / softcap)
    zt = torch.where(is_vocab, zt, torch.zeros_like(zt))
    return lse, vmax, vargmax, zt


def _trim(input_ids: list[list[int]], labels: list[list[int]]) -> tuple[list, list]:
    """Each sequence up to and including its last labelled position ([] when none is)."""
    ids_out, lab_out = [], []
    for ids, lab in zip(input_ids, labels):
        n = next((k + 1 for k in range(len(lab) - 1, -1, -1) if lab[k] != -100), 0)
        ids_out.append(ids[:n])
        lab_out.append(lab[:n])
    return ids_out, lab_out


def _with_copies(out: dict, rows: np.ndarray, batch: list[int], copies: dict, seq_ids) -> dict:
    """The batch's rows, then each identical later sequence's: the rows of the one run, under
    its own sequence id."""
    parts = {k: [v] for k, v in out.items()}
    for r, b in enumerate(batch):
        sel = np.flatnonzero(rows == r)
        for c in copies.get(b, ()):
            for k, v in out.items():
                parts[k].append(np.full(len(sel), seq_ids[c], np.int64) if k == "seq" else v[sel])
    return {k: torch.cat(v) if k == "h" else np.concatenate(v) for k, v in parts.items()}


@torch.no_grad()
def iter_features(base, input_ids: list[list[int]], labels: list[list[int]],
                  seq_ids: list[int] | None = None, batch_tokens: int = 8192,
                  vocab_chunk: int = 8192, progress: bool = True, trim: bool = True):
    """Run the frozen model once over the sequences; yield per-position features per batch.

    Sequences are sorted by length and packed into padded batches of about ``batch_tokens``.
    Each batch: ``h`` (n, d) CPU tensor in the base dtype; lse, zt, vmax (fp32), vargmax,
    label, seq, pos numpy arrays (n,); a sequence's rows are contiguous, in position order.

    Each sequence is cut after its last labelled position before the pass: the model is
    causal, so the tokens after it change no feature (exact; an APIBench text ends with its
    masked api_call, whose tokens are never run). A sequence with no label is not run.
    ``trim=False`` runs every token (the reference of ``benchmarks/feature_pass.py``).
    Identical sequences (same tokens, same labels: an upsampled record) are run once; each
    copy gets the same rows under its own sequence id, right after the first one's.
    """
    model = base.model
    device = base.device
    lm = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    decoder = model.base_model  # the transformer without its LM head
    seq_ids = list(range(len(input_ids))) if seq_ids is None else seq_ids
    if trim:
        input_ids, labels = _trim(input_ids, labels)
    first: dict[tuple, int] = {}
    copies: dict[int, list[int]] = {}  # a run sequence -> the later identical ones
    for i in range(len(input_ids)):
        if input_ids[i]:
            k = first.setdefault((tuple(input_ids[i]), tuple(labels[i])), i)
            if k != i:
                copies.setdefault(k, []).append(i)
    order = sorted(first.values(), key=lambda i: len(input_ids[i]))
    pad = base.tokenizer.pad_token_id or 0
    bar = tqdm(total=sum(len(input_ids[i]) for i in order), unit="tok", desc="features",
               disable=not progress)
    i = 0
    while i < len(order):
        width = len(input_ids[order[i]])
        j = i
        while j < len(order) and (j - i + 1) * max(width, len(input_ids[order[j]])) <= batch_tokens:
            width = max(width, len(input_ids[order[j]]))
            j += 1
        j = max(j, i + 1)
        batch = order[i:j]
        width = max(len(input_ids[b]) for b in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        lab = torch.full((len(batch), width), -100, dtype=torch.long)
        att = torch.zeros((len(batch), width), dtype=torch.long)
        for r, b in enumerate(batch):
            n = len(input_ids[b])
            ids[r, :n] = torch.tensor(input_ids[b])
            lab[r, :n] = torch.tensor(labels[b])
            att[r, :n] = 1
        hidden = decoder(input_ids=ids.to(device), attention_mask=att.to(device)).last_hidden_state
        keep = lab != -100  # (B, T)
        h = hidden[keep.to(device)]  # (N, d)
        target = lab[keep].to(device)
        lse, vmax, vargmax, zt = vocab_stats(h, lm.weight, getattr(lm, "bias", None), target,
                                             softcap, vocab_chunk)
        rows, pos = keep.nonzero(as_tuple=True)
        out = {"h": h.cpu(), "lse": lse.float().cpu().numpy(), "zt": zt.float().cpu().numpy(),
               "vmax": vmax.float().cpu().numpy(), "vargmax": vargmax.cpu().numpy().astype(np.int32),
               "label": target.cpu().numpy(),
               "seq": np.asarray([seq_ids[batch[r]] for r in rows.tolist()], dtype=np.int64),
               "pos": pos.numpy().astype(np.int32)}
        yield _with_copies(out, rows.numpy(), batch, copies, seq_ids) if copies else out
        bar.update(int(att.sum()))
        i = j
    bar.close()


def compute_features(base, input_ids: list[list[int]], labels: list[list[int]],
                     seq_ids: list[int] | None = None, batch_tokens: int = 8192,
                     vocab_chunk: int = 8192, progress: bool = True) -> dict[str, np.ndarray]:
    """``iter_features`` gathered in memory, h as fp32 (for tests and small jobs)."""
    out: dict[str, list] = {}
    for batch in iter_features(base, input_ids, labels, seq_ids, batch_tokens, vocab_chunk, progress):
        for k, v in batch.items():
            out.setdefault(k, []).append(v.float().numpy() if k == "h" else v)
    if not out:
        return {"h": np.zeros((0, base.hidden_size), np.float32), "vargmax": np.zeros(0, np.int32),
                "label": np.zeros(0, np.int64), "seq": np.zeros(0, np.int64),
                "pos": np.zeros(0, np.int32), **{k: np.zeros(0, np.float32) for k in ("lse", "zt", "vmax")}}
    return {k: np.concatenate(v) for k, v in out.items()}


# ------------------------------------------------------------------ storage


def cache_is_valid(folder: Path, key: str) -> bool:
    meta = folder / "meta.json"
    if not meta.exists():
        return False
    try:
        m = json.loads(meta.read_text())
        return m.get("key") == key and all(part_is_whole(folder / p, m["hidden_size"], H_DTYPES[m["h_dtype"]])
                                           for p in m["parts"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return False


def h_dtype_of(cfg, base) -> torch.dtype:
    """The dtype h is cached in: ``feature_dtype``, where ``auto`` is the base model's."""
    return base.model.dtype if cfg.feature_dtype == "auto" else H_DTYPES[cfg.feature_dtype]


def build_or_load(folder: Path, key: str, base, labelled, cfg, accelerator=None) -> FeatureView:
    """The cached features under ``folder``, computed (split across processes; batches of
    ``cfg.feature_batch_tokens``, h stored as ``h_dtype_of(cfg, base)``) when the cache is
    missing, stale or corrupt. The main process holds the folder's lock throughout
    (``toolken.locks``): a second run building the same cache waits for the first and then
    reuses its cache, and never deletes its parts."""
    main = accelerator is None or accelerator.process_index == 0
    with folder_lock(folder, "feature cache", wait=True) if main else nullcontext():
        if accelerator:
            accelerator.wait_for_everyone()  # every process checks the cache under the lock
        valid = cache_is_valid(folder, key)
        if not valid:
            _build(folder, key, base, labelled, cfg, accelerator)
        elif main:
            print(f"toolken: reusing feature cache {folder}")
        try:
            return FeatureView.open(folder, base.vocab_size)
        except Exception as e:  # noqa: BLE001 — any unreadable cache is rebuilt once
            if not valid:
                raise
            if main:
                print(f"toolken: feature cache {folder} is unreadable ({e}): rebuilding")
            _build(folder, key, base, labelled, cfg, accelerator)
            return FeatureView.open(folder, base.vocab_size)


def _build(folder: Path, key: str, base, labelled, cfg, accelerator) -> None:
    """Compute every process's share of the features, writing each batch as it comes."""
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    main = rank == 0
    h_dtype = h_dtype_of(cfg, base)
    if main:
        if folder.exists():
            print(f"toolken: feature cache {folder} is incomplete or corrupt: rebuilding")
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    if accelerator:
        accelerator.wait_for_everyone()
    mine = list(range(rank, len(labelled.input_ids), world))
    writer = PartWriter(folder / f"part-{rank:05d}", base.hidden_size, h_dtype)
    for batch in iter_features(base, [labelled.input_ids[i] for i in mine],
                               [labelled.labels[i] for i in mine], mine,
                               cfg.feature_batch_tokens, cfg.vocab_chunk, cfg.progress and main):
        writer.write(batch)
    writer.close()
    if accelerator:
        accelerator.wait_for_everyone()
    if main:
        write_meta(folder, key, [f"part-{r:05d}" for r in range(world)], base.hidden_size,
                   h_dtype, FORMAT)
    if accelerator:
        accelerator.wait_for_everyone()
