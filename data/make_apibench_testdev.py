"""Write the project's hand-written APIBench dev instructions as `toolken eval` files.

    python data/make_apibench_testdev.py [--dev-dir data/dev] [--out-dir outputs/apibench_testdev]
    python data/make_apibench_testdev.py --suffix _b --catalogues huggingface   # set B
    toolken eval apibench-huggingface --data outputs/apibench_testdev/huggingface.json --toolkens ...

Reads ``<dev-dir>/apibench_{huggingface,torchhub,tensorflowhub}.tsv`` (one instruction per
line: ``<identity>\\t<instruction>``; ``#`` lines are comments), written for this project in a
user's own words (data/dev/README.md). The identity is the API's as
``toolken.evaluation.api_match`` reads it (HuggingFace: the model id; Torch Hub:
``repo/model`` or ``repo``; TF Hub: the model URL, ``https://tfhub.dev/`` may be left out);
the gold is the first documentation record (``<api-dir>/<catalogue>_api.jsonl``) with that
identity. Written as JSON lines in the published layouts: Torch Hub as
``torchhub_train.json``'s records (``"code": "{'Instruction': ..., 'Output': {...}}"``),
HuggingFace and TF Hub as ``format_sample_huggingface_eval.json``'s (``"code":
"###Instruction: ...\\n###Output: <<<domain>>>: ..."``), each with ``api_call``, ``provider``
and the whole record as ``api_data``. A line whose identity no record has, a malformed line
or a repeated instruction stops the script with its file and line.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from toolken.evaluation.api_match import ApiIndex  # noqa: E402

CATALOGUES = ("huggingface", "torchhub", "tensorflowhub")
API_DIR = REPO.parent / "shared" / "benchmarks" / "apibench" / "api"
TFHUB = "https://tfhub.dev/"


def read_tsv(path: Path) -> list[tuple[int, str, str]]:
    """(line number, identity, instruction) per line; a clear error on a malformed one."""
    out, seen = [], {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ValueError(f"{path}:{n}: expected '<identity>\\t<instruction>', got {line!r}")
        text = parts[1].strip()
        if "###" in text or "'Output'" in text:
            raise ValueError(f"{path}:{n}: the instruction holds a layout marker: {text!r}")
        if text in seen:
            raise ValueError(f"{path}:{n}: instruction repeats line {seen[text]}: {text!r}")
        seen[text] = n
        out.append((n, parts[0].strip(), text))
    return out


def resolve(apis: ApiIndex, identity: str, where: str) -> dict:
    """The first documentation record with ``identity``."""
    for key in (identity, TFHUB + identity):
        if key in apis.by_key:
            return apis.records[apis.by_key[key][0]]
    near = difflib.get_close_matches(identity, [k.removeprefix(TFHUB) for k in apis.by_key], 3)
    raise ValueError(f"{where}: no {apis.provider} API has identity {identity!r}"
                     + (f"; close: {', '.join(near)}" if near else ""))


def eval_record(catalogue: str, instruction: str, api: dict) -> dict:
    """One record in the catalogue's published evaluation layout."""
    provider = api.get("framework", "")
    if catalogue == "torchhub":
        output = {"domain": api["domain"], "api_call": api["api_call"], "api_provider": provider,
                  "explanation": api.get("description", ""),
                  "code": str(api.get("example_code", ""))}
        code = f"{{'Instruction': {instruction}, 'Output': {output!r}}}"
    else:
        code = (f"###Instruction: {instruction}\n###Output: <<<domain>>>: {api['domain']}\n"
                f"<<<api_call>>>: {api['api_call']}\n<<<api_provider>>>: {provider}\n"
                f"<<<explanation>>>: {api.get('description', '')}\n"
                f"<<<code>>>: {api.get('example_code', '')}")
    return {"code": code, "api_call": api["api_call"], "provider": provider, "api_data": api}


def build(catalogue: str, dev_dir: Path, api_dir: Path, suffix: str = "") -> list[dict]:
    path = dev_dir / f"apibench_{catalogue}{suffix}.tsv"
    apis = ApiIndex.from_file(api_dir / f"{catalogue}_api.jsonl", catalogue)
    return [eval_record(catalogue, text, resolve(apis, identity, f"{path}:{n}"))
            for n, identity, text in read_tsv(path)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dev-dir", type=Path, default=REPO / "data" / "dev")
    ap.add_argument("--api-dir", type=Path, default=API_DIR, help="the *_api.jsonl files")
    ap.add_argument("--out-dir", type=Path, default=Path("outputs/apibench_testdev"))
    ap.add_argument("--catalogues", nargs="+", choices=CATALOGUES, default=list(CATALOGUES))
    ap.add_argument("--suffix", default="", help="another set: reads apibench_<catalogue><suffix>"
                    ".tsv, writes <catalogue><suffix>.json (e.g. --suffix _b --catalogues "
                    "huggingface for the second HuggingFace set)")
    args = ap.parse_args(argv)
    try:
        built = {c: build(c, args.dev_dir, args.api_dir, args.suffix) for c in args.catalogues}
    except (ValueError, OSError) as e:
        ap.error(str(e))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for catalogue, records in built.items():
        out = args.out_dir / f"{catalogue}{args.suffix}.json"
        with open(out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        domains = Counter(r["api_data"]["domain"] for r in records)
        apis = len({r["api_call"] for r in records})
        print(f"wrote {len(records)} {catalogue} instructions ({apis} APIs, {len(domains)} "
              f"domains) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
