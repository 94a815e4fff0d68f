"""data/make_kamel_questions.py: question-style KAMEL records in the evaluation's layout."""

import json
import subprocess
import sys

from toolken.core.data import load_jsonl

from conftest import REPO

SCRIPT = REPO / "data" / "make_kamel_questions.py"
DESC = {"P921": "main_topics(title): gets the main topics of a book or magazine",
        "P17": "location(name): gets the country where a location is located."}
TRAIN = [
    {"text": "What is Nature Reviews about? A student checks main_topics. It covers biology.",
     "call": ['<f>P921("Nature Reviews")="biology"</f>'], "api": "P921"},
    {"text": "Is Paris in France? Paris is in France.",  # the question gives the answer away
     "call": ['<f>P17("Paris")="France"</f>'], "api": "P17"},
    {"text": "no call", "call": ["<f>P17(oops</f>"], "api": "P17"},
]


def _run(tmp_path, *extra):
    train, desc, out = tmp_path / "train.json", tmp_path / "api_desc.json", tmp_path / "q.jsonl"
    prompt = tmp_path / "prompt.txt"
    train.write_text(json.dumps(TRAIN))
    desc.write_text(json.dumps(DESC))
    prompt.write_text("Question: [QUESTION]\nAnswer: The answer is\n")
    run = subprocess.run([sys.executable, str(SCRIPT), "--train", str(train), "--api-desc",
                          str(desc), "--prompt", str(prompt), "--out", str(out), *extra],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    return run, out


def test_questions_in_the_eval_layout(tmp_path):
    run, out = _run(tmp_path, "--templates", "8")
    assert run.returncode == 0, run.stderr
    records = load_jsonl(out)
    texts = [r.text for r in records]
    assert ("Question: What is Nature Reviews about?\nAnswer: The answer is biology."
            in texts)
    assert not any(t.startswith("Question: Is Paris in France?") for t in texts)
    # 5 function-name templates and 3 from the description (its tail is generic); two of
    # those read the same ("What is the main topics of ...") and are written once
    nature = [r for r in records if r.calls[0].tool == "P921"]
    assert len(nature) == 1 + 8 - 2
    assert "Question: What is the main topics of Nature Reviews?\nAnswer: The answer is " \
           "biology." in texts
    assert "Question: Which location does Paris have?\nAnswer: The answer is France." in texts
    assert len([r for r in records if r.calls[0].tool == "P17"]) == 5  # no description form
    for r in records:
        c = r.calls[0]
        assert r.text[c.start:c.end] == c.result and r.text[:c.start].endswith("is ")
    assert "2 mined questions" not in run.stdout and "1 mined questions" in run.stdout


def test_story_records_appended_and_bad_input(tmp_path):
    run, out = _run(tmp_path, "--templates", "0", "--story")
    assert run.returncode == 0, run.stderr
    sources = [r.source for r in load_jsonl(out)]
    assert sources[0] == "kamel-question:mined:P921"
    assert [s.split("#")[0] for s in sources[1:]] == ["toolkengpt-kamel"] * 2
    run, _ = _run(tmp_path, "--templates", "-1")
    assert run.returncode == 2 and "--templates=-1 must be >= 0" in run.stderr
