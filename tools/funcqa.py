"""FuncQA tool pack: the 13 arithmetic operators of ToolkenGPT's FuncQA benchmark
(Hao et al., 2023; reference ``funchub/math.py``), in the order of its ``func_dict.json``.

    from toolken.tools import load_pack
    funcqa = load_pack("tools/funcqa.py")
    funcqa["divide"].call("2185, 60").text   # '36.416667'

Results keep full precision (the reference rounds to 2 decimals; rounding is left to the
renderer, which keeps at least 6 significant digits). Integer operators accept integral
floats (5.0) and refuse others (5.5). Each tool's ``forms`` are how an answer writes its call
(``1260 * 12``, ``lcm(15, 25)``, ``14C3``), read by ``GenerationConfig.inline_calls``. Each tool's ``prompt`` is the paper's one-tool prompt
``llama_<op>.txt`` (with ``[QUESTION]``) and its ``demos`` are that prompt's Q/A examples.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path

from toolken.tools import Tool, ToolRegistry, tool

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATES = REPO.parent / "shared" / "benchmarks" / "toolkengpt" / "funcqa" / "template_oh"


@tool(description="add(a, b, ...): the sum of two or more numbers",
      forms=["{a} + {b}..."])
def add(a: float, b: float, *more: float) -> float:
    return a + b + sum(more)


@tool(description="subtract(a, b, ...): a minus b (minus any further numbers)",
      forms=["{a} - {b}..."])
def subtract(a: float, b: float, *more: float) -> float:
    return a - b - sum(more)


@tool(description="multiply(a, b, ...): the product of two or more numbers",
      forms=["{a} * {b}...", "{a} x {b}...", "{a} × {b}..."])
def multiply(a: float, b: float, *more: float) -> float:
    return math.prod((a, b, *more))


@tool(description="divide(a, b): a divided by b",
      forms=["{a} / {b}", "{a} ÷ {b}"])
def divide(a: float, b: float) -> float:
    if b == 0:
        raise ValueError(f"division by zero: divide({a}, {b})")
    return a / b


@tool(description="power(a, b): a raised to the power b",
      forms=["{a} ^ {b}", "{a} ** {b}"])
def power(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except ValueError:
        raise ValueError(f"power({a}, {b}) is not a real number") from None
    except OverflowError:
        raise ValueError(f"power({a}, {b}) is too large") from None


@tool(description="sqrt(x): the square root of x",
      forms=["sqrt({x})", "√{x}"])
def sqrt(x: float) -> float:
    if x < 0:
        raise ValueError(f"sqrt({x}): the square root of a negative number is not real")
    return math.sqrt(x)


@tool(description="log(x, base=10): the logarithm of x, base 10 unless a base is given",
      forms=["log({x})", "log({x}, {base})", "log10({x})"])
def log(x: float, base: float = 10) -> float:
    if x <= 0 or base <= 0 or base == 1:
        raise ValueError(f"log({x}, {base}) is undefined: needs x > 0, base > 0 and base != 1")
    if base == 10:
        return math.log10(x)
    return math.log2(x) if base == 2 else math.log(x) / math.log(base)


@tool(description="ln(x): the natural logarithm of x",
      forms=["ln({x})"])
def ln(x: float) -> float:
    if x <= 0:
        raise ValueError(f"ln({x}) is undefined: needs x > 0")
    return math.log(x)


@tool(description="lcm(a, b, ...): the least common multiple of two or more integers",
      forms=["lcm({a}, {b}...)"])
def lcm(a: int, b: int, *more: int) -> int:
    return math.lcm(a, b, *more)


@tool(description="gcd(a, b, ...): the greatest common divisor of two or more integers",
      forms=["gcd({a}, {b}...)"])
def gcd(a: int, b: int, *more: int) -> int:
    return math.gcd(a, b, *more)


@tool(description="remainder(a, b): the remainder of the integer a divided by the integer b",
      forms=["{a} % {b}", "{a} mod {b}"])
def remainder(a: int, b: int) -> int:
    if b == 0:
        raise ValueError(f"remainder({a}, {b}): division by zero")
    return a % b


@tool(description="choose(n, k): the number of ways to choose k of n items (nCk)",
      forms=["{n}C{k}", "C({n}, {k})"])
def choose(n: int, k: int) -> int:
    if n < 0 or k < 0:
        raise ValueError(f"choose({n}, {k}) needs n >= 0 and k >= 0")
    return math.comb(n, k)


@tool(description="permutate(n, k): the number of ordered arrangements of k of n items (nPk)",
      forms=["{n}P{k}", "P({n}, {k})"])
def permutate(n: int, k: int) -> int:
    if n < 0 or k < 0:
        raise ValueError(f"permutate({n}, {k}) needs n >= 0 and k >= 0")
    return math.perm(n, k)


TOOLS_IN_ORDER = [add, subtract, multiply, divide, power, sqrt, log, ln, lcm, gcd, remainder,
                  choose, permutate]


def build(template_dir: str | Path | None = None) -> ToolRegistry:
    """The 13 FuncQA tools, each with the paper's prompt and demos from ``template_dir``
    (default: ``../shared/benchmarks/toolkengpt/funcqa/template_oh`` next to the repo)."""
    folder = Path(template_dir) if template_dir is not None else DEFAULT_TEMPLATES
    if template_dir is not None and not folder.is_dir():
        raise FileNotFoundError(f"FuncQA template folder not found: {folder}")
    if not folder.is_dir():
        warnings.warn(f"FuncQA template folder {folder} not found: tools work, but without "
                      f"demos or prompts (pass build(template_dir=...))", stacklevel=2)
        return ToolRegistry(_with_prompt(t, None) for t in TOOLS_IN_ORDER)
    missing = [t.name for t in TOOLS_IN_ORDER if not _prompt_file(folder, t).is_file()]
    if missing:
        warnings.warn(f"FuncQA prompts llama_<op>.txt missing in {folder} for: "
                      f"{', '.join(missing)}; these tools have no demos", stacklevel=2)
    return ToolRegistry(_with_prompt(t, _prompt_file(folder, t)) for t in TOOLS_IN_ORDER)


def _prompt_file(folder: Path, t: Tool) -> Path:
    return folder / f"llama_<{t.name}>.txt"


def _with_prompt(t: Tool, path: Path | None) -> Tool:
    """A copy of ``t`` (module-level tools stay untouched) with the prompt at ``path``."""
    if path is None or not path.is_file():
        return replace(t, demos=[], meta=dict(t.meta))
    prompt = path.read_text(encoding="utf-8")
    return replace(t, demos=split_demos(prompt), prompt=prompt,
                   meta={**t.meta, "prompt_file": str(path)})


def split_demos(prompt: str) -> list[str]:
    """The filled-in ``Q: ...\\nA: ...`` examples of a prompt (not its header or the
    ``[QUESTION]`` slot)."""
    blocks = [b.strip() for b in prompt.replace("\r\n", "\n").split("\n\n")]
    return [b for b in blocks if b.startswith("Q:") and "[QUESTION]" not in b]
