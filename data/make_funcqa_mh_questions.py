"""Multi-step FuncQA training data: everyday word problems that take 2 to 4 tool calls, each
answered on one line, step by step, in the layout of the paper's one-hop prompt
(``llama_general.txt``), every result marked as its tool's call:

    Q: <question>
    A: <a sentence ending in an expression>=<result 1>. <the next, using result 1>=<result 2>. So, the answer is <result 2>.

The head learns to call a tool again on an earlier result, and the checkpoint's demo pool
holds worked multi-step answers that the reasoning prompt can show (``prompt_demos``). The
results come from ``tools/funcqa.py`` (its text form); the expressions are written as in
``data/make_funcqa_questions.py`` (``--spaced``: with spaces, ``x`` for ``*`` half the time).
The stories were written for this project from kinds of everyday problems (money, rates,
units, growth, schedules, committees, geometry, log scales), not from ToolkenGPT's files or
the dev sets' questions; ``benchmarks/dev_audit.py`` measures the overlap with the dev sets
(RESULTS.md).

    python data/make_funcqa_mh_questions.py --spaced 0.5 --out data/funcqa_mh_questions.jsonl
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "data"))

from make_funcqa_questions import _dec, _int, _pick, _values, spaced  # noqa: E402
from toolken.core.data import Record, ToolCall, save_jsonl  # noqa: E402
from toolken.tools import load_pack  # noqa: E402
from toolken.tools.arguments import parse_number  # noqa: E402

# (question, [(sentence ending in "=" or "is", tool, argument names)], {name: sampler}).
# {x}: a sampled value; {r1}, {r2}, ...: the results of the earlier steps (as text). A
# percentage p gives f = p/100, g = 1 + p/100, k = 1 - p/100 (``_values``: which also
# multiplies a, b and c by a sampled "m", for gcd stories); "d" = b + c*q where a story needs
# an exact division; "tf" = t/100 (a second percentage); "b" = a + dist. A factor made from a
# percentage is a step of its own ("It keeps 1-0.12=0.88"), computed by the tool.
T = [
    ("A bakery sold {a} loaves at ${p2} each. Flour for the day cost ${c}. What was the day's profit?",
     [("The loaves brought in {a}*{p2}=", "multiply", "a p2"), ("The profit is {r1}-{c}=", "subtract", "r1 c")],
     {"a": _int(40, 400), "p2": _dec(1.5, 6), "c": _dec(20, 60)}),
    ("Omar buys {a} notebooks at ${p2} each and a backpack for ${c}. How much does he pay?",
     [("The notebooks cost {a}*{p2}=", "multiply", "a p2"), ("In all he pays {r1}+{c}=", "add", "r1 c")],
     {"a": _int(3, 12), "p2": _dec(0.8, 6), "c": _dec(15, 80)}),
    ("A crate holds {d} oranges. {b} are bruised and thrown out, and the rest are shared equally among {c} market stalls. How many oranges does each stall get?",
     [("Good oranges: {d}-{b}=", "subtract", "d b"), ("Each stall gets {r1}/{c}=", "divide", "r1 c")],
     {"b": _int(3, 40), "c": _int(3, 12), "q": _int(10, 60)}),
    ("A coat is priced at ${a}. It is sold at {p}% off, and then a {t}% sales tax is added. What does the buyer pay?",
     [("It keeps 1-{f}=", "subtract", "one f"), ("After the discount it costs {a}*{r1}=", "multiply", "a r1"),
      ("The tax adds 1+{tf}=", "add", "one tf"), ("With tax it costs {r2}*{r3}=", "multiply", "r2 r3")],
     {"a": _int(60, 400), "p": _int(10, 40), "t": _int(4, 10), "one": _pick(1)}),
    ("A savings account starts at ${a} and earns {p}% interest each year, compounded yearly. What is the balance after {n} years?",
     [("Each year it grows by 1+{f}=", "add", "one f"), ("Over {n} years: {r1}^{n}=", "power", "r1 n"),
      ("The balance is {a}*{r2}=", "multiply", "a r2")],
     {"a": _int(500, 20000), "p": _int(2, 9), "n": _int(3, 15), "one": _pick(1)}),
    ("A tractor worth ${a} loses {p}% of its value every year. What is it worth after {n} years?",
     [("Each year it keeps 1-{f}=", "subtract", "one f"), ("Over {n} years: {r1}^{n}=", "power", "r1 n"),
      ("It is worth {a}*{r2}=", "multiply", "a r2")],
     {"a": _int(8000, 90000), "p": _int(5, 25), "n": _int(2, 10), "one": _pick(1)}),
    ("A train covers {a} km in {mi} minutes. What is its speed in km per hour?",
     [("Per minute it covers {a}/{mi}=", "divide", "a mi"), ("Per hour that is {r1}*60=", "multiply", "r1 sixty")],
     {"a": _int(20, 300), "mi": _int(15, 180), "sixty": _pick(60)}),
    ("A machine fills {a} bottles per minute. How many bottles does it fill in {h} hours?",
     [("{h} hours are {h}*60=", "multiply", "h sixty"), ("It fills {r1}*{a}=", "multiply", "r1 a")],
     {"a": _int(12, 250), "h": _int(2, 16), "sixty": _pick(60)}),
    ("A rectangular floor is {a} m by {b} m. Tiles cost ${p2} per square meter. What do the tiles cost?",
     [("The floor is {a}*{b}=", "multiply", "a b"), ("The tiles cost {r1}*{p2}=", "multiply", "r1 p2")],
     {"a": _dec(2, 15, 1), "b": _dec(2, 15, 1), "p2": _dec(8, 60)}),
    ("A square table top has an area of {sq} square centimeters. How long is its edge in meters?",
     [("The edge is sqrt({sq})=", "sqrt", "sq"), ("In meters that is {r1}/100=", "divide", "r1 hundred")],
     {"sq": _pick(3600, 4900, 6400, 8100, 10000, 12100, 14400), "hundred": _pick(100)}),
    ("A kite flies {b} m above a point on the ground that is {a} m from where its string is pegged down. How long is the string?",
     [("{a}^2=", "power", "a two"), ("{b}^2=", "power", "b two"), ("{r1}+{r2}=", "add", "r1 r2"),
      ("The string is sqrt({r3})=", "sqrt", "r3")],
     {"a": _int(5, 40), "b": _int(5, 60), "two": _pick(2)}),
    ("Four quiz scores are {a}, {b}, {c} and {e}. What is the average score?",
     [("The scores add up to {a}+{b}+{c}+{e}=", "add", "a b c e"), ("The average is {r1}/4=", "divide", "r1 four")],
     {"a": _int(50, 100), "b": _int(50, 100), "c": _int(50, 100), "e": _int(50, 100), "four": _pick(4)}),
    ("A cafe offers {n} sandwiches and {dr} drinks. A lunch deal is {k} different sandwiches and one drink. How many different deals are there?",
     [("The sandwiches can be picked in {n}C{k}=", "choose", "n k"), ("With a drink that is {r1}*{dr}=", "multiply", "r1 dr")],
     {"n": _int(5, 14), "k": _int(2, 3), "dr": _int(3, 9)}),
    ("A coach lines up {k} of her {n} swimmers in order for a relay and then picks one reserve from the others. How many ways can she do this?",
     [("The relay order can be picked in {n}P{k}=", "permutate", "n k"), ("{n}-{k}=", "subtract", "n k"),
      ("In all {r1}*{r2}=", "multiply", "r1 r2")],
     {"n": _int(6, 12), "k": _pick(3, 4)}),
    ("Two lighthouses flash every {a} and every {b} seconds. They just flashed together. In how many minutes will they next flash together?",
     [("They flash together every lcm({a},{b})=", "lcm", "a b"), ("In minutes that is {r1}/60=", "divide", "r1 sixty")],
     {"a": _int(8, 45), "b": _int(8, 45), "sixty": _pick(60)}),
    ("A florist has {a} roses and {b} tulips and makes identical bouquets with all of them, as many bouquets as she can. How many roses go in each bouquet?",
     [("She can make gcd({a},{b})=", "gcd", "a b"), ("Each has {a}/{r1}=", "divide", "a r1")],
     {"a": _int(2, 12), "b": _int(2, 12), "m": _int(3, 12)}),
    ("{a} students board buses of {b} seats, filling as many buses as they can. Each student left over gets {c} bus tickets for the city bus. How many tickets are handed out?",
     [("Left over: {a}%{b}=", "remainder", "a b"), ("Tickets: {r1}*{c}=", "multiply", "r1 c")],
     {"a": _int(100, 900), "b": _int(30, 60), "c": _int(2, 4)}),
    ("A siren is {a} times as loud as a quiet room, and a jet engine is {b} times as loud as the siren. What is the base-10 logarithm of how loud the jet engine is compared to the room?",
     [("The jet is {a}*{b}=", "multiply", "a b"), ("log({r1})=", "log", "r1")],
     {"a": _int(100, 9000), "b": _int(2, 90)}),
    ("A share price went from ${a} to ${b} in a year. What is the natural log of the price ratio?",
     [("The ratio is {b}/{a}=", "divide", "b a"), ("ln({r1})=", "ln", "r1")],
     {"a": _dec(10, 90), "b": _dec(20, 180)}),
    ("A town's population grows {p}% a year. How many years does it take to double? (ln 2 divided by the natural log of the yearly growth factor)",
     [("The yearly factor is 1+{f}=", "add", "one f"), ("ln(2)=", "ln", "two"), ("ln({r1})=", "ln", "r1"),
      ("It takes {r2}/{r3}=", "divide", "r2 r3")],
     {"p": _int(1, 12), "two": _pick(2), "one": _pick(1)}),
    ("A water tank holds {a} liters. {p}% is used in the morning and another {b} liters in the afternoon. How many liters are left?",
     [("The morning leaves 1-{f}=", "subtract", "one f"), ("After the morning {a}*{r1}=", "multiply", "a r1"),
      ("After the afternoon {r2}-{b}=", "subtract", "r2 b")],
     {"a": _int(400, 5000), "p": _int(10, 50), "b": _int(20, 150), "one": _pick(1)}),
    ("A nurse works {h} hours a week at ${w} an hour. How much does she earn in {n} weeks?",
     [("Each week she earns {h}*{w}=", "multiply", "h w"), ("In {n} weeks she earns {r1}*{n}=", "multiply", "r1 n")],
     {"h": _int(20, 48), "w": _dec(14, 60), "n": _int(2, 52)}),
    ("A pack of {n} batteries costs ${p2}. At that price, how much do {nb} batteries cost?",
     [("One battery costs {p2}/{n}=", "divide", "p2 n"), ("{nb} cost {r1}*{nb}=", "multiply", "r1 nb")],
     {"n": _pick(4, 6, 8, 12, 24), "p2": _dec(3, 30), "nb": _int(2, 60)}),
    ("A van uses {a} liters of fuel per 100 km, and fuel costs ${p2} a liter. What does the fuel for a {s} km trip cost?",
     [("The trip is {s}/100=", "divide", "s hundred"), ("It uses {r1}*{a}=", "multiply", "r1 a"),
      ("The fuel costs {r2}*{p2}=", "multiply", "r2 p2")],
     {"a": _dec(5, 14, 1), "p2": _dec(1.1, 2.4), "s": _int(40, 1500), "hundred": _pick(100)}),
    ("A fish tank is {a} cm long, {b} cm wide and {c} cm tall. How many liters does it hold? (1 liter is 1000 cubic centimeters)",
     [("The tank holds {a}*{b}*{c}=", "multiply", "a b c"), ("In liters that is {r1}/1000=", "divide", "r1 thousand")],
     {"a": _int(30, 150), "b": _int(20, 60), "c": _int(25, 70), "thousand": _pick(1000)}),
    ("Ali has {a} stickers and is given {b} more. He puts {c} on each album page. How many stickers are on the last, unfinished page?",
     [("He has {a}+{b}=", "add", "a b"), ("The last page has {r1}%{c}=", "remainder", "r1 c")],
     {"a": _int(40, 900), "b": _int(5, 300), "c": _int(6, 24)}),
    ("A panel of {k1} teachers and {k2} parents is chosen from {n1} teachers and {n2} parents. How many different panels are possible?",
     [("The teachers can be chosen in {n1}C{k1}=", "choose", "n1 k1"),
      ("The parents in {n2}C{k2}=", "choose", "n2 k2"), ("In all {r1}*{r2}=", "multiply", "r1 r2")],
     {"n1": _int(5, 12), "k1": _int(2, 3), "n2": _int(6, 15), "k2": _int(2, 4)}),
    ("A login code is {k} different letters out of {n}, in order, followed by {d2} digits that may repeat. How many codes are possible?",
     [("The letters: {n}P{k}=", "permutate", "n k"), ("The digits: 10^{d2}=", "power", "ten d2"),
      ("In all {r1}*{r2}=", "multiply", "r1 r2")],
     {"n": _pick(5, 6, 8, 10, 26), "k": _int(2, 3), "d2": _int(2, 4), "ten": _pick(10)}),
    ("A square photo covers {sq} square inches. Framing costs ${p2} per inch of edge. What does it cost to frame all four sides?",
     [("Each side is sqrt({sq})=", "sqrt", "sq"), ("The four sides are {r1}*4=", "multiply", "r1 four"),
      ("Framing costs {r2}*{p2}=", "multiply", "r2 p2")],
     {"sq": _pick(36, 64, 81, 100, 144, 196, 225, 400), "p2": _dec(0.5, 4), "four": _pick(4)}),
    ("A {a} km trail is split into {n} equal stages. {b} km of one stage have been walked. How many km of that stage are left?",
     [("Each stage is {a}/{n}=", "divide", "a n"), ("Left: {r1}-{b}=", "subtract", "r1 b")],
     {"a": _int(120, 900), "n": _pick(4, 5, 8, 10), "b": _dec(1, 10, 1)}),
    ("A factory packs {a} jars a day for {n} days and ships them in cases of {c}. How many jars are left after the full cases?",
     [("It packs {a}*{n}=", "multiply", "a n"), ("Left over: {r1}%{c}=", "remainder", "r1 c")],
     {"a": _int(100, 900), "n": _int(3, 12), "c": _int(12, 48)}),
    ("A mold colony grows {b} times bigger every day. What is the base-10 logarithm of its growth after {n} days?",
     [("It grows {b}^{n}=", "power", "b n"), ("log({r1})=", "log", "r1")],
     {"b": _int(2, 5), "n": _int(3, 12)}),
    ("A cyclist's trip meter read {a} km at the start and {b} km at the end of a {h} hour ride. What was her average speed in km per hour?",
     [("She rode {b}-{a}=", "subtract", "b a"), ("Her speed was {r1}/{h}=", "divide", "r1 h")],
     {"a": _int(1000, 9000), "dist": _dec(20, 140, 1), "h": _pick(2, 2.5, 3, 4, 5)}),
    ("A school orders {a} boxes of chalk for each of its {n} classrooms. Chalk comes in cartons of {c} boxes. How many boxes are in the last, partly full carton?",
     [("It orders {a}*{n}=", "multiply", "a n"), ("The last carton has {r1}%{c}=", "remainder", "r1 c")],
     {"a": _int(3, 20), "n": _int(10, 60), "c": _int(7, 30)}),
    ("A recipe for {s} people uses {a} grams of rice. How many grams are needed for {pp} people?",
     [("Per person it uses {a}/{s}=", "divide", "a s"), ("For {pp} people: {r1}*{pp}=", "multiply", "r1 pp")],
     {"s": _pick(2, 4, 6, 8), "a": _int(150, 900), "pp": _int(3, 40)}),
    ("Two pumps empty a pond: one every {a} minutes and one every {b} minutes finish a cycle. Both start a cycle now. How many hours until both finish a cycle at the same time?",
     [("They finish together every lcm({a},{b})=", "lcm", "a b"), ("In hours that is {r1}/60=", "divide", "r1 sixty")],
     {"a": _int(10, 90), "b": _int(10, 90), "sixty": _pick(60)}),
    ("A club has {n} members. It picks {k} of them for a trip and then one of those as the leader. How many outcomes are there?",
     [("The trip group: {n}C{k}=", "choose", "n k"), ("With a leader: {r1}*{k}=", "multiply", "r1 k")],
     {"n": _int(8, 30), "k": _int(2, 5)}),
    ("An ore sample is {a} grams, of which {p}% is copper. How many samples like it are needed for {b} grams of copper?",
     [("Each has {a}*{f}=", "multiply", "a f"), ("That needs {b}/{r1}=", "divide", "b r1")],
     {"a": _int(100, 900), "p": _int(2, 30), "b": _int(500, 9000)}),
]


def _derived(v: dict) -> dict:
    if "q" in v:  # d = b + c*q: the rest after taking b out divides by c exactly
        v["d"] = v["b"] + v["c"] * v["q"]
    if "t" in v:  # a second percentage, as a fraction
        v["tf"] = round(v["t"] / 100, 4)
    if "dist" in v:  # a trip meter's end reading
        v["b"] = round(v["a"] + v["dist"], 1)
    return v


def record(tools, template: tuple, rng: random.Random, spaced_fraction: float = 0.0) -> Record | None:
    question, steps, samplers = template
    v = _derived(_values(rng, samplers))
    head = f"Q: {question.format(**v)}\nA:"
    calls, results = [], {}
    for i, (sentence, tool, names) in enumerate(steps, 1):
        args = [results[n][1] if n in results else v[n] for n in names.split()]
        if tool in ("gcd", "lcm") and len(set(args)) < len(args):
            return None  # gcd(54, 54): no story
        res = tools[tool].call(", ".join(str(a) for a in args))
        if not res.ok or not res.text or len(res.text) > 16 or res.text.startswith("-"):
            return None
        text = sentence.format(**v, **{k: t for k, (t, _) in results.items()})
        if spaced_fraction and rng.random() < spaced_fraction:
            text = spaced(text, rng)
        head += f" {text}" + (" " if text.endswith((" =", "is")) else "")
        start = len(head)
        calls.append(ToolCall(tool, start, start + len(res.text), res.text, args))
        head += res.text + "."
        results[f"r{i}"] = (res.text, parse_number(res.text))
    return Record(f"{head} So, the answer is {calls[-1].result}.", calls, source="funcqa-mh-questions")


def build(per_template: int, seed: int, spaced_fraction: float = 0.0) -> list[Record]:
    tools = load_pack(REPO / "tools" / "funcqa.py")
    rng = random.Random(seed)
    out, seen = [], set()
    for template in T:
        made = tries = 0
        while made < per_template and tries < 50 * per_template:
            tries += 1
            r = record(tools, template, rng, spaced_fraction)
            if r is not None and r.text not in seen:
                seen.add(r.text)
                out.append(r)
                made += 1
        if made < per_template:
            raise RuntimeError(f"template {template[0]!r}: only {made} of {per_template} records")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/funcqa_mh_questions.jsonl")
    p.add_argument("--per-template", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spaced", type=float, default=0.0, metavar="FRACTION",
                   help="this fraction of the steps write the expression with spaces (\"6 x 7 = 42\")")
    a = p.parse_args()
    if not 0.0 <= a.spaced <= 1.0:
        p.error(f"--spaced must be between 0 and 1, got {a.spaced}")
    records = build(a.per_template, a.seed, a.spaced)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_jsonl(records, a.out)
    print(f"wrote {len(records)} multi-step FuncQA records to {a.out}")


if __name__ == "__main__":
    main()
