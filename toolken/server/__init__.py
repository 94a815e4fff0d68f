"""``toolken serve``: an OpenAI-compatible chat-completions server for a toolken checkpoint.

The protocol (``protocol``: request validation, messages -> prompt, responses and stream
chunks), the engine that owns the model and batches requests (``engine``) and the HTTP layer
(``http``, the standard library's threading server)::

    from toolken.server import make_server
    server = make_server(model, port=8000)     # model: a ToolkenModel
    server.serve_forever()
"""

from .http import Server, make_server, start_in_thread

__all__ = ["Server", "make_server", "start_in_thread"]
