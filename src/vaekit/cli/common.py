"""What every command module of the CLI shares: the parser class, the subcommand factory, and argument types.

Nothing here imports torch: building the parser, ``--help`` and argument errors stay instant. A command module
imports the library inside its handlers.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
FORMATTER = argparse.RawDescriptionHelpFormatter
Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors in the same format as every other vaekit error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"vaekit: error: {message} (see `{self.prog} --help`)\n")


def examples(*lines: str) -> str:
    """An ``examples:`` epilog for ``--help``."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


class Commands:
    """Adds subcommands to a parser: each gets a summary, a handler and examples in its ``--help``."""

    def __init__(self, subparsers: argparse._SubParsersAction) -> None:
        self.subparsers = subparsers

    def command(
        self, name: str, summary: str, handler: Handler, *lines: str, parent: argparse._SubParsersAction | None = None
    ) -> argparse.ArgumentParser:
        """A subcommand ``name`` running ``handler(args)``."""
        sub = (parent or self.subparsers).add_parser(
            name, help=summary, description=summary, epilog=examples(*lines), formatter_class=FORMATTER
        )
        sub.set_defaults(handler=handler)
        return sub

    def model_command(self, name: str, summary: str, handler: Handler, *lines: str) -> argparse.ArgumentParser:
        """A subcommand whose first argument is a model or run directory."""
        sub = self.command(name, summary, handler, *lines)
        sub.add_argument("model", metavar="MODEL", help="a model directory or a run directory (uses best/)")
        return sub


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--data`` and ``--data-dir`` of the commands that read a model's data."""
    parser.add_argument(
        "--data",
        metavar="NAME_OR_PATH",
        help="digits, mnist, fashion-mnist (test split) or a path; default: the model's own data",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR",
        help="folder of the mnist / fashion-mnist IDX files; default the folder the model was trained from, "
             "else $VAEKIT_DATA, else ~/.cache/vaekit/data",
    )


def add_label_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--label K`` of the commands that decode with a conditional model."""
    parser.add_argument("--label", type=int, metavar="K", help=f"conditional models only: {what}")


def add_quiet_arg(parser: argparse.ArgumentParser, what: str = "no progress bar or log lines") -> None:
    """``--quiet``."""
    parser.add_argument("--quiet", action="store_true", help=what)


def int_list(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2] (an argparse type: a bad value is a one-line usage error)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None


def duration(text: str) -> float:
    """``3600``, ``90s``, ``45m`` or ``1.5h`` -> seconds (argparse type: a bad value is a one-line usage error)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], text[-1].lower()) if text and text[-1].lower() in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 3600, 90s, 45m or 1.5h") from None
    if not seconds > 0 or not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"the time budget must be positive, got {text!r}")
    return seconds


def write_json_report(path: str, report: dict[str, object]) -> None:
    """Write a report as JSON (atomically) and say so."""
    import json

    from vaekit.files import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
