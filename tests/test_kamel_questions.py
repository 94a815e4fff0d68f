"""data/make_kamel_questions.py: question-style KAMEL records in the evaluation's layout."""

import json
import random
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


# ---------------------------------------------------------------- dev split by subject

SPLIT_DESC = {**DESC, "P36": "capital(country): gets the capital of a country."}
PLACES = {"Lake Como": "Italy", "Mount Fuji": "Japan", "Angkor Wat": "Cambodia",
          "Uluru": "Australia", "Machu Picchu": "Peru", "Petra": "Jordan", "Table Mountain":
          "South Africa", "Lake Bled": "Slovenia"}
SPLIT_TRAIN = [
    *({"text": f"Where is {s}? {s} is in {c}.", "call": [f'<f>P17("{s}")="{c}"</f>'],
       "api": "P17"} for s, c in PLACES.items()),
    *({"text": f"Ask the capital of {c}: it is {k}.", "call": [f'<f>P36("{c}")="{k}"</f>'],
       "api": "P36"} for c, k in [("Italy", "Rome"), ("Japan", "Tokyo"), ("Peru", "Lima"),
                                  ("Jordan", "Amman"), ("Cambodia", "Phnom Penh")]),
    {"text": "What is MOUNT FUJI MONTHLY about? It covers hiking.",  # names an extra subject
     "call": ['<f>P921("Mount Fuji Monthly")="hiking"</f>'], "api": "P921"},
    {"text": "What is Ocean Weekly about? It covers sailing.",
     "call": ['<f>P921("Ocean Weekly")="sailing"</f>'], "api": "P921"},
]
EXTRA = [{"question": "In which country is Mount Fuji?", "answer": [{"chosen": "Japan"}],
          "api": "P17", "subject": "Mount Fuji"}]


def _split(tmp_path, *extra):
    train, desc, prompt = tmp_path / "train.json", tmp_path / "d.json", tmp_path / "p.txt"
    train.write_text(json.dumps(SPLIT_TRAIN))
    desc.write_text(json.dumps(SPLIT_DESC))
    prompt.write_text("Question: [QUESTION]\nAnswer: The answer is\n")
    base = [sys.executable, str(SCRIPT), "--train", str(train), "--api-desc", str(desc),
            "--prompt", str(prompt), "--templates", "3", "--story", "--seed", "3"]
    runs = [subprocess.run(base + ["--out", str(tmp_path / out), *more], capture_output=True,
                           text=True, cwd=REPO, timeout=120)
            for out, more in [("all.jsonl", []), ("split.jsonl", list(extra))]]
    for run in runs:
        assert run.returncode == 0, run.stderr
    return ([r.text for r in load_jsonl(tmp_path / "all.jsonl")],
            [r.text for r in load_jsonl(tmp_path / "split.jsonl")], runs[1].stdout)


def test_split_by_subject_keeps_every_dev_subject_out_of_training(tmp_path):
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(EXTRA))
    dev_out = tmp_path / "dev.json"
    everything, train, stdout = _split(tmp_path, "--holdout", "2", "--dev-out", str(dev_out),
                                       "--dev-extra", str(extra))
    dev = json.loads(dev_out.read_text())
    subjects = {q["subject"] for q in dev}
    # P17 (8 subjects) gives 2, P36 (5) gives 2, P921 (2 subjects, keeps 3) none; + the extra
    assert len(subjects) == 5 and "Mount Fuji" in subjects
    assert sorted(q["api"] for q in dev).count("P36") == 2
    # reference: the unsplit file minus every text that names a dev subject in any case
    kept = [t for t in everything if not any(s.lower() in t.lower() for s in subjects)]
    assert train == kept and len(train) < len(everything)
    assert not any("mount fuji" in t.lower() for t in train)  # the magazine's texts too
    assert any("Ocean Weekly" in t for t in train)
    for q in dev:  # the kamel eval layout; the question names its subject
        assert q["subject"] in q["question"] and q["api"] in SPLIT_DESC
        assert all(isinstance(a["chosen"], str) and a["chosen"] for a in q["answer"])
    assert f"{len(dev)} dev questions" in stdout


def test_split_needs_dev_out_and_checks_extra(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--holdout", "2", "--out",
                          str(tmp_path / "x.jsonl")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "--dev-out goes with" in run.stderr
    bad = tmp_path / "extra.json"
    bad.write_text(json.dumps([EXTRA[0], {**EXTRA[0], "subject": "Uluru"}]))
    run, _ = _run(tmp_path, "--dev-extra", str(bad), "--dev-out", str(tmp_path / "d.json"))
    assert run.returncode == 2
    assert "extra.json: record 1: 'subject' missing or not in its question" in run.stderr


def test_too_close_matches_a_brute_force_jaccard():
    sys.path.insert(0, str(REPO / "data"))
    from make_kamel_questions import too_close  # data/ script, imported for its helper

    rng = random.Random(11)
    words = [f"w{i}" for i in range(12)]

    def text():
        return " ".join(rng.choices(words, k=rng.randint(1, 7)))

    train = [f"Question: {text()}?\nAnswer: The answer is {text()}." for _ in range(60)]
    questions = [text() for _ in range(80)]

    def jaccard(a, b):
        a, b = set(a.lower().split()), set(b.lower().split())
        return len(a & b) / len(a | b)

    counts = []
    for limit in (0.3, 0.6, 0.8, 1.0):
        expected = [any(jaccard(q, t.split("\n")[0].removeprefix("Question: ").rstrip("?"))
                        >= limit for t in train) for q in questions]
        assert too_close(questions, train, limit) == expected
        counts.append(sum(expected))
    assert counts[0] >= counts[1] >= counts[2] >= counts[3] and 0 < counts[2] < counts[1] < 80
