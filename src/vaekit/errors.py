"""Errors raised by vaekit.

Every error derives from :class:`VaeKitError` and from the matching built-in exception, so callers can
catch either. Messages name the bad value and say how to fix it; the CLI prints them as one line.
"""

from __future__ import annotations


class VaeKitError(Exception):
    """Base class of every error vaekit raises on purpose."""


class ConfigError(VaeKitError, ValueError):
    """A configuration value, key, preset or registered name is wrong."""


class DataError(VaeKitError, ValueError):
    """Input data is missing, malformed, or does not fit the model."""


class ModelFileError(VaeKitError, OSError):
    """A model directory is missing, truncated, corrupted or written by an incompatible version."""


class TrainingError(VaeKitError, RuntimeError):
    """Training could not continue (for example, too many non-finite losses in a row)."""


class OutputError(VaeKitError, OSError):
    """An output path cannot be written."""
