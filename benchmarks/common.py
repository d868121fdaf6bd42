"""Helpers shared by the benchmark scripts: where MNIST is, how to describe the machine, how to save results."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST = ROOT.parent / "shared" / "data" / "mnist"
RESULTS = Path(__file__).resolve().parent / "results"


def fail(message: str) -> NoReturn:
    """End a benchmark on bad input: one line on stderr, exit code 2 (as vaekit's own commands do)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_part(text: str) -> tuple[int, int]:
    """``--part I/N`` (the I-th of N processes sharing a benchmark's work, from 1) as (I, N); fails on bad input."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        fail(f"--part {text!r}: give I/N, e.g. 1/2")
    if not 1 <= index <= count:
        fail(f"--part {text!r}: I must be between 1 and N")
    return index, count


def machine() -> str:
    """One line naming the machine the numbers come from."""
    device = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU"
    return (
        f"{_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {device}"
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as a plain-text table."""
    keys = list(rows[0])
    cells = [[f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write ``results/<name>.json`` with the machine and date added."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": machine(), **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def nll_curve(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The validation NLL logged during training (epochs with ``val_nll``) against training time."""
    return [{"epoch": m["epoch"], "train_time_s": m["train_time_s"], "val_elbo": m["val_elbo"],
             "val_nll_k100": m["val_nll"]} for m in metrics if "val_nll" in m]


def plot_nll_curve(curve: list[dict[str, Any]], final: float, k: int, name: str, title: str) -> Path:
    """``results/<name>.png``: validation NLL against training minutes, the final test NLL as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c["train_time_s"] / 60 for c in curve], [c["val_nll_k100"] for c in curve], "o-",
            label="validation NLL (IWAE k=100)")
    ax.axhline(final, color="gray", ls="--", label=f"final test NLL (k={k}) {final:.2f}")
    ax.set_xlabel("training time (minutes, 2 CPU cores)")
    ax.set_ylabel("NLL (nats)")
    ax.set_title(f"{title}: NLL against training time")
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
