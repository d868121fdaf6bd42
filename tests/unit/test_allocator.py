"""vaekit.allocator: glibc's thresholds raised so large tensors come from the reusable heap, not fresh mmaps."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from vaekit import allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Allocates a 64 MiB tensor and reports where glibc put it: mmapped bytes (hblkhd) or heap arena bytes.
PROBE = """
import ctypes, json, torch
from vaekit.allocator import tune_allocator
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
tuned = tune_allocator()
before = libc.mallinfo2()
x = torch.empty(16 * 1024 * 1024)
during = libc.mallinfo2()
print(json.dumps({"tuned": tuned, "mmapped": during.hblkhd - before.hblkhd, "heap": during.arena - before.arena}))
"""


def _probe(**env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "VAEKIT_DEFAULT_MALLOC"} | env
    done = subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="the settings apply to glibc only")
def test_tuned_allocator_serves_large_tensors_from_the_heap():
    default, tuned = _probe(VAEKIT_DEFAULT_MALLOC="1"), _probe()
    assert default["tuned"] is False and tuned["tuned"] is True
    size = 64 * 1024 * 1024
    assert default["mmapped"] >= size and default["heap"] < size  # glibc's default: a fresh mmap
    assert tuned["mmapped"] < size and tuned["heap"] > size // 2  # tuned: the heap (partly reused), kept after free


def test_opt_out_and_other_c_libraries_leave_the_allocator_alone(monkeypatch):
    def no_libc(*args, **kwargs):
        raise AssertionError("mallopt must not be called")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_libc)
    monkeypatch.setenv("VAEKIT_DEFAULT_MALLOC", "1")
    assert allocator.tune_allocator() is False
    monkeypatch.delenv("VAEKIT_DEFAULT_MALLOC")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.tune_allocator() is False
