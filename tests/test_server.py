"""``toolken serve`` with the real ``openai`` client against a server on a free localhost port
(tiny model): the two-turn client-side tool round trip from the kept cache, streaming,
server-side tools, concurrency and bad requests. Every request is bounded (max_tokens)."""

import http.client
import json
import socket
import threading
import time

import openai
import pytest
import torch

from toolken.model import ToolkenModel
from toolken.server import make_server, start_in_thread
from toolken.tools import ToolRegistry, tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def shout(text: str) -> str:
    """A text in capitals."""
    return text.upper()


REG = ToolRegistry([add, shout])
ADD = [REG["add"].to_openai()]


def _model(base, pack: bool, reg: ToolRegistry = REG) -> ToolkenModel:
    torch.manual_seed(0)
    m = ToolkenModel(base, reg.names, manifest=reg.manifest())
    m.generation_config = m.generation_config.replace(toolken_bias=1e4, max_tool_calls=1)  # a call at once
    return m.attach_tools(ToolRegistry(list(reg))) if pack else m


class Running:
    def __init__(self, model, **kw):
        self.server = make_server(model, port=0, model_name="tiny", **kw)
        start_in_thread(self.server)
        self.port = self.server.server_address[1]
        self.model = model

    def client(self, key="unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key,
                             max_retries=0, timeout=60)

    def raw(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        out = r.status, json.loads(r.read() or b"null")
        conn.close()
        return out

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.server.engine.stop()


@pytest.fixture(scope="module")
def client_side(tiny_base):
    r = Running(_model(tiny_base, pack=False))
    yield r
    r.stop()


def test_two_turn_tool_round_trip_from_the_kept_cache(client_side):
    c, store = client_side.client(), client_side.model.prefix_store
    msgs = [{"role": "user", "content": "What is 1234 plus 4321? Please answer."}]
    r1 = c.chat.completions.create(model="tiny", messages=msgs, tools=ADD, max_tokens=8)
    choice = r1.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "add" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert set(args) == {"a", "b"} and all(isinstance(v, int) for v in args.values())
    msgs += [choice.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": str(args["a"] + args["b"])}]
    hits, reused = store.hits, store.reused_tokens
    r2 = c.chat.completions.create(model="tiny", messages=msgs, tools=ADD, max_tokens=6,
                                   tool_choice="none")
    assert r2.choices[0].finish_reason in ("stop", "length") and not r2.choices[0].message.tool_calls
    # the second request started from the first one's cache: only the result was encoded
    assert store.hits == hits + 1
    assert store.reused_tokens - reused == r1.usage.prompt_tokens
    # the same text as generating the whole turn afresh, in process
    prompt = "user: " + msgs[0]["content"] + "\nassistant:" + str(args["a"] + args["b"])
    fresh = client_side.model.generate(prompt, max_new_tokens=6, max_tool_calls=0, reuse_prompt=False)
    assert r2.choices[0].message.content == fresh.text


def test_streaming_text_and_tool_call_deltas(client_side):
    c = client_side.client()
    msgs = [{"role": "user", "content": "Say something."}]
    plain = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=10)
    chunks = list(c.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    calls = list(c.chat.completions.create(model="tiny", messages=msgs, tools=ADD, max_tokens=8, stream=True))
    deltas = [d for ch in calls for d in (ch.choices[0].delta.tool_calls or [])]
    assert len(deltas) == 1 and deltas[0].function.name == "add"
    assert set(json.loads(deltas[0].function.arguments)) == {"a", "b"}
    assert calls[-1].choices[0].finish_reason == "tool_calls"


def test_without_tools_no_toolken_fires(client_side):
    r = client_side.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length")


def test_bad_requests_are_clear_4xx_and_the_server_keeps_serving(client_side):
    c = client_side.client()
    hi = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.NotFoundError, match="gpt-4"):
        c.chat.completions.create(model="gpt-4", messages=hi, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="'multiply' is not a tool"):
        c.chat.completions.create(model="tiny", messages=hi, max_tokens=2, tools=[
            {"type": "function", "function": {"name": "multiply", "parameters": {"type": "object"}}}])
    wrong = json.loads(json.dumps(ADD))
    wrong[0]["function"]["parameters"]["properties"]["b"]["type"] = "string"
    with pytest.raises(openai.BadRequestError, match="parameters of 'add' differ"):
        c.chat.completions.create(model="tiny", messages=hi, max_tokens=2, tools=wrong)
    with pytest.raises(openai.BadRequestError, match="context"):
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 9000}],
                                  max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        c.chat.completions.create(model="tiny", messages=hi, max_tokens=10**6)
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        c.chat.completions.create(model="tiny", messages=hi, max_tokens=2, tools=ADD,
                                  tool_choice={"type": "function", "function": {"name": "add"}})
    status, body = client_side.raw("POST", "/v1/chat/completions", b"{not json",
                                   {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = client_side.raw("POST", "/v1/chat/completions",
                                   json.dumps({"model": "tiny", "messages": []}))
    assert status == 400 and body["error"]["param"] == "messages"
    assert client_side.raw("GET", "/nowhere")[0] == 404
    assert client_side.raw("GET", "/health") == (200, {"status": "ok"})
    assert [m.id for m in c.models.list()] == ["tiny"]


def test_client_disconnect_mid_stream(client_side):
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Go on"}],
                       "max_tokens": 400, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", client_side.port), timeout=30)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert s.recv(64).startswith(b"HTTP/1.1 200")
    engine, before = client_side.server.engine, client_side.server.engine.cancelled
    s.close()  # gone mid-stream: the server notices at a write and stops generating for it
    for _ in range(300):
        if engine.cancelled > before:
            break
        time.sleep(0.1)
    assert engine.cancelled == before + 1
    r = client_side.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert r.choices[0].message.content is not None


def test_concurrent_requests_give_each_its_own_answer(client_side):
    c = client_side.client()
    questions = [f"Question number {i}: what is {i} + {i}?" for i in range(6)]
    alone = [c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": q}],
                                       max_tokens=6, tool_choice="none").choices[0].message.content
             for q in questions]
    got = [None] * len(questions)

    def ask(i):
        got[i] = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": questions[i]}],
                                           max_tokens=6, tool_choice="none").choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == alone


def test_server_side_tools_and_api_key(tiny_base):
    r = Running(_model(tiny_base, pack=True, reg=ToolRegistry([add])), api_key="sekret")
    try:
        with pytest.raises(openai.AuthenticationError):
            r.client("wrong").chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        resp = r.client("sekret").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "What is 2 plus 40?"}], max_tokens=4)
        trace = resp.model_extra["toolken"]["calls"]
        assert resp.choices[0].finish_reason in ("stop", "length") and len(trace) == 1
        c = trace[0]
        assert c["error"] is None and c["result"] == REG[c["tool"]].call(c["arguments"]).text
        assert c["result"] in resp.choices[0].message.content
    finally:
        r.stop()


def test_call_after_some_text_continues_from_the_cache_at_the_call(client_side):
    """A toolken that wins after a few tokens: the second request reuses the prompt and the
    text before the call from the cache the first one left, and encodes only the result."""
    from test_export import _bias_firing_late

    from toolken.server.protocol import render_messages

    m, store, c = client_side.model, client_side.model.prefix_store, client_side.client()
    msgs = [{"role": "user", "content": "Add 12 and 30 for me, please."}]
    prompt, _ = render_messages(m.tokenizer, [{**msgs[0], "tool_calls": False}])
    saved = m.generation_config
    try:
        m.registry = client_side.server.engine.registry(["add"])
        m.generation_config = saved.replace(tool_filter=("add",))
        _bias_firing_late(m, prompt, rows=[0])  # sets m.generation_config.toolken_bias (row 0: add)
        r1 = c.chat.completions.create(model="tiny", messages=msgs, tools=ADD, max_tokens=12)
        assert r1.choices[0].finish_reason == "tool_calls"
        before = r1.choices[0].message.content
        assert len(before) >= 2
        call = r1.choices[0].message.tool_calls[0]
        msgs += [r1.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "42"}]
        reused = store.reused_tokens
        c.chat.completions.create(model="tiny", messages=msgs, tools=ADD, max_tokens=4, tool_choice="none")
        n_before = len(m.tokenizer(prompt + before)["input_ids"])
        assert store.reused_tokens - reused >= n_before - 1  # at most the join space re-encoded
    finally:
        m.generation_config = saved


def test_cli_serve_binds_localhost_by_default():
    from toolken.cli import build_parser

    args = build_parser().parse_args(["serve", "--toolkens", "ck"])
    assert (args.host, args.port, args.api_key, args.tools) == ("127.0.0.1", 8000, None, None)


def test_tool_choice_required_calls_where_auto_does_not(tiny_base):
    """tool_choice "required": a toolken that never wins under "auto" (bias -30) is called
    where it came closest, as in generate; absent, the checkpoint's choice stands."""
    m = _model(tiny_base, pack=False)
    m.generation_config = m.generation_config.replace(toolken_bias=-30.0)
    r = Running(m)
    try:
        c = r.client()
        msgs = [{"role": "user", "content": "What is 12 plus 30?"}]
        auto = c.chat.completions.create(model="tiny", messages=msgs, tools=ADD, max_tokens=6)
        assert auto.choices[0].finish_reason != "tool_calls"
        req = c.chat.completions.create(model="tiny", messages=msgs, tools=ADD, max_tokens=6,
                                        tool_choice="required")
        assert req.choices[0].finish_reason == "tool_calls"
        assert req.choices[0].message.tool_calls[0].function.name == "add"
        m.generation_config = m.generation_config.replace(tool_choice="required")
        stored = c.chat.completions.create(model="tiny", messages=msgs, tools=ADD, max_tokens=6)
        assert stored.choices[0].finish_reason == "tool_calls"
        explicit = c.chat.completions.create(model="tiny", messages=msgs, tools=ADD, max_tokens=6,
                                             tool_choice="auto")
        assert explicit.choices[0].finish_reason != "tool_calls"
    finally:
        r.stop()
