"""Tools in the OpenAI function schema: Tool.to_openai / from_openai round trips, Literal and
Enum hints as ``enum``, the checkpoint's manifest as that list, and the same list in
transformers' ``apply_chat_template(tools=...)``."""

import enum
import json
import random
from typing import Literal, Optional

import pytest
import torch

from toolken.tools.arguments import call_grammar, parse_arguments
from toolken.model import ToolkenModel
from toolken.tools import Tool, ToolError, ToolRegistry, tool


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


@tool
def convert(value: float, unit: Unit, mode: Literal["round", "exact"] = "exact",
            extra: Optional[list[Literal[1, 2, 3]]] = None) -> str:
    """Convert a temperature.

    Args:
        value: the temperature
        unit: the unit to convert to
        mode: round or not
        extra: small integers
    """
    assert isinstance(unit, Unit), unit
    return f"{value} {unit.name} {mode} {extra}"


@tool
def total(first: int, *rest: int) -> int:
    """The sum of integers."""
    return first + sum(rest)


def test_literal_and_enum_become_enum():
    props = convert.parameters["properties"]
    assert props["unit"] == {"type": "string", "enum": ["celsius", "fahrenheit"],
                             "description": "the unit to convert to"}
    assert props["mode"]["enum"] == ["round", "exact"] and props["mode"]["default"] == "exact"
    assert props["extra"]["items"] == {"type": "integer", "enum": [1, 2, 3]}
    with pytest.raises(ToolError, match="one type"):
        @tool
        def bad(x: Literal["a", 1]) -> str:
            """Mixed."""
            return x


def test_same_types_and_enums_as_transformers_get_json_schema():
    from transformers.utils import get_json_schema

    def convert2(value: float, unit: Literal["celsius", "fahrenheit"], mode: Literal["round", "exact"] = "exact"):
        """Convert a temperature.

        Args:
            value: the temperature
            unit: the unit to convert to
            mode: round or not
        """
    theirs = get_json_schema(convert2)["function"]["parameters"]
    ours = tool(convert2).to_openai()["function"]["parameters"]
    for name, spec in theirs["properties"].items():
        assert {k: ours["properties"][name][k] for k in spec} == spec, name
    assert ours["required"] == theirs["required"]


def test_enum_argument_arrives_as_member_and_bad_value_is_refused():
    assert convert.call({"value": 3.5, "unit": "celsius"}).text == "3.5 CELSIUS exact None"
    r = convert.call({"value": 1, "unit": "kelvin"})
    assert not r.ok and "unit" in r.error and "kelvin" in r.error
    assert convert.call('2, "fahrenheit", "round"').text == "2 FAHRENHEIT round None"


def test_enum_in_the_argument_grammar():
    g = call_grammar(convert.parameters)
    assert '"\\"celsius\\""' in g and '"\\"round\\""' in g
    assert parse_arguments('1.5, "fahrenheit")', convert.parameters) == [1.5, "fahrenheit"]
    with pytest.raises(ValueError, match="kelvin"):
        parse_arguments('1.5, "kelvin")', convert.parameters)


def _random_tool(rng: random.Random) -> Tool:
    kinds = ["integer", "number", "string", "boolean"]
    props = {}
    for i in range(rng.randint(0, 4)):
        kind = rng.choice(kinds)
        spec = {"type": kind, "description": f"argument {i}"}
        if kind == "string" and rng.random() < 0.5:
            spec["enum"] = [f"v{j}" for j in range(rng.randint(1, 3))]
        props[f"a{i}_{rng.randint(0, 99)}"] = spec
    order = list(props)
    if rng.random() < 0.5:
        rng.shuffle(order)
    params = {"type": "object", "properties": props, "x-order": order,
              "required": [n for n in props if rng.random() < 0.5]}
    return Tool(name=f"t{rng.randint(0, 10**6)}", description=f"tool {rng.random()}", parameters=params)


def test_round_trip_on_random_schemas():
    rng = random.Random()
    for _ in range(50):
        t = _random_tool(rng)
        schema = t.to_openai()
        assert schema["type"] == "function" and set(schema["function"]) == {"name", "description", "parameters"}
        back = Tool.from_openai(json.loads(json.dumps(schema)))
        assert (back.name, back.description, back.parameters) == (t.name, t.description, t.parameters)
        assert back.to_openai() == schema
        assert Tool.from_openai(schema["function"]).parameters == t.parameters  # the bare form too
    for t in (convert, total):
        back = Tool.from_openai(t.to_openai(), fn=t.fn)
        assert back.parameters == t.parameters
    assert Tool.from_openai(total.to_openai(), fn=total.fn).call([1, 2, 3]).value == 6


def test_from_openai_errors_name_the_field():
    with pytest.raises(ToolError, match='"name"'):
        Tool.from_openai({"type": "function", "function": {"description": "x"}})
    with pytest.raises(ToolError, match='"type": "function"'):
        Tool.from_openai({"type": "retrieval", "function": {"name": "x"}})
    with pytest.raises(ToolError, match="parameters"):
        Tool.from_openai({"name": "x", "parameters": {"type": "string"}})
    with pytest.raises(ToolError, match=r"tools\[1\]"):
        ToolRegistry.from_openai([total.to_openai(), {"name": 3}])


def test_checkpoint_manifest_as_openai_list(tiny_base, tmp_path):
    reg = ToolRegistry([convert, total])
    torch.manual_seed(0)
    m = ToolkenModel(base=tiny_base, tools=reg.names, manifest=reg.manifest())
    m.save_pretrained(tmp_path / "ck")
    loaded = ToolkenModel.from_pretrained(tmp_path / "ck", base=tiny_base)
    assert loaded.registry is None
    assert loaded.tools_openai() == reg.to_openai()
    assert ToolRegistry.from_openai(loaded.tools_openai()).names == ["convert", "total"]
    bare = ToolkenModel(base=tiny_base, tools=["x"])
    with pytest.raises(ValueError, match="manifest"):
        bare.tools_openai()


TOOLS_TEMPLATE = ("{% if tools %}<tools>{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>{% endif %}"
                  "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
                  "{% if add_generation_prompt %}<assistant>{% endif %}")


def test_same_list_serves_apply_chat_template(tiny_base):
    """A tools-aware chat template (written here in the form tool-calling models ship) renders
    every schema of the list; the tiny tokenizer itself has no chat template."""
    import copy

    tok = copy.deepcopy(tiny_base.tokenizer)
    assert tok.chat_template is None
    tok.chat_template = TOOLS_TEMPLATE
    tools = ToolRegistry([convert, total]).to_openai()
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tools=tools,
                                   tokenize=False, add_generation_prompt=True)
    for t in tools:
        assert json.dumps(t, ensure_ascii=False) in text or t["function"]["name"] in text
    assert text.count('"type": "function"') == 2 and text.endswith("<user>hi</user><assistant>")


@pytest.mark.real_model
def test_smollm2_template_accepts_tools_and_ignores_them():
    """What is real: SmolLM2-135M-Instruct's chat template takes ``tools=`` without error
    and does not render them (it has no tool section)."""
    from transformers import AutoTokenizer

    from toolken.core.base import smollm2_folder

    tok = AutoTokenizer.from_pretrained(smollm2_folder())
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    tools = ToolRegistry([convert, total]).to_openai()
    with_tools = tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=True)
    assert with_tools == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert "convert" not in with_tools
