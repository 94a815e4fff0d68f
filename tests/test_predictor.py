"""The description -> toolken map: ridge against plain references, the end-to-end fit, the
saved predictor, add_tools(init="predicted"), `toolken fit-predictor` and `toolken add-tools`."""

import json

import pytest
import torch
from safetensors.torch import load_file

from toolken.cli import main
from toolken.core.predictor import (PREDICTOR_CONFIG, PredictorError, ToolkenPredictor, describe,
                                    load_predictor, tool_text)
from toolken.model import ToolkenModel
from toolken.training.config import load_config
from toolken.training.features import Features
from toolken.training.loss import toolken_loss
from toolken.training.predict import LossFit, fit_loss, fit_prototype, fit_ridge, ridge_loo
from toolken.training.trainer import train
from conftest import REPO

PACK = '''
from toolken.tools import tool


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@tool
def subtract(a: float, b: float) -> float:
    """Subtract b from a."""
    return a - b


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@tool(demos=["Q: 8 / 2?\\nA: <divide>(8, 2)=4."])
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


@tool
def power(a: float, b: float) -> float:
    """Raise a to the power b."""
    return a ** b


TOOLS = [add, subtract, multiply, divide, power]
'''


def test_ridge_equals_plain_primal_ridge_and_least_squares():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 12, generator=g) * 3 + 1, torch.randn(60, 5, generator=g)
    p = fit_ridge(x, y, alphas=(7.0,))
    xs = (x - x.mean(0)) / x.std(0)  # the plain reference: primal ridge on standardised x
    w = torch.linalg.solve(xs.double().T @ xs.double() + 7.0 * torch.eye(12, dtype=torch.float64),
                           xs.double().T @ (y.double() - y.double().mean(0)))
    fresh = torch.randn(9, 12, generator=g)
    ref = ((fresh - x.mean(0)) / x.std(0)).double() @ w + y.double().mean(0)
    torch.testing.assert_close(p(fresh).double(), ref, rtol=1e-4, atol=1e-5)
    # alpha -> 0 with more tools than features: ordinary least squares with an intercept
    p0 = fit_ridge(x, y, alphas=(1e-9,))
    a = torch.cat([x, torch.ones(60, 1)], 1).double()
    sol = torch.linalg.lstsq(a, y.double()).solution
    torch.testing.assert_close(p0(fresh).double(), torch.cat([fresh, torch.ones(9, 1)], 1).double() @ sol,
                               rtol=1e-4, atol=1e-4)


def test_ridge_fits_seen_rows_and_loo_matches_refitting():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 30, generator=g), torch.randn(8, 4, generator=g)
    p = fit_ridge(x, y, alphas=(1e-6,))  # fewer tools than features: the map interpolates them
    torch.testing.assert_close(p(x), y, rtol=0, atol=1e-3)
    xs = torch.randn(7, 5, generator=g, dtype=torch.float64)
    yc = torch.randn(7, 3, generator=g, dtype=torch.float64)
    xc = xs - xs.mean(0)
    _, loo = ridge_loo(xc @ xc.T, yc, 0.5)
    errs = []
    for i in range(7):  # plain refit without tool i: primal ridge with an unpenalised intercept
        keep = [j for j in range(7) if j != i]
        a, b = xs[keep], yc[keep]
        w = torch.linalg.solve((a - a.mean(0)).T @ (a - a.mean(0)) + 0.5 * torch.eye(5, dtype=torch.float64),
                               (a - a.mean(0)).T @ (b - b.mean(0)))
        errs.append(float((yc[i] - (b.mean(0) + (xs[i] - a.mean(0)) @ w)).pow(2).sum()))
    assert loo == pytest.approx(sum(errs) / 7, rel=1e-6)


def test_describe_reads_the_frozen_base(tiny_base):
    text = "divide(a, b): Divide a by b."
    f = describe(tiny_base, [text], ("mean", "last"))
    ids = torch.tensor([tiny_base.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        h = tiny_base.model(ids, output_hidden_states=True).hidden_states[-1][0]
    torch.testing.assert_close(f[0], torch.cat([h.mean(0), h[-1]]), rtol=1e-5, atol=1e-5)
    with pytest.raises(PredictorError, match="pooled.*must be one of"):
        describe(tiny_base, [text], ("pooled",))


def test_tool_text_has_signature_description_and_demos(tmp_path):
    from toolken.tools import load_pack

    (tmp_path / "p.py").write_text(PACK)
    pack = load_pack(tmp_path / "p.py")
    assert tool_text(pack["divide"]) == "divide(a, b): Divide a by b.\nQ: 8 / 2?\nA: <divide>(8, 2)=4."
    assert tool_text({"name": "P1", "description": "taxon(name): gets the taxon."}) == \
        "taxon(name): gets the taxon."


def test_fit_loss_lowers_the_exact_loss_and_leaves_trained_rows():
    g = torch.Generator().manual_seed(3)
    K, d, f, V, n = 6, 8, 10, 20, 600
    x, rows = torch.randn(K, f, generator=g), torch.randn(K, d, generator=g)
    label = torch.where(torch.rand(n, generator=g) < 0.3, V + torch.randint(K, (n,), generator=g),
                        torch.randint(V, (n,), generator=g))
    true_rows = torch.randn(K, d, generator=g)  # positions point at the rows the map should find
    h = torch.randn(n, d, generator=g) + 2 * torch.where((label >= V)[:, None],
                                                         true_rows[(label - V).clamp(min=0)], 0)
    feats = Features(h, torch.randn(n, generator=g), torch.randn(n, generator=g), torch.zeros(n),
                     torch.zeros(n, dtype=torch.long), label, torch.arange(n), V)
    p = ToolkenPredictor(f, d)
    p.mu.copy_(x.mean(0)), p.sigma.copy_(x.std(0))

    def loss():  # every row predicted: the reference computation of what fit_loss lowers
        with torch.no_grad():
            return float(toolken_loss(h @ p(x).T, feats.lse, feats.zt, label, V).mean())

    before, kept = loss(), rows.clone()
    losses = fit_loss(p, x, rows, feats, LossFit(epochs=8, batch_size=100, lr=0.05, predicted_fraction=1.0))
    assert losses[-1] < losses[0] and loss() < before
    assert torch.equal(rows, kept)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_base):
    tmp = tmp_path_factory.mktemp("pred")
    (tmp / "p.py").write_text(PACK)
    cfg = load_config(REPO / "configs" / "tiny.yaml", {
        "output_dir": str(tmp / "out"), "cache_dir": str(tmp / "cache"),
        "train_file": str(REPO / "data/tiny/train.jsonl"), "epochs": 2})
    train(cfg)
    return tmp


def test_saved_predictor_round_trips_and_refuses_another_base(checkpoint, tiny_base):
    model = ToolkenModel.from_pretrained(checkpoint / "out", base=tiny_base)
    x = describe(tiny_base, model.tools)
    p = fit_ridge(x, model.head.weight.detach())
    p.save(checkpoint / "saved", tiny_base)
    q = load_predictor(checkpoint / "saved", tiny_base)
    fresh = torch.randn(4, x.shape[1])
    assert torch.equal(p(fresh), q(fresh)) and q.meta["method"] == "ridge"
    cfg = json.loads((checkpoint / "saved" / PREDICTOR_CONFIG).read_text())
    (checkpoint / "saved" / PREDICTOR_CONFIG).write_text(json.dumps({**cfg, "base_fingerprint": "x"}))
    with pytest.raises(PredictorError, match="fitted for base model"):
        load_predictor(checkpoint / "saved", tiny_base)
    with pytest.raises(PredictorError, match="no toolken predictor.*fit-predictor"):
        load_predictor(checkpoint / "nowhere")


def test_cli_fit_predictor_then_add_tools_zero_shot(checkpoint, tiny_base):
    out, new = checkpoint / "out", checkpoint / "plus"
    assert main(["fit-predictor", "--toolkens", str(out), "--tools", str(checkpoint / "p.py")]) == 0
    assert main(["add-tools", "--toolkens", str(out), "--tools", str(checkpoint / "p.py"),
                 "--zero-shot", "--out", str(new)]) == 0
    old = ToolkenModel.from_pretrained(out, base=tiny_base)
    plus = ToolkenModel.from_pretrained(new, base=tiny_base)
    assert plus.tools == ["add", "subtract", "multiply", "divide", "power"]
    assert plus.predictor is not None and [m["name"] for m in plus.manifest] == plus.tools
    assert torch.equal(plus.head.weight[:3], old.head.weight)
    from toolken.tools import load_pack

    pack = load_pack(checkpoint / "p.py")
    x = describe(tiny_base, [tool_text(pack["divide"]), tool_text(pack["power"])])
    w = load_file(str(new / "toolken_model.safetensors"))["weight"]
    torch.testing.assert_close(w[3:], old.predictor(x), rtol=0, atol=1e-6)
    assert main(["add-tools", "--toolkens", str(out), "--tools", str(checkpoint / "p.py"),
                 "--zero-shot", "--out", str(checkpoint / "again")]) == 0
    assert main(["add-tools", "--toolkens", str(new), "--tools", str(checkpoint / "p.py"),
                 "--out", str(checkpoint / "none")]) == 2  # adds nothing: an error


def test_cli_add_tools_passes_tool_options_to_the_pack(checkpoint, tiny_base):
    """--tool-option reaches the pack's build() (tools/apibench.py's catalogues=[...]) and
    the new checkpoint's recipe keeps it, so its pack loads the same tools again."""
    (checkpoint / "opt.py").write_text(PACK.replace(
        "TOOLS = [add, subtract, multiply, divide, power]",
        "def build(extra=False):\n    return [add, subtract, multiply] + ([power] if extra else [])"))
    src, out = checkpoint / "opt", checkpoint / "opt_plus"
    model = ToolkenModel.from_pretrained(checkpoint / "out", base=tiny_base)
    model.extra_config["training"]["config"]["tools"] = str(checkpoint / "opt.py")  # a recipe naming a pack
    model.save_pretrained(src)
    assert main(["add-tools", "--toolkens", str(src), "--tools", str(checkpoint / "opt.py"),
                 "--init", "embedding", "--out", str(out)]) == 2  # adds nothing without the option
    assert main(["add-tools", "--toolkens", str(src), "--tools", str(checkpoint / "opt.py"),
                 "--init", "embedding", "--tool-option", "extra=true", "--out", str(out)]) == 0
    plus = ToolkenModel.from_pretrained(out, base=tiny_base)
    assert plus.tools == ["add", "subtract", "multiply", "power"]
    assert plus.extra_config["training"]["config"]["tool_options"] == {"extra": True}
    plus.attach_tools(str(checkpoint / "opt.py"))  # the recipe's options by default: 4 tools
    assert plus.registry.names == plus.tools
    from toolken.tools import ToolError
    with pytest.raises(ToolError):
        plus.attach_tools(str(checkpoint / "opt.py"), extra=False)  # 3 tools: refused


def test_add_tools_predicted_needs_a_predictor_and_texts_train_from_it(checkpoint, tiny_base):
    from toolken.tools import load_pack

    model = ToolkenModel.from_pretrained(checkpoint / "out", base=tiny_base)
    model.predictor = None
    with pytest.raises(ValueError, match="needs a toolken predictor"):
        model.add_tools(["divide"], init="predicted")
    with pytest.raises(ValueError, match="is not one of"):
        model.add_tools(["divide"], init="guess")
    # init: predicted with resume_from: the new rows start from the map's output, then train
    model = ToolkenModel.from_pretrained(checkpoint / "out", base=tiny_base)
    model.predictor = fit_ridge(describe(tiny_base, model.tools), model.head.weight.detach())
    model.predictor.save(checkpoint / "out", tiny_base)
    cfg = load_config(REPO / "configs" / "tiny.yaml", {
        "output_dir": str(checkpoint / "few"), "cache_dir": str(checkpoint / "cache"),
        "train_file": str(REPO / "data/tiny/train.jsonl"), "resume_from": str(checkpoint / "out"),
        "tools": str(checkpoint / "p.py"), "init": "predicted", "train_only": "new", "epochs": 1, "lr": 1e-12})
    res = train(cfg)  # lr ~0: the saved new rows are the rows training started from
    pack = load_pack(checkpoint / "p.py")
    torch.testing.assert_close(res.model.head.weight[3:],
                               model.predictor.predict(tiny_base, [pack["divide"], pack["power"]]),
                               rtol=0, atol=1e-6)
    assert res.model.tools[3:] == ["divide", "power"]
    assert torch.equal(res.model.head.weight[:3], model.head.weight)
    assert (checkpoint / "few" / "toolken_predictor.safetensors").exists()
    with pytest.raises(ValueError, match="init=predicted needs resume_from"):
        load_config(REPO / "configs" / "tiny.yaml", {"init": "predicted"})


def test_prototype_rows_and_scale_chosen_by_the_exact_loss():
    g = torch.Generator().manual_seed(4)
    K, d, V, n = 8, 6, 15, 400
    x, rows = torch.randn(K, d, generator=g), torch.randn(K, d, generator=g)
    label = torch.where(torch.rand(n, generator=g) < 0.5, V + torch.randint(K, (n,), generator=g),
                        torch.randint(V, (n,), generator=g))
    feats = Features(torch.randn(n, d, generator=g), torch.randn(n, generator=g) + 3,
                     torch.randn(n, generator=g), torch.zeros(n), torch.zeros(n, dtype=torch.long),
                     label, torch.arange(n), V)
    p = fit_prototype(x, rows, feats, "Q: {description}", scales=(0.5, 1.0, 4.0), masks=2)
    xc, wc = x - x.mean(0), rows - rows.mean(0)
    slope = float((xc * wc).sum() / (xc * xc).sum())
    c = p.meta["scale"]
    assert c / slope in (0.5, 1.0, 4.0)
    torch.testing.assert_close(p(x), rows.mean(0) + c * xc, rtol=1e-5, atol=1e-5)
    losses = p.meta["scale_losses"]
    assert losses[c / slope] == min(losses.values())


def test_reading_text_layout_is_saved_and_read(tmp_path, tiny_base):
    from toolken.core.predictor import reading_text

    tool = {"name": "P1", "description": "taxon(name): gets the taxon of a species."}
    assert reading_text(tool, "Question: {description}\nAnswer:") == \
        "Question: gets the taxon of a species.\nAnswer:"
    with pytest.raises(PredictorError, match="only {text} and {description}"):
        reading_text(tool, "{question}")
    p = ToolkenPredictor(16, 16, ("last",), layout="Q: {description}")
    p.linear.weight.data.normal_()
    p.save(tmp_path, tiny_base)
    q = load_predictor(tmp_path, tiny_base)
    assert q.layout == "Q: {description}" and q.features == ("last",)
    torch.testing.assert_close(q.predict(tiny_base, [tool]), p.predict(tiny_base, [tool]), rtol=0, atol=0)
    x = describe(tiny_base, ["Q: gets the taxon of a species."], ("last",))
    torch.testing.assert_close(q.predict(tiny_base, [tool]), p(x), rtol=0, atol=0)


def test_cli_prototype_predictor_with_loss_then_add_tools(checkpoint, tiny_base):
    from toolken.core.predictor import reading_text
    from toolken.tools import load_pack

    out = checkpoint / "proto"
    ToolkenModel.from_pretrained(checkpoint / "out", base=tiny_base).save_pretrained(out)
    assert main(["fit-predictor", "--toolkens", str(out), "--tools", str(checkpoint / "p.py"),
                 "--method", "prototype", "--layout", "Q: {description}\nA:", "--loss-epochs", "1"]) == 0
    p = load_predictor(out, tiny_base)
    assert p.meta["method"] == "prototype+loss" and p.layout == "Q: {description}\nA:"
    assert main(["add-tools", "--toolkens", str(out), "--tools", str(checkpoint / "p.py"),
                 "--zero-shot", "--out", str(checkpoint / "proto_plus")]) == 0
    pack = load_pack(checkpoint / "p.py")
    x = describe(tiny_base, [reading_text(pack[n], "Q: {description}\nA:") for n in ("divide", "power")],
                 ("last",))
    w = load_file(str(checkpoint / "proto_plus" / "toolken_model.safetensors"))["weight"]
    torch.testing.assert_close(w[3:], p(x), rtol=0, atol=1e-6)


def test_guard_offsets_against_a_plain_count():
    """Each new row's bias is the least (<= 0) after which it beats the vocabulary and every
    trained row on at most ``share`` of the guard's positions: counted directly here."""
    from toolken.core.head import ToolkenHead

    g = torch.Generator().manual_seed(5)
    N, d, K, n = 2000, 12, 7, 5
    p = ToolkenPredictor(3, d)
    h, vmax = torch.randn(N, d, generator=g), torch.randn(N, generator=g) + 2
    p.set_guard(h, vmax, share=0.01)
    head = ToolkenHead(K, d, bias=True)
    head.weight.data = torch.randn(K, d, generator=g)
    head.bias.data = torch.randn(K, generator=g)
    rows = torch.randn(n, d, generator=g) * torch.tensor([0.01, 1, 2, 3, 4])[:, None]
    b = p.guard_offsets(rows, head, toolken_bias=0.5)
    hq = h.half().float()  # the guard keeps fp16 hidden states
    top = torch.maximum(hq @ head.weight.T + head.bias + 0.5, vmax[:, None]).max(-1).values
    z = hq @ rows.T + 0.5
    for j in range(n):
        wins_before = int((z[:, j] > top).sum())
        wins_after = int((z[:, j] + b[j] > top).sum())
        assert b[j] <= 0 and wins_after <= 0.01 * N + 1
        if wins_before <= 0.01 * (N - 1):
            assert b[j] == 0  # a row that rarely wins keeps its logits
        else:  # the least bias: a little less lowering and it wins on more than the share
            assert int((z[:, j] + 0.98 * b[j] > top).sum()) > 0.01 * N - 1
    assert wins_before > 0.01 * N  # the last row did need lowering
    head.softcap = 3.0  # a soft-capped head (Gemma-style): new rows are capped the same way
    b = p.guard_offsets(rows, head)
    cap = lambda t: 3.0 * torch.tanh(t / 3.0)  # noqa: E731
    top = torch.maximum(cap(hq @ head.weight.T + head.bias), vmax[:, None]).max(-1).values
    assert all(int((cap(hq @ rows[j]) + b[j] > top).sum()) <= 0.01 * N + 1 for j in range(n))
    assert all(int((cap(hq @ rows[j]) + 0.98 * b[j] > top).sum()) > 0.01 * N - 1
               for j in range(n) if b[j] < 0) and bool((b < 0).any())
    with pytest.raises(PredictorError, match="share"):
        p.set_guard(h, vmax, share=1.0)
    with pytest.raises(PredictorError, match="no guard"):
        ToolkenPredictor(3, d).guard_offsets(rows, head)


def test_guarded_zero_shot_rows_get_a_bias_and_the_guard_round_trips(checkpoint, tiny_base):
    out = checkpoint / "guarded"
    ToolkenModel.from_pretrained(checkpoint / "out", base=tiny_base).save_pretrained(out)
    assert main(["fit-predictor", "--toolkens", str(out), "--tools", str(checkpoint / "p.py"),
                 "--method", "prototype", "--guard-share", "0.05"]) == 0
    p = load_predictor(out, tiny_base)
    assert p.has_guard and p.meta["guard_share"] == 0.05 and p.guard_h.dtype == torch.float16
    cfg = json.loads((out / PREDICTOR_CONFIG).read_text())
    assert cfg["guard_positions"] == len(p.guard_h) > 0
    old = ToolkenModel.from_pretrained(out, base=tiny_base)
    assert old.head.bias is None
    assert main(["add-tools", "--toolkens", str(out), "--tools", str(checkpoint / "p.py"),
                 "--zero-shot", "--out", str(checkpoint / "guarded_plus")]) == 0
    plus = ToolkenModel.from_pretrained(checkpoint / "guarded_plus", base=tiny_base)
    expected = p.guard_offsets(plus.head.weight[3:].detach(), old.head, old.toolken_bias)
    assert plus.extra_config["added_tools"]["guard"] is True
    assert bool((expected != 0).any()) == (plus.head.bias is not None)
    # rows made to win everywhere: the guard lowers them, the old rows keep a zero bias, and
    # the bias survives a save and a load
    from toolken.tools import load_pack

    loud = load_predictor(out, tiny_base)
    loud.linear.bias.data = 50 * loud.guard_h.float().mean(0)
    model = ToolkenModel.from_pretrained(out, base=tiny_base)
    model.predictor = loud
    pack = load_pack(checkpoint / "p.py")
    model.add_tools([pack["divide"], pack["power"]], init="predicted")
    expected = loud.guard_offsets(model.head.weight[3:].detach(), old.head, old.toolken_bias)
    assert bool((expected < 0).all())
    assert torch.equal(model.head.bias[:3].detach(), torch.zeros(3))
    torch.testing.assert_close(model.head.bias[3:].detach(), expected, rtol=0, atol=1e-6)
    model.save_pretrained(checkpoint / "loud")
    again = ToolkenModel.from_pretrained(checkpoint / "loud", base=tiny_base)
    assert torch.equal(again.head.bias, model.head.bias)
    assert main(["add-tools", "--toolkens", str(out), "--tools", str(checkpoint / "p.py"),
                 "--zero-shot", "--no-guard", "--out", str(checkpoint / "unguarded")]) == 0
    bare = ToolkenModel.from_pretrained(checkpoint / "unguarded", base=tiny_base)
    assert bare.head.bias is None and bare.extra_config["added_tools"]["guard"] is False
    assert torch.equal(bare.head.weight, plus.head.weight)
    # a weights file that does not match the config is refused, naming both files
    cfg["guard_positions"] += 1
    (out / PREDICTOR_CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(PredictorError, match="does not match"):
        load_predictor(out, tiny_base)
