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

A dev split by subject (``--holdout N --dev-out outputs/kamel_dev_by_subject.json``): N
subjects per relation (a fact's subject: its longest argument), drawn by ``--seed`` among
those of at least 4 characters that at most two training texts mention (each relation keeps
at least 3 training subjects), are held out. Every
training record whose text mentions a held-out subject (case-insensitive substring of the
whole text, story-style records included) is left out, so no dev subject appears in any
training text. The dev file, in the ``kamel`` eval layout (``{"question", "answer":
[{"chosen", "alternative", "rdf"}], "api"}``), holds one question per held-out fact: the
question its own story text asks when that names the subject and not the answer, else one
of ``DEV_QUESTIONS`` (phrasings no training template uses). ``--dev-extra`` appends
hand-written dev questions (``data/dev/kamel_by_subject_extra.json``: the relations with no
subject to hold out or no question left); their subjects are held out of training too. Last, a dev
question whose token-set Jaccard with a training question reaches ``--max-jaccard`` (0.6;
a variant spelling of a held-out subject: "Coca Cola" / "Coca-Cola") is left out of dev.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
from collections import defaultdict
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
# dev only: no training template reads like these
DEV_QUESTIONS = ("Could you look up the {name} of {s}?", "I'd like to find out the {name} of {s}.",
                 "What would the {name} of {s} be?")
MIN_SUBJECT = 4  # characters; shorter subjects are substrings of too many texts


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


def iter_facts(train: list):
    """(record, relation, args, answer) per well-formed call; answer: a string or a list."""
    for rec in train:
        for call in [rec["call"]] if isinstance(rec["call"], str) else rec["call"]:
            try:
                relation, args, answer = parse_call(call)
            except ValueError:
                continue  # make_kamel_knowledge.py reports these
            yield rec, relation, args, answer


def make(train: list, descriptions: dict, prompt: str, templates: int, seed: int) -> list[Record]:
    rng, seen, out = random.Random(seed), set(), []
    forms = {rel: relation_templates(d) for rel, d in descriptions.items()}
    for rec, relation, args, answer in iter_facts(train):
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


# ---------------------------------------------------------------- dev split by subject


def mention_pattern(subjects) -> re.Pattern | None:
    """Matches a casefolded text that mentions any of ``subjects`` (None: no subjects)."""
    keys = sorted({s.casefold() for s in subjects}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, keys))) if keys else None


def subject_facts(train: list) -> list[tuple[str, str, list, str, list]]:
    """(relation, subject, answers, text, args) of every fact with an answer; the subject is
    the longest argument (the entity of ``home_venue(year, team_name)``)."""
    out = []
    for rec, relation, args, answer in iter_facts(train):
        answers = [a.strip() for a in (answer if isinstance(answer, list) else [answer])]
        args = [a.strip() for a in args]
        if args and all(args) and all(answers):
            out.append((relation, max(args, key=len), answers, rec["text"], args))
    return out


def choose_holdout(train: list, per_relation: int, seed: int, keep: int = 3) -> set[str]:
    """``per_relation`` subjects per relation (by seed) that can leave training cleanly: at
    least MIN_SUBJECT characters, mentioned by at most two training texts (the fact's own
    and one more); each relation keeps at least ``keep`` training subjects."""
    texts = [r["text"].casefold() for r in train]
    by_relation: dict[str, list[str]] = {}
    for relation, subject, *_ in subject_facts(train):
        by_relation.setdefault(relation, [])
        if subject not in by_relation[relation]:
            by_relation[relation].append(subject)
    rng, held = random.Random(seed), set()
    for relation in sorted(by_relation):
        subjects = sorted(by_relation[relation])
        rng.shuffle(subjects)
        chosen = 0
        for s in subjects:
            if chosen == per_relation or len(subjects) - chosen <= keep:
                break
            if len(s) >= MIN_SUBJECT and sum(s.casefold() in t for t in texts) <= 2:
                held.add(s)
                chosen += 1
    return held


def dev_questions(train: list, held: set[str], descriptions: dict, seed: int) -> list[dict]:
    """One ``kamel``-layout question per fact of a held-out subject (see the module doc)."""
    rng, seen, out = random.Random(seed), set(), []
    for relation, subject, answers, text, args in subject_facts(train):
        if subject not in held or relation not in descriptions:
            continue
        q = mined_question(text, ", ".join(answers))
        if not q or subject.casefold() not in q.casefold():
            name = SIGNATURE.match(descriptions[relation]).group(1).replace("_", " ")
            q = rng.choice(DEV_QUESTIONS).format(name=name, s=" and ".join(args))
        if q not in seen:
            seen.add(q)
            out.append({"question": q, "answer": [{"chosen": a, "alternative": [], "rdf": None}
                                                  for a in answers],
                        "api": relation, "subject": subject})
    return out


def read_extra(path: Path) -> list[dict]:
    """Hand-written dev questions: the ``kamel`` layout plus a "subject" string each."""
    extra = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(extra, list):
        raise ValueError(f"{path}: not a JSON list of questions")
    for i, q in enumerate(extra):
        if not isinstance(q, dict) or not isinstance(q.get("subject"), str) \
                or q["subject"] not in str(q.get("question", "")):
            raise ValueError(f"{path}: record {i}: 'subject' missing or not in its question")
    return extra


TOKEN = re.compile(r"[a-z0-9]+")
ANSWER_LINE = re.compile(r"\n\s*(?:A|Answer)\s*:")
QUESTION_HEAD = re.compile(r"^\s*(?:Q|Question)\s*:\s*")


def question_tokens(text: str) -> frozenset[str]:
    """Token set of a text's question part (before its answer line, without "Question:"),
    as ``benchmarks/dev_audit.py`` compares them: lower-cased runs of letters and digits."""
    text = ANSWER_LINE.split(text, maxsplit=1)[0]
    return frozenset(TOKEN.findall(QUESTION_HEAD.sub("", text).lower()))


def too_close(questions: list[str], texts: list[str], limit: float) -> list[bool]:
    """For each question: is its token-set Jaccard with some text's question part >= limit?
    Candidates share one of the question's |A| - ceil(limit |A|) + 1 rarest tokens (a pair
    with Jaccard >= limit shares at least ceil(limit |A|) of A's tokens); each is checked
    exactly."""
    sets = [question_tokens(t) for t in texts]
    postings: dict[str, list[int]] = defaultdict(list)
    for i, tokens in enumerate(sets):
        for w in tokens:
            postings[w].append(i)
    out = []
    for q in questions:
        a = question_tokens(q)
        need = math.ceil(limit * len(a))
        rare = sorted(a, key=lambda w: len(postings.get(w, ())))[:max(len(a) - need + 1, 0)]
        candidates = set().union(*(postings.get(w, ()) for w in rare))
        out.append(any(len(a & sets[i]) >= limit * len(a | sets[i]) for i in candidates))
    return out


def split_by_subject(records: list[Record], dev: list[dict]) -> list[Record]:
    """The training records whose whole text mentions no dev subject."""
    pattern = mention_pattern(q["subject"] for q in dev)
    return [r for r in records if pattern is None or not pattern.search(r.text.casefold())]


def write_dev(dev: list[dict], path: Path, dropped: int, relations: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dev, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    covered = len({q["api"] for q in dev})
    print(f"wrote {len(dev)} dev questions ({len({q['subject'] for q in dev})} subjects, "
          f"{covered} of {relations} relations) to {path}; {dropped} training records that "
          f"mention a dev subject left out")


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
    ap.add_argument("--holdout", type=int, default=0,
                    help="subjects per relation held out of training for a dev split")
    ap.add_argument("--dev-out", type=Path, help="dev questions (kamel layout) of --holdout")
    ap.add_argument("--dev-extra", type=Path, help="hand-written dev questions to append")
    ap.add_argument("--max-jaccard", type=float, default=0.6,
                    help="leave out dev questions this close (token-set Jaccard) to a "
                         "training question")
    args = ap.parse_args(argv)
    if (args.holdout > 0 or args.dev_extra is not None) != (args.dev_out is not None):
        ap.error("--dev-out goes with --holdout N > 0 or --dev-extra")
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
    if args.story:
        records += convert(args.train, "toolkengpt-kamel").records
    if args.dev_out:
        dev = dev_questions(train, choose_holdout(train, args.holdout, args.seed)
                            if args.holdout > 0 else set(), descriptions, args.seed)
        try:
            dev += read_extra(args.dev_extra) if args.dev_extra else []
        except (ValueError, OSError) as e:
            ap.error(str(e))
        before, records = len(records), split_by_subject(records, dev)
        close = too_close([q["question"] for q in dev], [r.text for r in records],
                          args.max_jaccard)
        print(f"{sum(close)} dev questions at Jaccard >= {args.max_jaccard} with a training "
              f"text left out")
        dev = [q for q, c in zip(dev, close) if not c]
        write_dev(dev, args.dev_out, before - len(records), len(descriptions))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_jsonl(records, args.out)
    kinds = {k: sum(r.source.startswith(f"kamel-question:{k}:") for r in records)
             for k in ("mined", "template")}
    print(f"wrote {len(records)} records to {args.out} ({kinds['mined']} mined questions, "
          f"{kinds['template']} template questions, "
          f"{len(records) - sum(kinds.values())} story-style)")
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
