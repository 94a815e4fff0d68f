"""Prompt layouts, in one place so that training, synthetic data and evaluation cannot drift
apart (a train/eval skew is a silent accuracy loss).

- ``fill(template, question)``: a prompt file's ``[QUESTION]`` placeholder (ToolkenGPT's
  templates).
- APIBench (Gorilla, Patil et al., 2023): ``###Instruction: <instruction>\n###Output:
  <<<api_call>>>:`` then `` <api_call>``: ``api_prompt`` writes it, ``instruction`` reads the
  instruction back from either of the released ``code`` layouts.
"""

from __future__ import annotations

import ast
import re

QUESTION = "[QUESTION]"
API_CALL_TAG = "<<<api_call>>>:"


def fill(template: str, question: str) -> str:
    """The template with its ``[QUESTION]`` placeholder replaced by the question."""
    return template.replace(QUESTION, question)


def api_prompt(instruction_text: str) -> str:
    """APIBench's prompt for one instruction; the api_call follows after one space."""
    return f"###Instruction: {instruction_text}\n###Output: {API_CALL_TAG}"


_TORCHHUB_CODE = re.compile(r"\{\s*'Instruction'\s*:\s*(.*?)\s*,\s*'Output'\s*:", re.S)
_HF_CODE = re.compile(r"###\s*Instruction\s*:\s*(.*?)\s*(?:###\s*Output\s*:|$)", re.S)


def instruction(code: str) -> str | None:
    """The instruction in an APIBench ``code`` field (Torch Hub's dict-like layout or
    HuggingFace's ``###Instruction:`` layout), or None."""
    m = _TORCHHUB_CODE.match(code.strip())
    if m:
        text = m.group(1)
        if text[:1] in "'\"" and text[-1:] == text[:1]:  # a quoted one (a few records)
            try:
                text = ast.literal_eval(text)  # a string literal from the data file, never code
            except (ValueError, SyntaxError):
                text = text[1:-1]
        return (text.strip() or None) if isinstance(text, str) else None
    m = _HF_CODE.search(code)
    return (m.group(1).strip() or None) if m else None
