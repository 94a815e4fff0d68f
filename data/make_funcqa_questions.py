"""Question-style FuncQA training data: everyday word problems for each of the 13 tools,
from varied story templates (the operation implicit in the story: compound growth,
depreciation, handshakes, line-ups, "every N minutes", log scales, ...) with random numbers,
each answered in the layout of the paper's prompt (``llama_general.txt``):

    Q: <question>
    A: <a sentence ending in the expression>=<result>. So, the answer is <result>.

with the first ``<result>`` marked as the tool's call (canonical format, ``toolken.data``).
The results come from ``tools/funcqa.py`` (its text form). Nothing here is taken from
ToolkenGPT's training or test files; the templates were written for this project, apart
from the hand-written dev sets (``data/dev/``; ``benchmarks/dev_audit.py`` measures their
overlap with this file's texts, RESULTS.md).

    python data/make_funcqa_questions.py --spaced 0.5 --out data/funcqa_questions.jsonl

``configs/funcqa.yaml`` reads that file (committed; ``tests/test_math_dev.py`` checks that this
command writes it again byte for byte) as ``extra_train_files`` (after ``train.json``).
``--direct F`` (answers without the expression, the operation implicit) scored lower on the
test-style dev set and is not used (RESULTS.md).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolken.core.data import Record, ToolCall, save_jsonl  # noqa: E402
from toolken.tools import load_pack  # noqa: E402


def _int(lo, hi):
    return lambda r: r.randint(lo, hi)


def _dec(lo, hi, places=2):
    return lambda r: round(r.uniform(lo, hi), places)


def _pick(*xs):
    return lambda r: r.choice(xs)


# tool -> [(question, answer up to the result, args, {name: sampler})]; {x} are numbers,
# args are the names passed to the tool in order. The answer's expression ends in "=".
T = {
    "add": [
        ("A jar holds {a} red beads and {b} blue beads. How many beads are in the jar?",
         "The jar holds {a}+{b}=", "ab", {"a": _int(20, 9000), "b": _int(20, 9000)}),
        ("Kofi spent ${a} on groceries and ${b} on fuel. What did he spend in total?",
         "He spent {a}+{b}=", "ab", {"a": _dec(5, 300), "b": _dec(5, 300)}),
        ("A river is {a} km long before the dam and {b} km after it. How long is the river?",
         "The river is {a}+{b}=", "ab", {"a": _dec(3, 900, 1), "b": _dec(3, 900, 1)}),
        ("At night it was {a} degrees and by afternoon it had warmed up {b} degrees. What was the afternoon temperature?",
         "The afternoon temperature was {a}+{b}=", "ab", {"a": _int(-25, 5), "b": _int(3, 30)}),
        ("A club had {a} members and signed up {b} more this season. How many members does it have now?",
         "It now has {a}+{b}=", "ab", {"a": _int(50, 20000), "b": _int(5, 3000)}),
        ("Three parcels weigh {a} kg, {b} kg and {c} kg. What is their combined weight?",
         "Together they weigh {a}+{b}+{c}=", "abc", {"a": _dec(0.5, 40), "b": _dec(0.5, 40), "c": _dec(0.5, 40)}),
    ],
    "subtract": [
        ("A ferry can carry {a} passengers and {b} are already aboard. How many more can board?",
         "It can take {a}-{b}=", "ab", {"a": _int(300, 5000), "b": _int(10, 299)}),
        ("Priya had ${a} in her account and paid a bill of ${b}. What is her balance now?",
         "Her balance is {a}-{b}=", "ab", {"a": _dec(100, 5000), "b": _dec(10, 99)}),
        ("A plane flies at {a} feet and descends to {b} feet. How many feet did it descend?",
         "It descended {a}-{b}=", "ab", {"a": _int(20000, 41000), "b": _int(1000, 19999)}),
        ("A bridge opened in {b}. How old is it in {a}?",
         "It is {a}-{b}=", "ab", {"a": _int(2020, 2040), "b": _int(1800, 2010)}),
        ("The price of a phone dropped from ${a} to ${b}. By how much did the price fall?",
         "The price fell by {a}-{b}=", "ab", {"a": _dec(300, 1500), "b": _dec(100, 299)}),
        ("A reservoir held {a} million liters; {b} million liters evaporated in summer. How much is left?",
         "There are {a}-{b}=", "ab", {"a": _dec(50, 900, 1), "b": _dec(1, 49, 1)}),
    ],
    "multiply": [
        ("A box holds {a} packets of {b} crackers each. How many crackers are in the box?",
         "There are {a}*{b}=", "ab", {"a": _int(6, 90), "b": _int(6, 90)}),
        ("Fabric costs ${a} per meter. What do {b} meters cost?",
         "They cost {a}*{b}=", "ab", {"a": _dec(2, 40), "b": _dec(1, 25, 1)}),
        ("A sales tax of {p} percent is charged on a ${a} purchase. How much is the tax?",
         "The tax is {f}*{a}=", "fa", {"p": _int(3, 25), "a": _dec(10, 900)}),
        ("A pound is {f} kilograms. How many kilograms is {a} pounds?",
         "That is {a}*{f}=", "af", {"f": _pick(0.4536), "a": _dec(1, 400, 1)}),
        ("A printer makes {a} copies a minute. How many copies does it make in {b} minutes?",
         "It makes {a}*{b}=", "ab", {"a": _int(10, 120), "b": _int(5, 600)}),
        ("About {p}% of the {a} people at a fair bought a ticket for the raffle. How many people bought one?",
         "That is {f}*{a}=", "fa", {"p": _int(5, 95), "a": _int(200, 40000)}),
    ],
    "divide": [
        ("A {a}-liter barrel of oil fills bottles of {b} liters. How many bottles is that?",
         "That is {a}/{b}=", "ab", {"a": _int(50, 5000), "b": _pick(0.5, 0.75, 1.5, 2, 4)}),
        ("A trip of {a} km took {b} hours. What was the average speed in km per hour?",
         "The speed was {a}/{b}=", "ab", {"a": _dec(20, 1500, 1), "b": _dec(0.5, 20, 1)}),
        ("A group of {b} coworkers shares a ${a} gift equally. How much does each pay?",
         "Each pays {a}/{b}=", "ab", {"a": _dec(20, 900), "b": _int(2, 30)}),
        ("A film is {a} minutes long. How many hours is that?",
         "That is {a}/{b}=", "ab", {"a": _int(70, 400), "b": _pick(60)}),
        ("A player scored on {a} of {b} shots. What share of shots scored, as a decimal?",
         "The share is {a}/{b}=", "ab", {"a": _int(1, 99), "b": _int(100, 400)}),
        ("Write the fraction {a}/{b} as a decimal number.",
         "As a decimal, {a}/{b}=", "ab", {"a": _int(1, 30), "b": _int(31, 64)}),
    ],
    "power": [
        ("Prices rise {p}% every year. By what factor do they grow in {n} years?",
         "They grow by {g}^{n}=", "gn", {"p": _int(2, 12), "n": _int(2, 30)}),
        ("A laptop loses {p}% of its value each year. What fraction of its price is it worth after {n} years?",
         "It keeps {k}^{n}=", "kn", {"p": _int(5, 40), "n": _int(2, 12)}),
        ("A virus sample triples every day. How many times bigger is it after {n} days?",
         "It is 3^{n}=", "tn", {"t": _pick(3), "n": _int(2, 15)}),
        ("A storage box is a cube {a} feet on each side. What is its volume in cubic feet?",
         "Its volume is {a}^3=", "ae", {"a": _dec(1, 30, 1), "e": _pick(3)}),
        ("Stone for a square terrace with {a}-meter sides is sold by the square meter. How many square meters are needed?",
         "It needs {a}^2=", "ae", {"a": _dec(2, 60, 1), "e": _pick(2)}),
        ("What is {a} to the power of {n}?",
         "{a}^{n}=", "an", {"a": _dec(1.1, 9, 1), "n": _int(2, 9)}),
    ],
    "sqrt": [
        ("A square poster covers {a} square inches. How wide is it?",
         "Its width is the square root of {a}, sqrt({a})=", "a", {"a": _dec(10, 5000, 2)}),
        ("A square farm has an area of {a} square kilometers. How long is one edge?",
         "One edge is sqrt({a})=", "a", {"a": _int(2, 900)}),
        ("Which positive number, squared, gives {a}?",
         "The number is sqrt({a})=", "a", {"a": _dec(1, 999, 1)}),
        ("Find the square root of {a}.",
         "sqrt({a})=", "a", {"a": _int(2, 99999)}),
        ("A square room needs {a} square feet of carpet. How long is each wall?",
         "Each wall is sqrt({a})=", "a", {"a": _int(60, 900)}),
    ],
    "log": [
        ("A solution has a hydrogen-ion concentration {a} times the reference. What is the base-10 logarithm of that factor?",
         "It is log({a})=", "a", {"a": _int(2, 99999)}),
        ("What is the common (base 10) logarithm of {a}?",
         "log({a})=", "a", {"a": _dec(0.01, 90000, 2)}),
        ("How many times do you have to double to go from 1 to {a}? Give log base 2.",
         "That is log2({a})=", "ab", {"a": _int(3, 5000), "b": _pick(2)}),
        ("Find the exponent x with {b}^x = {a}.",
         "x is log base {b} of {a}=", "ab", {"a": _int(2, 9000), "b": _int(3, 9)}),
        ("A star is {a} times brighter than another. On a base-10 log scale, how far apart are they?",
         "They are log({a})=", "a", {"a": _int(10, 900000)}),
    ],
    "ln": [
        ("Give ln {a}.",
         "ln({a})=", "a", {"a": _dec(0.05, 9000, 2)}),
        ("An amount grows continuously and ends up {a} times larger. What is ln of that growth factor?",
         "It is ln({a})=", "a", {"a": _dec(1.01, 30, 2)}),
        ("If e^x = {a}, what is x?",
         "x=ln({a})=", "a", {"a": _dec(0.5, 5000, 1)}),
        ("Find log base e of {a}.",
         "ln({a})=", "a", {"a": _int(2, 99999)}),
        ("A quantity decays to {a} of its starting size. What is the natural log of {a}?",
         "ln({a})=", "a", {"a": _dec(0.01, 0.99, 2)}),
    ],
    "lcm": [
        ("One sprinkler turns on every {a} minutes and another every {b} minutes. Both just started. How many minutes until they start together again?",
         "They start together again after the least common multiple of {a} and {b}, which is", "ab", {"a": _int(4, 60), "b": _int(4, 60)}),
        ("Napkins come in packs of {a} and plates in packs of {b}. What is the smallest equal number of napkins and plates you can buy?",
         "The smallest equal number is the least common multiple of {a} and {b}, which is", "ab", {"a": _int(4, 40), "b": _int(4, 40)}),
        ("A nurse checks one patient every {a} hours and another every {b} hours. If both were checked at noon, after how many hours are both checked at once?",
         "After lcm({a},{b})=", "ab", {"a": _int(2, 12), "b": _int(2, 12)}),
        ("What is the smallest positive number that both {a} and {b} divide?",
         "It is lcm({a},{b})=", "ab", {"a": _int(2, 200), "b": _int(2, 200)}),
        ("Three beacons blink every {a}, {b} and {c} seconds. When do they next blink together?",
         "They blink together after lcm({a},{b},{c})=", "abc", {"a": _int(2, 20), "b": _int(2, 20), "c": _int(2, 20)}),
    ],
    "gcd": [
        ("A caterer has {a} sandwiches and {b} cookies and makes identical trays with nothing left over. How many trays can she make at most?",
         "The most trays is the greatest common divisor of {a} and {b}, which is", "ab", {"a": _int(2, 40), "b": _int(2, 40), "m": _int(2, 30)}),
        ("Two planks of {a} cm and {b} cm are cut into equal pieces, as long as possible, with no waste. How long is each piece?",
         "Each piece is gcd({a},{b})=", "ab", {"a": _int(2, 40), "b": _int(2, 40), "m": _int(2, 30)}),
        ("What is the largest whole number that divides {a} and {b} with no remainder?",
         "It is gcd({a},{b})=", "ab", {"a": _int(2, 40), "b": _int(2, 40), "m": _int(2, 30)}),
        ("By what largest number can the fraction {a}/{b} be reduced?",
         "By gcd({a},{b})=", "ab", {"a": _int(2, 40), "b": _int(2, 40), "m": _int(2, 30)}),
        ("Find the greatest common factor of {a}, {b} and {c}.",
         "gcd({a},{b},{c})=", "abc", {"a": _int(2, 30), "b": _int(2, 30), "c": _int(2, 30), "m": _int(2, 30)}),
    ],
    "remainder": [
        ("{a} chairs are set out in rows of {b}. How many chairs are in the last, unfinished row?",
         "The last row has {a}%{b}=", "ab", {"a": _int(100, 9999), "b": _int(7, 60)}),
        ("A ship's cook has {a} eggs and uses them in batches of {b}. How many eggs are left after the last full batch?",
         "There are {a} mod {b}=", "ab", {"a": _int(100, 5000), "b": _int(6, 48)}),
        ("What remains when {a} is divided by {b}?",
         "The remainder is {a}%{b}=", "ab", {"a": _int(50, 99999), "b": _int(3, 99)}),
        ("It is {a} hours from now. How many hours past a whole number of days is that?",
         "That is {a}%24=", "ab", {"a": _int(30, 2000), "b": _pick(24)}),
        ("A {a}-page manual is printed in booklets of {b} pages. How many pages go into the final, short booklet?",
         "The final booklet has {a}%{b}=", "ab", {"a": _int(100, 9000), "b": _int(8, 64)}),
    ],
    "choose": [
        ("Every pair of the {n} people at a dinner clinks glasses once. How many clinks are there?",
         "There are {n}C2=", "nk", {"n": _int(4, 60), "k": _pick(2)}),
        ("A salad bar has {n} toppings and you may take {k}. How many different salads can you make?",
         "You can make {n}C{k}=", "nk", {"n": _int(6, 25), "k": _int(2, 5)}),
        ("In how many ways can a teacher pick {k} students out of {n} for a field trip?",
         "There are {n}C{k}=", "nk", {"n": _int(8, 40), "k": _int(2, 6)}),
        ("Each of {n} chess players plays each other player once. How many games are there?",
         "There are {n}C2=", "nk", {"n": _int(4, 80), "k": _pick(2)}),
        ("How many groups of {k} can be formed from {n} items when order does not matter?",
         "{n}C{k}=", "nk", {"n": _int(6, 30), "k": _int(2, 6)}),
        ("A student draws {k} of {n} flash cards at once. How many different draws are possible?",
         "There are {n}C{k}=", "nk", {"n": _int(10, 52), "k": _int(2, 7)}),
    ],
    "permutate": [
        ("{n} cars race. How many different ways can the first {k} places be filled?",
         "There are {n}P{k}=", "nk", {"n": _int(5, 30), "k": _int(2, 4)}),
        ("In how many orders can {n} songs be played on a playlist, if all are played?",
         "There are {n}P{n}=", "nn", {"n": _int(3, 11)}),
        ("A band of {n} musicians chooses a leader, a deputy and a treasurer. How many ways are there?",
         "There are {n}P3=", "nk", {"n": _int(5, 40), "k": _pick(3)}),
        ("How many {k}-digit PINs with all digits different can be made from {n} digits?",
         "There are {n}P{k}=", "nk", {"n": _pick(10), "k": _int(2, 6)}),
        ("In how many ways can {k} of {n} flags be hung in a row on a pole?",
         "There are {n}P{k}=", "nk", {"n": _int(5, 20), "k": _int(2, 5)}),
        ("{n} guests are seated along one side of a table. How many seating orders are there?",
         "There are {n}P{n}=", "nn", {"n": _int(3, 10)}),
    ],
}


def _values(rng: random.Random, samplers: dict) -> dict:
    v = {k: s(rng) for k, s in samplers.items()}
    if "m" in v:  # a common factor (gcd questions whose answer is not always 1)
        v.update({k: v[k] * v["m"] for k in "abc" if k in v})
    v = {k: int(x) if isinstance(x, float) and x.is_integer() else x for k, x in v.items()}
    if "p" in v:  # percentages: the factor f = p/100, growth g = 1 + p/100, kept k = 1 - p/100
        p = v["p"]
        v.update(f=round(p / 100, 4), g=round(1 + p / 100, 4), k=round(1 - p / 100, 4))
    return v


_OPERATOR = re.compile(r"(?<=[\d)])([-+*/^%])(?=[\d(])")


def spaced(answer: str, rng: random.Random) -> str:
    """The answer's expression as the base model writes it unprompted: spaces around the
    operators and the final "=", and "x" for "*" half the time ("6 * 7 = " / "6 x 7 = ")."""
    times = rng.choice(("*", "x"))
    out = _OPERATOR.sub(lambda m: f" {times if m.group(1) == '*' else m.group(1)} ", answer)
    return out[:-1].rstrip() + " =" if out.endswith("=") else out


def direct(answer: str) -> str | None:
    """The answer's sentence without its expression ("The jar holds 6331+6910=" -> "The jar
    holds"): the tool is called where the result goes, the operation left implicit; None
    where the sentence would be left with fewer than two words."""
    head, _, last = answer.rpartition(" ")
    if last.endswith("=") and re.search(r"[-+*/^%(]|\dC\d|\dP\d", last) and len(head.split()) >= 2:
        return head
    return None


def record(tools, tool: str, template: tuple, rng: random.Random, spaced_fraction: float = 0.0,
           direct_fraction: float = 0.0) -> Record | None:
    question, answer, arg_names, samplers = template
    v = _values(rng, samplers)
    res = tools[tool].call(", ".join(str(v[a]) for a in arg_names))
    if not res.ok or not res.text or len(res.text) > 24:
        return None
    answer = answer.format(**v)
    short = direct(answer) if direct_fraction and rng.random() < direct_fraction else None
    space = not short and bool(spaced_fraction) and rng.random() < spaced_fraction
    if short:
        answer = short
    elif space:
        answer = spaced(answer, rng)
    head = f"Q: {question.format(**v)}\nA: {answer}"
    sep = " " if head.endswith(("is", "was")) or short or (space and head.endswith("=")) else ""
    start = len(head) + len(sep)
    text = f"{head}{sep}{res.text}. So, the answer is {res.text}."
    call = ToolCall(tool, start, start + len(res.text), res.text, [v[a] for a in arg_names])
    return Record(text, [call], source="funcqa-questions")


def build(per_template: int, seed: int, spaced_fraction: float = 0.0, direct_fraction: float = 0.0
          ) -> list[Record]:
    tools = load_pack(REPO / "tools" / "funcqa.py")
    rng = random.Random(seed)
    out, seen = [], set()
    for tool, templates in T.items():
        for template in templates:
            made = tries = 0
            while made < per_template and tries < 20 * per_template:
                tries += 1
                r = record(tools, tool, template, rng, spaced_fraction, direct_fraction)
                if r is not None and r.text not in seen:
                    seen.add(r.text)
                    out.append(r)
                    made += 1
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/funcqa_questions.jsonl")
    p.add_argument("--per-template", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spaced", type=float, default=0.0, metavar="FRACTION",
                   help="this fraction of the answers write the expression with spaces "
                        "(\"6 x 7 = 42\"), as the base model does unprompted")
    p.add_argument("--direct", type=float, default=0.0, metavar="FRACTION",
                   help="this fraction of the answers call the tool where the result goes, with "
                        "no expression written (\"The jar holds <add>=13241\"): the operation implicit")
    a = p.parse_args()
    for name in ("spaced", "direct"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            p.error(f"--{name} must be between 0 and 1, got {getattr(a, name)}")
    records = build(a.per_template, a.seed, a.spaced, a.direct)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_jsonl(records, a.out)
    print(f"wrote {len(records)} question-style FuncQA records to {a.out}")


if __name__ == "__main__":
    main()
