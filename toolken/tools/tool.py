"""Tools: the callable side of ToolkenGPT (Hao et al., 2023).

A ``Tool`` is a name, a description, a JSON schema of its arguments and (optionally) a Python
function; a ``ToolRegistry`` is the ordered list of tools whose row i is toolken i. Tool packs
(``tools/funcqa.py``, ``tools/kamel.py`` or a user's own file) are plain Python files that
define ``build(**options)`` and are loaded by path with ``load_pack``::

    from toolken.tools import tool, ToolRegistry

    @tool
    def add(a: float, b: float, *more: float) -> float:
        '''The sum of two or more numbers.'''
        return a + b + sum(more)

    registry = ToolRegistry([add])          # row 0 = add
    add.call("5572, 3241", timeout=1.0).text  # '8813'

Arguments written by a model are parsed (``parse_call_args``), validated against the schema
and typed; nothing a model produced is ever passed to ``eval``. ``Tool.call`` never raises:
a failing, hanging or misbehaving tool gives a ``ToolResult`` with ``ok=False``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jsonschema

from . import syntax

__all__ = ["Tool", "ToolResult", "ToolRegistry", "tool", "load_pack", "parse_call_args",
           "ToolError", "ToolArgumentError", "PackError", "format_number", "render_value"]

EMPTY_SCHEMA = {"type": "object", "properties": {}, "required": [], "x-order": []}


class ToolError(ValueError):
    """A tool, registry or pack is misdefined or misused; the message names the bad value."""


class ToolArgumentError(ToolError):
    """Arguments do not fit a tool's schema; the message names the tool and the argument."""


class PackError(ToolError):
    """A tool pack cannot be loaded or built."""


# ---------------------------------------------------------------------------- rendering
def format_number(x: float | int) -> str:
    """Plain decimal text: 2331, 0.29, 36.416667, 0.000123457 (>= 6 significant digits,
    at most 6 decimals unless needed for those digits, no trailing zeros); scientific
    notation only outside 1e-9 <= |x| < 1e16."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        try:
            return str(x)
        except ValueError:  # more digits than Python will print (sys.int_info)
            return f"<integer of {x.bit_length()} bits>"
    if not math.isfinite(x):
        return str(x)
    if x == 0 or not 1e-9 <= abs(x) < 1e16:
        return "0" if x == 0 else f"{x:.7g}"
    decimals = max(6, 5 - math.floor(math.log10(abs(x))))
    text = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def render_value(value: Any) -> str:
    """The default result -> text: numbers via format_number, strings as is, lists joined
    by ", ", anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(render_value(v) for v in value)
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------- results
@dataclass
class ToolResult:
    """The outcome of one call. ``text`` is what goes back into the generated text ("" on
    failure); ``error`` says what went wrong; ``meta`` holds tool-specific notes."""

    ok: bool
    value: Any = None
    text: str = ""
    error: str | None = None
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    @classmethod
    def failure(cls, error: str, seconds: float = 0.0) -> ToolResult:
        return cls(ok=False, error=error, seconds=seconds)


def _truncate(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(max_chars - 1, 0)] + "…"


# ---------------------------------------------------------------------------- tools
@dataclass
class Tool:
    """One tool. ``parameters`` is a JSON schema of type object whose ``x-order`` lists the
    arguments in positional order; an array property marked ``"x-variadic": true`` (last)
    collects extra positional arguments, like ``*args``. ``fn=None`` makes a manifest-only
    tool (e.g. read from a checkpoint) until ``ToolRegistry.attach`` gives it a function.
    ``origin`` is set by load_pack so that ``isolation="process"`` can rebuild the tool."""

    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: json.loads(json.dumps(EMPTY_SCHEMA)))
    fn: Callable | None = None
    demos: list[str] = field(default_factory=list)
    render: Callable[[Any], str] | None = None
    prompt: str | None = None
    meta: dict = field(default_factory=dict)
    origin: dict | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        p = self.parameters
        if not isinstance(p, dict) or p.get("type") != "object":
            raise ToolError(f"tool {self.name!r}: parameters must be a JSON schema with "
                            f"\"type\": \"object\", got {p!r}")
        try:
            jsonschema.Draft202012Validator.check_schema(p)
        except jsonschema.SchemaError as e:
            raise ToolError(f"tool {self.name!r}: invalid parameters schema: {e.message}") from e
        props = list(p.get("properties", {}))
        order = p.setdefault("x-order", props)
        if sorted(order) != sorted(props):
            raise ToolError(f"tool {self.name!r}: x-order {order} must list exactly the "
                            f"properties {props}")
        if self.prompt is not None and "[QUESTION]" not in self.prompt:
            raise ToolError(f"tool {self.name!r}: prompt must contain the placeholder [QUESTION]")

    # -- schema helpers
    @property
    def param_names(self) -> list[str]:
        """Argument names in positional order."""
        return list(self.parameters["x-order"])

    def _prop(self, name: str) -> dict:
        return self.parameters.get("properties", {}).get(name, {})

    def _variadic(self) -> str | None:
        names = self.param_names
        return names[-1] if names and self._prop(names[-1]).get("x-variadic") else None

    def _type_at(self, i: int) -> str | None:
        """The JSON type of positional argument i (item type for the variadic one)."""
        names, var = self.param_names, self._variadic()
        if i >= len(names) - (var is not None):
            return syntax.main_type(self._prop(var).get("items", {})) if var else None
        return syntax.main_type(self._prop(names[i]))

    def manifest(self) -> dict:
        """Name, description and parameters: JSON-serialisable, no callable."""
        return json.loads(json.dumps({"name": self.name, "description": self.description,
                                      "parameters": self.parameters}))

    # -- validation
    def validate(self, args: Sequence | dict) -> dict:
        """Positional (list) or named (dict) arguments -> complete, typed kwargs.
        Raises ToolArgumentError naming the tool, the argument and the expected type."""
        if isinstance(args, (list, tuple)):
            kwargs = self._bind_positional(list(args))
        elif isinstance(args, dict):
            kwargs = dict(args)
        else:
            raise ToolArgumentError(f"tool {self.name!r}: arguments must be a list (positional) "
                                    f"or a dict (by name), got {type(args).__name__}: {args!r}")
        names = self.param_names
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise ToolArgumentError(f"tool {self.name!r}: unknown argument(s) {unknown}; "
                                    f"allowed: {names}")
        for n in names:
            if n not in kwargs and "default" in self._prop(n):
                kwargs[n] = self._prop(n)["default"]
        missing = [n for n in self.parameters.get("required", []) if n not in kwargs]
        if missing:
            raise ToolArgumentError(f"tool {self.name!r}: missing required argument(s) "
                                    f"{missing}; arguments in order: {names}")
        errors = sorted(jsonschema.Draft202012Validator(self.parameters).iter_errors(kwargs),
                        key=lambda e: [str(x) for x in e.absolute_path])
        if errors:
            raise ToolArgumentError(self._describe(errors[0]))
        return {k: _coerce_integral(v, self._prop(k)) for k, v in kwargs.items()}

    def _bind_positional(self, args: list) -> dict:
        var, names = self._variadic(), self.param_names
        fixed = names[:-1] if var else names
        if len(args) > len(fixed) and not var:
            raise ToolArgumentError(f"tool {self.name!r} takes at most {len(fixed)} argument(s) "
                                    f"{fixed}, got {len(args)}: {args!r}")
        kwargs = dict(zip(fixed, args))
        if var:
            kwargs[var] = args[len(fixed):]
        return kwargs

    def _describe(self, err: jsonschema.ValidationError) -> str:
        where = "".join(f"[{p}]" if isinstance(p, int) else p for p in err.absolute_path)
        if err.validator == "type":
            want = err.validator_value
            want = " or ".join(want) if isinstance(want, list) else want
            got = err.instance
            return (f"tool {self.name!r}: argument {where or '?'!r} must be of type {want}, "
                    f"got {got!r} ({type(got).__name__})")
        return f"tool {self.name!r}: argument {where or '?'!r}: {err.message}"

    # -- calling
    def call(self, args: Sequence | dict | str, timeout: float | None = None, *,
             isolation: str = "thread", max_chars: int = 500) -> ToolResult:
        """Run the tool; never raises for anything the tool or its arguments do.

        ``args`` is a list, a dict, or the argument text as the model wrote it
        (``"5572, 3241"``, parsed by parse_call_args). ``isolation="thread"`` runs ``fn`` in
        a daemon thread: on timeout the thread is *abandoned* (Python cannot kill it) and
        keeps running in the background, but generation goes on. ``isolation="process"``
        runs it in a fresh spawned process that is killed on timeout; the timeout then
        includes the process start-up, and the function must be importable by name or come
        from a pack loaded with load_pack.
        """
        if isolation not in ("thread", "process"):
            raise ValueError(f"isolation must be 'thread' or 'process', got {isolation!r}")
        start = time.perf_counter()

        def elapsed() -> float:
            return time.perf_counter() - start

        if self.fn is None:
            return ToolResult.failure(f"tool {self.name} has no implementation attached", 0.0)
        try:
            kwargs = parse_call_args(args, self) if isinstance(args, str) else self.validate(args)
        except ToolArgumentError as e:
            return ToolResult.failure(str(e), elapsed())
        a, kw = self._call_parts(kwargs)
        if isolation == "process":
            target = ("pack", self.origin, self.name) if self.origin else self.fn
            status, payload = _run_in_process(target, a, kw, timeout)
        else:
            status, payload = _run_in_thread(self.fn, a, kw, timeout, self.name)
        if status == "timeout":
            how = "the worker process was killed" if isolation == "process" else \
                "the worker thread was abandoned and may still be running"
            return ToolResult.failure(f"tool {self.name} timed out after {timeout} s ({how})",
                                      elapsed())
        if status == "error":
            return ToolResult.failure(f"tool {self.name} failed: {payload}", elapsed())
        return self._finish(payload, elapsed(), max_chars)

    def _call_parts(self, kwargs: dict) -> tuple[tuple, dict]:
        var = self._variadic()
        if var is None:
            return (), kwargs
        return (*[kwargs[n] for n in self.param_names[:-1]], *kwargs.get(var, [])), {}

    def _finish(self, value: Any, seconds: float, max_chars: int) -> ToolResult:
        if isinstance(value, ToolResult):  # a tool may build its own result (e.g. with meta)
            return dataclasses.replace(value, text=_truncate(value.text, max_chars),
                                       seconds=seconds)
        serialisable = syntax.json_ok(value)
        if not serialisable and self.render is None:
            return ToolResult.failure(
                f"tool {self.name} returned a {type(value).__name__}, which is not "
                f"JSON-serialisable; return plain data or attach render=", seconds)
        try:
            text = (self.render or render_value)(value)
            if not isinstance(text, str):
                raise TypeError(f"render returned {type(text).__name__}, not str")
        except Exception as e:
            return ToolResult.failure(f"tool {self.name}: could not render "
                                      f"{type(value).__name__} result: {e}", seconds)
        return ToolResult(ok=True, value=value if serialisable else text,
                          text=_truncate(text, max_chars), seconds=seconds)


def _coerce_integral(value: Any, schema: dict) -> Any:
    """5.0 -> 5 where the schema asks for an integer (the schema check already refused 5.5)."""
    if syntax.main_type(schema) == "integer" and isinstance(value, float):
        return int(value)
    if syntax.main_type(schema) == "array" and isinstance(value, list):
        return [_coerce_integral(v, schema.get("items", {})) for v in value]
    return value


# ---------------------------------------------------------------------------- running
def _run_in_thread(fn: Callable, a: tuple, kw: dict, timeout: float | None,
                   name: str) -> tuple[str, Any]:
    """("ok", value) | ("error", message) | ("timeout", None)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*a, **kw)
        except BaseException as e:  # noqa: BLE001 - a tool's failure becomes a result
            box["error"] = f"{type(e).__name__}: {e}"

    worker = threading.Thread(target=target, name=f"toolken-tool-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return "timeout", None
    return ("error", box["error"]) if "error" in box else ("ok", box.get("value"))


def _run_in_process(target: Any, a: tuple, kw: dict, timeout: float | None) -> tuple[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_process_main, args=(send, target, a, kw), daemon=True)
    try:
        proc.start()
    except Exception as e:  # e.g. the function cannot be pickled
        return "error", (f"could not start a worker process ({type(e).__name__}: {e}); "
                         f"process isolation needs a function importable by name or a pack tool")
    send.close()
    try:
        if not receive.poll(timeout):
            proc.kill()
            return "timeout", None
        return receive.recv()
    except EOFError:
        proc.join(5)
        return "error", f"worker process died (exit code {proc.exitcode})"
    finally:
        proc.join(5)
        receive.close()


def _process_main(conn: Any, target: Any, a: tuple, kw: dict) -> None:
    try:
        if isinstance(target, tuple):  # ("pack", origin, name): rebuild the tool here
            origin, name = target[1], target[2]
            from .registry import load_pack  # (registry imports this module)
            target = load_pack(origin["source"], **origin["options"])[name].fn
        value = target(*a, **kw)
        conn.send(("ok", value))
    except BaseException as e:  # noqa: BLE001
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


# ---------------------------------------------------------------------------- @tool
def tool(fn: Callable | None = None, *, name: str | None = None,
         description: str | None = None, demos: list[str] | None = None,
         render: Callable[[Any], str] | None = None) -> Any:
    """Make a Tool from a type-hinted function (``@tool`` or ``@tool(name=...)``).

    int/float/str/bool and list[...] of those map to JSON types; Optional or a default makes
    an argument optional; ``*args: float`` becomes an array marked ``"x-variadic": true``, so
    ``add(1, 2, 3)`` works. The docstring's first paragraph is the description; its
    Google-style ``Args:`` lines describe the arguments.
    """
    def wrap(f: Callable) -> Tool:
        try:
            summary, parameters = syntax.schema_from_function(f)
        except TypeError as e:
            raise ToolError(str(e)) from None
        return Tool(name=name or f.__name__, description=description or summary or
                    f"{f.__name__}()", parameters=parameters, fn=f, demos=list(demos or []),
                    render=render)
    return wrap if fn is None else wrap(fn)


# ---------------------------------------------------------------------------- parsing
def parse_call_args(text: str, tool: Tool) -> dict:
    """Parse arguments as a model writes them (``5572, 3241``, ``(1.03, 14)``,
    ``"FGH Elementary School"``, ``4%``, ``2, 39/3``) into validated kwargs, without eval.

    Arguments are comma separated (``1,234`` is two numbers); strings are quoted (single or
    double, backslash escapes) or bare; a number may be a small arithmetic expression
    (+ - * / ^ ** parentheses, postfix %). A tool whose only argument is a string takes the
    whole text, quoted or not.
    """
    if not isinstance(text, str):
        raise ToolArgumentError(f"tool {tool.name!r}: argument text must be a str, got {text!r}")
    try:
        inner = syntax.strip_parens(text.strip())
        if tool.param_names and len(tool.param_names) == 1 and tool._type_at(0) == "string" \
                and not tool._variadic():
            values = [syntax.unquote(inner) if syntax.is_quoted(inner) else inner]
        else:
            values = [syntax.read_value(item, tool._type_at(i))
                      for i, item in enumerate(syntax.split_args(inner))]
        return tool.validate(values)
    except ToolArgumentError as e:
        raise ToolArgumentError(f"{e} (in call text {text!r})") from None
    except ValueError as e:
        raise ToolArgumentError(f"tool {tool.name!r}: cannot parse arguments {text!r}: {e}") \
            from None
