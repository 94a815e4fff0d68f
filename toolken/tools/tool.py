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
import inspect
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jsonschema

from . import forms, syntax, workers

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
    output: str = ""

    @classmethod
    def failure(cls, error: str, seconds: float = 0.0, output: str = "") -> ToolResult:
        return cls(ok=False, error=error, seconds=seconds, output=output)


def _truncate(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(max_chars - 1, 0)] + "…"


# ---------------------------------------------------------------------------- tools
@dataclass
class Tool:
    """One tool. ``parameters`` is a JSON schema of type object whose ``x-order`` lists the
    arguments in positional order; an array property marked ``"x-variadic": true`` (last)
    collects extra positional arguments, like ``*args``. ``fn=None`` makes a manifest-only
    tool (e.g. read from a checkpoint) until ``ToolRegistry.attach`` gives it a function.
    ``isolation`` ("process" or "thread"; None: the runner's mode) is where ``call`` runs
    ``fn`` (``toolken.tools.workers``). ``origin`` is set by load_pack so that a worker
    process can load the same pack."""

    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: json.loads(json.dumps(EMPTY_SCHEMA)))
    fn: Callable | None = None
    demos: list[str] = field(default_factory=list)
    render: Callable[[Any], str] | None = None
    prompt: str | None = None
    meta: dict = field(default_factory=dict)
    isolation: str | None = None
    origin: Any = field(default=None, repr=False, compare=False)
    forms: list[str] = field(default_factory=list)  # written forms of a call (toolken.tools.forms)

    def __post_init__(self) -> None:
        if self.isolation not in (None, *workers.MODES):
            raise ToolError(f"tool {self.name!r}: isolation must be one of "
                            f"{[None, *workers.MODES]}, got {self.isolation!r}")
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
        if isinstance(self.forms, str) or not isinstance(self.forms, (list, tuple)):
            raise ToolError(f"tool {self.name!r}: forms must be a list of strings, got {self.forms!r}")
        types = {n: self._type_at(i) for i, n in enumerate(self.param_names)}
        try:
            self.compiled_forms = [forms.compile_form(self.name, f, self.param_names, types,
                                                      self._variadic()) for f in self.forms]
        except ValueError as e:
            raise ToolError(str(e)) from None

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

    # -- the OpenAI function schema
    def to_openai(self) -> dict:
        """``{"type": "function", "function": {"name", "description", "parameters"}}``, the
        form of OpenAI's ``tools`` list and of transformers' ``apply_chat_template(tools=)``.
        The properties come in positional order (``x-order``, which is then left out: JSON
        keeps key order, and ``from_openai`` reads it back from there)."""
        params = json.loads(json.dumps(self.parameters))
        order = params.pop("x-order")
        if "properties" in params:
            params["properties"] = {n: params["properties"][n] for n in order}
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": params}}

    @classmethod
    def from_openai(cls, schema: dict, fn: Callable | None = None) -> Tool:
        """A Tool from an OpenAI function schema (``{"type": "function", "function": {...}}``
        or the bare ``{"name", "description", "parameters"}``); ``fn`` runs it (None: a
        manifest-only tool). ToolError names the field that is wrong."""
        if not isinstance(schema, dict):
            raise ToolError(f"an OpenAI tool schema must be a JSON object, got {schema!r}")
        spec = schema
        if "function" in schema or "type" in schema:
            if schema.get("type") != "function" or not isinstance(schema.get("function"), dict):
                raise ToolError(f"an OpenAI tool schema needs \"type\": \"function\" and a "
                                f"\"function\" object, got {json.dumps(schema)[:200]}")
            spec = schema["function"]
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise ToolError(f"OpenAI tool schema: \"name\" must be a non-empty string, got {name!r}")
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise ToolError(f"tool {name!r}: \"description\" must be a string, got {description!r}")
        params = spec.get("parameters")
        params = json.loads(json.dumps(EMPTY_SCHEMA if params is None else params))
        return cls(name=name, description=description, parameters=params, fn=fn)

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
             isolation: str | None = None, max_chars: int = 500,
             runner: workers.ToolRunner | None = None) -> ToolResult:
        """Run the tool; never raises for anything the tool or its arguments do.

        ``args`` is a list, a dict, or the argument text as the model wrote it
        (``"5572, 3241"``, parsed by parse_call_args). ``runner`` (default
        ``toolken.tools.workers.default_runner()``) runs ``fn``: in a persistent worker process
        that is killed on timeout and replaced after a crash, memory-capped, its output
        captured; or in a thread (``isolation="thread"``), which is abandoned on timeout.
        ``isolation`` (else the tool's own, else the runner's mode) chooses; see
        ``toolken.tools.workers`` for what each contains.
        """
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
        runner = runner or workers.default_runner()
        done = runner.run(self.fn, a, kw, timeout, name=self.name, origin=self.origin,
                          isolation=isolation or self.isolation)
        if done.status == "timeout":
            return ToolResult.failure(f"tool {self.name} timed out after {timeout} s "
                                      f"({done.message})", elapsed(), done.output)
        if done.status != "ok":
            return ToolResult.failure(f"tool {self.name} failed: {done.message}", elapsed(),
                                      done.output)
        result = self._finish(done.value, elapsed(), max_chars)
        result.output = done.output
        return result

    def _call_parts(self, kwargs: dict) -> tuple[tuple, dict]:
        var = self._variadic()
        if var is None:
            return (), kwargs
        return (*[kwargs[n] for n in self.param_names[:-1]], *kwargs.get(var, [])), {}

    def _finish(self, value: Any, seconds: float, max_chars: int) -> ToolResult:
        """The value a tool returned -> a ToolResult; anything odd is ok=False, never raised."""
        try:
            return self._result_of(value, seconds, max_chars)
        except Exception as e:  # noqa: BLE001 - e.g. RecursionError on a deeply nested value
            what = "is nested too deeply to be" if isinstance(e, RecursionError) else "could not be"
            return ToolResult.failure(f"tool {self.name} returned a {type(value).__name__} that "
                                      f"{what} checked or rendered "
                                      f"({workers.describe_exception(e)})", seconds)

    def _result_of(self, value: Any, seconds: float, max_chars: int) -> ToolResult:
        if isinstance(value, ToolResult):  # a tool may build its own result (e.g. with meta)
            if not isinstance(value.text, str):
                return ToolResult.failure(f"tool {self.name} returned a ToolResult whose text "
                                          f"is a {type(value.text).__name__}, not str", seconds)
            return dataclasses.replace(value, text=_truncate(value.text, max_chars),
                                       seconds=seconds)
        if value is None:
            return ToolResult.failure(f"tool {self.name} returned nothing (None)", seconds)
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
                                      f"{type(value).__name__} result: "
                                      f"{workers.describe_exception(e)}", seconds)
        return ToolResult(ok=True, value=value if serialisable else text,
                          text=_truncate(text, max_chars), seconds=seconds)


def _coerce_integral(value: Any, schema: dict) -> Any:
    """5.0 -> 5 where the schema asks for an integer (the schema check already refused 5.5)."""
    if syntax.main_type(schema) == "integer" and isinstance(value, float):
        return int(value)
    if syntax.main_type(schema) == "array" and isinstance(value, list):
        return [_coerce_integral(v, schema.get("items", {})) for v in value]
    return value


# ---------------------------------------------------------------------------- @tool
def tool(fn: Callable | None = None, *, name: str | None = None,
         description: str | None = None, demos: list[str] | None = None,
         render: Callable[[Any], str] | None = None, isolation: str | None = None,
         forms: list[str] | None = None) -> Any:
    """Make a Tool from a type-hinted function (``@tool`` or ``@tool(name=...)``).

    int/float/str/bool and list[...] of those map to JSON types, ``Literal[...]`` and Enum
    classes to an ``enum`` of their values (an Enum argument arrives as a member); Optional or a default makes
    an argument optional; ``*args: float`` becomes an array marked ``"x-variadic": true``, so
    ``add(1, 2, 3)`` works. The docstring's first paragraph is the description; its
    Google-style ``Args:`` lines describe the arguments. ``isolation="thread"`` keeps the
    tool's calls in this process (see ``toolken.tools.workers``). ``forms`` are the ways
    running text writes a call (``["{a} * {b}", "{a} x {b}"]``; ``toolken.tools.forms``).
    """
    def wrap(f: Callable) -> Tool:
        try:
            summary, parameters = syntax.schema_from_function(f)
        except TypeError as e:
            raise ToolError(str(e)) from None
        enums = syntax.enum_arguments(f)
        return Tool(name=name or f.__name__, description=description or summary or
                    f"{f.__name__}()", parameters=parameters,
                    fn=_EnumArguments(f, enums) if enums else f, demos=list(demos or []),
                    render=render, isolation=isolation,
                    forms=list(forms) if isinstance(forms, (list, tuple)) else forms or [])
    return wrap if fn is None else wrap(fn)


class _EnumArguments:
    """Calls ``fn`` with its Enum-hinted arguments turned from JSON values into members (a
    class, not a closure, so that process isolation can pickle it)."""

    def __init__(self, fn: Callable, enums: dict[str, type]):
        self.fn, self.enums = fn, enums
        self.__name__ = getattr(fn, "__name__", "tool")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(self.fn).bind(*args, **kwargs)
        for name, cls in self.enums.items():
            if name in bound.arguments:
                value = bound.arguments[name]
                bound.arguments[name] = (tuple(syntax.to_members(list(value), cls))
                                         if isinstance(value, tuple) else syntax.to_members(value, cls))
        return self.fn(*bound.args, **bound.kwargs)


# ---------------------------------------------------------------------------- parsing
def parse_call_args(text: str, tool: Tool) -> dict:
    """Parse arguments as a model writes them (``5572, 3241``, ``(1.03, 14)``,
    ``"FGH Elementary School"``, ``4%``, ``2, 39/3``) into validated kwargs, without eval.

    Arguments are comma separated (``1,234`` is two numbers); strings are quoted (single or
    double, backslash escapes) or bare; a number may be a small arithmetic expression
    (+ - * / ^ ** parentheses, postfix %). An argument may follow its parameter's name
    (``part=12, whole=30``). A tool whose only argument is a string takes the whole text,
    quoted or not.
    """
    if not isinstance(text, str):
        raise ToolArgumentError(f"tool {tool.name!r}: argument text must be a str, got {text!r}")
    try:
        inner = syntax.strip_parens(text.strip())
        if tool.param_names and len(tool.param_names) == 1 and tool._type_at(0) == "string" \
                and not tool._variadic():
            inner = _unnamed(inner, 0, tool)
            values = [syntax.unquote(inner) if syntax.is_quoted(inner) else inner]
        else:
            values = [syntax.read_value(_unnamed(item, i, tool), tool._type_at(i))
                      for i, item in enumerate(syntax.split_args(inner))]
        return tool.validate(values)
    except ToolArgumentError as e:
        raise ToolArgumentError(f"{e} (in call text {text!r})") from None
    except ValueError as e:
        raise ToolArgumentError(f"tool {tool.name!r}: cannot parse arguments {text!r}: {e}") \
            from None


_NAMED = re.compile(r"([A-Za-z_]\w*) ?= ?(?!=)")


def _unnamed(item: str, i: int, tool: Tool) -> str:
    """``item`` without a leading ``name=`` when the name is parameter i's (anything else stays:
    a bare string may hold ``=``)."""
    m = _NAMED.match(item)
    names = tool.param_names
    if m is None or not names or m.group(1) != names[min(i, len(names) - 1)]:
        return item
    return item[m.end():]
