"""Written forms of a call (toolken.tools.forms) and generation's inline_calls, which runs a
call the answer has already written instead of writing its arguments again in tool mode."""

import math
from pathlib import Path

import pytest
import torch

from toolken.tools import ToolError, load_pack, tool
from toolken.tools.forms import read_written_call
from test_generate import model_with

REPO = Path(__file__).resolve().parents[1]


@tool(forms=["{a} * {b}...", "{a} x {b}..."])
def multiply(a: float, b: float, *more: float) -> float:
    """The product."""
    return math.prod((a, b, *more))


@tool(forms=["{a} / {b}"])
def divide(a: float, b: float) -> float:
    """a / b."""
    if b == 0:
        raise ValueError("division by zero")
    return a / b


@tool(forms=["{a} + {b}..."])
def add(a: float, b: float, *more: float) -> float:
    """The sum."""
    return a + b + sum(more)


@tool(forms=["lcm({a}, {b}...)"])
def lcm(a: int, b: int, *more: int) -> int:
    """Least common multiple."""
    return math.lcm(a, b, *more)


@tool(forms=["{n}C{k}"])
def choose(n: int, k: int) -> int:
    """n choose k."""
    return math.comb(n, k)


@tool(forms=["log({x})", "log({x}, {base})"])
def log(x: float, base: float = 10) -> float:
    """Logarithm."""
    return math.log(x, base)


@tool(forms=['shout({text})'])
def shout(text: str) -> str:
    """Upper case."""
    return text.upper()


FORMS = [f for t in (multiply, divide, add, lcm, choose, log, shout) for f in t.compiled_forms]


@pytest.mark.parametrize("text, tool_name, args", [
    ("The farmer sells 1260*12 =", "multiply", "1260, 12"),
    ("It costs 2,025 x 2 = ", "multiply", "2025, 2"),
    ("Total: 78 + 85 + 92 + 88 =", "add", "78, 85, 92, 88"),
    ("They meet every LCM(15,25)=", "lcm", "15, 25"),
    ("Each piece is lcm(72,96,120)=", "lcm", "72, 96, 120"),  # commas separate values here
    ("The group: 14C3=", "choose", "14, 3"),
    ("log(100)=", "log", "100"),
    ("log(8, 2) =", "log", "8, 2"),
    ("It changes by -14 + 9 =", "add", "-14, 9"),
    ('He says shout("hi there") =', "shout", '"hi there"'),
    ("Halve 0.15/15 =", "divide", "0.15, 15"),
    ("It keeps 0.75. 120*0.75 =", "multiply", "120, 0.75"),  # a sentence's full stop before it
    ("1250 + 35 =1285. 1285 + 35 =", "add", "1285, 35"),
])
def test_a_written_call_is_read_with_its_tool_and_arguments(text, tool_name, args):
    w = read_written_call(text, FORMS)
    assert w is not None and (w.tool, w.argument_text) == (tool_name, args)


@pytest.mark.parametrize("text", [
    "5 + 3 * 2 =",  # the tail of a longer expression: not multiply(3, 2)
    "10 - 14 + 9 =",
    "(3 + 4) * 2 =",
    "ab3 * 2 =",  # a word's letters right before it
    "12 3 * 2 =",
    "The farmer sells 1260*12",  # no '=' after it
    "1260*12 = 15120",  # already answered
    "it is 12 =",  # no form
    "",
])
def test_no_written_call(text):
    assert read_written_call(text, FORMS) is None


@pytest.mark.parametrize("forms, match", [
    (["{a} * {c}"], "names {c}, which is not a parameter"),
    (["{a} * {a}"], "names {a} twice"),
    (["{b} * {a}"], "first parameters in their order"),
    (["{a} * {b}..."], "has none"),  # '...' on a tool without a variadic parameter
    (["times"], "has no {parameter} placeholder"),
    ("{a} * {b}", "must be a list of strings"),
])
def test_bad_forms_are_refused_naming_the_tool_and_form(forms, match):
    def times(a: float, b: float) -> float:
        return a * b

    with pytest.raises(ToolError, match="'times'") as e:
        tool(times, forms=forms)
    assert match in str(e.value)


def test_the_funcqa_pack_reads_the_calls_its_answers_write():
    pack = load_pack(REPO / "tools" / "funcqa.py")
    forms = [f for t in pack for f in t.compiled_forms]
    got = {text: read_written_call(text, forms) for text in [
        "1 - 0.12 =", "0.94 ^ 8 =", "30%4=", "lcm(8,10,15)=", "10C2=", "10P2 =", "sqrt(144) =",
        "ln(2)=", "275 mod 48 =", "gcd(84, 126) ="]}
    assert {t: (w.tool, w.argument_text) for t, w in got.items()} == {
        "1 - 0.12 =": ("subtract", "1, 0.12"), "0.94 ^ 8 =": ("power", "0.94, 8"),
        "30%4=": ("remainder", "30, 4"), "lcm(8,10,15)=": ("lcm", "8, 10, 15"),
        "10C2=": ("choose", "10, 2"), "10P2 =": ("permutate", "10, 2"),
        "sqrt(144) =": ("sqrt", "144"), "ln(2)=": ("ln", "2"),
        "275 mod 48 =": ("remainder", "275, 48"), "gcd(84, 126) =": ("gcd", "84, 126")}
    for text, w in got.items():  # each runs
        assert pack[w.tool].call(w.argument_text).ok, text


def test_inline_calls_run_the_written_call_when_a_toolken_wins(tiny_base):
    m = model_with(tiny_base, add, multiply)
    prompt = "Q: 12 boxes of 3? A: 12 * 3 ="
    g = m.generate(prompt, max_new_tokens=3, toolken_bias=1e4, max_tool_calls=1, inline_calls="toolken")
    c = g.calls[0]
    assert (c.tool, c.arguments, c.result, c.written) == ("multiply", [12, 3], "36", "12 * 3")
    assert c.argument_text == "12, 3)" and g.text[c.start:c.end] == "36"
    off = m.generate(prompt, max_new_tokens=3, toolken_bias=1e4, max_tool_calls=1)
    assert off.calls[0].written is None  # off: tool mode writes the arguments
    # the cache after the call holds what a fresh forward over the same tokens gives
    g1 = m.generate(prompt, max_new_tokens=1, toolken_bias=1e4, max_tool_calls=1, inline_calls="toolken")
    torch.testing.assert_close(g1.next_logits, m(torch.tensor([g1.token_ids]))[0][0, -1],
                               rtol=1e-4, atol=1e-4)


def test_inline_calls_toolken_needs_a_toolken_and_always_does_not(tiny_base):
    m = model_with(tiny_base, add, multiply)
    prompt = "Q: 12 boxes of 3? A: 12 * 3 ="
    none = m.generate(prompt, max_new_tokens=2, toolken_bias=-1e4, inline_calls="toolken")
    assert none.calls == []
    always = m.generate(prompt, max_new_tokens=2, toolken_bias=-1e4, inline_calls="always")
    assert [(c.tool, c.result) for c in always.calls] == [("multiply", "36")]


def test_a_failing_written_call_is_tried_once(tiny_base):
    m = model_with(tiny_base, divide)
    g = m.generate("Q: 5 shared by 0? A: 5 / 0 =", max_new_tokens=4, toolken_bias=-1e4,
                   inline_calls="always")
    assert len(g.calls) == 1 and "division by zero" in g.calls[0].error


def test_inline_calls_respect_the_tool_filter(tiny_base):
    m = model_with(tiny_base, add, multiply)
    g = m.generate("Q: 12 boxes of 3? A: 12 * 3 =", max_new_tokens=2, toolken_bias=1e4,
                   max_tool_calls=1, inline_calls="toolken", tool_filter=["add"])
    assert g.calls[0].tool == "add" and g.calls[0].written is None


def test_inline_calls_option_is_checked():
    from toolken.generation.config import GenerationConfig

    with pytest.raises(ValueError, match="inline_calls='sometimes' is not one of"):
        GenerationConfig(inline_calls="sometimes")
