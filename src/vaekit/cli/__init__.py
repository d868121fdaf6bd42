"""The ``vaekit`` command line (see :mod:`vaekit.cli.main`); ``vaekit.cli:main`` is the console script."""

from vaekit.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
