"""The `pcdistill` command.

Each subcommand is a small function taking parsed arguments. User-facing errors
(`PcdistillError`) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pcdistill import __version__
from pcdistill.errors import PcdistillError


def _cmd_models(args: argparse.Namespace) -> int:
    """List the model zoo with parameter counts at the requested width."""
    from pcdistill.models import create_model, list_models

    print(f"{'model':<16} {'width':>6} {'params':>12}")
    for name in list_models():
        model = create_model(name, num_classes=args.num_classes, width=args.width)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:<16} {args.width:>6g} {params:>12,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcdistill",
        description="Compress point-cloud classifiers into tiny models by knowledge distillation.",
    )
    parser.add_argument("--version", action="version", version=f"pcdistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list the model zoo with parameter counts")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1)")
    p.add_argument("--num-classes", type=int, default=40, help="number of classes (default 40)")
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except PcdistillError as err:
        print(f"pcdistill: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pcdistill: interrupted", file=sys.stderr)
        return 130
