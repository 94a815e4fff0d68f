"""Tests of the shipped tool packs (tools/funcqa.py, tools/kamel.py) and of
data/make_kamel_knowledge.py, against reference values computed plainly here."""

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from toolken.tools import PackError, load_pack

from conftest import REPO, shared_path as shared

FUNCQA_ORDER = ["add", "subtract", "multiply", "divide", "power", "sqrt", "log", "ln", "lcm",
                "gcd", "remainder", "choose", "permutate"]


@pytest.fixture(scope="module")
def funcqa():
    return load_pack(REPO / "tools" / "funcqa.py")


# ---------------------------------------------------------------------------- FuncQA
@pytest.mark.parametrize("name, args, expected", [
    ("add", "311, 112", 311 + 112),
    ("add", "277, 209, 72", 277 + 209 + 72),
    ("add", "118.01, 451.96", 118.01 + 451.96),
    ("subtract", "490, 50", 490 - 50),
    ("subtract", "100, 30, 20", 100 - 30 - 20),
    ("multiply", "370.33, 320", 370.33 * 320),
    ("multiply", "2, 3, 4", 2 * 3 * 4),
    ("divide", "3.77, 13", 3.77 / 13),
    ("power", "1.04, 11", 1.04 ** 11),
    ("power", "2, 39/3", 2 ** 13),
    ("sqrt", "716", 716 ** 0.5),
    ("log", "100", 2),
    ("log", "8, 2", 3),
    ("log", "7753.68", math.log(7753.68) / math.log(10)),
    ("ln", "1160", math.log(1160)),
    ("lcm", "865, 460", 79580),
    ("lcm", "221, 172, 250", 4751500),
    ("gcd", "237, 894", 3),
    ("remainder", "5572, 3241", 2331),
    ("choose", "15, 4", 15 * 14 * 13 * 12 // (4 * 3 * 2 * 1)),
    ("permutate", "5, 2", 5 * 4),
    ("permutate", "10, 10", 3628800),
])
def test_funcqa_against_reference(funcqa, name, args, expected):
    r = funcqa[name].call(args, timeout=5)
    assert r.ok, r.error
    assert r.value == pytest.approx(expected, rel=1e-12)


def test_funcqa_order_and_rendering(funcqa):
    assert funcqa.names == FUNCQA_ORDER
    assert funcqa["divide"].call("2185, 60").text.startswith("36.4166")
    assert funcqa["remainder"].call("5572, 3241").text == "2331"
    assert funcqa["divide"].call("0.000370371, 3").text == "0.000123457"
    assert funcqa["log"].call("100").text == "2"
    assert funcqa["add"].description == "add(a, b, ...): the sum of two or more numbers"


def test_funcqa_order_matches_func_dict(funcqa):
    index = json.loads(shared("toolkengpt", "funcqa", "func_dict.json").read_text())
    assert funcqa.names == [k.strip("<>") for k in sorted(index, key=index.get)]


@pytest.mark.parametrize("name", ["lcm", "gcd", "remainder", "choose", "permutate"])
def test_funcqa_integer_tools_refuse_fractions(funcqa, name):
    r = funcqa[name].call([5.5, 2])
    assert not r.ok and "must be of type integer, got 5.5" in r.error
    assert funcqa[name].call([5.0, 2]).ok


@pytest.mark.parametrize("name, args, pattern", [
    ("divide", "1, 0", "division by zero"),
    ("remainder", "7, 0", "division by zero"),
    ("sqrt", "-4", "not real"),
    ("log", "0", "undefined"),
    ("ln", "-1", "undefined"),
    ("power", "-8, 1/3", "not a real number"),
    ("power", "10, 400", "too large"),
    ("add", "1", "missing required"),
])
def test_funcqa_errors_are_results(funcqa, name, args, pattern):
    r = funcqa[name].call(args)
    assert not r.ok and pattern in r.error


def test_funcqa_demos_from_the_shared_templates(funcqa):
    folder = shared("toolkengpt", "funcqa", "template_oh")
    for t in funcqa:
        assert t.prompt == (folder / f"llama_<{t.name}>.txt").read_text()
        assert "[QUESTION]" in t.prompt and len(t.demos) == 4
        assert all(d.startswith("Q:") and f"<{t.name}>(" in d for d in t.demos)


def test_funcqa_template_dir_override_and_absence(tmp_path):
    (tmp_path / "llama_<add>.txt").write_text(
        "Answer with <add>:\n\nQ: 1 and 2?\nA: 1+2=<add>(1, 2)=3.\n\nQ: [QUESTION]\nA:")
    with pytest.warns(UserWarning, match="missing in .* for: subtract, multiply"):
        reg = load_pack(REPO / "tools" / "funcqa.py", template_dir=tmp_path)
    assert reg["add"].demos == ["Q: 1 and 2?\nA: 1+2=<add>(1, 2)=3."]
    assert reg["subtract"].demos == [] and reg["subtract"].prompt is None
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pack(REPO / "tools" / "funcqa.py", template_dir=tmp_path / "nowhere")


def test_funcqa_default_folder_missing_warns_and_still_works(tmp_path):
    spec = importlib.util.spec_from_file_location("funcqa_for_test", REPO / "tools" / "funcqa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.DEFAULT_TEMPLATES = tmp_path / "absent"
    with pytest.warns(UserWarning, match="without demos or prompts"):
        reg = load_pack(module)
    assert reg.names == FUNCQA_ORDER and reg["add"].demos == []
    assert reg["multiply"].call("6, 7").text == "42"


# ---------------------------------------------------------------------------- KAMEL
API_DESC = {
    "P5353": "school_district(school): gets the school district of a school",
    "P541": "contest_position(name, location, year): gets the position a person contested",
    "P1350": "matches_played(title/name): gets the number of matches played",
}


@pytest.fixture()
def mini_kamel(tmp_path):
    """A 3-relation api_desc (no func_dict beside it) and a knowledge file."""
    (tmp_path / "api_desc.json").write_text(json.dumps(API_DESC))
    (tmp_path / "kb.json").write_text(json.dumps({
        "P5353": {"FGH Elementary School": "District 1011"},
        "P541": {"Andrew, Barcelona, 2016": "8th"},
        "P1350": {"Lionel Messi": ["778", "83"]},
    }))
    return tmp_path


def test_kamel_tools_follow_api_desc(mini_kamel):
    reg = load_pack(REPO / "tools" / "kamel.py", api_desc=mini_kamel / "api_desc.json")
    assert reg.names == ["P5353", "P541", "P1350"]
    assert reg["P5353"].description == API_DESC["P5353"]
    assert reg["P5353"].param_names == ["school"]
    assert reg["P541"].param_names == ["name", "location", "year"]
    assert reg["P1350"].param_names == ["title_name"]
    assert reg["P541"].meta["function"] == "contest_position"


def test_kamel_lookup_with_a_knowledge_file(mini_kamel):
    reg = load_pack(REPO / "tools" / "kamel.py", api_desc=mini_kamel / "api_desc.json",
                    knowledge=mini_kamel / "kb.json")
    r = reg["P5353"].call('"FGH Elementary School"')
    assert r.ok and r.value == "District 1011" and r.text == "District 1011"
    assert reg["P5353"].call("fgh elementary school").text == "District 1011"
    assert reg["P541"].call('"Andrew", "Barcelona", 2016').text == "8th"
    assert reg["P1350"].call('"Lionel Messi"').text == "778, 83"
    miss = reg["P5353"].call('"Nowhere High"')
    assert miss.ok and miss.value is None and miss.text == "unknown"
    assert "no fact for P5353('Nowhere High')" in miss.meta["explanation"]


def test_kamel_without_knowledge_says_unknown(mini_kamel):
    reg = load_pack(REPO / "tools" / "kamel.py", api_desc=mini_kamel / "api_desc.json")
    r = reg["P5353"].call('"FGH Elementary School"')
    assert r.ok and r.value is None and r.text == "unknown"
    assert "no knowledge file" in r.meta["explanation"]


def test_kamel_missing_files_are_named(mini_kamel):
    with pytest.raises(PackError, match="knowledge file not found: .*nope.json"):
        load_pack(REPO / "tools" / "kamel.py", api_desc=mini_kamel / "api_desc.json",
                  knowledge=mini_kamel / "nope.json")
    with pytest.raises(PackError, match="api_desc.json not found"):
        load_pack(REPO / "tools" / "kamel.py", api_desc=mini_kamel / "none" / "api_desc.json")


def test_kamel_shared_pack_has_234_relations_in_func_dict_order():
    folder = shared("toolkengpt", "kamel")
    index = json.loads((folder / "func_dict.json").read_text())
    descriptions = json.loads((folder / "api_desc.json").read_text())
    reg = load_pack(REPO / "tools" / "kamel.py")
    assert len(reg) == 234 and reg.names == sorted(index, key=index.get)
    assert reg.names[0] == "P1408" and reg["P1408"].param_names == ["station"]
    assert reg["P1408"].description == ("broadcasted_places(station): gets the places where a "
                                        "radio station is broadcasted to")
    assert all(t.description == descriptions[t.name] for t in reg)
    assert reg["P1408"].call('"Radio X"').text == "unknown"


# ---------------------------------------------------------------------------- knowledge script
def test_make_kamel_knowledge_reports_bad_records(tmp_path):
    records = [
        {"call": ['<f>P5353("FGH Elementary School")="District 1011"</f>']},
        {"call": ["<f>P127(Nike = oops</f>"]},
        {"call": ['<f>P541("Andrew", "Barcelona", 2016)="8th"</f>']},
        {"call": ['<f>P1877("Westworld")="Blade Runner", "Inception"</f>']},
        {"text": "no call here"},
    ]
    train, out = tmp_path / "train.json", tmp_path / "kb" / "knowledge.json"
    train.write_text(json.dumps(records))
    run = subprocess.run([sys.executable, str(REPO / "data" / "make_kamel_knowledge.py"),
                          "--train", str(train), "--out", str(out)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "2 record(s) could not be parsed" in run.stderr
    assert "record 1:" in run.stderr and "record 4: no 'call' field" in run.stderr
    assert "wrote 3 facts for 3 relations from 5 records" in run.stdout
    assert json.loads(out.read_text()) == {
        "P5353": {"FGH Elementary School": "District 1011"},
        "P541": {"Andrew, Barcelona, 2016": "8th"},
        "P1877": {"Westworld": ["Blade Runner", "Inception"]},
    }


def test_readme_register_pack_is_the_example_file():
    """The README's `my_pack.py` is tools/register_example.py, word for word, so that
    benchmarks/register_flow.py measures the pack the README shows."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    block = readme.split("```python\n# my_pack.py\n", 1)[1].split("```", 1)[0]
    assert "# my_pack.py\n" + block == (repo / "tools" / "register_example.py").read_text()
