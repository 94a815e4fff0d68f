"""`toolken eval apibench-*` with toolkens on the tiny model: the benchmark's own catalogue by
default (tool namespaces), the all-catalogue figure beside it, and the rerank inside a filter."""

import json

import pytest
import torch

from toolken.core.prompts import api_prompt
from toolken.evaluation.loaders import load_apibench
from toolken.evaluation.run import EvalConfig, evaluate, summary
from toolken.generation.config import GenerationConfig
from toolken.generation.rerank import Reranker
from toolken.generation.steps import new_cache, step
from toolken.model import ToolkenModel
from toolken.tools.registry import load_pack
from conftest import REPO, SHARED, shared_path

PACK = str(REPO / "tools" / "apibench.py")
N = 3


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, tiny_base):
    """A checkpoint with a toolken for each of the 1,726 APIs; a toolken wins at step one."""
    shared_path("apibench", "api", "torchhub_api.jsonl")
    names = load_pack(PACK).names
    torch.manual_seed(0)
    m = ToolkenModel(tiny_base, [], generation_config=GenerationConfig(toolken_bias=1e4))
    m.add_tools(names)
    path = tmp_path_factory.mktemp("apibench")
    m.save_pretrained(path)
    return str(path), m.attach_tools(PACK)


def _run(ckpt, out, **generation):
    data = shared_path("apibench", "apibench", "torchhub_train.json")
    return evaluate(EvalConfig(bench="apibench-torchhub", data=str(data), toolkens=ckpt, tools=PACK,
                               limit=N, base_model="tiny-random-llama", shared=str(SHARED),
                               out=str(out), generation={"batch_size": 1, **generation}),
                    progress=False)


def _first_toolken(model, question: str, prefix: str | None) -> str:
    """Reference: the toolken with the highest logit after the prompt (of ``prefix`` ones)."""
    ids = model.tokenizer(api_prompt(question), add_special_tokens=True)["input_ids"]
    z = step(model, ids, new_cache(model))[model.vocab_size:]  # (K,)
    keep = torch.tensor([prefix is None or t.startswith(prefix) for t in model.tools])
    return model.tools[int(z.masked_fill(~keep, float("-inf")).argmax())]


def test_own_catalogue_by_default_and_all_catalogues_beside(catalogue, tmp_path):
    ckpt, model = catalogue
    report = _run(ckpt, tmp_path / "r.json")
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["tool_filter"] == ["torchhub.*"]
    assert list(written)[:10] == ["benchmark", "method", "n", "metrics", "base_model", "toolkens",
                                  "config", "predictions", "skipped", "wall_seconds"]
    data = shared_path("apibench", "apibench", "torchhub_train.json")
    examples = load_apibench(data)[0][:N]
    own = [_first_toolken(model, ex.question, "torchhub.") for ex in examples]
    every = [_first_toolken(model, ex.question, None) for ex in examples]
    assert [p["calls"][0]["tool"] for p in report["predictions"]] == own
    assert [p["prediction"] for p in report["predictions"]] == \
        [model.registry[t].meta["api_call"] for t in own]
    assert [p["all_catalogues_prediction"] for p in report["predictions"]] == \
        [model.registry[t].meta["api_call"] for t in every]
    beside = written["metrics"]["all_catalogues"]
    assert set(beside) == {"domain_accuracy", "hallucination", "exact_api_accuracy", "other_catalogue"}
    assert beside["other_catalogue"] == round(sum(not t.startswith("torchhub.") for t in every) / N, 4)
    line = summary(report)
    assert "[tool_filter torchhub.*]" in line and "; all_catalogues: domain_accuracy=" in line


def test_a_given_filter_wins_and_no_second_pass(catalogue, tmp_path):
    ckpt, model = catalogue
    report = _run(ckpt, tmp_path / "r.json", tool_filter=["*"])
    assert report["tool_filter"] == ["*"] and "all_catalogues" not in report["metrics"]
    data = shared_path("apibench", "apibench", "torchhub_train.json")
    every = [_first_toolken(model, ex.question, None) for ex in load_apibench(data)[0][:N]]
    assert [p["calls"][0]["tool"] for p in report["predictions"]] == every


def test_a_checkpoint_without_the_catalogue_is_refused(tiny_base, tmp_path):
    hf = shared_path("apibench", "api", "huggingface_api.jsonl")
    pack = tmp_path / "hf_only.py"  # a pack of the HuggingFace catalogue alone
    pack.write_text("from toolken.tools.catalog import load_catalog\n\n\n"
                    f"def build():\n    return load_catalog([{str(hf)!r}], local_models={{}})\n")
    m = ToolkenModel(tiny_base, [])
    m.add_tools(load_pack(str(pack)).names)
    m.save_pretrained(tmp_path / "ckpt")
    data = shared_path("apibench", "apibench", "torchhub_train.json")
    with pytest.raises(ValueError, match=r"no torchhub\.\* toolken .*--tool-filter"):
        evaluate(EvalConfig(bench="apibench-torchhub", data=str(data), toolkens=str(tmp_path / "ckpt"),
                            tools=str(pack), limit=1, base_model="tiny-random-llama", shared=str(SHARED)),
                 progress=False)


def test_rerank_candidates_stay_inside_the_filter(catalogue):
    _, model = catalogue
    torch.manual_seed(1)
    V, K = model.vocab_size, len(model.tools)
    zz = torch.randn(V + K)
    allowed = torch.tensor([t.startswith("tfhub.") for t in model.tools])
    zz[V:][~allowed] = float("-inf")
    zz[V + int(allowed.nonzero()[0])] = 1e4  # a masked-in toolken wins
    for top_k in (3, 25):
        row, trace = Reranker(model, model.registry, top_k).decide(zz, "Find a text encoder.", "")
        assert len(trace.candidates) == min(top_k, int(allowed.sum()))
        assert all(c.startswith("tfhub.") for c in trace.candidates)
    few = zz.clone()
    few[V:][allowed.nonzero()[2:, 0]] = float("-inf")  # two rows left, top_k 5: only those two
    _, trace = Reranker(model, model.registry, 5).decide(few, "Find a text encoder.", "")
    assert trace.candidates == [model.tools[int(i)] for i in allowed.nonzero()[:2, 0]]


def test_domain_rerank_is_pmi_among_the_winners_domain(catalogue):
    _, model = catalogue
    torch.manual_seed(2)
    V, K = model.vocab_size, len(model.tools)
    zz = torch.randn(V + K)
    zz[V:] += 1e4
    zz[V:][torch.rand(K) < 0.3] = float("-inf")  # a filter: masked rows never stand
    order = sorted((i for i in range(K) if zz[V + i] > float("-inf")), key=lambda i: -float(zz[V + i]))
    domain = model.registry[order[0]].meta["domain"]
    want = [i for i in order if model.registry[i].meta["domain"] == domain][:4]
    q = "Load a pretrained model that estimates depth from one image."
    row, trace = Reranker(model, model.registry, 4, none_bias=-1e9, method="domain").decide(zz, q, "")
    assert trace.candidates == [model.tools[i] for i in want]
    only = torch.full_like(zz, float("-inf"))
    only[:V] = zz[:V]
    for rank, i in enumerate(want):
        only[V + i] = 1e4 - rank  # the same candidates, in the same order, for plain pmi
    _, pmi = Reranker(model, model.registry, 4, none_bias=-1e9).decide(only, q, "")
    assert pmi.candidates == trace.candidates and pmi.scores == trace.scores
    assert row == want[max(range(len(want)), key=lambda j: trace.scores[j])]


def test_eval_with_the_domain_rerank_records_it(catalogue, tmp_path):
    ckpt, model = catalogue
    report = _run(ckpt, tmp_path / "r.json", rerank_top_k=3, rerank_method="domain",
                  rerank_none_bias=-1e9)
    for p in report["predictions"]:
        (r,) = p["reranks"]
        assert len({model.registry[c].meta["domain"] for c in r["candidates"]}) == 1
        assert all(c.startswith("torchhub.") for c in r["candidates"])
        assert p["calls"][0]["tool"] == r["choice"]


def test_the_best_toolken_is_forced_unless_a_bias_is_given(tiny_base, tmp_path):
    """An APIBench instruction always asks for an API: a checkpoint whose stored bias keeps
    every toolken from winning still answers with its best toolken at the call's position;
    --toolken-bias given explicitly is used as it is."""
    names = load_pack(PACK).names
    torch.manual_seed(1)
    m = ToolkenModel(tiny_base, [], generation_config=GenerationConfig(toolken_bias=-1e4))
    m.add_tools(names)
    m.save_pretrained(tmp_path / "ckpt")
    model = m.attach_tools(PACK)
    forced = _run(str(tmp_path / "ckpt"), tmp_path / "a.json")
    data = shared_path("apibench", "apibench", "torchhub_train.json")
    own = [_first_toolken(model, ex.question, "torchhub.") for ex in load_apibench(data)[0][:N]]
    assert [p["calls"][0]["tool"] for p in forced["predictions"]] == own
    given = _run(str(tmp_path / "ckpt"), tmp_path / "b.json", toolken_bias=-1e4)
    assert all(not p["calls"] for p in given["predictions"])
    assert given["metrics"]["hallucination"] == 1.0


def test_misses_breakdown_counts_each_kind(tmp_path):
    """benchmarks/apibench_misses.py: exact / right domain (gold among the candidates, near-
    identical documentation) / wrong domain / hallucination, against a count written here."""
    import importlib.util

    from toolken.tools.registry import Tool

    spec = importlib.util.spec_from_file_location("misses", REPO / "benchmarks" / "apibench_misses.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def api(name, domain, desc):
        rec = {"api_name": name, "api_call": f"load('{name}')", "domain": domain, "description": desc}
        return Tool(name=f"hf.{name}", fn=lambda **kw: "", description=desc,
                    meta={"record": rec, "domain": domain})

    tools = {t.name: t for t in (api("yolo-s", "Detection", "Find plates."),
                                 api("yolo-n", "Detection", "Find plates."),
                                 api("depth", "Detection", "Estimate depth."),
                                 api("asr", "Speech", "Transcribe audio."))}

    def embed(texts):  # one unit axis per description word set
        return torch.stack([torch.tensor([1.0, 0.0]) if "plates" in t else torch.tensor([0.0, 1.0])
                            for t in texts])

    def pred(gold, chosen, correct, exact=False, hallucination=False, candidates=()):
        return {"gold": {"api_call": f"load('{gold}')"}, "calls": [{"tool": f"hf.{chosen}"}] if chosen else [],
                "correct": correct, "exact": exact, "hallucination": hallucination,
                "reranks": [{"candidates": [f"hf.{c}" for c in candidates]}]}

    preds = [pred("yolo-s", "yolo-s", True, exact=True),
             pred("yolo-s", "yolo-n", True, candidates=("yolo-n", "yolo-s")),  # near-identical, among
             pred("depth", "yolo-n", True, candidates=("yolo-n",)),  # other docs, not among
             pred("asr", "depth", False),
             pred("asr", None, False, hallucination=True)]
    c = mod.misses({"predictions": preds}, tools, embed)
    assert [c[k] for k in mod.KINDS] == [1, 2, 1, 1, 1, 1]
    assert "| wrong domain | 1 (0.200) |" in mod.table([("r", 5, c)])
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"benchmark": "funcqa-oh", "method": "toolken", "predictions": []}))
    with pytest.raises(SystemExit, match="not a toolken APIBench report"):
        mod.main([str(path)])
