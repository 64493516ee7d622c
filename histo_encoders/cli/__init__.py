"""The ``histo-encoders`` command line (also ``python -m histo_encoders``).

The parser is built in a function; each sub-command group lives in its own module
(:mod:`.embed`, :mod:`.encoders`, :mod:`.tools`), turns its arguments into typed options and
calls the library. Heavy modules (torch, OpenSlide, timm) are imported inside the handlers, so
``histo-encoders --help`` answers at once. Errors histo-encoders raises on purpose are printed as
one clear line (exit code 2); ``embed`` exits 1 when any slide failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from histo_encoders.cli import embed, encoders, tools
from histo_encoders.cli.codes import EXIT_ERROR, EXIT_OK, EXIT_SLIDES_FAILED

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_SLIDES_FAILED", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, sub-commands included."""
    parser = argparse.ArgumentParser(
        prog="histo-encoders",
        description="Histology tile encoders and whole-slide embedding.",
    )
    from histo_encoders import __version__

    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="show the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    embed.add_commands(commands)
    tools.add_commands(commands)
    encoders.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 some slides failed, 2 error)."""
    args = build_parser().parse_args(argv)
    from histo_encoders.errors import HistoEncodersError

    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except HistoEncodersError as error:
        # Our errors already say what to do: a traceback would only bury the message.
        print(f"histo-encoders {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
