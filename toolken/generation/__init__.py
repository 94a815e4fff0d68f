"""Generate with tools: the decode loop shared by single, batched and streamed generation
(``decode``, ``batch``), tool mode with constrained arguments (``constrain``), retrieved demos
(``demos``), the Toolken+ rerank (``rerank``) and prompt-prefix reuse (``prefix``)."""
