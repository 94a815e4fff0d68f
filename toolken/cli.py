"""The ``toolken`` command line: ``toolken train|... --help``."""

from __future__ import annotations

import argparse
import os
import sys

from . import config as C


def _train(args) -> int:
    from .trainer import train

    cfg = C.load_config(args.config, args.overrides)
    result = train(cfg)
    if result.best:
        shown = {k: round(v, 4) for k, v in result.best.items() if isinstance(v, float)}
        print(f"toolken: best epoch {result.best['epoch']}: {shown}")
    print(f"toolken: checkpoint in {result.output_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toolken", description="Teach a frozen causal LM to use tools "
                                "with one learned output embedding per tool (ToolkenGPT).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train toolkens from a YAML recipe",
                       description="Train toolkens. CONFIG is a YAML recipe (see configs/); "
                       "key=value pairs override its keys. Valid keys: " + ", ".join(C.valid_keys()))
    t.add_argument("config", help="YAML recipe, e.g. configs/funcqa.yaml")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. output_dir=outputs/x epochs=5")
    t.set_defaults(func=_train)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as e:  # our errors say what to fix
        if os.environ.get("TOOLKEN_DEBUG"):
            raise
        print(f"toolken: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("toolken: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
