"""The ``vaekit`` command line: each command parses its arguments and calls the library function of its name.

::

    main.py      the parser and main(): one-line errors (exit 2), Ctrl-C (exit 130)
    common.py    the parser class, the subcommand factory, shared argument helpers
    train.py     train, presets, data download       models.py   evaluate, sample, reconstruct, interpolate,
    apps.py      score, plot-latent, probe                        traverse, embed
    compress.py  compress, decompress                 serve.py    export, serve

No maths lives here, and nothing imported while the parser is built loads torch, so ``--help`` and argument
errors are instant. Errors raised on purpose (:class:`vaekit.errors.VaeKitError`) are printed as one line,
``vaekit: error: <message>``, with exit status 2. Only the CLI prints.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from vaekit._version import __version__
from vaekit.cli import apps, compress, models, recommend, serve, sweep, text, train
from vaekit.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, FORMATTER, Commands, Parser, examples
from vaekit.errors import VaeKitError

OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")  # a dotted config override, key=value
COMMAND_MODULES = (train, models, apps, compress, serve, sweep, recommend, text)  # each has register(commands)
THREADED_COMMANDS = {"evaluate", "sample", "reconstruct", "interpolate", "traverse", "embed", "score", "plot-latent",
                     "probe", "export", "recommend", "text"}  # torch threads by the machine's load (vaekit.threads)


def build_parser() -> argparse.ArgumentParser:
    """The ``vaekit`` argument parser (one subcommand per library verb)."""
    parser = Parser(
        prog="vaekit",
        description="Train, evaluate and use variational autoencoders.",
        epilog=examples(
            "vaekit train                       # the digits preset, seconds on a CPU",
            "vaekit evaluate runs/digits-*/best --k 1000",
            "vaekit sample runs/digits-20240101-120000 -n 64 --out samples.png",
        ),
        formatter_class=FORMATTER,
    )
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    commands = Commands(subparsers)
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vaekit`` command line and return its exit status (0 success, 2 error, 130 interrupted)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and hasattr(args, "overrides") and all(OVERRIDE.match(token) for token in extra):
            args.overrides = [*args.overrides, *extra]  # key=value after an option: argparse ends a positional list
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    args.argv = argv  # `train --nproc` re-launches the same command line
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("vaekit").setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        if args.command in THREADED_COMMANDS:  # train chooses its own; serve sets threads per request
            from vaekit import threads

            threads.for_work()
        return int(args.handler(args))
    except VaeKitError as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"vaekit: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
