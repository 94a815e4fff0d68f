"""The ordered tool registry (row i of the toolken head = tool i) and tool-pack loading.

A tool pack is a Python file (``tools/funcqa.py``) or an importable module that defines
``build(**options) -> ToolRegistry | list[Tool]`` (preferred) or a module-level ``TOOLS``
list. A checkpoint stores only ``ToolRegistry.manifest()`` (names, descriptions, argument
schemas); ``ToolRegistry.from_manifest(...).attach(load_pack(...))`` gives the functions back
and refuses a pack whose tools differ. Both names are re-exported by ``toolken.tools.tool``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import sys
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .tool import EMPTY_SCHEMA, PackError, Tool, ToolError

NAME_RULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class ToolRegistry:
    """Ordered, uniquely named tools: row i of the toolken head is ``registry[i]``."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: list[Tool] = []
        self._index: dict[str, int] = {}
        self.extend(tools)

    def add(self, tool: Tool) -> Tool:
        if not isinstance(tool, Tool):
            raise ToolError(f"expected a Tool, got {type(tool).__name__}: {tool!r} "
                            f"(make one with @tool or Tool(...))")
        _check_name(tool.name)
        if tool.name in self._index:
            raise ToolError(f"duplicate tool name {tool.name!r}: at positions "
                            f"{self._index[tool.name]} and {len(self._tools)}")
        self._index[tool.name] = len(self._tools)
        self._tools.append(tool)
        return tool

    def extend(self, tools: Iterable[Tool]) -> None:
        for t in tools:
            self.add(t)

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools)

    def __contains__(self, name: object) -> bool:
        return (name.name if isinstance(name, Tool) else name) in self._index

    def __getitem__(self, key: str | int) -> Tool:
        if isinstance(key, int):
            return self._tools[key]
        return self._tools[self.index(key)]

    def __repr__(self) -> str:
        return f"ToolRegistry({self.names})"

    def index(self, name: str) -> int:
        if name not in self._index:
            shown = ", ".join(self.names[:12]) + (", ..." if len(self) > 12 else "")
            raise ToolError(f"unknown tool {name!r}; known ({len(self)}): {shown}")
        return self._index[name]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._tools]

    def manifest(self) -> list[dict]:
        return [t.manifest() for t in self._tools]

    def to_openai(self) -> list[dict]:
        """The tools in the OpenAI function schema, in row order (``Tool.to_openai``)."""
        return [t.to_openai() for t in self._tools]

    @classmethod
    def from_openai(cls, schemas: Sequence[dict]) -> ToolRegistry:
        """Manifest-only tools from a list of OpenAI function schemas (``attach`` adds the
        callables); a bad entry is an error naming its index."""
        tools = []
        for i, s in enumerate(schemas):
            try:
                tools.append(Tool.from_openai(s))
            except ToolError as e:
                raise ToolError(f"tools[{i}]: {e}") from None
        return cls(tools)

    @classmethod
    def from_manifest(cls, entries: Sequence[dict]) -> ToolRegistry:
        """Tools without callables (e.g. from a checkpoint); ``attach`` gives them back."""
        tools = []
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or "name" not in e:
                raise ToolError(f"manifest entry {i} must be a dict with a 'name', got {e!r}")
            params = e.get("parameters") or json.loads(json.dumps(EMPTY_SCHEMA))
            tools.append(Tool(name=e["name"], description=e.get("description", ""),
                              parameters=json.loads(json.dumps(params))))
        return cls(tools)

    def check_same(self, other: ToolRegistry | Sequence[str], what: str = "other") -> None:
        """Raise ToolError unless ``other`` has the same tool names in the same order."""
        theirs = other.names if isinstance(other, ToolRegistry) else list(other)
        problem = _names_diff(self.names, theirs, what)
        if problem:
            raise ToolError(problem)

    def attach(self, pack: ToolRegistry) -> ToolRegistry:
        """Give manifest-only tools the functions, demos, prompts and renderers of ``pack``
        (which must have the same names in the same order and the same argument types)."""
        self.check_same(pack, "pack")
        for i, (mine, theirs) in enumerate(zip(self._tools, pack)):
            if _arg_types(mine) != _arg_types(theirs):
                raise ToolError(f"tool {mine.name!r}: arguments differ: {_arg_types(mine)} here, "
                                f"{_arg_types(theirs)} in the pack")
            self._tools[i] = dataclasses.replace(
                mine, fn=theirs.fn, demos=list(theirs.demos), render=theirs.render,
                prompt=theirs.prompt, meta={**mine.meta, **theirs.meta}, isolation=theirs.isolation,
                origin=theirs.origin)
        return self


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not NAME_RULE.match(name):
        raise ToolError(f"bad tool name {name!r}: a name starts with a letter or '_' and "
                        f"continues with letters, digits, '_', '.' or '-' "
                        f"(regex {NAME_RULE.pattern})")


def _arg_types(t: Tool) -> list[tuple[str, Any]]:
    return [(n, t._prop(n).get("type")) for n in t.param_names]


def _names_diff(mine: list[str], theirs: list[str], what: str) -> str | None:
    if mine == theirs:
        return None
    lines = [f"tool lists differ: {len(mine)} tools here, {len(theirs)} in the {what}"]
    missing = [n for n in mine if n not in theirs]
    extra = [n for n in theirs if n not in mine]
    if missing:
        lines.append(f"  missing from the {what}: {', '.join(missing)}")
    if extra:
        lines.append(f"  extra in the {what}: {', '.join(extra)}")
    common_a = [n for n in mine if n in theirs]
    common_b = [n for n in theirs if n in mine]
    moved = [(a, b) for a, b in zip(common_a, common_b) if a != b]
    if moved:
        shown = "; ".join(f"{a!r} here but {b!r} in the {what}" for a, b in moved[:5])
        lines.append(f"  order differs ({len(moved)} place(s)): {shown}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- packs
_PACK_IDS = itertools.count()


def load_pack(path_or_module: str | os.PathLike | types.ModuleType, **options: Any) -> ToolRegistry:
    """Load a tool pack: a .py file path or a dotted module name (or a module object) that
    defines ``build(**options) -> ToolRegistry | list[Tool]`` or a module-level ``TOOLS``."""
    module, source = _import_pack(path_or_module)
    build = getattr(module, "build", None)
    if callable(build):
        _check_options(build, options, source)
        result = build(**options)
    elif hasattr(module, "TOOLS"):
        if options:
            raise PackError(f"tool pack {source}: options {sorted(options)} given, but the pack "
                            f"defines TOOLS and no build(), so it accepts no options")
        result = module.TOOLS
    else:
        raise PackError(f"tool pack {source} defines neither build() nor TOOLS; a pack must "
                        f"define `def build(**options) -> ToolRegistry | list[Tool]` or a "
                        f"module-level `TOOLS = [...]` list of Tool")
    if not isinstance(result, (ToolRegistry, list, tuple)):
        raise PackError(f"tool pack {source}: build()/TOOLS gave {type(result).__name__}; "
                        f"expected a ToolRegistry or a list of Tool")
    origin = PackOrigin(source, dict(options))
    try:
        registry = ToolRegistry(dataclasses.replace(t, origin=origin) if isinstance(t, Tool)
                                else t for t in result)
    except ToolError as e:
        raise PackError(f"tool pack {source}: {e}") from None
    origin.functions = {t.name: t.fn for t in registry}
    return registry


class PackOrigin:
    """Where a pack's tools came from (a file path or module name, build()'s options and the
    working directory its relative paths meant), so that a worker process can load the same
    pack and take a tool's function from it."""

    def __init__(self, source: str, options: dict) -> None:
        self.source, self.options, self.cwd = source, options, os.getcwd()
        self.key = (source, repr(sorted(options.items())), self.cwd)
        self.functions: dict[str, Any] = {}  # name -> the function load_pack gave it here

    def __getstate__(self) -> dict:  # a worker loads the functions itself
        return {**self.__dict__, "functions": {}}

    def made(self, name: str, fn: Any) -> bool:
        """Whether ``fn`` is the function this pack gave tool ``name`` (not a replacement)."""
        return self.functions.get(name) is fn and fn is not None

    def __repr__(self) -> str:
        return f"PackOrigin({self.source!r}, {self.options!r})"

    def function(self, name: str) -> Callable:
        """The function of tool ``name``, the pack loaded once per process."""
        pack = _LOADED.get(self.key)
        if pack is None:
            with contextlib.chdir(self.cwd):  # options' relative paths as load_pack read them
                pack = _LOADED[self.key] = load_pack(self.source, **self.options)
        fn = pack[name].fn
        if fn is None:
            raise PackError(f"tool pack {self.source}: tool {name!r} has no function")
        return fn


_LOADED: dict[tuple, ToolRegistry] = {}  # packs loaded by PackOrigin.function (in workers)


def _import_pack(spec: Any) -> tuple[types.ModuleType, str]:
    if isinstance(spec, types.ModuleType):
        return spec, spec.__name__
    text = os.fspath(spec)
    if isinstance(spec, os.PathLike) or text.endswith(".py") or "/" in text or os.sep in text:
        path = Path(text).expanduser().resolve()
        if not path.is_file():
            raise PackError(f"tool pack file not found: {path} (given as {text!r})")
        name = f"toolken_pack_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{next(_PACK_IDS)}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up here
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module, str(path)
    try:
        return importlib.import_module(text), text
    except ModuleNotFoundError as e:
        if e.name and (text == e.name or text.startswith(e.name + ".")):
            raise PackError(f"tool pack {text!r} is neither a .py file nor an importable "
                            f"module ({e})") from e
        raise


def _check_options(build: Callable, options: dict, source: str) -> None:
    params = inspect.signature(build).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise PackError(f"tool pack {source}: build() does not accept option(s) {unknown}; "
                        f"accepted: {accepted or 'none'}")


