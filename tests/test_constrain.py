"""Tests for toolken.generation.constrain: argument grammar, parser, and token masks.

The masks are checked on the real SmolLM2 tokenizer (marked ``real_model``) by sampling
from random logits under the constraint and checking the text with plain regexes written
here; the grammar/parser round trip runs on the tiny character tokenizer.
"""

from __future__ import annotations

import re
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolken.generation import constrain
from toolken.tools import arguments
from toolken.core.base import TINY_CHARS, build_tiny_tokenizer, load_base
from toolken.generation.constrain import BACKENDS, make_constraint
from toolken.tools.arguments import (call_grammar, context_strings, format_arguments, parse_arguments, parse_number,
                                     positional_params)

K = 13  # toolken columns appended after the LM head rows


def schema(props: dict, required: list | None = None, order: list | None = None) -> dict:
    out = {"type": "object", "properties": props,
           "required": list(props) if required is None else required}
    if order is not None:
        out["x-order"] = order
    return out


INT, NUM, STR = {"type": "integer"}, {"type": "number"}, {"type": "string"}
TWO_INTS = schema({"a": INT, "b": INT})
VARIADIC = schema({"xs": {"type": "array", "items": NUM, "x-variadic": True}})
ONE_STRING = schema({"s": STR})
NUM_OPT = schema({"a": NUM, "b": NUM}, required=["a"])

NUM_RE = r"-?[0-9]{1,15}(\.[0-9]{1,8})?%?"
STR_RE = r'"([^"\\\n\r]|\\["\\]){0,200}"'
CASES = {  # name: (schema, regex for the whole text, allowed arities, value types)
    "two_ints": (TWO_INTS, r"-?[0-9]{1,20}, ?-?[0-9]{1,20}\)", {2}, (int,)),
    "variadic": (VARIADIC, rf"{NUM_RE}(, ?{NUM_RE})*\)", None, (int, float)),
    "string": (ONE_STRING, rf"{STR_RE}\)", {1}, (str,)),
    "num_opt": (NUM_OPT, rf"{NUM_RE}(, ?{NUM_RE})?\)", {1, 2}, (int, float)),
}


# ---------------------------------------------------------------- parsing (no model)


def test_parse_number():
    assert parse_number("4%") == 0.04
    assert parse_number("1.50") == 1.5
    assert parse_number("-3") == -3 and isinstance(parse_number("-3"), int)
    assert parse_number("12.5%") == 0.125 and parse_number("0.07%") == 0.0007
    for bad in ["1e5", "nan", "inf", "", "1.", ".5", "--1", "0x10", "1_000"]:
        with pytest.raises(ValueError, match="not a number"):
            parse_number(bad)


def test_parse_arguments():
    assert parse_arguments("311, 112)", TWO_INTS) == [311, 112]
    assert parse_arguments("311,-112", TWO_INTS) == [311, -112]
    assert parse_arguments("4%, 1.5, -3)", VARIADIC) == [0.04, 1.5, -3]
    assert parse_arguments('"FGH Elementary School")', ONE_STRING) == ["FGH Elementary School"]
    assert parse_arguments(r'"a, \"b\") \\ c")', ONE_STRING) == ['a, "b") \\ c']
    assert parse_arguments("2)", NUM_OPT) == [2] and parse_arguments("2, 3.5)", NUM_OPT) == [2, 3.5]
    flags = schema({"x": {"type": "boolean"}, "u": {"type": "string", "enum": ["C", "F"]}})
    assert parse_arguments('true, "F")', flags) == [True, "F"]
    assert parse_arguments(")", schema({})) == [] and parse_arguments("", schema({})) == []


@pytest.mark.parametrize("text,sch", [
    ('__import__("os")', TWO_INTS), ('__import__("os")', ONE_STRING), ("1; import os", TWO_INTS),
    ("1)", TWO_INTS), ("1, 2, 3)", TWO_INTS), ("1.5, 2)", TWO_INTS), ('"1", 2)', TWO_INTS),
    ("abc)", ONE_STRING), ('"abc', ONE_STRING), ('"a\\n")', ONE_STRING), ("1,)", TWO_INTS),
    (")", VARIADIC), ('"K")', schema({"u": {**STR, "enum": ["C"]}})),
])
def test_parse_arguments_refuses(text, sch):
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_arguments(text, sch)


def test_optional_types_and_list_params():
    sch = schema({"a": INT, "tags": {"type": "array", "items": STR},
                  "k": {"type": ["integer", "null"], "default": None}}, required=["a", "tags"])
    assert call_grammar(sch).startswith('root ::= integer sep ("[" (string (sep string)*)? "]") '
                                        '(sep integer)? ")"')
    assert parse_arguments('1, ["x", "y, z"], 3)', sch) == [1, ["x", "y, z"], 3]
    assert parse_arguments("1, [])", sch) == [1, []]
    assert format_arguments([1, ["a]"], 2], sch) == '1, ["a]"], 2)'
    assert parse_arguments(format_arguments([1, ["a]"], 2], sch), sch) == [1, ["a]"], 2]
    for bad in ['1, "x")', "1, [1])", "1, [[]])", "1, [], [])"]:
        with pytest.raises(ValueError, match="cannot parse"):
            parse_arguments(bad, sch)


def test_schemas_from_tool_decorator(tiny):
    tools = pytest.importorskip("toolken.tools")

    @tools.tool
    def power(base: float, exp: int = 2, *more: float) -> float:
        return base ** exp

    @tools.tool
    def tag(name: str, labels: list[str], limit: int | None = None) -> str:
        return name

    for t, text, values in [(power, "2.5, 3, 1, 2)", [2.5, 3, 1, 2]), (power, "4%)", [0.04]),
                            (tag, '"a", ["b"])', ["a", ["b"]])]:
        assert parse_arguments(text, t.parameters) == values
        c = make_constraint(t.parameters, tiny, vocab_size=len(tiny))
        feed(c, tiny, text)
        assert c.is_done()
        assert t.call(values).ok


def test_schema_errors():
    with pytest.raises(ValueError, match="x-order"):
        positional_params(schema({"a": INT, "b": INT}, order=["a"]))
    with pytest.raises(ValueError, match="must be the last"):
        positional_params(schema({"xs": VARIADIC["properties"]["xs"], "b": INT}))
    with pytest.raises(ValueError, match="'object'.*supported"):
        call_grammar(schema({"a": {"type": "object"}}))
    with pytest.raises(ValueError, match="arrays of arrays"):
        call_grammar(schema({"a": {"type": "array", "items": {"type": "array", "items": INT}}}))
    # an optional parameter before a required one cannot be left out
    assert positional_params(schema({"a": NUM, "b": NUM}, required=["b"]))[1] == 2
    assert positional_params(schema({"a": INT, "b": INT}, order=["b", "a"]))[0][0].name == "b"


def test_grammar_text():
    assert call_grammar(TWO_INTS).startswith("root ::= integer sep integer \")\"")
    assert call_grammar(schema({})) == 'root ::= ")"\n'
    short = call_grammar(ONE_STRING, max_string=7)
    assert "chars7 ::= \"\" | char chars6" in short and "chars8" not in short
    capped = schema({"xs": {**VARIADIC["properties"]["xs"], "minItems": 2, "maxItems": 3}})
    assert "root ::= (number sep number (sep number)?) \")\"" in call_grammar(capped)


# ---------------------------------------------------------------- tiny tokenizer, xgrammar


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_tokenizer()


def feed(c, tok, text: str) -> None:
    for t in tok.encode(text, add_special_tokens=False):
        c.advance(t)


def test_tiny_feed_and_refuse(tiny):
    c = make_constraint(TWO_INTS, tiny, vocab_size=len(tiny))
    feed(c, tiny, "12, -3")
    assert not c.is_done()
    with pytest.raises(ValueError, match="not allowed"):
        c.advance(tiny.convert_tokens_to_ids("a"))
    feed(c, tiny, ")")
    assert c.is_done()
    with pytest.raises(ValueError, match="llguidance cannot use this tokenizer"):
        make_constraint(TWO_INTS, tiny, vocab_size=len(tiny), backend="llguidance")


def test_apply_matches_allowed_mask_for_any_layout(tiny):
    V = len(tiny)
    c = make_constraint(NUM_OPT, tiny, vocab_size=V)
    feed(c, tiny, "12")
    allowed = c.allowed_mask(V + K)
    assert allowed[tiny.convert_tokens_to_ids([",", ")", ".", "%", "7"])].all()
    assert not allowed[tiny.convert_tokens_to_ids(["-", "a", " ", "</s>"])].any()
    base = torch.randn(V + K)
    for logits in [base.clone(), base.clone()[None], base.to(torch.bfloat16),
                   torch.stack([base, base], 1)[:, 0]]:  # 1-D, (1, V), bf16, non-contiguous
        out = c.apply(logits)
        assert out is logits and torch.equal(torch.isfinite(out.reshape(-1)), allowed)
    with pytest.raises(ValueError, match="logits must be"):
        c.apply(torch.zeros(2, V + K))


def test_unknown_backend(tiny):
    with pytest.raises(ValueError, match="'outlines'.*'xgrammar', 'llguidance'"):
        make_constraint(TWO_INTS, tiny, vocab_size=len(tiny), backend="outlines")


printable = st.text(alphabet=TINY_CHARS.replace("\n", ""), max_size=30)  # chars the tiny vocab has
decimals = st.integers(-10**12, 10**12).map(lambda i: i / 10**4)
ROUND_TRIP = schema({"n": INT, "x": NUM, "s": STR, "f": {"type": "boolean"},
                     "more": {"type": "array", "items": NUM, "x-variadic": True}},
                    required=["n", "x", "s"])


@settings(max_examples=60, deadline=None)
@given(st.integers(-10**19, 10**19), decimals, printable, st.booleans(),
       st.lists(st.integers(-999, 999) | decimals, max_size=3), st.integers(3, 5))
def test_round_trip_and_grammar_accepts(tiny, n, x, s, f, more, arity):
    tok = tiny
    values = ([n, x, s, f] + more)[:arity]
    text = format_arguments(values, ROUND_TRIP)
    assert parse_arguments(text, ROUND_TRIP) == values
    c = make_constraint(ROUND_TRIP, tok, vocab_size=len(tok))
    feed(c, tok, text)
    assert c.is_done(), text


# ---------------------------------------------------------------- real tokenizer, both backends


@pytest.fixture(scope="module")
def smol():
    base = load_base("SmolLM2-135M-Instruct")
    assert base.vocab_size == 49152
    return base.tokenizer


def sample_call(c, tok, gen: torch.Generator, stats: dict, max_steps: int = 400) -> str:
    """Sample one call from random logits under the constraint; check every mask on the way."""
    V = 49152
    ids: list[int] = []
    while not c.is_done():
        assert len(ids) < max_steps
        logits = torch.randn(1, V + K, generator=gen)
        t0 = time.perf_counter()
        c.apply(logits)
        stats["time"] += time.perf_counter() - t0
        stats["steps"] += 1
        allowed = c.allowed_mask(V + K)
        assert torch.equal(torch.isfinite(logits[0]), allowed)
        assert not allowed[V:].any(), "a toolken column was allowed"
        assert not allowed[tok.eos_token_id], "EOS allowed before the call is complete"
        assert allowed.any()
        t = int(logits.argmax())
        ids.append(t)
        c.advance(t)
    return tok.decode(ids, clean_up_tokenization_spaces=False)


@pytest.mark.real_model
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_random_logits_give_valid_calls(smol, backend, case, capsys):
    sch, pattern, arities, types = CASES[case]
    gen = torch.Generator().manual_seed(0)
    stats = {"time": 0.0, "steps": 0}
    for _ in range(20):
        c = make_constraint(sch, smol, vocab_size=49152, backend=backend)
        text = sample_call(c, smol, gen, stats)
        assert re.fullmatch(pattern, text), text
        assert text.endswith(")") and c.is_done()
        values = parse_arguments(text, sch)
        assert arities is None or len(values) in arities, text
        assert values and all(type(v) in types for v in values), (text, values)
    with capsys.disabled():
        print(f"\n[constrain] {backend:10s} {case:8s}: {1e6 * stats['time'] / stats['steps']:.0f} "
              f"us per mask step (fill + apply to 49152+{K} logits), {stats['steps']} steps")


@pytest.mark.real_model
@pytest.mark.parametrize("backend", BACKENDS)
def test_refusals_and_rollback(smol, backend):
    V = 49152
    c = make_constraint(TWO_INTS, smol, vocab_size=V, backend=backend)
    start = c.allowed_mask(V + K)
    for bad in [smol.encode("a")[0], smol.encode(")")[0], smol.eos_token_id, V, V + K - 1, -1]:
        with pytest.raises(ValueError, match="not allowed"):
            c.advance(bad)
    assert torch.equal(c.allowed_mask(V + K), start), "a refused token changed the state"
    ids = smol.encode("311, 112")
    for t in ids[:4]:
        c.advance(t)
    mid = c.allowed_mask(V + K)
    for t in ids[4:]:
        c.advance(t)
    c.rollback(len(ids) - 4)
    assert torch.equal(c.allowed_mask(V + K), mid)
    for t in smol.encode(" 112)"):
        c.advance(t)
    assert c.is_done()
    assert parse_arguments(smol.decode(c.tokens), TWO_INTS) == [311, 112]
    s = make_constraint(ONE_STRING, smol, vocab_size=V, backend=backend)
    for t in smol.encode('"FGH Elementary School")'):
        s.advance(t)
    assert s.is_done()


LISTS = schema({"a": INT, "tags": {"type": "array", "items": STR},
                "k": {"type": ["number", "null"]}}, required=["a", "tags"])


@pytest.mark.real_model
@pytest.mark.parametrize("sch,text", [
    (TWO_INTS, "311, -112)"), (VARIADIC, "4%, 1.5,2)"), (NUM_OPT, "0.25)"),
    (ONE_STRING, '"Caf\u00e9 \\"Z\\" \u65e5\u672c")'), (LISTS, '7, ["a", "]"], 1.5)'),
])
def test_backends_agree(smol, sch, text):
    V = 49152
    cs = [make_constraint(sch, smol, vocab_size=V, backend=b) for b in BACKENDS]
    for t in smol.encode(text):
        masks = [c.allowed_mask(V + K) for c in cs]
        assert torch.equal(masks[0], masks[1]), smol.decode(cs[0].tokens)
        for c in cs:
            c.advance(t)
    assert all(c.is_done() for c in cs)
    parse_arguments(text, sch)


@pytest.mark.real_model
def test_compiled_once_per_tokenizer(smol):
    vocab = constrain._vocab_for(smol, 49152)
    for backend in BACKENDS:
        make_constraint(NUM_OPT, smol, vocab_size=49152, backend=backend)
    n = len(vocab.compiled)
    t0 = time.perf_counter()
    for backend in BACKENDS:
        a = make_constraint(NUM_OPT, smol, vocab_size=49152, backend=backend)
        b = make_constraint(NUM_OPT, smol, vocab_size=49152, backend=backend)
        assert a.matcher is not b.matcher
    assert constrain._vocab_for(smol, 49152) is vocab and len(vocab.compiled) == n
    print(f"[constrain] cached make_constraint: {1e6 * (time.perf_counter() - t0) / 4:.0f} us")


# ---------------------------------------------------------------- numbers from the context


def test_context_numbers():
    text = "Amy saves 4% of 1,250.5 dollars, tripling it in three years; 10th log of 5572?"
    assert arguments.context_numbers(text) == (
        "4", "4%", "0.04", "1", "250", "1250.5", "3", "10", "5572")
    assert arguments.context_numbers("no number here") is None
    assert arguments.parse_number("4%") == float("0.04")  # the grammar's rule, never eval


def test_grammar_with_context_numbers(tiny):
    sch = schema({"a": {"type": "number"}, "b": {"type": "integer"}})
    g = call_grammar(sch, numbers=("12", "0.5", "4%"))
    assert 'number ::= "-"? ("0.5" | "12" | "4%")' in g and 'integer ::= "-"? ("12")' in g
    assert 'integer ::= "-"? [0-9]' in call_grammar(sch, numbers=("0.5",))  # no integer: any
    c = make_constraint(sch, tiny, vocab_size=len(tiny), numbers=("12", "0.5", "4%"))
    feed(c, tiny, "4%, -12)")
    assert c.is_done()
    c = make_constraint(sch, tiny, vocab_size=len(tiny), numbers=("12", "0.5"))
    feed(c, tiny, "1")
    with pytest.raises(ValueError, match="not allowed"):
        feed(c, tiny, "3")  # 13 is not in the context
    for bad in ((), ("1e5",), ("-3",), (3,)):
        with pytest.raises(ValueError, match="numbers must be"):
            call_grammar(sch, numbers=bad)


def test_tool_call_text_reads_what_the_grammar_writes():
    """One argument language: every argument list the grammar lets tool mode write is read
    the same by ``Tool.call``'s parser (which also accepts looser text, for the in-context
    baseline), on random values of every scalar type and a variadic tail."""
    import random

    from toolken.tools import parse_call_args, tool

    @tool
    def f(n: int, x: float, s: str, b: bool, *rest: int) -> int:
        """A tool of every scalar type."""
        return n

    rng = random.Random(0)
    for _ in range(300):
        values = [rng.randint(-10**6, 10**6), round(rng.uniform(-1e4, 1e4), rng.randint(0, 6)),
                  "".join(rng.choice('ab c,"\\\'x') for _ in range(rng.randint(1, 8))),
                  rng.random() < 0.5] + [rng.randint(0, 99) for _ in range(rng.randint(0, 3))]
        text = format_arguments(values, f.parameters)  # as tool mode writes it, with the ")"
        parsed = parse_arguments(text, f.parameters)
        kwargs = parse_call_args(text.removesuffix(")"), f)
        assert parsed[:4] == [kwargs["n"], kwargs["x"], kwargs["s"], kwargs["b"]], text
        assert parsed[4:] == list(kwargs.get("rest", [])), text


def test_min_length_strings(tiny):
    """A string parameter with minLength n: its first n characters are required, so tool
    mode cannot write the empty string "" there (what SmolLM2 did for similarity's text1)."""
    sch = schema({"a": {**STR, "minLength": 1}, "b": STR})
    g = call_grammar(sch, max_string=6)
    assert 'root ::= string1 sep string ")"' in g and 'string1 ::= "\\"" char chars5 "\\""' in g
    c = make_constraint(sch, tiny, vocab_size=len(tiny))
    feed(c, tiny, '"')
    with pytest.raises(ValueError, match="not allowed"):
        feed(c, tiny, '"')  # "" is refused for a
    c = make_constraint(sch, tiny, vocab_size=len(tiny))
    feed(c, tiny, '"x", "")')  # b may be empty
    assert c.is_done()
    with pytest.raises(ValueError, match="minLength"):
        call_grammar(schema({"a": {**STR, "minLength": 9}}), max_string=4)
    with pytest.raises(ValueError, match="minLength must be an integer"):
        call_grammar(schema({"a": {**STR, "minLength": "1"}}))
    from toolken.tools.hf_tools import task_parameters

    assert all(p.min_length == 1 for p in positional_params(task_parameters("sentence-similarity"))[0])


def test_context_strings(tiny):
    """arg_strings: context: a string argument is one of the context's quoted spans, whole."""
    assert context_strings('How similar are "A b." and "C\\\\d"? "A b." again') == ("A b.", "C\\\\d")
    assert context_strings("no quotes here") is None and context_strings('an "" empty') is None
    sch = schema({"a": {**STR, "minLength": 1}, "b": STR, "u": {**STR, "enum": ["x", "y"]}})
    g = call_grammar(sch, strings=("ab", "c d"))
    assert 'string ::= "\\"" ("ab" | "c d") "\\""' in g and "chars" not in g and "enum2" in g
    c = make_constraint(sch, tiny, vocab_size=len(tiny), strings=("ab", "c d"))
    feed(c, tiny, '"c d", "ab", "y")')
    assert c.is_done()
    c = make_constraint(sch, tiny, vocab_size=len(tiny), strings=("ab", "c d"))
    feed(c, tiny, '"a')
    with pytest.raises(ValueError, match="not allowed"):
        feed(c, tiny, 'x')  # "ax" is not in the context
    assert parse_arguments(r'"C\\d")', ONE_STRING) == ["C\\d"]  # a backslash, escaped as written
    for bad in ((), ("",), ('a"b',), ("a\nb",)):
        with pytest.raises(ValueError, match="strings must be"):
            call_grammar(sch, strings=bad)


# ---------------------------------------------------------------- arguments after their names


@settings(max_examples=40, deadline=None)
@given(st.integers(-10**19, 10**19), decimals, printable, st.booleans(),
       st.lists(st.integers(-999, 999) | decimals, max_size=3), st.integers(3, 5))
def test_named_round_trip_and_grammar(tiny, n, x, s, f, more, arity):
    """names=True: the formatter writes ``n=.., x=..``, the variadic's items bare; the parser
    reads it back; the grammar accepts exactly that text and refuses the positional one."""
    values = ([n, x, s, f] + more)[:arity]
    text = format_arguments(values, ROUND_TRIP, names=True)
    assert text.startswith(f"n={n}, x=") and parse_arguments(text, ROUND_TRIP) == values
    assert "more=" not in text
    c = make_constraint(ROUND_TRIP, tiny, vocab_size=len(tiny), names=True)
    feed(c, tiny, text)
    assert c.is_done(), text
    c = make_constraint(ROUND_TRIP, tiny, vocab_size=len(tiny), names=True)
    with pytest.raises(ValueError, match="not allowed"):
        feed(c, tiny, format_arguments(values, ROUND_TRIP))


def test_named_arguments_parse_and_refuse():
    assert parse_arguments("a=3, b=4)", TWO_INTS) == [3, 4]
    assert parse_arguments("a = 3,b=4", TWO_INTS) == [3, 4]
    assert parse_arguments("3, b=4)", TWO_INTS) == [3, 4]  # a name is optional per argument
    assert parse_arguments('s="x=y")', ONE_STRING) == ["x=y"]
    assert parse_arguments("xs=1, 2, 3)", VARIADIC) == [1, 2, 3]
    for text, match in [("b=3, a=4)", "named 'b'; its parameter is 'a'"),
                        ("xs=1, xs=2)", "items after the first are not named"),
                        ("a=3, c=4)", "named 'c'; its parameter is 'b'")]:
        with pytest.raises(ValueError, match=match):
            parse_arguments(text, VARIADIC if text.startswith("xs") else TWO_INTS)
    sch = schema({"n": INT, "tags": {"type": "array", "items": STR}})
    assert parse_arguments('n=1, tags=["a", "b"])', sch) == [1, ["a", "b"]]
    with pytest.raises(ValueError, match="list item cannot be named"):
        parse_arguments('1, [t="a"])', sch)


def test_name_calls_rewrites_the_demos_calls():
    pct = schema({"part": NUM, "whole": NUM})
    demo = ("Q: 12 of 30 pupils?\nA: 12 of 30 is <percent>(12, 30)=40 percent.\n\n"
            "Q: 6 of 80?\nA: <percent>(6, 80)=7.5. <add>(1, 2)=3 <percent>(oops)=?")
    assert arguments.name_calls(demo, "percent", pct) == (
        "Q: 12 of 30 pupils?\nA: 12 of 30 is <percent>(part=12, whole=30)=40 percent.\n\n"
        "Q: 6 of 80?\nA: <percent>(part=6, whole=80)=7.5. <add>(1, 2)=3 <percent>(oops)=?")
    two = schema({"a": STR, "b": STR})
    text = 'x <sim>("A (b).", "c)")=0.5 <sim>("open'
    assert arguments.name_calls(text, "sim", two) == 'x <sim>(a="A (b).", b="c)")=0.5 <sim>("open'


def test_tool_call_text_reads_named_arguments():
    """``Tool.call``'s parser reads what the grammar writes with names, and a bare string that
    holds '=' stays a string."""
    from toolken.tools import parse_call_args, tool

    @tool
    def pct(part: float, whole: float) -> float:
        """The percentage that part is of whole."""
        return 100 * part / whole

    @tool
    def echo(text: str) -> str:
        """The text."""
        return text

    assert parse_call_args(format_arguments([12, 30], pct.parameters, names=True)[:-1], pct) \
        == {"part": 12, "whole": 30}
    assert parse_call_args('text="a"', echo) == {"text": "a"}
    assert parse_call_args("x = y", echo) == {"text": "x = y"}
