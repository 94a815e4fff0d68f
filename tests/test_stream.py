"""The feature cache's storage and streaming: exactness against a plain in-memory loop, the
shuffled order (every row once, reproducible, shared out disjointly across processes), dtypes."""

import json
import math

import numpy as np
import pytest
import torch

from toolken.training.feature_store import ROW, FeatureView, PartWriter, write_meta
from toolken.training.stream import EpochStream
from toolken.training.trainer import scheduler_for, train
from test_train import tiny_cfg


def synthetic_cache(folder, rows_per_seq, d=8, parts=2, seed=0):
    """A cache whose row r (in (seq, pos) order) has label r; sequences dealt to the parts in
    a shuffled order (as processes would), each written as one run."""
    rng = np.random.default_rng(seed)
    seqs = rng.permutation(len(rows_per_seq))
    first = np.r_[0, np.cumsum(rows_per_seq)]
    h = torch.randn(int(first[-1]), d, generator=torch.Generator().manual_seed(seed))
    names = [f"part-{p:05d}" for p in range(parts)]
    for p, name in enumerate(names):
        w = PartWriter(folder / name, d, torch.float32)
        for s in seqs[p::parts]:
            a, b = int(first[s]), int(first[s + 1])
            w.write({"h": h[a:b], "lse": np.zeros(b - a), "zt": np.zeros(b - a),
                     "vmax": np.zeros(b - a), "vargmax": np.zeros(b - a, np.int32),
                     "label": np.arange(a, b), "seq": np.full(b - a, s), "pos": np.arange(b - a)})
        w.close()
    write_meta(folder, "k", names, d, torch.float32, 2)
    return FeatureView.open(folder, vocab_size=10**9), h


def test_view_reads_rows_in_seq_pos_order(tmp_path):
    view, h = synthetic_cache(tmp_path, rng_lengths(40))
    f = view.read(5, 301)
    assert f.label.tolist() == list(range(5, 301))
    assert torch.equal(f.h, h[5:301])
    sub = view.select(np.array([3, 7, 8]))
    first = np.r_[0, np.cumsum(rng_lengths(40))]
    want = [r for s in (3, 7, 8) for r in range(first[s], first[s + 1])]
    assert sub.load().label.tolist() == want and len(sub) == len(want)
    assert view.toolken_labels() == 0


def test_view_reads_the_files_it_opened_after_the_folder_goes(tmp_path):
    import shutil

    view, h = synthetic_cache(tmp_path / "c", rng_lengths(10))
    train_part = view.select(np.arange(5))
    shutil.rmtree(tmp_path / "c")  # e.g. another run found it stale and rebuilt it
    assert torch.equal(view.read().h, h) and len(train_part.load()) < len(h)


def rng_lengths(n, seed=1):
    return np.random.default_rng(seed).integers(1, 30, n).tolist()


def epoch_rows(stream, epoch):
    return [(f.label.tolist(), n) for f, n in stream.batches(epoch, read_ahead_next=False)]


def test_fitting_split_is_the_in_memory_order(tmp_path):
    view, _ = synthetic_cache(tmp_path, rng_lengths(50))
    stream = EpochStream(view, 10**9, batch_size=32, seed=7)
    assert stream.fits
    for epoch in (0, 1):
        got = [r for rows, _ in epoch_rows(stream, epoch) for r in rows]
        want = torch.randperm(len(view), generator=torch.Generator().manual_seed(7 + epoch))
        assert got == want.tolist()
    assert stream.read_bytes == len(view) * view.row_bytes  # read once, kept for every epoch


@pytest.mark.parametrize("world", [1, 2, 3])
def test_streamed_order_every_row_once_reproducible_disjoint_across_processes(tmp_path, world):
    view, _ = synthetic_cache(tmp_path, rng_lengths(300))
    n, budget = len(view), 600 * view.row_bytes  # windows of 300 rows, the split is ~4,300
    one = EpochStream(view, budget, batch_size=64, seed=3)
    assert not one.fits and one.per_window * one.block <= 300
    e0, e1 = epoch_rows(one, 0), epoch_rows(one, 1)
    flat = [r for rows, _ in e0 for r in rows]
    assert sorted(flat) == list(range(n)) and flat != list(range(n))  # each row once, shuffled
    assert [r for rows, _ in e1 for r in rows] != flat
    assert len(e0) == one.steps() == math.ceil(n / 64) and all(k == 64 for _, k in e0[:-1])
    assert e0 == epoch_rows(EpochStream(view, budget, batch_size=64, seed=3), 0)  # same seed
    ranks = [EpochStream(view, budget, batch_size=64, seed=3, rank=r, world=world) for r in range(world)]
    per_rank = [epoch_rows(s, 0) for s in ranks]
    for step, (rows, k) in enumerate(e0):  # the same global batches, shared out
        shares = [per_rank[r][step] for r in range(world)]
        assert sorted(x for s, _ in shares for x in s) == sorted(rows)
        assert all(kk == k for _, kk in shares)
    assert sum(s.read_bytes for s in ranks) == n * view.row_bytes  # disjoint reads, once each


def test_training_matches_a_plain_in_memory_loop_and_streams(tmp_path, capsys):
    """train() against the loop it replaced, written plainly: every training position in
    memory, randperm per epoch, the exact loss, AdamW; then the same run streamed."""
    from toolken.core.base import load_base
    from toolken.training.loss import toolken_loss
    from toolken.training.pipeline import load_records, prepare_data, prepare_model, split_features
    from toolken.training.trainer import seed_everything

    cfg = tiny_cfg(tmp_path, epochs=3, batch_size=64, schedule="cosine", lr=0.01)
    train(cfg)
    assert "features in memory" in capsys.readouterr().out
    seed_everything(cfg.seed)
    base = load_base(cfg.base_model)
    train_r, dev_r, digest = load_records(cfg, verbose=False)
    model, _ = prepare_model(cfg, base, train_r, verbose=False)
    data = prepare_data(cfg, base, model.tools, train_r, dev_r, digest, verbose=False)
    feats = split_features(cfg, base, model.tools, data)[0].load()
    w = model.head.weight.detach().clone().requires_grad_(True)
    opt = torch.optim.AdamW([w], lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = math.ceil(len(feats) / cfg.batch_size)
    sched = scheduler_for(cfg, opt, steps * cfg.epochs)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(feats), generator=torch.Generator().manual_seed(cfg.seed + epoch))
        for s in range(steps):
            i = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            loss = toolken_loss(feats.h[i] @ w.T, feats.lse[i], feats.zt[i], feats.label[i],
                                feats.vocab_size).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    state = torch.load(tmp_path / "out" / "training" / "state.pt", weights_only=False)
    torch.testing.assert_close(state["rows"]["weight"], w.detach(), rtol=0, atol=1e-6)

    row_bytes = 16 * 4 + ROW.itemsize  # tiny: d = 16, fp32
    streamed = train(tiny_cfg(tmp_path / "s", epochs=3, batch_size=64, schedule="cosine", lr=0.01,
                              feature_memory_mb=600 * row_bytes / 2**20))  # windows of 300 rows
    assert "streamed in blocks of 5 rows" in capsys.readouterr().out
    hist = streamed.history
    assert hist[-1]["dev_loss"] < hist[0]["dev_loss"]
    # every epoch reads the split once (the next epoch's first window is read ahead)
    assert sum(h["read_mb"] for h in hist) * 2**20 == pytest.approx(3 * len(feats) * row_bytes)


def test_feature_dtypes_store_h_rounded_and_smaller(tmp_path):
    from toolken.training.pipeline import load_records, prepare_data, prepare_model, split_features
    from toolken.core.base import load_base

    cfgs = {d: tiny_cfg(tmp_path, feature_dtype=d) for d in ("float32", "bfloat16", "float16")}
    cfg = cfgs["float32"]
    base = load_base(cfg.base_model)
    train_r, dev_r, digest = load_records(cfg, verbose=False)
    model, _ = prepare_model(cfg, base, train_r, verbose=False)
    data = prepare_data(cfg, base, model.tools, train_r, dev_r, digest, verbose=False)
    views = {d: split_features(c, base, model.tools, data)[0] for d, c in cfgs.items()}
    f32 = views["float32"].load()
    for d, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        f = views[d].load()
        assert f.h.dtype == dtype and torch.equal(f.h, f32.h.to(dtype))
        assert torch.equal(f.lse, f32.lse) and torch.equal(f.label, f32.label)
        assert views[d].row_bytes - ROW.itemsize == (views["float32"].row_bytes - ROW.itemsize) // 2
    assert len({v.folder for v in views.values()}) == 3  # one cache per dtype


def test_damaged_cache_file_is_rebuilt(tmp_path, capsys):
    train(tiny_cfg(tmp_path, epochs=1))
    h = next((tmp_path / "cache").glob("*/part-00000/h.bin"))
    h.write_bytes(h.read_bytes()[:-8])  # a truncated copy
    capsys.readouterr()
    train(tiny_cfg(tmp_path, epochs=1, resume=False))
    assert "incomplete or corrupt: rebuilding" in capsys.readouterr().out
    assert h.stat().st_size % 64 == 0


def test_a_new_layout_of_the_same_files_is_a_new_cache(tmp_path):
    """The cache key reads the token rows themselves: the same files and recipe laid out
    differently (here one text's tokens changed, as a new choice of demos would) get a cache
    of their own, never the stale one."""
    from dataclasses import replace as dc_replace

    from toolken.core.base import load_base
    from toolken.training.features import sequences_digest
    from toolken.training.pipeline import load_records, prepare_data, prepare_model, split_features

    cfg = tiny_cfg(tmp_path)
    base = load_base(cfg.base_model)
    train_r, dev_r, digest = load_records(cfg, verbose=False)
    model, _ = prepare_model(cfg, base, train_r, verbose=False)
    data = prepare_data(cfg, base, model.tools, train_r, dev_r, digest, verbose=False)
    ids = [list(r) for r in data.labelled.input_ids]
    ids[0][0] = (ids[0][0] + 1) % 50
    moved = dc_replace(data, labelled=dc_replace(data.labelled, input_ids=ids))
    a, b = split_features(cfg, base, model.tools, data)[0], split_features(cfg, base, model.tools, moved)[0]
    assert a.folder != b.folder
    assert split_features(cfg, base, model.tools, data)[0].folder == a.folder  # same rows: reused
    labels = [list(r) for r in data.labelled.labels]
    assert sequences_digest(data.labelled.input_ids, labels) == sequences_digest(data.labelled.input_ids, data.labelled.labels)
    labels[0][-1] = 7 if labels[0][-1] != 7 else 8
    assert sequences_digest(data.labelled.input_ids, labels) != sequences_digest(data.labelled.input_ids, data.labelled.labels)
