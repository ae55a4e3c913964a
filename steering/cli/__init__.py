"""The command line: a thin layer over the library. Each command's help is its function's docstring.

Bad input gets one clear line and loses nothing: an option with a bad value is refused by argparse itself
(`error: argument --batch-size: ...`, exit 2), before any model loads; so are input files that do not exist and
output paths that could not be written at the end. A bad line in a file is refused as `error: FILE:LINE: ...` (exit 2)
before anything is generated, and every result file is written to a temporary file and renamed into place, so a
failed run never truncates an earlier result."""

# This docstring is the top-level --help. The package: common.py (the parser, option types, model options, the
# one-line error handling), and one module per group of commands, each with its commands' parsers beside them:
# identify.py (identify, build-profiles, sweep), train.py (finetune, build-vectors, fit-judge, judge-check) and
# run.py (generate, evaluate).

from __future__ import annotations

import argparse

from . import identify, run, train
from .common import Parser, run_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m steering", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (identify, train, run):  # the order of the commands in --help
        group.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status: 0, or 2 for bad input, with one line on stderr that names the
    option, or the file and line."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a bad argument (2), its one line already printed
        return exc.code if isinstance(exc.code, int) else 2
    return run_command(args)
