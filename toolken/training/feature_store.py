"""The feature cache on disk: plain column files per part, read by row range without mapping.

A cache folder holds ``meta.json`` (written last: the cache is valid only once it exists) and
one folder per process that computed features, ``part-00000``, ...:

    h.bin        (rows, d) final hidden states, row-major, in the cache's dtype (``h_dtype``:
                 the base model's by default, so bf16 on GPU loses nothing; fp16 on request)
    scalars.bin  (rows,) records of ROW: lse, zt, vmax (fp32), vargmax, label (int64), pos
    seqs.npy     (sequences, 3) int64: sequence id, first row, rows — one run per sequence
    part.json    {"rows": N}

Rows of a sequence are contiguous in its part; the parts hold sequences in the order the
frozen pass met them (by length). A ``FeatureView`` is a list of runs in (sequence, position)
order — the logical order every consumer sees, whatever the number of parts — and reads any
row range with ``os.preadv`` (its files opened once) into buffers it allocates. Nothing is
memory-mapped, so what a reader holds in memory (its RSS) is what it asked for, not the pages
of the file it touched.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROW = np.dtype([("lse", "<f4"), ("zt", "<f4"), ("vmax", "<f4"), ("vargmax", "<i4"),
                ("label", "<i8"), ("pos", "<i4")])
H_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Features:
    """Per-position tensors in memory (CPU), sorted by (seq, pos). h keeps the cache's dtype."""

    h: torch.Tensor  # (N, d)
    lse: torch.Tensor  # (N,)
    zt: torch.Tensor  # (N,)
    vmax: torch.Tensor  # (N,)
    vargmax: torch.Tensor  # (N,)
    label: torch.Tensor  # (N,)
    seq: torch.Tensor  # (N,)
    vocab_size: int
    path: Path | None = None

    def __len__(self) -> int:
        return self.label.shape[0]

    def __getitem__(self, idx) -> "Features":
        return Features(self.h[idx], self.lse[idx], self.zt[idx], self.vmax[idx],
                        self.vargmax[idx], self.label[idx], self.seq[idx], self.vocab_size, self.path)

    def subset(self, mask: torch.Tensor) -> "Features":
        return self[mask.nonzero().squeeze(1)]


def cat(pieces: list[Features]) -> Features:
    if len(pieces) == 1:
        return pieces[0]
    f = pieces[0]
    return Features(*(torch.cat([getattr(p, k) for p in pieces])
                      for k in ("h", "lse", "zt", "vmax", "vargmax", "label", "seq")),
                    f.vocab_size, f.path)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class PartWriter:
    """Appends frozen-pass batches to one part folder (written under a temporary name)."""

    def __init__(self, path: Path, hidden_size: int, h_dtype: torch.dtype):
        self.path, self.tmp = path, path.with_suffix(".tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.d, self.h_dtype = hidden_size, h_dtype
        self.h = open(self.tmp / "h.bin", "wb")
        self.scalars = open(self.tmp / "scalars.bin", "wb")
        self.rows, self.runs = 0, []  # runs: [seq, first row, rows]

    def write(self, batch: dict) -> None:
        """batch: ``h`` (n, d) tensor; lse, zt, vmax, vargmax, label, seq, pos (n,) arrays."""
        n = len(batch["label"])
        if n == 0:
            return
        h = batch["h"].to(self.h_dtype).contiguous()
        self.h.write(h.view(torch.uint8).numpy().tobytes())  # raw bytes (numpy has no bf16)
        rec = np.empty(n, ROW)
        for k in ROW.names:
            rec[k] = batch[k]
        self.scalars.write(rec.tobytes())
        seq = np.asarray(batch["seq"])
        cut = np.flatnonzero(np.diff(seq)) + 1  # a sequence's rows are contiguous in a batch
        for a, b in zip(np.r_[0, cut], np.r_[cut, n]):
            if self.runs and self.runs[-1][0] == seq[a]:
                raise ValueError(f"sequence {seq[a]} written in two pieces")
            self.runs.append([int(seq[a]), self.rows + int(a), int(b - a)])
        self.rows += n

    def close(self) -> int:
        self.h.close()
        self.scalars.close()
        np.save(self.tmp / "seqs.npy", np.asarray(self.runs, dtype=np.int64).reshape(-1, 3))
        (self.tmp / "part.json").write_text(json.dumps({"rows": self.rows}))
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(self.tmp, self.path)
        return self.rows


def write_meta(folder: Path, key: str, parts: list[str], hidden_size: int, h_dtype: torch.dtype,
               fmt: int) -> None:
    """Write ``meta.json`` last (atomically): from then on the cache is valid."""
    rows = sum(json.loads((folder / p / "part.json").read_text())["rows"] for p in parts)
    tmp = folder / "meta.json.tmp"
    tmp.write_text(json.dumps({"key": key, "parts": parts, "rows": rows, "hidden_size": hidden_size,
                               "h_dtype": dtype_name(h_dtype), "format": fmt}, indent=1))
    os.replace(tmp, folder / "meta.json")


def part_is_whole(path: Path, hidden_size: int, h_dtype: torch.dtype) -> bool:
    """The part's files exist and their sizes agree with its row count."""
    try:
        rows = json.loads((path / "part.json").read_text())["rows"]
        item = torch.empty(0, dtype=h_dtype).element_size()
        return ((path / "h.bin").stat().st_size == rows * hidden_size * item
                and (path / "scalars.bin").stat().st_size == rows * ROW.itemsize
                and int(np.load(path / "seqs.npy")[:, 2].sum()) == rows)
    except (OSError, ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError):
        return False


def _pread_into(fd: int, buf: memoryview, offset: int) -> int:
    """Read ``len(buf)`` bytes at ``offset`` into ``buf`` (no copy where ``os.preadv`` exists)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buf], offset)
    data = os.pread(fd, len(buf), offset)  # macOS before Python 3.13 has no preadv
    buf[:len(data)] = data
    return len(data)


class PartFiles:
    """Every part's ``h.bin`` and ``scalars.bin``, opened once and closed with the last view:
    a run reads the files it started with, even if the folder is replaced meanwhile."""

    def __init__(self, folder: Path, parts: list[str]):
        self.fds: dict[tuple[int, str], int] = {}
        for i, p in enumerate(parts):
            for name in ("h.bin", "scalars.bin"):
                self.fds[i, name] = os.open(folder / p / name, os.O_RDONLY)

    def __del__(self):
        for fd in self.fds.values():
            os.close(fd)


class FeatureView:
    """Rows of a cache in (seq, pos) order, or of a subset of its sequences; reads on demand.

    runs: (n, 4) int64 [seq, part, first row in the part, rows], sorted by seq.
    """

    def __init__(self, folder: Path, parts: list[str], hidden_size: int, h_dtype: torch.dtype,
                 vocab_size: int, runs: np.ndarray, files: PartFiles | None = None):
        self.folder, self.parts, self.d, self.h_dtype = folder, parts, hidden_size, h_dtype
        self.vocab_size, self.runs = vocab_size, runs
        self.files = files or PartFiles(folder, parts)
        self.offsets = np.r_[0, np.cumsum(runs[:, 3])]  # logical first row of each run
        self.h_item = torch.empty(0, dtype=h_dtype).element_size()
        self.row_bytes = hidden_size * self.h_item + ROW.itemsize

    @classmethod
    def open(cls, folder: Path, vocab_size: int) -> "FeatureView":
        meta = json.loads((folder / "meta.json").read_text())
        runs = [np.c_[r[:, :1], np.full(len(r), i), r[:, 1:]]
                for i, r in enumerate(np.load(folder / p / "seqs.npy") for p in meta["parts"])]
        runs = np.concatenate(runs) if runs else np.zeros((0, 4), np.int64)
        view = cls(folder, meta["parts"], meta["hidden_size"], H_DTYPES[meta["h_dtype"]],
                   vocab_size, runs[np.argsort(runs[:, 0], kind="stable")])
        if len(view) != meta["rows"]:
            raise ValueError(f"feature cache {folder} has {len(view)} rows, meta.json says {meta['rows']}")
        return view

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def select(self, seqs: np.ndarray) -> "FeatureView":
        """The rows of the given sequence ids (in the same order as here)."""
        keep = np.isin(self.runs[:, 0], seqs)
        return FeatureView(self.folder, self.parts, self.d, self.h_dtype, self.vocab_size,
                           self.runs[keep], self.files)

    def pieces(self, a: int, b: int) -> list[tuple[int, int, int]]:
        """Rows [a, b) as (part, first row in the part, rows), physically adjacent ones merged."""
        out: list[list[int]] = []
        i = int(np.searchsorted(self.offsets, a, side="right")) - 1
        while a < b:
            _, part, first, n = (int(x) for x in self.runs[i])
            skip = a - int(self.offsets[i])
            take = min(n - skip, b - a)
            if out and out[-1][0] == part and out[-1][1] + out[-1][2] == first + skip:
                out[-1][2] += take
            else:
                out.append([part, first + skip, take])
            a += take
            i += 1
        return [tuple(p) for p in out]

    def read_into(self, a: int, b: int, h: np.ndarray | None, rec: np.ndarray) -> int:
        """Read rows [a, b) into ``h`` ((b - a) * d * item bytes, or None: scalars only) and
        ``rec`` ((b - a,) of ROW); returns the bytes read."""
        done = nbytes = 0
        hb = h.reshape(-1).view(np.uint8) if h is not None else None
        for part, first, n in self.pieces(a, b):
            files = [("scalars.bin", rec.view(np.uint8), ROW.itemsize)]
            if hb is not None:
                files.append(("h.bin", hb, self.d * self.h_item))
            for name, buf, width in files:
                want = memoryview(buf[done * width:(done + n) * width])
                got = _pread_into(self.files.fds[part, name], want, first * width)
                if got != len(want):
                    raise OSError(f"{self.folder / self.parts[part] / name}: short read ({got} of "
                                  f"{len(want)} bytes); the feature cache is damaged: delete it to rebuild")
                nbytes += got
            done += n
        return nbytes

    def empty_h(self, n: int) -> np.ndarray:
        return np.empty((n, self.d * self.h_item), np.uint8)

    def to_features(self, h: np.ndarray, rec: np.ndarray, seq: np.ndarray) -> Features:
        ht = torch.from_numpy(h).view(self.h_dtype)  # (n, d) in the cache's dtype
        return Features(ht, *(torch.from_numpy(np.ascontiguousarray(rec[k])) for k in ("lse", "zt", "vmax")),
                        torch.from_numpy(rec["vargmax"].astype(np.int64)),
                        torch.from_numpy(np.ascontiguousarray(rec["label"])),
                        torch.from_numpy(seq), self.vocab_size, self.folder)

    def seq_ids(self, a: int, b: int) -> np.ndarray:
        """The sequence id of every row in [a, b)."""
        if b <= a:
            return np.zeros(0, np.int64)
        i, j = np.searchsorted(self.offsets, [a, b], side="right") - 1
        runs, offs = self.runs[i:j + 1], self.offsets[i:j + 1]
        seq = np.repeat(runs[:, 0], runs[:, 3])
        return seq[a - offs[0]:b - offs[0]]

    def read(self, a: int = 0, b: int | None = None) -> Features:
        """Rows [a, b) in memory."""
        b = len(self) if b is None else min(b, len(self))
        h, rec = self.empty_h(b - a), np.empty(b - a, ROW)
        self.read_into(a, b, h, rec)
        return self.to_features(h, rec, self.seq_ids(a, b))

    def load(self) -> Features:
        """Every row in memory (for what needs all of a small split at once: calibration)."""
        return self.read()

    def toolken_labels(self, chunk: int = 1 << 20) -> int:
        """Number of positions labelled with a toolken (reads the scalars only)."""
        total = 0
        for a in range(0, len(self), chunk):
            rec = np.empty(min(chunk, len(self) - a), ROW)
            self.read_into(a, a + len(rec), None, rec)
            total += int((rec["label"] >= self.vocab_size).sum())
        return total
