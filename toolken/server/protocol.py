"""The OpenAI chat-completions protocol: request validation, messages -> prompt, responses.

Toolken calls a tool in the middle of an assistant turn: the text before the call, then the
result inserted into the text (``result_join``), then more text. In the protocol that turn is
``assistant`` (content = the text before the call, ``tool_calls``) -> ``tool`` (the result) ->
``assistant`` (the text after it). ``render_messages`` folds such a run back into one assistant
text, so the prompt of the next request is exactly the text toolken would have been decoding.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from ..core.data import result_join
from ..tools import Tool, ToolError

ROLES = ("system", "developer", "user", "assistant", "tool")
IGNORED = ("user", "metadata", "store", "parallel_tool_calls", "service_tier", "stream_options",
           "n", "frequency_penalty", "presence_penalty", "logprobs")
SUPPORTED = ("model", "messages", "tools", "tool_choice", "stream", "max_tokens",
             "max_completion_tokens", "temperature", "top_p", "seed", "stop")


class APIError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": None}}


@dataclass
class ChatRequest:
    """A validated request."""

    messages: list[dict]
    client_tools: tuple[str, ...] = ()  # tools the client runs (the request's ``tools``)
    tool_choice: str | None = None  # auto | required | none; None: the checkpoint's
    stream: bool = False
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    include_usage: bool = False
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))


def parse_request(body: bytes, model_name: str, tools: dict[str, Tool], max_tokens_cap: int) -> ChatRequest:
    """Validate a request body; APIError (400 / 404) names the bad field."""
    try:
        d = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise APIError(400, "the request body must be a JSON object")
    unknown = sorted(set(d) - set(SUPPORTED) - set(IGNORED))
    if unknown:
        raise APIError(400, f"unsupported field(s) {unknown}; supported: {list(SUPPORTED)}", unknown[0])
    if d.get("model") != model_name:
        if "model" not in d:
            raise APIError(400, "the field 'model' is required", "model")
        raise APIError(404, f"model {d.get('model')!r} does not exist; this server serves "
                            f"{model_name!r}", "model", "model_not_found")
    if d.get("n", 1) != 1:
        raise APIError(400, f"n={d['n']!r}: only n=1 is supported", "n")
    if d.get("logprobs"):
        raise APIError(400, "logprobs are not supported", "logprobs")
    for k in ("frequency_penalty", "presence_penalty"):
        if d.get(k, 0) not in (0, None):
            raise APIError(400, f"{k}={d[k]!r}: penalties are not supported (use 0)", k)
    req = ChatRequest(messages=_messages(d.get("messages")))
    req.client_tools = _client_tools(d.get("tools"), tools)
    req.tool_choice = _tool_choice(d.get("tool_choice"))
    req.stream = _typed(d, "stream", bool, False)
    opts = d.get("stream_options") or {}
    req.include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
    req.max_tokens = _typed(d, "max_completion_tokens", int, None) or _typed(d, "max_tokens", int, 128)
    if not 1 <= req.max_tokens <= max_tokens_cap:
        raise APIError(400, f"max_tokens={req.max_tokens} must be between 1 and {max_tokens_cap}",
                       "max_tokens")
    req.temperature = float(_typed(d, "temperature", (int, float), 0.0))
    req.top_p = float(_typed(d, "top_p", (int, float), 1.0))
    if not 0 <= req.temperature <= 2 or not 0 < req.top_p <= 1:
        raise APIError(400, "temperature must be in [0, 2] and top_p in (0, 1]", "temperature")
    req.seed = _typed(d, "seed", int, None)
    stop = d.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
        raise APIError(400, f"stop must be a non-empty string or a list of them, got {stop!r}", "stop")
    req.stop = tuple(stop)
    return req


def _typed(d: dict, key: str, kind, default):
    value = d.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise APIError(400, f"{key}={value!r} has the wrong type", key)
    return value


def _messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise APIError(400, f"messages[{i}]: a message is an object with a role in "
                                f"{list(ROLES)}, got {str(m)[:100]}", f"messages[{i}]")
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise APIError(400, f"messages[{i}]: only text content parts are supported",
                               f"messages[{i}].content")
            content = "".join(str(p.get("text", "")) for p in content)
        if content is not None and not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string", f"messages[{i}].content")
        out.append({"role": m["role"], "content": content or "",
                    "tool_calls": bool(m.get("tool_calls"))})
    last = out[-1]["role"]
    if last not in ("user", "tool"):
        raise APIError(400, f"the last message must be from the user or a tool, not {last!r}",
                       "messages")
    return out


def _client_tools(given, tools: dict[str, Tool]) -> tuple[str, ...]:
    """The names of the request's tools, each checked against the checkpoint's toolkens."""
    if given is None:
        return ()
    if not isinstance(given, list):
        raise APIError(400, "'tools' must be a list of function schemas", "tools")
    names = []
    for i, schema in enumerate(given):
        try:
            t = Tool.from_openai(schema)
        except ToolError as e:
            raise APIError(400, f"tools[{i}]: {e}", f"tools[{i}]") from None
        if t.name not in tools:
            raise APIError(400, f"tools[{i}]: {t.name!r} is not a tool of this model; it has "
                                f"toolkens for {sorted(tools)[:20]}", f"tools[{i}]")
        mine = tools[t.name].to_openai()["function"]["parameters"]
        theirs = t.to_openai()["function"]["parameters"]
        if _shape(mine) != _shape(theirs):
            raise APIError(400, f"tools[{i}]: the parameters of {t.name!r} differ from the "
                                f"checkpoint's: {json.dumps(mine)}", f"tools[{i}]")
        names.append(t.name)
    return tuple(names)


def _shape(params: dict) -> tuple:
    """What a schema must agree on: argument names in order, their types and enums, required."""
    props = params.get("properties", {})
    return (tuple((n, json.dumps(p.get("type")), json.dumps(p.get("enum")),
                   json.dumps(p.get("items", {}).get("type"))) for n, p in props.items()),
            tuple(sorted(params.get("required", []))))


def _tool_choice(choice) -> str | None:
    if choice in (None, "auto", "none", "required"):
        return choice
    raise APIError(400, f"tool_choice={json.dumps(choice)} is not supported: a toolken model "
                        f"chooses the tool itself (use \"auto\", \"required\" or \"none\")",
                   "tool_choice")


# ---------------------------------------------------------------------------- prompt
def render_messages(tokenizer, messages: list[dict]) -> tuple[str, str]:
    """(prompt text, question): the chat rendered with the tokenizer's chat template (or
    ``role: content`` lines when it has none), an open tool-calling turn continued as text."""
    turns, open_text = [], None
    for m in messages:
        if m["role"] == "assistant" and (m["tool_calls"] or open_text is not None):
            open_text = (open_text or "") + m["content"]
        elif m["role"] == "tool":
            if open_text is None:
                raise APIError(400, "a 'tool' message must follow an assistant message with "
                                    "tool_calls", "messages")
            open_text += result_join(open_text, m["content"])
        else:
            if open_text is not None:  # the turn was finished: one assistant message
                turns.append({"role": "assistant", "content": open_text})
                open_text = None
            turns.append({"role": "assistant" if m["role"] == "assistant" else
                          "system" if m["role"] == "developer" else m["role"],
                          "content": m["content"]})
    users = [t["content"] for t in turns if t["role"] == "user"]
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant:"
    return text + (open_text or ""), users[-1] if users else ""


# ---------------------------------------------------------------------------- responses
def tool_call(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def completion(req: ChatRequest, model_name: str, content: str, finish: str,
               calls: list[dict], usage: dict, extra: dict | None) -> dict:
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    out = {"id": req.id, "object": "chat.completion", "created": req.created, "model": model_name,
           "choices": [{"index": 0, "message": message, "finish_reason": finish,
                        "logprobs": None}], "usage": usage}
    if extra is not None:
        out["toolken"] = extra
    return out


def chunk(req: ChatRequest, model_name: str, delta: dict, finish: str | None = None,
          usage: dict | None = None, extra: dict | None = None) -> dict:
    out = {"id": req.id, "object": "chat.completion.chunk", "created": req.created,
           "model": model_name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                             "logprobs": None}]}
    if usage is not None:
        out["usage"] = usage
    if extra is not None:
        out["toolken"] = extra
    return out


def finish_reason(stop_reason: str, called: bool) -> str:
    if called:
        return "tool_calls"
    return "length" if stop_reason in ("max_new_tokens", "context") else "stop"
