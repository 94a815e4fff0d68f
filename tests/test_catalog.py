"""APIBench catalogues as tools (toolken.tools.catalog, tools/apibench.py): counts and names
against a plain count of the files, kept records, duplicate reports, bad lines, calls."""

import json
import warnings
from collections import Counter
from pathlib import Path

import pytest

from toolken.tools.catalog import (CatalogError, base_name, domain_task, hub_ids, load_catalog,
                             unique_names)
from toolken.tools.registry import NAME_RULE
from toolken.tools import PackError, load_pack
from toolken.tools.synth import load_needs

REPO = Path(__file__).resolve().parents[1]
FILES = {"hf": "huggingface_api.jsonl", "torchhub": "torchhub_api.jsonl",
         "tfhub": "tensorflowhub_api.jsonl"}
SIZES = {"hf": 936, "torchhub": 94, "tfhub": 696}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def shared_path(*parts: str) -> Path:
    """A file under ../shared/benchmarks, or skip the test saying it is absent."""
    path = REPO.parent / "shared" / "benchmarks" / Path(*parts)
    if not path.exists():
        pytest.skip(f"benchmark data {path} is not present")
    return path


@pytest.fixture(scope="module")
def api_paths():
    return {p: shared_path("apibench", "api", f) for p, f in FILES.items()}


@pytest.fixture(scope="module")
def catalog(api_paths):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cat = load_catalog(list(api_paths.values()))
    assert any("renamed with a -N suffix" in str(w.message) for w in caught)
    return cat


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def record(name, call=None, domain="Natural Language Processing Text Classification"):
    return {"domain": domain, "framework": "Hugging Face Transformers", "functionality": "x",
            "api_name": name, "api_call": call or f"AutoModel.from_pretrained('{name}')",
            "description": f"The {name} model."}


# ---------------------------------------------------------------------------- the real files
def test_counts_names_and_records(catalog, api_paths):
    assert len(catalog) == sum(SIZES.values()) == 1726
    assert Counter(t.meta["provider"] for t in catalog) == SIZES
    assert len(set(catalog.names)) == len(catalog)
    assert all(NAME_RULE.match(n) for n in catalog.names)
    for provider, path in api_paths.items():  # every record kept, in file order, whole
        lines = path.read_text().splitlines()
        tools = [t for t in catalog if t.meta["provider"] == provider]
        assert [t.meta["record"] for t in tools] == [json.loads(x) for x in lines]
        assert all(t.meta["api_call"] == t.meta["record"]["api_call"] for t in tools)
        assert all(t.name.startswith(provider + ".") for t in tools)


def test_repeated_api_names_are_renamed_and_reported(catalog, api_paths):
    for provider, path in api_paths.items():  # plain count: records after the first per name
        names = Counter(json.loads(x)["api_name"] for x in path.read_text().splitlines())
        repeated = sum(n - 1 for n in names.values())
        groups = {b: g for b, g in catalog.duplicates.items() if b.startswith(provider + ".")}
        assert sum(len(g) - 1 for g in groups.values()) == repeated
        assert len(groups) == sum(1 for n in names.values() if n > 1)
    assert (29, 51, 641) == tuple(sum(len(g) - 1 for b, g in catalog.duplicates.items()
                                      if b.startswith(p + ".")) for p in FILES)
    group = catalog.duplicates["tfhub.model_id"]
    assert len(group) == 181 and group[:3] == ["tfhub.model_id", "tfhub.model_id-2",
                                               "tfhub.model_id-3"]
    assert catalog["tfhub.model_id-2"].meta["duplicate_of"] == "tfhub.model_id"
    assert "duplicate_of" not in catalog["tfhub.model_id"].meta
    assert sum("duplicate_of" in t.meta for t in catalog) == 29 + 51 + 641
    assert "tfhub: 696 tools; 29 names repeat, 641 records renamed" in catalog.report()


def test_descriptions_and_meta(catalog):
    t = catalog["hf.sentence-transformers.all-MiniLM-L6-v2"]
    assert t.meta["api_call"] == f"SentenceTransformer('{MINILM}')"
    assert t.description.startswith("Natural Language Processing Sentence Similarity")
    assert "384 dimensional dense vector space" in t.description
    assert t.meta["task"] == "sentence-similarity" and t.param_names == ["text1", "text2"]
    assert t.meta["source"].endswith(f"{FILES['hf']}:{t.meta['source'].rsplit(':', 1)[1]}")
    # an api_name written as a call gives the quoted id
    assert "hf.laion.CLIP-convnext_base_w-laion2B-s13B-b82K" in catalog


def test_calls_that_cannot_run_say_why(catalog):
    r = catalog["hf.YituTech.conv-bert-base"].call("some text")
    assert not r.ok and "model 'YituTech/conv-bert-base' is not available locally" in r.error
    r = catalog["torchhub.slow_r50"].call("video.mp4")
    assert not r.ok and "cannot run" in r.error and "slow_r50" in r.error


@pytest.mark.real_model
def test_local_hf_record_runs_through_hf_model_tool(api_paths):
    from toolken.tools.hf_tools import minilm_folder

    try:
        folder = minilm_folder()
    except ModuleNotFoundError as e:
        pytest.skip(str(e))
    cat = load_catalog(api_paths["hf"], local_models={MINILM: folder}, on_duplicate="suffix")
    tool = cat["hf.sentence-transformers.all-MiniLM-L6-v2"]
    assert tool.meta["local_model"] == folder
    r = tool.call('"A man plays a guitar.", "Someone is playing the guitar."')
    assert r.ok and isinstance(r.value, float) and r.value > 0.5
    other = cat["hf.sentence-transformers.all-MiniLM-L12-v2"].call(["a", "b"])
    assert not other.ok and "all-MiniLM-L12-v2' is not available locally" in other.error


def test_apibench_pack(catalog, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pack = load_pack(REPO / "tools" / "apibench.py", local_models={})
    assert pack.names == catalog.names
    assert pack["tfhub.universal-sentence-encoder"].meta["api_call"].startswith("hub.load(")
    # the users' needs of each tool's domain (data/apibench_needs.yaml) as its example requests
    needs = load_needs(REPO / "data" / "apibench_needs.yaml")
    for t in pack:
        want = needs.get(t.meta["record"]["domain"].strip().lower())
        assert t.meta.get("requests") == (list(want) if want else None), t.name
    assert pack["hf.sentence-transformers.all-MiniLM-L6-v2"].meta["requests"]
    bare = load_pack(REPO / "tools" / "apibench.py", local_models={}, catalogues=["tensorflowhub"], needs=None)
    assert not any("requests" in t.meta for t in bare)
    copy = tmp_path / "toolken_tools.py"  # a checkpoint's copy of the pack: no data/ beside it
    copy.write_text((REPO / "tools" / "apibench.py").read_text())
    with pytest.warns(UserWarning, match="carry no example requests"):
        moved = load_pack(copy, local_models={}, catalogues=["tensorflowhub"],
                          api_dir=str(REPO.parent / "shared" / "benchmarks" / "apibench" / "api"))
    assert len(moved) == 696 and not any("requests" in t.meta for t in moved)
    with pytest.raises(PackError, match="needs: .*missing.yaml"):
        load_pack(REPO / "tools" / "apibench.py", local_models={}, catalogues=["torchhub"],
                  needs=str(REPO / "missing.yaml"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seen = load_pack(REPO / "tools" / "apibench.py",  # default local models: none needed
                         catalogues=["torchhub", "tensorflowhub"])
        then_hf = load_pack(REPO / "tools" / "apibench.py", local_models={},
                            catalogues=["torchhub", "tensorflowhub", "huggingface"])
    hf = [n for n in catalog.names if n.startswith("hf.")]
    assert seen.names == [n for n in catalog.names if not n.startswith("hf.")]
    assert then_hf.names == seen.names + hf  # same names, the checkpoint's tools first
    for bad in (["torchhub", "torchhub"], ["pytorch"], []):
        with pytest.raises(PackError, match="catalogues="):
            load_pack(REPO / "tools" / "apibench.py", local_models={}, catalogues=bad)


# ---------------------------------------------------------------------------- bad input
def test_bad_json_line_gives_file_and_line(tmp_path):
    path = write_lines(tmp_path / "huggingface_api.jsonl",
                       [record("org/a"), '{"api_name": "org/b", ', "", record("org/c"), "[1]"])
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    message = str(info.value)
    assert f"{path}:2: not valid JSON" in message and f"{path}:5: a record must be" in message
    with pytest.warns(UserWarning, match="skipped 2 bad line"):
        cat = load_catalog(path, on_bad_line="collect")
    assert cat.names == ["hf.org.a", "hf.org.c"] and len(cat.bad_lines) == 2
    assert cat["hf.org.c"].meta["source"] == f"{path}:4"


def test_duplicates_are_suffixed_or_refused(tmp_path):
    path = write_lines(tmp_path / "torchhub_api.jsonl",
                       [record("m", "x()"), record("m-2", "y()"), record("m", "z()"),
                        record("m", "x()")])
    with pytest.warns(UserWarning, match="1 tool name"):
        cat = load_catalog(path)
    assert cat.names == ["torchhub.m", "torchhub.m-2", "torchhub.m-3", "torchhub.m-4"]
    assert cat.duplicates == {"torchhub.m": ["torchhub.m", "torchhub.m-3", "torchhub.m-4"]}
    assert cat["torchhub.m-4"].meta["same_api_call_as"] == "torchhub.m"
    with pytest.raises(CatalogError, match=rf"torchhub.m: {path}:1, {path}:3, {path}:4"):
        load_catalog(path, on_duplicate="error")


def test_unknown_local_model_key_is_an_error(tmp_path):
    path = write_lines(tmp_path / "huggingface_api.jsonl", [record("org/model-a")])
    with pytest.raises(CatalogError, match=r"'org/model-b' is the hub id of no.*org/model-a"):
        load_catalog(path, local_models={"org/model-b": str(tmp_path)})


def test_naming_helpers():
    assert base_name("hf", {"api_name": "CLIPModel.from_pretrained('laion/CLIP-x')"}) == \
        "hf.laion.CLIP-x"
    assert base_name("tfhub", {"api_name": "Model ID"}) == "tfhub.Model_ID"
    assert base_name("torchhub", {"api_name": "Transformer (NMT)"}) == "torchhub.Transformer_NMT"
    assert unique_names(["a", "a", "a-2", "a"]) == (["a", "a-3", "a-2", "a-4"],
                                                    {"a": ["a", "a-3", "a-4"]})
    assert hub_ids({"api_name": "kobart-base-v2",
                    "api_call": "BartModel.from_pretrained('gogamza/kobart-base-v2')"}) == \
        ["gogamza/kobart-base-v2"]
    assert domain_task("Natural Language Processing Sentence Similarity") == "sentence-similarity"
    assert domain_task("Computer Vision Image Classification") == "image-classification"
