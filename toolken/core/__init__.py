"""The core every user story stands on: the frozen base model and its tokenizer (``base``),
the toolken head (``head``), the checkpoint folder (``checkpoint``), the canonical tool-call
data and its labelling rule (``data``), prompt layouts (``prompts``) and text retrieval
(``text``). Nothing here imports from the rest of the library."""
