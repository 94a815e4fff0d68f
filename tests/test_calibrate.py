"""Bias calibration: the sweep equals a brute-force search written plainly here."""

import torch

from toolken.training.calibrate import best_bias, calibrate
from toolken.training.loss import predict, prf, toolken_counts
from test_train import tiny_cfg
from toolken.training.trainer import train


def test_best_bias_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    V, K, N = 50, 4, 300
    z = torch.randn(N, K, generator=g)
    vmax = torch.randn(N, generator=g) + 1.0
    vargmax = torch.randint(0, V, (N,), generator=g)
    label = torch.where(torch.rand(N, generator=g) < 0.3, V + torch.randint(0, K, (N,), generator=g),
                        torch.randint(0, V, (N,), generator=g))
    bias, m = best_bias(z, vmax, label, V)
    f1_at = lambda b: prf(toolken_counts(predict(z, vmax, vargmax, V, b), label, V).tolist())["f1"]
    brute = max(f1_at(b) for b in torch.linspace(-6, 6, 4001).tolist())
    assert abs(f1_at(bias) - m["f1"]) < 1e-9
    assert m["f1"] >= brute - 1e-9


def test_calibrate_stores_bias_in_checkpoint(tmp_path):
    train(tiny_cfg(tmp_path, epochs=2))
    report = calibrate(tmp_path / "out", verbose=False)
    assert report["dev_after"]["f1"] >= report["dev_before"]["f1"]
    from toolken.model import ToolkenModel
    assert ToolkenModel.from_pretrained(tmp_path / "out").toolken_bias == report["bias"]
