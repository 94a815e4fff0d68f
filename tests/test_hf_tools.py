"""HFModelTool: a tiny classifier built here and saved with a model card, end to end; the
real MiniLM (embeddings, similarity) and SmolLM2 (generation by prompt) models; and the bad
inputs (unsupported task, card without a task, a model that is not on this machine)."""

import json
import pickle
import threading

import pytest
import torch

from toolken.tools.hf_tools import (SUPPORTED_TASKS, HFModelTool, clear_shared_models, minilm_folder,
                              read_model_card)
from toolken.tools.registry import ToolRegistry
from toolken.tools import ToolError

CARD = """---
license: apache-2.0
pipeline_tag: text-classification
tags: [sentiment]
---

# tiny-sentiment

A tiny [BERT](https://arxiv.org/abs/1810.04805) that labels a review **POSITIVE** or NEGATIVE.

## Training
Random weights.
"""
WORDS = "the a movie film was is good great bad awful not very".split()


def save_tiny_classifier(folder, card=CARD):
    """A 1-layer BERT classifier over a word-level tokenizer, saved with a model card."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                        num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny-sentiment"))


def reference_top_label(folder, text):
    """The classifier run plainly: tokenizer -> model -> softmax -> argmax."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        probs = model(**tok(text, return_tensors="pt")).logits.softmax(-1)[0]
    i = int(probs.argmax())
    return model.config.id2label[i], float(probs[i])


# ---------------------------------------------------------------------------- tiny classifier
def test_classifier_end_to_end(classifier_dir):
    tool = HFModelTool(classifier_dir, device="cpu")  # task from the card's pipeline_tag
    assert tool.name == "tiny-sentiment"  # the card's title
    assert tool.meta["hf_task"] == "text-classification"
    assert "labels a review POSITIVE or NEGATIVE" in tool.description  # markdown stripped
    assert "arxiv" not in tool.description
    registry = ToolRegistry([tool])
    assert not tool.fn.loaded  # registration loads nothing

    # in a thread, to see the model this process loads (a worker's is out of sight)
    result = registry["tiny-sentiment"].call("the movie was not good", timeout=60,
                                             isolation="thread")
    assert result.ok, result.error
    label, score = reference_top_label(classifier_dir, "the movie was not good")
    assert result.value["label"] == label and result.text == label
    assert result.value["score"] == pytest.approx(score, abs=1e-5)
    assert json.loads(json.dumps(result.value)) == result.value
    assert tool.fn.loaded
    pipe = tool.fn._impl
    assert tool.call(["a great film"], isolation="thread").ok
    assert tool.fn._impl is pipe  # kept, not reloaded
    assert pipe.device.type == "cpu"


def test_classifier_in_a_worker_process(classifier_dir):
    from toolken.tools.workers import ToolRunner

    tool = HFModelTool(classifier_dir, device="cpu")
    runner = ToolRunner("process", workers=1)
    try:
        first = tool.call("the movie was not good", timeout=60, runner=runner)
        assert first.ok, first.error
        assert first.value["label"] == reference_top_label(classifier_dir,
                                                           "the movie was not good")[0]
        (pid,) = runner.pids()
        assert tool.call(["a great film"], timeout=60, runner=runner).ok
        assert runner.pids() == [pid]  # the same worker, its model kept
        assert not tool.fn.loaded  # the model lives in the worker, not here
    finally:
        runner.close()


def test_classifier_loads_once_under_concurrent_first_calls(classifier_dir, monkeypatch):
    from toolken.tools import hf_tools

    clear_shared_models()
    loads = []
    real_load = hf_tools._load
    monkeypatch.setattr(hf_tools, "_load", lambda *a: loads.append(a) or real_load(*a))
    tool = HFModelTool(classifier_dir, task="sentiment-analysis", name="senti", device="cpu")
    results = [None] * 4

    def run(i):
        results[i] = tool.call("a very bad movie", timeout=60, isolation="thread")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    assert all(r.ok for r in results) and len({r.value["label"] for r in results}) == 1
    clone = pickle.loads(pickle.dumps(tool.fn))  # picklable for process isolation
    assert not clone.loaded and clone(text="good")["label"] in ("POSITIVE", "NEGATIVE")


def test_hub_id_in_the_local_cache(tmp_path, monkeypatch):
    """A hub id resolves to its snapshot in the Hugging Face cache, with no network."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--tiny-org--tiny-sentiment"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    save_tiny_classifier(repo / "snapshots" / ("0" * 40))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    tool = HFModelTool("tiny-org/tiny-sentiment", name="cached", device="cpu")
    assert tool.meta["hf_task"] == "text-classification"  # from the cached card
    assert tool.call("a good film", isolation="thread").ok  # the cache path is patched here


def test_model_card_is_read(classifier_dir):
    card = read_model_card(str(classifier_dir))
    assert card.pipeline_tag == "text-classification" and card.metadata["tags"] == ["sentiment"]
    assert card.title == "tiny-sentiment"


# ---------------------------------------------------------------------------- bad input
def test_card_without_task_is_an_error_at_registration(tmp_path, classifier_dir):
    folder = tmp_path / "no-task"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: mit\n---\n\n# no task\n\nA model.\n")
    with pytest.raises(ToolError, match=r"no-task.*no pipeline_tag.*pass task="):
        HFModelTool(folder)
    with pytest.raises(ToolError, match="no task given and no local model card"):
        HFModelTool(tmp_path)  # a folder with no card at all
    assert HFModelTool(folder, task="text-classification").meta["hf_task"] == "text-classification"


def test_unsupported_task_is_an_error_listing_the_supported_ones(tmp_path, classifier_dir):
    with pytest.raises(ToolError) as info:
        HFModelTool(classifier_dir, task="image-classification")
    message = str(info.value)
    assert "'image-classification' is not supported" in message
    assert all(t in message for t in SUPPORTED_TASKS)
    (tmp_path / "README.md").write_text("---\npipeline_tag: object-detection\n---\n")
    with pytest.raises(ToolError, match="'object-detection' is not supported"):
        HFModelTool(tmp_path)


def test_bad_card_yaml_names_the_file(tmp_path):
    (tmp_path / "README.md").write_text("---\npipeline_tag: [unclosed\n---\n")
    with pytest.raises(ToolError, match=r"README.md: front matter is not valid YAML"):
        HFModelTool(tmp_path)


def test_unavailable_model_fails_at_call_time_naming_it(tmp_path):
    tool = HFModelTool("nobody-xyz/no-such-model", task="text-classification")  # registers
    assert tool.name == "no-such-model"
    result = tool.call("hello")
    assert not result.ok and "'nobody-xyz/no-such-model' is not available locally" in result.error
    gone = HFModelTool(tmp_path / "deleted", task="feature-extraction", name="gone")
    result = gone.call("hello")
    assert not result.ok and "deleted' is not available locally" in result.error


def test_a_broken_folder_fails_at_call_time(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    result = HFModelTool(tmp_path, task="text-classification", name="broken").call("hi")
    assert not result.ok and "could not be loaded for text-classification" in result.error


# ---------------------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def minilm():
    try:
        return minilm_folder()
    except ModuleNotFoundError as e:
        pytest.skip(str(e))


@pytest.mark.real_model
def test_minilm_embedding_and_similarity(minilm):
    import numpy as np

    embed = HFModelTool(minilm, task="feature-extraction", name="embed")
    sim = HFModelTool(minilm, name="similarity")  # task from the card: sentence-similarity
    assert sim.meta["hf_task"] == "sentence-similarity" and sim.param_names == ["text1", "text2"]
    assert "384 dimensional dense vector space" in embed.description
    a, b, c = "A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell."
    ea, eb = (np.array(embed.call([t]).value) for t in (a, b))
    r = embed.call([a])
    assert r.ok and len(r.value) == 384 and "(384 dims)" in r.text and len(r.text) < 60
    assert np.linalg.norm(ea) == pytest.approx(1.0, abs=1e-4)
    close, far = sim.call([a, b]), sim.call(f'"{a}", "{c}"')
    assert close.ok and isinstance(close.value, float)
    assert close.value == pytest.approx(float(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb)),
                                        abs=1e-5)
    assert close.value > 0.5 > far.value
    plain = HFModelTool(minilm, name="sim_tf", embedding_backend="transformers")
    assert plain.call([a, b]).value == pytest.approx(close.value, abs=1e-5)  # no ST: same


@pytest.mark.real_model
def test_smollm2_generation_by_prompt(smol_base):
    from toolken.core.base import smollm2_folder

    folder = smollm2_folder()
    cont = HFModelTool(folder, task="text-generation", name="cont", max_new_tokens=6)
    prompt = "The capital of France is"
    r = cont.call([prompt])
    tok, model = smol_base.tokenizer, smol_base.model
    ids = tok(prompt, return_tensors="pt").input_ids
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)
    assert r.ok and r.value == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)

    summ = HFModelTool(folder, task="summarization", name="summarize", max_new_tokens=12)
    fr = HFModelTool(folder, task="translation_en_to_fr", name="to_french", max_new_tokens=12)
    assert fr.parameters["properties"]["target_language"]["default"] == "French"
    text = "The Eiffel Tower is a wrought-iron lattice tower in Paris, built from 1887 to 1889."
    s, t = summ.call([text]), fr.call(["Good morning, my friend."])
    assert s.ok and t.ok and s.value and t.value and s.value != t.value
    assert summ.fn._impl is fr.fn._impl is cont.fn._impl  # one loaded model, shared
