"""Tests of toolken.tools: @tool schemas, validation, safe calling, the registry, pack loading
and argument parsing (no model involved)."""

import json
import math
import time
from typing import Optional

import pytest

from toolken.tools import (PackError, Tool, ToolArgumentError, ToolError, ToolRegistry,
                           ToolResult, format_number, load_pack, parse_call_args, render_value,
                           tool)


@tool
def add(a: float, b: float, *more: float) -> float:
    """The sum of two or more numbers."""
    return a + b + sum(more)


@tool
def choose(n: int, k: int) -> int:
    """n choose k."""
    return math.comb(n, k)


@tool
def school_district(school: str) -> str:
    """The district of a school."""
    return f"district of {school}"


@tool
def standings(name: str, location: str, year: str) -> str:
    """Position of a person in a contest."""
    return f"{name}/{location}/{year}"


# ---------------------------------------------------------------------------- @tool
def test_schema_from_hints_defaults_variadic_and_docstring():
    @tool(name="demo_tool")
    def f(x: int, y: float, label: str, flag: bool, ids: list[int], note: Optional[str],
          scale: float = 2.0, *rest: float) -> float:
        """Does a demo thing.

        More detail that is not the description.

        Args:
            x: the first
                number, continued.
            y (float): the second.
            ids: identifiers.

        Returns:
            something: not an argument.
        """
        return 0.0

    p = f.parameters
    assert f.name == "demo_tool" and f.description == "Does a demo thing."
    assert p["x-order"] == ["x", "y", "label", "flag", "ids", "note", "scale", "rest"]
    types = {k: v["type"] for k, v in p["properties"].items()}
    assert types == {"x": "integer", "y": "number", "label": "string", "flag": "boolean",
                     "ids": "array", "note": ["string", "null"], "scale": "number",
                     "rest": "array"}
    assert p["properties"]["ids"]["items"] == {"type": "integer"}
    assert p["properties"]["rest"]["x-variadic"] is True
    assert p["properties"]["rest"]["items"] == {"type": "number"}
    assert p["required"] == ["x", "y", "label", "flag", "ids"]
    assert p["properties"]["scale"]["default"] == 2.0
    assert p["properties"]["x"]["description"] == "the first number, continued."
    assert p["properties"]["y"]["description"] == "the second."
    assert "something" not in p["properties"]
    assert json.loads(json.dumps(f.manifest()))["parameters"] == p


def test_variadic_positional_call():
    assert add.call([1, 2, 3]).value == 6
    assert add.call("1, 2, 3, 4").text == "10"
    assert add.validate([1, 2]) == {"a": 1, "b": 2, "more": []}


def test_missing_type_hint_names_function_and_parameter():
    def f(a: int, b):
        return a

    with pytest.raises(ToolError, match=r"f.*parameter 'b' has no type hint"):
        tool(f)


@pytest.mark.parametrize("hint", [dict, list, tuple[int, int]])
def test_unmappable_hint_is_refused(hint):
    def f(a):
        return a
    f.__annotations__ = {"a": hint}
    with pytest.raises(ToolError, match="no JSON-schema mapping"):
        tool(f)


def test_var_keyword_is_refused():
    def f(**kw: int):
        return 0
    with pytest.raises(ToolError, match=r"\*\*kw is not supported"):
        tool(f)


# ---------------------------------------------------------------------------- validate
def test_validate_errors_name_tool_argument_and_type():
    with pytest.raises(ToolArgumentError, match=r"tool 'add': argument 'b' must be of type "
                                                r"number, got 'x' \(str\)"):
        add.validate([1, "x"])
    with pytest.raises(ToolArgumentError, match=r"missing required argument\(s\) \['b'\]"):
        add.validate([1])
    with pytest.raises(ToolArgumentError, match=r"unknown argument\(s\) \['c'\]; allowed"):
        add.validate({"a": 1, "b": 2, "c": 3})
    with pytest.raises(ToolArgumentError, match=r"takes at most 2 argument"):
        choose.validate([5, 2, 1])
    with pytest.raises(ToolArgumentError, match="must be a list .* or a dict"):
        add.validate(5)
    with pytest.raises(ToolArgumentError, match=r"argument 'more\[1\]' must be of type number"):
        add.validate([1, 2, 3, "four"])


def test_integer_arguments_accept_integral_floats_only():
    assert choose.validate([5.0, 2]) == {"n": 5, "k": 2}
    assert isinstance(choose.validate([5.0, 2])["n"], int)
    with pytest.raises(ToolArgumentError, match=r"'n' must be of type integer, got 5.5"):
        choose.validate([5.5, 2])
    with pytest.raises(ToolArgumentError, match="integer"):
        choose.validate([True, 2])


# ---------------------------------------------------------------------------- calling
def test_raising_tool_gives_error_result():
    @tool
    def boom(x: int) -> int:
        raise RuntimeError(f"kaput {x}")

    r = boom.call([3])
    assert not r.ok and r.text == "" and "RuntimeError: kaput 3" in r.error


def test_hanging_tool_times_out_quickly():
    @tool
    def sleepy(x: float) -> float:
        time.sleep(10)
        return x

    t0 = time.perf_counter()
    r = sleepy.call([1], timeout=0.2)
    assert time.perf_counter() - t0 < 1.5
    assert not r.ok and "timed out after 0.2 s" in r.error and "abandoned" in r.error


def test_non_serialisable_result_needs_render():
    @tool
    def obj(x: int) -> object:
        return {1, 2}

    r = obj.call([1])
    assert not r.ok and "not JSON-serialisable" in r.error
    rendered = Tool(obj.name, obj.description, obj.parameters, obj.fn,
                    render=lambda v: "+".join(map(str, sorted(v))))
    r = rendered.call([1])
    assert r.ok and r.text == "1+2" and r.value == "1+2"


def test_enormous_result_is_truncated():
    @tool
    def big(n: int) -> str:
        return "x" * n

    r = big.call([10_000])
    assert r.ok and len(r.text) == 500 and r.text.endswith("…")
    assert len(big.call([10_000], max_chars=50).text) == 50
    assert big.call([20]).text == "x" * 20


def test_manifest_only_tool_reports_missing_implementation():
    bare = Tool("lonely", "no function", add.parameters)
    r = bare.call([1, 2])
    assert not r.ok and r.error == "tool lonely has no implementation attached"


def test_tool_may_return_its_own_result_with_meta():
    @tool
    def maybe(q: str) -> ToolResult:
        return ToolResult(ok=True, value=None, text="unknown", meta={"why": "no fact"})

    r = maybe.call(["q"])
    assert r.ok and r.text == "unknown" and r.meta == {"why": "no fact"} and r.seconds >= 0


def test_bad_arguments_become_error_results():
    r = add.call("1, banana")
    assert not r.ok and "banana" in r.error


PACK = '''
import time
from toolken.tools import tool

@tool
def nap(seconds: float) -> float:
    """Sleep, then say how long."""
    time.sleep(seconds)
    return seconds

def build(**options):
    return [nap]
'''


def test_process_isolation_kills_a_hanging_pack_tool(tmp_path):
    (tmp_path / "napper.py").write_text(PACK)
    nap = load_pack(tmp_path / "napper.py")["nap"]
    assert nap.call([0], timeout=60, isolation="process").text == "0"
    t0 = time.perf_counter()
    r = nap.call([30], timeout=1.0, isolation="process")
    assert time.perf_counter() - t0 < 10
    assert not r.ok and "killed" in r.error


@pytest.mark.parametrize("x, text", [
    (2331, "2331"), (2331.0, "2331"), (0.29, "0.29"), (1.5126, "1.5126"),
    (2185 / 60, "36.416667"), (0.000123456789, "0.000123457"), (118505.6, "118505.6"),
    (0.1 + 0.2, "0.3"), (-0.5, "-0.5"), (-1e-12, "-1e-12"), (1e20, "1e+20"), (0.0, "0"),
    (10 ** 30, str(10 ** 30)),
])
def test_format_number(x, text):
    assert format_number(x) == text


def test_render_value():
    assert render_value("District 1011") == "District 1011"
    assert render_value([1, 2.5, "a"]) == "1, 2.5, a"
    assert render_value({"k": [1]}) == '{"k": [1]}'
    assert render_value(None) == "null"


# ---------------------------------------------------------------------------- registry
def test_registry_order_lookup_and_contains():
    reg = ToolRegistry([add, choose])
    reg.add(school_district)
    assert reg.names == ["add", "choose", "school_district"] and len(reg) == 3
    assert [t.name for t in reg] == reg.names
    assert reg[1] is choose and reg["choose"] is choose and reg.index("school_district") == 2
    assert "add" in reg and add in reg and "nope" not in reg
    with pytest.raises(ToolError, match=r"unknown tool 'nope'; known \(3\): add, choose"):
        reg.index("nope")


def test_registry_refuses_duplicates_naming_positions():
    with pytest.raises(ValueError, match=r"duplicate tool name 'add': at positions 0 and 2"):
        ToolRegistry([add, choose, add])


@pytest.mark.parametrize("name", ["", "1abc", "has space", "semi;colon", "<add>"])
def test_registry_refuses_bad_names_explaining_the_rule(name):
    bad = Tool(name, "d", add.parameters, add.fn)
    with pytest.raises(ToolError, match="a name starts with a letter or '_'"):
        ToolRegistry([bad])


def test_manifest_round_trip_and_attach():
    pack = ToolRegistry([add, choose])
    manifest = json.loads(json.dumps(pack.manifest()))
    assert manifest[0] == {"name": "add", "description": add.description,
                           "parameters": add.parameters}
    restored = ToolRegistry.from_manifest(manifest)
    assert restored.names == pack.names and restored.manifest() == pack.manifest()
    assert "no implementation" in restored["add"].call([1, 2]).error
    restored.attach(pack)
    assert restored["add"].call([1, 2]).text == "3"
    assert restored["choose"].call("15, 4").text == "1365"


def test_attach_refuses_a_different_pack_naming_the_tools():
    restored = ToolRegistry.from_manifest(ToolRegistry([add, choose, school_district]).manifest())
    with pytest.raises(ToolError) as err:
        restored.attach(ToolRegistry([choose, add, standings]))
    msg = str(err.value)
    assert "missing from the pack: school_district" in msg
    assert "extra in the pack: standings" in msg
    assert "order differs" in msg and "'add' here but 'choose' in the pack" in msg
    ToolRegistry([add]).check_same(["add"])
    with pytest.raises(ToolError, match="missing from the checkpoint: add"):
        ToolRegistry([add]).check_same(["choose"], "checkpoint")


def test_attach_refuses_different_argument_types():
    other = Tool("add", "d", choose.parameters, choose.fn)
    restored = ToolRegistry.from_manifest([add.manifest()])
    with pytest.raises(ToolError, match="tool 'add': arguments differ"):
        restored.attach(ToolRegistry([other]))


# ---------------------------------------------------------------------------- packs
def test_load_pack_missing_file_names_it(tmp_path):
    with pytest.raises(PackError, match=r"tool pack file not found: .*nothere\.py"):
        load_pack(tmp_path / "nothere.py")
    with pytest.raises(PackError, match="neither a .py file nor an importable module"):
        load_pack("no_such_pack_module_xyz")


def test_load_pack_without_build_or_tools_says_what_a_pack_needs(tmp_path):
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(PackError, match=r"defines neither build\(\) nor TOOLS.*def build"):
        load_pack(tmp_path / "empty.py")


def test_load_pack_unknown_options_are_named(tmp_path):
    (tmp_path / "opt.py").write_text(
        "from toolken.tools import tool\n"
        "def build(template_dir=None, *, precision=6):\n"
        "    @tool\n"
        "    def one(x: int) -> int:\n"
        "        '''One.'''\n"
        "        return 1\n"
        "    return [one]\n")
    assert load_pack(tmp_path / "opt.py", precision=3).names == ["one"]
    with pytest.raises(PackError, match=r"does not accept option\(s\) \['colour'\]; "
                                        r"accepted: \['template_dir', 'precision'\]"):
        load_pack(tmp_path / "opt.py", colour="red")


def test_load_pack_tools_list_and_bad_results(tmp_path):
    (tmp_path / "listed.py").write_text(
        "from toolken.tools import tool\n"
        "@tool\n"
        "def double(x: float) -> float:\n"
        "    '''Twice x.'''\n"
        "    return 2 * x\n"
        "TOOLS = [double]\n")
    reg = load_pack(str(tmp_path / "listed.py"))
    assert reg["double"].call("21").text == "42"
    assert load_pack(tmp_path / "listed.py").names == ["double"]  # loads twice, independently
    with pytest.raises(PackError, match="accepts no options"):
        load_pack(tmp_path / "listed.py", x=1)
    (tmp_path / "weird.py").write_text("def build():\n    return 42\n")
    with pytest.raises(PackError, match="gave int; expected a ToolRegistry or a list of Tool"):
        load_pack(tmp_path / "weird.py")
    (tmp_path / "notool.py").write_text("TOOLS = ['add']\n")
    with pytest.raises(PackError, match="notool.py: expected a Tool, got str"):
        load_pack(tmp_path / "notool.py")


# ---------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text, kwargs", [
    ("5572, 3241", {"a": 5572, "b": 3241, "more": []}),
    ("(1.03, 14)", {"a": 1.03, "b": 14, "more": []}),
    ("1,234", {"a": 1, "b": 234, "more": []}),
    ("4%, -3.5", {"a": 0.04, "b": -3.5, "more": []}),
    ("2, 39/3", {"a": 2, "b": 13.0, "more": []}),
    ("1, 2, 3", {"a": 1, "b": 2, "more": [3]}),
    ("(1+2)*3, 2^3", {"a": 9, "b": 8.0, "more": []}),
    ("'7', \"8\"", {"a": 7, "b": 8, "more": []}),
])
def test_parse_numbers(text, kwargs):
    assert parse_call_args(text, add) == kwargs


@pytest.mark.parametrize("text, value", [
    ('"FGH Elementary School"', "FGH Elementary School"),
    ("FGH Elementary School", "FGH Elementary School"),
    ("'O\\'Brien \"High\"'", "O'Brien \"High\""),
    ('("Pennsylvania, Rhode Island")', "Pennsylvania, Rhode Island"),
    ("18", "18"),
])
def test_parse_single_string(text, value):
    assert parse_call_args(text, school_district) == {"school": value}


def test_parse_several_strings_keeps_bare_numbers_as_text():
    assert parse_call_args('"Andrew", "Barcelona, Spain", 2016', standings) == \
        {"name": "Andrew", "location": "Barcelona, Spain", "year": "2016"}


@pytest.mark.parametrize("text, pattern", [
    ("1, banana", r"'banana' is not a number"),
    ("1,, 2", "empty argument"),
    ('"1, 2', "unclosed quote"),
    ("(1, 2", "unclosed"),
    ("1, 2/0", "division by zero"),
    ("1", r"missing required argument\(s\) \['b'\]"),
    ("1, 10^999", "power out of range"),
])
def test_parse_errors_name_the_text(text, pattern):
    with pytest.raises(ToolArgumentError, match=pattern) as err:
        parse_call_args(text, add)
    assert repr(text) in str(err.value)


def test_parse_never_evaluates(monkeypatch):
    import os

    ran = []
    monkeypatch.setattr(os, "system", lambda cmd: ran.append(cmd))
    for text in ["__import__('os').system('x')", "os.system('x'), 1", "1, (lambda: 2)()"]:
        with pytest.raises(ToolArgumentError, match="cannot parse arguments"):
            parse_call_args(text, add)
    assert ran == []
