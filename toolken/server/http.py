"""The HTTP side: a threading server from the standard library (one thread per connection,
HTTP/1.1 keep-alive, server-sent events in chunked encoding) in front of the ``Engine``.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``. Errors are OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status; a client that goes away
mid-stream cancels its request and the server keeps serving.
"""

from __future__ import annotations

import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .engine import Engine, Job
from .protocol import APIError, chunk, completion, finish_reason, parse_request, render_messages, tool_call

MAX_BODY = 4 * 2**20  # bytes


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, engine: Engine, model_name: str, api_key: str | None,
                 max_tokens: int, verbose: bool = False):
        super().__init__(address, Handler)
        self.engine, self.model_name, self.api_key = engine, model_name, api_key
        self.max_tokens, self.verbose = max_tokens, verbose


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, fmt, *args) -> None:
        if self.server.verbose:
            sys.stderr.write("toolken serve: " + fmt % args + "\n")

    # ------------------------------------------------------------------ plumbing
    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: APIError) -> None:
        self._send_json(e.status, e.body())

    def _authorized(self) -> bool:
        key = self.server.api_key
        if key is None:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            return True
        self._error(APIError(401, "a valid API key is needed: 'Authorization: Bearer KEY'",
                             kind="authentication_error"))
        return False

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            return self._send_json(200, {"status": "ok"})
        if not self._authorized():
            return None
        if self.path == "/v1/models":
            return self._send_json(200, {"object": "list", "data": [
                {"id": self.server.model_name, "object": "model", "created": 0, "owned_by": "toolken"}]})
        return self._error(APIError(404, f"no route GET {self.path}"))

    def do_POST(self) -> None:  # noqa: N802
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            return self._error(APIError(411, "a Content-Length header is needed"))
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body is not read
            return self._error(APIError(413, f"the request body has {length} bytes; at most {MAX_BODY}"))
        body = self.rfile.read(int(length))
        if self.path != "/v1/chat/completions":
            return self._error(APIError(404, f"no route POST {self.path}"))
        if not self._authorized():
            return None
        try:
            self._chat(body)
        except APIError as e:
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ------------------------------------------------------------------ chat completions
    def _chat(self, body: bytes) -> None:
        s = self.server
        req = parse_request(body, s.model_name, s.engine.tools, s.max_tokens)
        prompt, question = render_messages(s.engine.model.tokenizer, req.messages)
        job = s.engine.submit(Job(req, prompt, question))
        first = job.out.get()
        if first[0] == "error":
            raise first[1]
        if not req.stream:
            r = first[1]
            calls = [tool_call(r["call"]["id"], r["call"]["name"], r["call"]["arguments"])] if r["call"] else []
            return self._send_json(200, completion(req, s.model_name, r["content"],
                                                   finish_reason(r["stop_reason"], bool(calls)),
                                                   calls, r["usage"], r["toolken"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._sse(chunk(req, s.model_name, {"role": "assistant", "content": ""}))
            item = first
            while item[0] == "delta":
                self._sse(chunk(req, s.model_name, {"content": item[1]}))
                item = job.out.get()
            if item[0] == "error":  # after the headers: the error as an event
                self._sse(item[1].body())
            else:
                self._finish_stream(req, item[1])
            self._write(b"data: [DONE]\n\n")
            self._write(b"")  # the last chunk
        except (BrokenPipeError, ConnectionResetError, OSError):
            job.cancelled.set()  # the client went away: stop generating for it
            self.close_connection = True

    def _finish_stream(self, req, r: dict) -> None:
        name = self.server.model_name
        if r["call"]:
            c = tool_call(r["call"]["id"], r["call"]["name"], r["call"]["arguments"])
            self._sse(chunk(req, name, {"tool_calls": [{"index": 0, **c}]}))
        self._sse(chunk(req, name, {}, finish_reason(r["stop_reason"], bool(r["call"])),
                        extra=r["toolken"]))
        if req.include_usage:
            self._sse({**chunk(req, name, {}), "choices": [], "usage": r["usage"]})

    def _sse(self, payload: dict) -> None:
        self._write(f"data: {json.dumps(payload)}\n\n".encode())

    def _write(self, data: bytes) -> None:
        """One chunk of the chunked body (empty: the terminating chunk)."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def make_server(model, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                model_name: str = "toolken", max_tokens: int = 1024, max_batch: int = 16,
                verbose: bool = False) -> Server:
    """A server for ``model`` (a ToolkenModel; its attached pack, if any, runs server-side
    tools), not yet serving: call ``serve_forever()`` (``shutdown()`` and
    ``server.engine.stop()`` end it)."""
    engine = Engine(model, max_batch=max_batch)
    return Server((host, port), engine, model_name, api_key, max_tokens, verbose)


def start_in_thread(server: Server) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, name="toolken-http", daemon=True)
    t.start()
    return t
