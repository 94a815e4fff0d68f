"""The README's commands stay true: every `toolken ...` command line in its code blocks (the
main job's included) parses with the CLI's own parser, and every Python module it names
imports."""

import re
import shlex

import pytest

from conftest import REPO
from toolken.cli import build_parser

README = (REPO / "README.md").read_text()


def _commands() -> list[str]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        text = re.sub(r"\\\n\s*", " ", block)  # continued lines
        for line in text.splitlines():
            line = line.split(" # ")[0].split("   #")[0]
            for part in re.split(r"&&|\|\||;", line):
                part = part.strip()
                if part.startswith("toolken ") and "..." not in part:
                    out.append(re.sub(r"\s\[--[^\]]*\]", "", part))  # "[--flag X]": optional
    return out


COMMANDS = _commands()


def test_the_readme_has_its_main_commands():
    assert any(c.startswith("toolken train configs/funcqa.yaml") for c in COMMANDS)
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    words = [w for w in shlex.split(command)[1:] if w != "\\"]
    try:
        build_parser().parse_args(words)
    except SystemExit as e:
        if e.code:
            raise AssertionError(f"README command does not parse: {command}") from None


def test_readme_python_modules_exist():
    import importlib

    for name in sorted(set(re.findall(r"\b(toolken(?:\.[a-z_]+)+)", README))):
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ModuleNotFoundError:
                continue
            for attr in parts[i:]:
                assert hasattr(obj, attr), f"README names {name}: {attr} missing"
                obj = getattr(obj, attr)
            break
