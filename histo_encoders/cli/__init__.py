"""The ``histo-encoders`` command line (also ``python -m histo_encoders``).

The parser is built in a function; each sub-command group lives in its own module
(:mod:`.embed`, :mod:`.encoders`, :mod:`.tools`), turns its arguments into typed options and
calls the library. Heavy modules (torch, OpenSlide, timm) are imported inside the handlers, so
``histo-encoders --help`` answers at once. Every expected error is one clear line on stderr with
its exit code (:mod:`.codes`): 2 for usage, configuration or encoder errors, 3 when the
environment stops a run; ``embed`` exits 1 when some slides failed. A Python traceback is shown
only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from histo_encoders.cli import embed, encoders, tools
from histo_encoders.cli.codes import (
    EXIT_ENVIRONMENT,
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SLIDES_FAILED,
    exit_code_help,
)

__all__ = [
    "EXIT_ENVIRONMENT",
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_SLIDES_FAILED",
    "build_parser",
    "main",
]
_DEBUG_HELP = "show the full Python traceback of an error"


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (exit code 2), for this parser and its commands."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, sub-commands included."""
    parser = _Parser(
        prog="histo-encoders",
        description="Histology tile encoders and whole-slide embedding.",
        epilog=exit_code_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from histo_encoders import __version__

    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="show the version"
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    embed.add_commands(commands)
    tools.add_commands(commands)
    encoders.add_commands(commands)
    for command in commands.choices.values():  # --debug after the command works too
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see :mod:`histo_encoders.cli.codes`)."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    handler: Callable[[argparse.Namespace], int] = args.handler
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        if debug:
            logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
            logging.getLogger("histo_encoders").setLevel(logging.DEBUG)
        try:
            return handler(args)
        except KeyboardInterrupt:
            print(
                f"histo-encoders {args.command}: interrupted; run the same command again to "
                "resume (finished slides are kept)",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        except Exception as error:
            return _report(args.command, error, debug)


def _report(command: str, error: Exception, debug: bool) -> int:
    """Print ``error`` as one line (and its summary, for a stopped run); return its exit code."""
    from histo_encoders.errors import HistoEncodersError, OutputNotWritableError, RunStoppedError

    if debug:
        traceback.print_exception(error)
    if isinstance(error, RunStoppedError) and hasattr(error.summary, "format"):
        print(error.summary.format())
    if isinstance(error, RunStoppedError | OutputNotWritableError | MemoryError):
        code, kind = EXIT_ENVIRONMENT, "error"
    elif isinstance(error, HistoEncodersError):
        code, kind = EXIT_ERROR, "error"
    elif isinstance(error, OSError):  # the system refused: permissions, missing folders, I/O
        code, kind = EXIT_ENVIRONMENT, "error"
    else:
        code, kind = EXIT_INTERNAL, f"internal error ({type(error).__name__})"
    hint = "" if debug or code != EXIT_INTERNAL else " [a bug: rerun with --debug and report it]"
    message = str(error).strip().replace("\n", " ") or type(error).__name__
    print(f"histo-encoders {command}: {kind}: {message}{hint}", file=sys.stderr)
    return code


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line, without the source line Python would quote."""
    print(f"histo-encoders: warning: {message}", file=sys.stderr)
