"""Exactness: cached-feature loss and gradient == full concatenated logits + F.cross_entropy."""

import torch
import torch.nn.functional as F

from toolken.training.features import compute_features, vocab_stats
from toolken.core.head import ToolkenHead
from toolken.training.loss import predict, prf, toolken_counts, toolken_loss


def random_batch(base, k, seed, n_seq=4, length=23):
    g = torch.Generator().manual_seed(seed)
    V = base.vocab_size
    ids = [torch.randint(3, base.tokenizer.vocab_size, (length - i,), generator=g).tolist()
           for i in range(n_seq)]
    labels = []
    for seq in ids:
        lab = seq[1:] + [-100]
        for t in range(len(lab)):
            u = torch.rand((), generator=g).item()
            if u < 0.2:
                lab[t] = V + int(torch.randint(0, k, (), generator=g))
            elif u < 0.35:
                lab[t] = -100
        labels.append(lab)
    return ids, labels


def reference_loss(base, head, ids, labels):
    """The paper's way: full logits [vocab ; toolkens] at every position, F.cross_entropy."""
    total = 0.0
    for seq, lab in zip(ids, labels):
        x = torch.tensor([seq])
        h = base.model.base_model(input_ids=x).last_hidden_state[0]  # (T, d)
        logits = torch.cat([base.model(input_ids=x).logits[0].float(), head(h)], -1)  # (T, V+K)
        total = total + F.cross_entropy(logits, torch.tensor(lab), ignore_index=-100, reduction="sum")
    return total


def cached_loss(base, head, ids, labels, chunk):
    f = compute_features(base, ids, labels, vocab_chunk=chunk, progress=False, batch_tokens=40)
    as_t = {k: torch.from_numpy(v) for k, v in f.items()}
    z = head(as_t["h"])
    return toolken_loss(z, as_t["lse"], as_t["zt"], as_t["label"], base.vocab_size).sum(), as_t


def test_loss_and_gradient_match_reference(tiny_base):
    for seed in range(3):
        torch.manual_seed(100 + seed)
        k = 5
        head = ToolkenHead(k, tiny_base.hidden_size, bias=True)
        with torch.no_grad():
            head.bias.normal_()
        ids, labels = random_batch(tiny_base, k, seed)
        ref = reference_loss(tiny_base, head, ids, labels)
        ref.backward()
        ref_gw, ref_gb = head.weight.grad.clone(), head.bias.grad.clone()
        head.zero_grad()
        ours, _ = cached_loss(tiny_base, head, ids, labels, chunk=17)  # chunk < V: chunked lse
        ours.backward()
        torch.testing.assert_close(ours, ref.detach(), rtol=1e-5, atol=0)
        torch.testing.assert_close(head.weight.grad, ref_gw, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(head.bias.grad, ref_gb, rtol=1e-5, atol=1e-7)


def test_vocab_stats_match_full_logits():
    g = torch.Generator().manual_seed(7)
    h, w, b = torch.randn(50, 8, generator=g), torch.randn(37, 8, generator=g), torch.randn(37, generator=g)
    target = torch.randint(0, 45, (50,), generator=g)  # ids >= 37 mean "toolken target"
    lse, vmax, vargmax, zt = vocab_stats(h, w, b, target, chunk=10)
    full = h @ w.T + b
    torch.testing.assert_close(lse, torch.logsumexp(full, -1))
    torch.testing.assert_close(vmax, full.max(-1).values)
    assert torch.equal(vargmax, full.argmax(-1))
    expect = torch.where(target < 37, full.gather(1, target.clamp(max=36)[:, None])[:, 0], torch.zeros(50))
    torch.testing.assert_close(zt, expect)


def test_softcap_applies_to_both_parts():
    g = torch.Generator().manual_seed(3)
    h, w = torch.randn(20, 6, generator=g) * 5, torch.randn(30, 6, generator=g)
    target = torch.randint(0, 30, (20,), generator=g)
    lse, _, _, zt = vocab_stats(h, w, None, target, softcap=2.0, chunk=7)
    full = 2.0 * torch.tanh((h @ w.T) / 2.0)
    torch.testing.assert_close(lse, torch.logsumexp(full, -1))
    torch.testing.assert_close(zt, full.gather(1, target[:, None])[:, 0])


def test_predict_and_f1_match_reference(tiny_base):
    k, V = 4, tiny_base.vocab_size
    ids, labels = random_batch(tiny_base, k, seed=11)
    head = ToolkenHead(k, tiny_base.hidden_size)
    with torch.no_grad():
        head.weight.mul_(30)  # make toolkens win sometimes
    _, f = cached_loss(tiny_base, head, ids, labels, chunk=1000)
    z = head(f["h"])
    pred = predict(z, f["vmax"], f["vargmax"], V)
    # reference: argmax of full concatenated logits, recomputed
    full_v = tiny_base.model.lm_head(f["h"]).float()
    ref = torch.cat([full_v, z], -1).argmax(-1)
    assert torch.equal(pred, ref)
    counts = toolken_counts(pred, f["label"], V).tolist()
    tp = sum(1 for p, y in zip(ref.tolist(), f["label"].tolist()) if p >= V and p == y)
    npred = sum(1 for p in ref.tolist() if p >= V)
    ngold = sum(1 for y in f["label"].tolist() if y >= V)
    assert counts == [tp, npred, ngold]
    m = prf(counts)
    if tp:
        assert abs(m["f1"] - 2 * tp / (npred + ngold)) < 1e-12


def test_masked_tails_are_cut_exactly(tiny_base):
    """Features stop at each sequence's last label (an APIBench text ends in its masked call)
    and identical sequences are run once: same loss and gradient as every full sequence run
    on its own, rows at the same (seq, pos), and a sequence with no label yields no row."""
    for seed in range(3):
        torch.manual_seed(200 + seed)
        k = 4
        head = ToolkenHead(k, tiny_base.hidden_size, bias=True)
        ids, labels = random_batch(tiny_base, k, seed, n_seq=5, length=30)
        g = torch.Generator().manual_seed(seed)
        for lab in labels[:3]:  # long masked tails of different lengths
            cut = int(torch.randint(2, len(lab) - 2, (), generator=g))
            lab[cut:] = [-100] * (len(lab) - cut)
        labels[3] = [-100] * len(labels[3])  # nothing labelled at all
        ids += [list(ids[0]), list(ids[4]), list(ids[0])]  # upsampled copies: run once each
        labels += [list(labels[0]), list(labels[4]), list(labels[0])]
        ids.append(list(ids[1]))  # the same tokens, other labels: a sequence of its own
        labels.append([-100 if y == -100 else ids[1][0] for y in labels[1]])
        ref = reference_loss(tiny_base, head, ids, labels)
        ref.backward()
        ref_gw = head.weight.grad.clone()
        head.zero_grad()
        ours, f = cached_loss(tiny_base, head, ids, labels, chunk=17)
        ours.backward()
        torch.testing.assert_close(ours, ref.detach(), rtol=1e-5, atol=0)
        torch.testing.assert_close(head.weight.grad, ref_gw, rtol=1e-5, atol=1e-6)  # 9 sequences summed
        want = sorted((s, p) for s, lab in enumerate(labels) for p, y in enumerate(lab) if y != -100)
        assert sorted(zip(f["seq"].tolist(), f["pos"].tolist())) == want
        assert 3 not in f["seq"].tolist()
