"""Training batches streamed from the feature cache: a shuffled order reproducible from the
seed, read in windows of blocks, each process reading only its own blocks, one window ahead.

Epoch ``e`` draws everything from ``torch.Generator().manual_seed(seed + e)``:

- a train split within the memory budget is one window: ``perm = randperm(N)``, the order of
  the plain in-memory loop; its rows are read once and kept for every epoch;
- a larger one is cut into blocks of ``block`` consecutive rows; ``randperm(blocks)`` orders
  them, ``per_window`` at a time make a window (half the budget: the one being trained on and
  the next, read ahead by a background thread), and each window's rows are shuffled with
  ``randperm`` of their number. This is the block shuffle of streaming loaders: every row once
  per epoch, each batch drawn from ``per_window`` random places in the data.

The epoch is the windows' shuffled rows one after the other; global batch ``s`` is positions
``[s B, (s + 1) B)``, whatever the number of processes. Process ``r`` of ``W`` reads the
window's blocks at positions ``r, r + W, ...`` (disjoint shards) and takes, of every global
batch, the rows that lie in them; the loss is scaled by the global batch size, so the summed
gradient, and the toolkens, are those of one process.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .feature_store import ROW, Features, FeatureView, cat

BLOCKS_PER_WINDOW = 64


@dataclass
class Window:
    """A window's rows held by this process. ``local[i]``: the row's index in ``feats``, or -1."""

    blocks: tuple[int, ...]
    feats: Features | None  # this process's rows of the window, in window order
    local: np.ndarray  # (window rows,) int64


class EpochStream:
    """Global batches of one process, epoch by epoch (see the module docstring)."""

    def __init__(self, view: FeatureView, budget_bytes: int, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.view, self.batch, self.seed, self.rank, self.world = view, batch_size, seed, rank, world
        n = len(view)
        budget_rows = max(1, int(budget_bytes // view.row_bytes))
        self.fits = n <= budget_rows
        window_rows = n if self.fits else max(1, budget_rows // 2)
        self.block = max(1, math.ceil(window_rows / BLOCKS_PER_WINDOW))
        self.n_blocks = math.ceil(n / self.block) if n else 0
        self.per_window = self.n_blocks if self.fits else max(1, window_rows // self.block)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toolken-read")
        self.ahead: dict[tuple[int, ...], object] = {}  # blocks -> Future[Window]
        self.kept: Window | None = None
        self.read_bytes, self.read_seconds = 0, 0.0
        self.lock = threading.Lock()

    def steps(self) -> int:
        return math.ceil(len(self.view) / self.batch)

    def block_order(self, epoch: int) -> tuple[torch.Generator, list[tuple[int, ...]]]:
        """The epoch's generator (after the block draw) and its windows' blocks, in order."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        if self.fits:
            return g, [tuple(range(self.n_blocks))]
        order = torch.randperm(self.n_blocks, generator=g).tolist()
        return g, [tuple(sorted(order[i:i + self.per_window]))
                   for i in range(0, len(order), self.per_window)]

    def rows_of(self, blocks: tuple[int, ...]) -> list[tuple[int, int]]:
        n = len(self.view)
        return [(b * self.block, min(n, (b + 1) * self.block)) for b in blocks]

    def _read(self, blocks: tuple[int, ...]) -> Window:
        """Read this process's blocks of a window (runs on the read-ahead thread)."""
        t = time.perf_counter()
        ranges = self.rows_of(blocks)
        sizes = np.array([b - a for a, b in ranges], dtype=np.int64)
        mine = [i for i in range(len(ranges)) if i % self.world == self.rank]
        local = np.full(int(sizes.sum()), -1, dtype=np.int64)
        starts, have, seqs = np.r_[0, np.cumsum(sizes)], 0, []
        h, rec = self.view.empty_h(int(sizes[mine].sum())), np.empty(int(sizes[mine].sum()), ROW)
        nbytes = 0
        for i in mine:
            (a, b), n = ranges[i], int(sizes[i])
            nbytes += self.view.read_into(a, b, h[have:have + n], rec[have:have + n])
            local[starts[i]:starts[i] + n] = np.arange(have, have + n)
            seqs.append(self.view.seq_ids(a, b))
            have += n
        seq = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        with self.lock:
            self.read_bytes += nbytes
            self.read_seconds += time.perf_counter() - t
        return Window(blocks, self.view.to_features(h, rec, seq), local)

    def _window(self, blocks: tuple[int, ...]) -> Window:
        if self.kept is not None and self.kept.blocks == blocks:
            return self.kept
        fut = self.ahead.pop(blocks, None) or self.pool.submit(self._read, blocks)
        win = fut.result()
        if self.fits:
            self.kept = win
        return win

    def _read_ahead(self, blocks: tuple[int, ...]) -> None:
        if not (self.fits or blocks in self.ahead):
            self.ahead[blocks] = self.pool.submit(self._read, blocks)

    def batches(self, epoch: int, read_ahead_next: bool = True):
        """Yield ``(features of this process, global batch size)`` for every step of the epoch;
        the last window reads ahead the next epoch's first unless ``read_ahead_next`` is off."""
        g, windows = self.block_order(epoch)
        pending: list[Features] = []
        need = self.batch
        for w, blocks in enumerate(windows):
            win = self._window(blocks)
            if w + 1 < len(windows):
                self._read_ahead(windows[w + 1])
            elif read_ahead_next:
                self._read_ahead(self.block_order(epoch + 1)[1][0])
            perm = torch.randperm(len(win.local), generator=g)
            at = 0
            while at < len(perm):
                take = min(need, len(perm) - at)
                idx = win.local[perm[at:at + take].numpy()]
                pending.append(win.feats[torch.from_numpy(idx[idx >= 0])])
                at, need = at + take, need - take
                if need == 0:
                    yield cat(pending), self.batch
                    pending, need = [], self.batch
            del win
        if pending:
            yield cat(pending), self.batch - need

    def close(self) -> None:
        self.ahead.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)
