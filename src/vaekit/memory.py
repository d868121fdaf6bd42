"""How much memory there is, and refusing work that cannot fit before it is attempted.

An allocation that cannot succeed (a model of a billion weights, ten billion samples) would otherwise end in a
traceback from deep inside torch, or in the kernel killing the process; :func:`check_fits` refuses it up front
with the figures.
"""

from __future__ import annotations

import os

from vaekit.errors import ConfigError


def available_bytes() -> int:
    """Memory this process could still take: ``MemAvailable`` from /proc/meminfo, else the physical memory."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def format_bytes(count: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(count) < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def check_fits(nbytes: float, what: str, fix: str, error: type[Exception] = ConfigError) -> None:
    """Raise ``error`` (naming ``what``, both figures and ``fix``) when ``nbytes`` exceed the available memory."""
    free = available_bytes()
    if nbytes > free:
        raise error(f"{what}: {format_bytes(nbytes)} of memory needed, {format_bytes(free)} available; {fix}")
