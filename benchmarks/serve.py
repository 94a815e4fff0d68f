"""Serving throughput: ``toolken serve`` at 1, 4 and 16 concurrent clients against calling
``model.generate_batch`` directly, in one run, on the default base model.

    flock /tmp/toolken-heavy.lock env OMP_NUM_THREADS=2 \
        python benchmarks/serve.py --toolkens outputs/funcqa [--tools tools/funcqa.py] [--out BENCHMARKS.md]

Every client sends chat requests one after the other (the standard library's http.client, so
the client costs little CPU) to a server started in this process on a free localhost port;
each request is one FuncQA-style question as the user message, greedy, ``max_tokens`` fixed,
the pack's tools run in the server. The direct figure runs the same prompts (the server's own
rendering of the messages) through ``generate_batch`` with ``batch_size`` = the number of
clients. Both report requests per second and per-request latency (the direct latency of a
request is its batch's time), and the run checks that every request got the direct text.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from benchutil import append_report, command_line, machine

REPO = Path(__file__).resolve().parents[1]
FUNCQA = REPO.parent / "shared/benchmarks/toolkengpt/funcqa"


def questions(n: int) -> list[str]:
    """n distinct questions, round-robin over the 13 tools' training files."""
    per_tool = [[json.loads(x)["question"] for x in f.read_text().splitlines()[:8]]
                for f in sorted((FUNCQA / "training_data").glob("*.jsonl"))]
    return [per_tool[i % len(per_tool)][i // len(per_tool)] for i in range(n)]


def ask(port: int, question: str, max_tokens: int) -> tuple[float, str]:
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": question}],
                       "max_tokens": max_tokens})
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = json.loads(r.read())
    conn.close()
    if r.status != 200:
        sys.exit(f"request failed: {r.status} {data}")
    return time.perf_counter() - t, data["choices"][0]["message"]["content"]


def via_server(port: int, qs: list[str], clients: int, max_tokens: int) -> dict:
    """Each of ``clients`` threads asks its share of ``qs`` in turn."""
    lat, texts = [], {}

    def client(k: int) -> None:
        for i in range(k, len(qs), clients):
            s, text = ask(port, qs[i], max_tokens)
            lat.append(s)
            texts[i] = text

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return {"rps": len(qs) / wall, "p50": statistics.median(lat),
            "p90": sorted(lat)[int(0.9 * (len(lat) - 1))], "texts": [texts[i] for i in range(len(qs))]}


def direct(model, prompts: list[str], qs: list[str], clients: int, max_tokens: int) -> dict:
    cfg = model.generation_config.replace(max_new_tokens=max_tokens, batch_size=clients)
    lat, texts = [], []
    t = time.perf_counter()
    for s in range(0, len(prompts), clients):
        b = time.perf_counter()
        gens = model.generate_batch(prompts[s:s + clients], cfg, questions=qs[s:s + clients])
        lat += [time.perf_counter() - b] * len(gens)
        texts += [g.text for g in gens]
    wall = time.perf_counter() - t
    return {"rps": len(prompts) / wall, "p50": statistics.median(lat),
            "p90": sorted(lat)[int(0.9 * (len(lat) - 1))], "texts": texts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toolkens", required=True, help="checkpoint on the default base model")
    p.add_argument("--tools", default=str(REPO / "tools/funcqa.py"), help="pack run in the server")
    p.add_argument("--levels", default="1,4,16", help="concurrent clients")
    p.add_argument("--rounds", type=int, default=2, help="requests per client at each level")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--out", help="append the report here (e.g. BENCHMARKS.md)")
    args = p.parse_args()

    from toolken.model import ToolkenModel
    from toolken.server import make_server, start_in_thread
    from toolken.server.protocol import render_messages

    model = ToolkenModel.from_pretrained(args.toolkens, tools=args.tools)
    # the retrieved-demo levers need the checkpoint's demo pool; both sides run without them
    model.generation_config = model.generation_config.replace(arg_demos=0, prompt_demos=0)
    server = make_server(model, port=0, model_name="bench", max_batch=max(map(int, args.levels.split(","))))
    start_in_thread(server)
    port = server.server_address[1]
    levels = [int(x) for x in args.levels.split(",")]
    ask(port, "Warm up: what is 2 + 2?", 4)  # tool-mode caches, grammars
    rows, same_all = [], True
    for c in levels:
        qs = questions(c * args.rounds)
        prompts = [render_messages(model.tokenizer, [{"role": "user", "content": q, "tool_calls": False}])[0]
                   for q in qs]
        model.prefix_store.clear()  # neither side starts from the other's prompt caches
        d = direct(model, prompts, qs, c, args.max_tokens)
        model.prefix_store.clear()
        s = via_server(port, qs, c, args.max_tokens)
        same = sum(a == b for a, b in zip(d["texts"], s["texts"]))
        same_all &= same == len(qs)
        rows.append((c, len(qs), s, d, same))
        print(f"clients {c}: server {s['rps']:.2f} req/s, direct {d['rps']:.2f} req/s, "
              f"same text {same}/{len(qs)}", flush=True)
    server.shutdown()
    server.engine.stop()
    cmd = command_line()
    lines = [f"### Serving: `toolken serve` vs `generate_batch` ({time.strftime('%Y-%m-%d')})", "",
             f"`{cmd}`", "", f"Machine: {machine()}. Checkpoint {args.toolkens} (SmolLM2-135M-Instruct), "
             f"pack {Path(args.tools).name} run in the server, greedy, max_tokens {args.max_tokens}, "
             f"{args.rounds} requests per client.", "",
             "| clients | requests | server req/s | server p50 / p90 s | generate_batch req/s | "
             "batch p50 / p90 s | server / direct | same text |", "|---|---|---|---|---|---|---|---|"]
    for c, n, s, d, same in rows:
        lines.append(f"| {c} | {n} | {s['rps']:.2f} | {s['p50']:.2f} / {s['p90']:.2f} | {d['rps']:.2f} | "
                     f"{d['p50']:.2f} / {d['p90']:.2f} | {s['rps'] / d['rps']:.0%} | {same}/{n} |")
    report = "\n".join(lines) + "\n"
    if args.out:
        append_report(args.out, report)
    else:
        print(report)
    if not same_all:
        sys.exit("some server answers differ from generate_batch's")


if __name__ == "__main__":
    main()
