"""How often tool mode rewrites a call the answer had already written (issue 11): for each call
in a ``toolken eval`` report, the answer's text up to the call's result is read with the tool
pack's forms (``toolken.tools.forms``, what ``inline_calls`` reads); where it ends in a written
call, is the call tool mode made the same one (tool and arguments)?

    python benchmarks/written_calls.py outputs/eval_mh.json [more reports] [--tools tools/funcqa.py]

Prints, per report: calls, calls after a written call, and how many of those tool mode made with
another tool or other arguments (with examples).
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from toolken.tools import load_pack  # noqa: E402
from toolken.tools.arguments import parse_arguments  # noqa: E402
from toolken.tools.forms import read_written_call  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--tools", default=str(REPO / "tools" / "funcqa.py"))
    ap.add_argument("--examples", type=int, default=5)
    a = ap.parse_args()
    pack = load_pack(a.tools)
    forms = [f for t in pack for f in t.compiled_forms]
    for path in a.reports:
        preds = json.loads(Path(path).read_text())["predictions"]
        calls = after = other_tool = other_args = 0
        examples = []
        for p in preds:
            for c in p.get("calls", []):
                calls += 1
                if c.get("start") is None:
                    continue
                w = read_written_call(p["text"][:c["start"]], forms)
                if w is None:
                    continue
                after += 1
                want = parse_arguments(w.argument_text, pack[w.tool].parameters)
                if w.tool != c["tool"]:
                    other_tool += 1
                elif want != c.get("arguments"):
                    other_args += 1
                else:
                    continue
                if len(examples) < a.examples:
                    examples.append(f"{w.expression} = -> {c['tool']}({c.get('argument_text', '')}")
        print(f"{path}: {calls} calls, {after} after a written call; tool mode made {other_tool} "
              f"with another tool and {other_args} with other arguments")
        for e in examples:
            print("   ", e)


if __name__ == "__main__":
    main()
