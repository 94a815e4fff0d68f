"""The library's layers import downward only, and no module imports itself back (issue 12).

Every ``import`` in ``toolken/`` is read with ``ast`` (function-level imports included: a
function-level import is for a heavy optional dependency, never a way around a circle).
Layers, bottom to top: core < tools < generation < model < training < evaluation < the
entry points (cli, server, export).
"""

import ast
from pathlib import Path

import pytest

import toolken

ROOT = Path(toolken.__file__).parent
LAYERS = ["core", "tools", "generation", "model", "training", "evaluation", "top"]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS.index("top")  # toolken/__init__.py: lazy re-exports
    name = parts[1]
    return LAYERS.index(name) if name in LAYERS else LAYERS.index("top")


def _imports(path: Path) -> set[str]:
    """The toolken modules a file imports (a ``from pkg import name`` of a submodule counts as
    importing that submodule)."""
    mod = _module(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    known = {_module(p) for p in ROOT.rglob("*.py")}
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("toolken")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("toolken"):
                target = node.module
            else:
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            out |= subs or {target}
    return {m for m in out if m in known and m != mod}


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in ROOT.rglob("*.py")}


def test_layers_import_downward_only():
    upward = sorted(f"{a} -> {b}" for a, deps in _graph().items() for b in deps
                    if _layer(b) > _layer(a))
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_circles():
    graph = _graph()
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_each_user_story_has_its_folder():
    for sub in ("core", "tools", "generation", "training", "evaluation"):
        assert (ROOT / sub / "__init__.py").is_file(), sub
    assert len(list(ROOT.glob("*.py"))) <= 4, sorted(p.name for p in ROOT.glob("*.py"))


def test_no_function_takes_more_than_eight_parameters():
    """Past eight, the parameters are a config object (``**kwargs`` not counted)."""
    wide = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg)
                if n > 8:
                    wide.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({n})")
    assert not wide, "functions with more than 8 parameters:\n" + "\n".join(wide)
