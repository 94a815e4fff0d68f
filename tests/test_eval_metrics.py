"""Tests for toolken.evaluation metrics: answer numbers, tolerances, KAMEL tool ids,
APIBench call matching for the three providers, aggregation and the report file."""

import json
import math
from types import SimpleNamespace

import pytest

from toolken.core.data import Problem
from toolken.evaluation import (ApiIndex, aggregate, approx_correct, em2_correct,
                                final_number, first_tool, load_benchmark, score,
                                tool_correct, write_report)
from conftest import shared_path


# ---------------------------------------------------------------- final number


@pytest.mark.parametrize("text, expected", [
    ("So, the answer is 777.41 dollars.", 777.41),
    ("4.1*30=<multiply>(4.1,30)=123 degrees. #### 123", 123),
    ("The Answer Is 8", 8),
    ("The answer is 42. Then she buys 17 more.", 42),  # the number after the marker
    ("The answer is 5. No wait, the answer is 6.", 6),  # after the last marker
    ("The answer is 2031 - 1969 =62.", 62),  # a calculation after the marker: its result
    ("So, the answer is 24*6 = 144 seconds. It took 3 tries", 144),
    ("the answer is 0.5 * 3.2 = -1.6e3\nThen 7 = 8", -1600),  # the sentence ends at the line
    ("The answer is 42. Then 2 + 3 = 5.", 42),  # an '=' in a later sentence is not the answer's
    ("The answer is 12 = ?", 12),  # no number after the '=': the number after the marker
    ("The answer is 3.5. 4 = 4", 3.5),
    ("She has 3 apples and 4 pears, 7 fruits in all", 7),  # no marker: the last number
    ("The answer is 1,234,567.", 1234567),
    ("1,234.5 in total", 1234.5),
    ("values 1,23", 23),  # not a thousands grouping: the numbers 1 and 23
    ("12,3456", 3456),
    ("the share is 3/4", 0.75),
    ("it grew by 15%", 15),
    ("the temperature is -4 degrees", -4),
    ("the answer is \u22127", -7),  # Unicode minus
    ("5-3", 3),  # a dash between numbers is not a sign
    ("about 1.5e3 grams", 1500),
    ("The answer is .5", 0.5),
    ("no number here", None),
    ("It is 42. The answer is unknown", None),  # a marker without a number after it
    ("1e999", None),  # not finite
    ("tool P241 was used", None),  # digits inside a word are not a number
])
def test_final_number(text, expected):
    got = final_number(text)
    assert got == expected if expected is None else got == pytest.approx(expected)


# ---------------------------------------------------------------- tolerances


def test_approx_tolerance_edge():
    assert approx_correct(1001.0, 1000.0) and approx_correct(999.0, 1000.0)  # exactly 0.1%
    assert not approx_correct(1001.001, 1000.0) and not approx_correct(998.999, 1000.0)
    g = 1.5126
    assert approx_correct(g * 1.001, g) and approx_correct(g * 0.999, g)
    assert not approx_correct(g * 1.0010001, g)
    assert approx_correct(-2050.048, -2048.0) and not approx_correct(-2050.05, -2048.0)
    assert approx_correct(2050.0, 2048.0, rel=1e-3)


def test_approx_at_gold_zero_and_bad_predictions():
    assert approx_correct(0.0, 0.0) and approx_correct(-1e-6, 0.0)
    assert not approx_correct(2e-6, 0.0)
    assert not approx_correct(None, 3.0)
    assert not approx_correct(math.nan, 3.0) and not approx_correct(math.inf, 3.0)


def test_em2():
    assert em2_correct(36.4167, 36.42) and em2_correct(36.4167, 36.4150)
    assert not em2_correct(36.414, 36.4167)
    assert em2_correct(2.675, 2.68)  # half-up from the decimal form (round() gives 2.67)
    assert em2_correct(1e20, 1e20) and not em2_correct(None, 1.0)
    assert not em2_correct(math.nan, 1.0)
    # em2 and approx differ: 0.1% of 2048 is 2.048
    assert approx_correct(2049.0, 2048.0) and not em2_correct(2049.0, 2048.0)


def test_score_and_aggregate_numbers():
    golds = [1.5126, 4353.0, 36.4167]
    texts = ["So, the answer is 1.5126.", "#### 4,352", "The answer is 36.42"]
    scores = [score("funcqa-mh", t, g) for t, g in zip(texts, golds)]
    assert [s["correct"] for s in scores] == [True, True, True]  # 4352 is within 0.1%
    assert [s["em2"] for s in scores] == [True, False, True]
    assert scores[1]["number"] == 4352.0
    assert aggregate("funcqa-mh", scores) == {"accuracy": 1.0, "accuracy_em2": 0.6667}
    assert aggregate("gsm8k-xl", []) == {"accuracy": None, "accuracy_em2": None}


def test_aggregate_errors():
    with pytest.raises(ValueError, match="no field 'em2'"):
        aggregate("funcqa-oh", [{"correct": True}])
    with pytest.raises(ValueError, match="funcqa-oh"):
        aggregate("funcqa", [])
    with pytest.raises(ValueError, match="funcqa-oh"):
        score("gsm8k", "1", 1.0)


# ---------------------------------------------------------------- KAMEL


def test_relation_ids_are_compared_whole():
    assert not tool_correct("P2416", "P241") and not tool_correct("P241", "P2416")
    assert tool_correct("P241", "P241") and tool_correct("<P241>", "P241")
    assert not tool_correct(None, "P241")


def test_kamel_substring_trap():
    text = "The answer is <P2416>(Zoe Smith)=swimming"  # "P241" is a substring of it
    assert first_tool([], text) == "P2416"
    assert not score("kamel", text, "P241")["correct"]
    assert score("kamel", text, "P2416") == {"correct": True, "tool": "P2416"}


def test_kamel_first_call_wins():
    calls = [{"tool": "P241", "args": ["x"]}, {"tool": "P2416"}]
    assert score("kamel", "P2416 in the text", "P241", calls=calls)["correct"]
    assert score("kamel", "", "P17", calls=[SimpleNamespace(tool="P17")])["correct"]
    assert score("kamel", "I do not know", "P17") == {"correct": False, "tool": None}
    scores = [score("kamel", "<P17>(x)=y", "P17"), score("kamel", "<P170>(x)=y", "P17")]
    assert aggregate("kamel", scores) == {"tool_accuracy": 0.5}


# ---------------------------------------------------------------- APIBench

HF_DOCS = [
    {"api_call": "AutoModel.from_pretrained('YituTech/conv-bert-base')",
     "api_name": "YituTech/conv-bert-base", "domain": "NLP Feature Extraction"},
    {"api_call": "pipeline('sentiment-analysis', model='siebert/sentiment-roberta-large-english')",
     "api_name": "siebert/sentiment-roberta-large-english", "domain": "NLP Text Classification"},
    {"api_call": "AutoModel.from_pretrained('princeton-nlp/unsup-simcse-roberta-base')",
     "api_name": "princeton-nlp/unsup-simcse-roberta-base", "domain": "NLP Feature Extraction"},
    {"api_call": "AutoModel.from_pretrained('Helsinki-NLP/opus-mt-sv-en').",  # not Python
     "api_name": "Helsinki-NLP/opus-mt-sv-en", "domain": "NLP Translation"},
]
TORCH_DOCS = [
    {"api_call": "torch.hub.load(repo_or_dir='intel-isl/MiDaS', model='DPT_Hybrid', "
                 "pretrained=True)", "api_name": "MiDaS", "domain": "Classification"},
    {"api_call": "torch.hub.load(repo_or_dir='szq0214/MEAL-V2', 'meal_v2', "  # not Python
                 "model='mealv2_resnest50', pretrained=True)",
     "api_name": "MEAL_V2", "domain": "Image Classification"},
    {"api_call": "torch.hub.load(repo_or_dir='pytorch/fairseq')", "api_name": "fairseq",
     "domain": "Translation"},
]
TF_DOCS = [
    {"api_call": "hub.KerasLayer('https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/"
                 "feature_vector/4')", "api_name": "mobilenet", "domain": "Image feature vector"},
    {"api_call": "hub.load('https://tfhub.dev/google/universal-sentence-encoder/4')",
     "api_name": "use", "domain": "Text embedding"},
    {"api_call": "hub.load('https://tfhub.dev/google/universal-sentence-encoder/4')",
     "api_name": "use", "domain": "Text classification"},
]


def gold(doc: dict) -> dict:
    return {k: doc[k] for k in ("api_call", "api_name", "domain")}


def check(bench, apis, text, gold_doc, expected):
    s = score(bench, text, gold(gold_doc), apis=apis)
    got = (s["hallucination"], s["correct"], s["exact"])
    assert got == expected, (text, s)
    return s


def test_huggingface_matching():
    apis, b = ApiIndex("huggingface", HF_DOCS), "apibench-huggingface"
    conv, senti, simcse, opus = HF_DOCS
    # (hallucination, domain correct, exact)
    check(b, apis, "<<<domain>>>: NLP\n<<<api_call>>>: AutoModel.from_pretrained("
                   "'YituTech/conv-bert-base')\n<<<api_provider>>>: Hugging Face", conv,
          (False, True, True))
    check(b, apis, "model = AutoModel.from_pretrained(pretrained_model_name_or_path="
                   "'YituTech/conv-bert-base')", conv, (False, True, True))
    check(b, apis, "```python\nmodel = AutoModel.from_pretrained('YituTech/conv-bert-base')"
                   "\nprint(model)\n```", conv, (False, True, True))  # a fenced snippet
    check(b, apis, "clf = pipeline('text-classification', "
                   "model='siebert/sentiment-roberta-large-english')", senti,
          (False, True, True))
    check(b, apis, "AutoModel.from_pretrained('princeton-nlp/unsup-simcse-roberta-base')",
          conv, (False, True, False))  # another API of the same domain
    check(b, apis, "pipeline('sentiment-analysis', model='siebert/sentiment-roberta-large-"
                   "english')", conv, (False, False, False))  # another domain
    s = check(b, apis, "AutoModel.from_pretrained('made-up/model-9000')", conv,
              (True, False, False))  # hallucinated model id
    assert s["parsed"] and s["key"] == "made-up/model-9000" and s["matched"] is None
    s = check(b, apis, "AutoModel.from_pretrained('YituTech/conv-bert-base'", conv,
              (True, False, False))  # unparseable
    assert not s["parsed"] and s["key"] is None
    check(b, apis, "pipeline('sentiment-analysis')", senti, (True, False, False))  # no model
    check(b, apis, opus["api_call"], opus, (False, True, True))  # verbatim broken doc call


def test_torchhub_matching():
    apis, b = ApiIndex("torchhub", TORCH_DOCS), "apibench-torchhub"
    midas, meal, fairseq = TORCH_DOCS
    check(b, apis, "model = torch.hub.load('intel-isl/MiDaS', 'DPT_Hybrid', pretrained=True)",
          midas, (False, True, True))  # positional
    check(b, apis, "torch.hub.load(model='DPT_Hybrid', repo_or_dir='intel-isl/MiDaS:master')",
          midas, (False, True, True))  # keywords, a tag on the repo
    check(b, apis, "torch.hub.load('intel-isl/MiDaS', 'DPT_Huge')", midas,
          (True, False, False))  # a model the repo does not have
    check(b, apis, "torch.hub.load('intel-isl/MiDaS', 'DPT_Hybrid'", midas,
          (True, False, False))  # unparseable
    check(b, apis, meal["api_call"], meal, (False, True, True))  # verbatim broken doc call
    check(b, apis, "torch.hub.load('szq0214/MEAL-V2', 'mealv2_resnest50')", meal,
          (False, True, True))
    check(b, apis, "torch.hub.load('pytorch/fairseq', 'transformer.wmt16.en-de')", fairseq,
          (False, True, True))  # the record names the repo only
    check(b, apis, "torch.hub.load('pytorch/fairseq', 'x')", midas, (False, False, False))


def test_tensorflowhub_matching():
    apis, b = ApiIndex("tensorflowhub", TF_DOCS), "apibench-tensorflowhub"
    mobilenet, use_embed, use_cls = TF_DOCS
    check(b, apis, "model = tf.keras.Sequential([hub.KerasLayer('https://tfhub.dev/google/"
                   "imagenet/mobilenet_v2_100_224/feature_vector/4/', trainable=False)])",
          mobilenet, (False, True, True))  # nested, trailing slash
    # records sharing a URL are one API carrying both domains
    check(b, apis, "embed = hub.load('https://tfhub.dev/google/universal-sentence-encoder/4')",
          use_cls, (False, True, True))
    check(b, apis, "hub.load('https://tfhub.dev/google/universal-sentence-encoder/4')",
          mobilenet, (False, False, False))
    check(b, apis, "hub.load('https://tfhub.dev/google/universal-sentence-encoder/99')",
          use_embed, (True, False, False))  # hallucinated version
    check(b, apis, "hub.load(model_url)", use_embed, (True, False, False))  # no URL
    check(b, apis, "hub.load('https://tfhub.dev/google/universal-sentence-encoder/4'",
          use_embed, (True, False, False))  # unparseable


def test_apibench_aggregate_and_errors():
    apis = ApiIndex("torchhub", TORCH_DOCS)
    g = gold(TORCH_DOCS[0])
    texts = ["torch.hub.load('intel-isl/MiDaS', 'DPT_Hybrid')",
             "torch.hub.load('pytorch/fairseq', 'x')", "torch.hub.load(", "nothing"]
    scores = [score("apibench-torchhub", t, g, apis=apis) for t in texts]
    assert aggregate("apibench-torchhub", scores) == {
        "domain_accuracy": 0.25, "hallucination": 0.5, "exact_api_accuracy": 0.25}
    with pytest.raises(ValueError, match="torchhub API documentation"):
        score("apibench-torchhub", texts[0], g)
    with pytest.raises(ValueError, match="torchhub API documentation"):
        score("apibench-torchhub", texts[0], g, apis=ApiIndex("huggingface", HF_DOCS))
    with pytest.raises(ValueError, match="huggingface, torchhub, tensorflowhub"):
        ApiIndex("pytorch", TORCH_DOCS)


def test_real_documentation_gold_calls_match_exactly():
    """Every gold call of torchhub_train.json is its own documented API (MEAL-V2 included)."""
    apis = ApiIndex.from_file(shared_path("apibench", "api", "torchhub_api.jsonl"))
    examples, _ = load_benchmark("apibench-torchhub",
                                 shared_path("apibench", "apibench", "torchhub_train.json"))
    scores = [score("apibench-torchhub", e.gold["api_call"], e.gold, apis=apis)
              for e in examples]
    assert aggregate("apibench-torchhub", scores) == {
        "domain_accuracy": 1.0, "hallucination": 0.0, "exact_api_accuracy": 1.0}
    hf = ApiIndex.from_file(shared_path("apibench", "api", "huggingface_api.jsonl"))
    examples, _ = load_benchmark("apibench-huggingface", shared_path(
        "apibench", "format_sample_huggingface_eval.json"))
    for e in examples:
        generation = e.meta["api_data"]["api_call"].join(["<<<api_call>>>: ", "\n<<<x>>>: y"])
        assert score("apibench-huggingface", generation, e.gold, apis=hf)["exact"]
    tf = ApiIndex.from_file(shared_path("apibench", "api", "tensorflowhub_api.jsonl"))
    assert tf.provider == "tensorflowhub" and len(tf.by_key) > 50


# ---------------------------------------------------------------- report


def report(**over):
    rec = {"benchmark": "funcqa-oh", "method": "toolken", "n": 1,
           "metrics": {"accuracy": 1.0, "accuracy_em2": 1.0}, "base_model": "tiny",
           "toolkens": "abc123", "config": {"limit": 1},
           "predictions": [{"id": "0", "prediction": "The answer is 5", "gold": 5.0,
                            "correct": True, "calls": [{"tool": "add", "args": [2, 3]}],
                            "number": math.nan}],
           "skipped": [Problem(3, "invalid JSON", "line 3: ...")], "wall_seconds": 0.5}
    rec.update(over)
    return rec


def test_write_report(tmp_path):
    path = write_report(tmp_path / "out" / "r.json", report(extra="kept"))
    data = json.loads(path.read_text())
    assert list(data)[:10] == ["benchmark", "method", "n", "metrics", "base_model", "toolkens",
                               "config", "predictions", "skipped", "wall_seconds"]
    assert data["extra"] == "kept"
    assert data["skipped"] == [{"index": 3, "reason": "invalid JSON", "detail": "line 3: ..."}]
    assert data["predictions"][0]["number"] is None  # NaN is not JSON
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]  # no temp file left


def test_write_report_refuses_incomplete_records(tmp_path):
    rec = report()
    del rec["wall_seconds"]
    with pytest.raises(ValueError, match="wall_seconds"):
        write_report(tmp_path / "r.json", rec)
    with pytest.raises(ValueError, match="n=2 but 1 predictions"):
        write_report(tmp_path / "r.json", report(n=2))
    with pytest.raises(ValueError, match="prediction 0 is missing \\['calls'\\]"):
        write_report(tmp_path / "r.json", report(predictions=[
            {"id": "0", "prediction": "", "gold": 1.0, "correct": False}]))
    assert not (tmp_path / "r.json").exists()


def test_rescore_reads_saved_texts_again(tmp_path, capsys):
    """benchmarks/rescore.py: the same texts scored with today's reading; changed verdicts listed."""
    import importlib.util
    import json

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("rescore", REPO / "benchmarks" / "rescore.py")
    rescore = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rescore)
    preds = [{"id": "0", "text": "The answer is 2031 - 1969 =62.", "gold": 62.0, "correct": False},
             {"id": "1", "text": "So, the answer is 5.", "gold": 5.0, "correct": True},
             {"id": "2", "text": "So, the answer is 7.", "gold": 5.0, "correct": True}]
    report = {"benchmark": "funcqa-oh", "predictions": preds}
    assert rescore.rescore(report) == (2, 2, [("0", False, True, preds[0]["text"]),
                                              ("2", True, False, preds[2]["text"])])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    assert rescore.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "2/3 (0.6667) stored -> 2/3 (0.6667) now" in out and "id 0: False -> True" in out
    path.write_text(json.dumps({"benchmark": "kamel", "predictions": []}))
    with pytest.raises(SystemExit, match="benchmark 'kamel' is not one of"):
        rescore.main([str(path)])
