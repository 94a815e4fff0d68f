"""Question-style KAMEL training data: questions laid out as the evaluation prompts them
(the paper's ``kamel_general.txt``: ``Question: ...\\nAnswer: The answer is``), each answered
by its relation's result, so the toolken learns to fire at "The answer is" after a question.

    python data/make_kamel_questions.py --out outputs/kamel_questions.jsonl
    python data/make_kamel_questions.py --story --out outputs/kamel_questions_story.jsonl

Made only from ToolkenGPT's KAMEL *training* file (``train_clean.json``) and the relation
descriptions (``api_desc.json``); never from ``dev_first_30.json``. Per training fact
``<f>P921("Nature Reviews")="biology"</f>``:

* mined: the question the story-style text itself asks (its first sentence ending in "?",
  e.g. "What is the taxonomic rank of Bos taurus?"), if it does not contain the answer;
* templates (``--templates`` per fact, drawn by seed): questions made from the relation's
  description: from the function name (``main_topics(title): ...`` gives "Which main topics
  does <subject> have?", "Tell me the main topics of <subject>.", ...) and, when the
  description ends in a generic noun phrase (``gets the main topics of a book or magazine``),
  from its object with that phrase replaced by the subject ("Do you know the main topics of
  <subject>?").

The record is ``<prompt with the question> <answer>.`` with the answer's span marked as the
call's result (canonical format, ``toolken.core.data``). ``--story`` appends the converted
story-style records too (``toolken.training.convert``, format ``toolkengpt-kamel``), so one file
holds both kinds. Duplicate texts are written once.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from make_kamel_knowledge import DEFAULT_TRAIN, parse_call  # noqa: E402  (data/ sibling)

from toolken.training.convert import convert  # noqa: E402
from toolken.core.data import Record, save_jsonl  # noqa: E402
from toolken.core.data import result_join  # noqa: E402

KAMEL_DIR = DEFAULT_TRAIN.parent
SIGNATURE = re.compile(r"^\s*(\w+)\(([^)]*)\)\s*:\s*(?:gets\s+)?(.*?)\.?\s*$")
# "<object> of|by|... a|an|the <generic noun phrase>" at the end of a description
GENERIC_TAIL = re.compile(r"^(.*?\b(?:of|by|for|in|to|from|with))\s+(?:a given|an|a|the)\s+"
                          r"([\w/ -]+)$")
VERBS = frozenset("is are was were has have had be belongs belong located share shares "
                  "competing educated invented started played plays broadcasted".split())
NAME_QUESTIONS = ("What is the {name} of {s}?", "Which {name} does {s} have?",
                  "{s}: what is the {name}?", "Tell me the {name} of {s}.",
                  "What do you know about the {name} of {s}?")
DESC_QUESTIONS = ("What is {obj} {s}?", "Tell me {obj} {s}.", "Do you know {obj} {s}?")


def relation_templates(description: str) -> list[str]:
    """Question templates (``{s}`` = the subject) from one ``api_desc.json`` line."""
    m = SIGNATURE.match(description)
    if not m:
        raise ValueError(f"api_desc line {description!r} does not start with 'name(args):'")
    name = m.group(1).replace("_", " ")
    out = [q.replace("{name}", name) for q in NAME_QUESTIONS]
    tail = GENERIC_TAIL.match(m.group(3))
    if tail and not VERBS & set(tail.group(2).lower().split()):
        out += [q.replace("{obj}", tail.group(1)) for q in DESC_QUESTIONS]
    return out


def mined_question(text: str, answer: str) -> str | None:
    """The first question the training text asks, unless it gives the answer away."""
    m = re.search(r"(?:^|(?<=[.!?]\s))([A-Z][^?!.]*(?:\.[^?!.\s][^?!.]*)*\?)", " ".join(text.split()))
    if not m or answer.casefold() in m.group(1).casefold():
        return None
    q = m.group(1)
    return q if 4 <= len(q.split()) <= 40 else None


def question_record(prompt: str, question: str, relation: str, args: list, answer: str,
                    source: str) -> Record:
    prefix = prompt.replace("[QUESTION]", question)
    joined = result_join(prefix, answer)
    start = len(prefix) + len(joined) - len(answer)
    end = "" if answer[-1] in ".!?" else "."
    return Record.from_json({"text": prefix + joined + end, "source": source, "calls": [
        {"tool": relation, "start": start, "end": start + len(answer), "result": answer,
         "args": args}]}, f"question for {relation}")


def make(train: list, descriptions: dict, prompt: str, templates: int, seed: int) -> list[Record]:
    rng, seen, out = random.Random(seed), set(), []
    forms = {rel: relation_templates(d) for rel, d in descriptions.items()}
    for rec in train:
        for call in [rec["call"]] if isinstance(rec["call"], str) else rec["call"]:
            try:
                relation, args, answer = parse_call(call)
            except ValueError:
                continue  # make_kamel_knowledge.py reports these
            answer = ", ".join(answer) if isinstance(answer, list) else answer
            if relation not in forms or not answer.strip() or not args:
                continue
            subject = " and ".join(args)
            questions = [("mined", mined_question(rec["text"], answer))]
            questions += [("template", t.format(s=subject)) for t in
                          rng.sample(forms[relation], min(templates, len(forms[relation])))]
            for kind, q in questions:
                if q and q not in seen:
                    seen.add(q)
                    out.append(question_record(prompt, q, relation, args, answer.strip(),
                                               f"kamel-question:{kind}:{relation}"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, default=DEFAULT_TRAIN, help="train_clean.json")
    ap.add_argument("--api-desc", type=Path, default=KAMEL_DIR / "api_desc.json")
    ap.add_argument("--prompt", type=Path, default=KAMEL_DIR / "template" / "kamel_general.txt",
                    help="evaluation prompt with [QUESTION] (default: the paper's)")
    ap.add_argument("--templates", type=int, default=2, help="template questions per fact")
    ap.add_argument("--story", action="store_true", help="append the story-style records too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="canonical JSONL to write")
    args = ap.parse_args(argv)
    for path in (args.train, args.api_desc, args.prompt):
        if not path.is_file():
            ap.error(f"file not found: {path}")
    if args.templates < 0:
        ap.error(f"--templates={args.templates} must be >= 0")
    prompt = args.prompt.read_text(encoding="utf-8").rstrip("\n")
    if "[QUESTION]" not in prompt:
        ap.error(f"{args.prompt}: the prompt has no [QUESTION] placeholder")
    train = json.loads(args.train.read_text(encoding="utf-8"))
    descriptions = json.loads(args.api_desc.read_text(encoding="utf-8"))
    records = make(train, descriptions, prompt, args.templates, args.seed)
    kinds = {k: sum(r.source.split(":")[1] == k for r in records) for k in ("mined", "template")}
    if args.story:
        records += convert(args.train, "toolkengpt-kamel").records
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_jsonl(records, args.out)
    print(f"wrote {len(records)} records to {args.out} ({kinds['mined']} mined questions, "
          f"{kinds['template']} template questions, "
          f"{len(records) - sum(kinds.values())} story-style)")
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
