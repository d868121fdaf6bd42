"""Threads: training speed with 1 and 2 torch threads, on an idle machine and beside a busy process, by model size;
and the default `vaekit train` (digits) with vaekit's automatic choice against torch's default.

For each configuration, one epoch of `vaekit.train` on random data of the preset's shape (training loop time only,
`train_time_s`) in a fresh process with OMP_NUM_THREADS=1 and =2; "loaded" runs beside one busy process (a pure
Python loop, one core). The FLOPs per step are counted as vaekit counts them (vaekit.threads.step_flops). Then
`vaekit train --out RUN train.epochs=60` (the README's main job) wall time: auto threads vs OMP_NUM_THREADS=2 (torch's
default on 2 cores), idle and loaded. Rounds alternate; medians are reported.

    python benchmarks/threads.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import save, table

CONFIGS = {  # name: (overrides, example shape, examples in the epoch)
    "digits (default)": ([], (1, 8, 8), 4096),
    "mnist-mlp": (["--preset", "mnist-mlp"], (1, 28, 28), 8192),
    "mnist-conv": (["--preset", "mnist-conv"], (1, 28, 28), 4096),
    "binarized-mnist": (["--preset", "binarized-mnist"], (1, 28, 28), 8192),
    "mnist-hvae": (["--preset", "binarized-mnist-hvae", "train.time_budget_s=0", "train.epochs=1"], (1, 28, 28), 4096),
}

CHILD = """
import json, sys, tempfile
import numpy as np, torch
from vaekit.config import resolve_config
from vaekit.data import from_arrays
from vaekit.presets import get_preset
from vaekit.training import train
from vaekit.models import build_model
from vaekit.models.bounds import elbo
from vaekit import threads
args = json.loads(sys.argv[1])
preset = args["overrides"][1] if args["overrides"] else "digits"
rest = [o for o in args["overrides"][2:]]
config = resolve_config(get_preset(preset), overrides=["train.epochs=1", "train.num_images=4", "train.device=cpu",
                        "data.binarize=none", "data.source=array", *rest])
x = (np.random.default_rng(0).random((args["n"], *args["shape"])) > 0.5).astype(np.float32)
model = build_model(config.model, tuple(args["shape"]))
flops = threads.step_flops(model, lambda a, b: elbo(model, a).loss, (torch.from_numpy(x[:2]), None),
                           config.train.batch_size)
with tempfile.TemporaryDirectory() as tmp:
    result = train(config, tmp + "/run", data=from_arrays(x, config=config.data))
print(json.dumps({"train_time_s": result.metrics[-1]["train_time_s"], "flops": flops,
                  "threads": torch.get_num_threads()}))
"""


def _busy() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _epoch(name: str, threads: int) -> dict[str, float]:
    overrides, shape, n = CONFIGS[name]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    payload = json.dumps({"overrides": overrides, "shape": shape, "n": n})
    done = subprocess.run([sys.executable, "-c", CHILD, payload], env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["examples_per_s"] = n / result["train_time_s"]
    return result


def _main_job(auto: bool) -> float:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if not auto:
        env["OMP_NUM_THREADS"] = "2"  # torch's own default on this machine: one thread per core
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vaekit", "train", "--quiet", "--out", f"{tmp}/run", "train.epochs=60"],
                       env=env, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    for load in ("idle", "loaded"):
        busy = _busy() if load == "loaded" else None
        try:
            time.sleep(5 if busy else 0)
            for name in CONFIGS:
                speeds: dict[int, list[float]] = {1: [], 2: []}
                flops = 0.0
                for _ in range(args.rounds):
                    for t in (1, 2):
                        result = _epoch(name, t)
                        speeds[t].append(result["examples_per_s"])
                        flops = result["flops"]
                one, two = statistics.median(speeds[1]), statistics.median(speeds[2])
                rows.append({"machine": load, "config": name, "flops_per_step": f"{flops:.3g}",
                             "ex_per_s_1_thread": round(one), "ex_per_s_2_threads": round(two),
                             "2_vs_1": round(two / one, 3)})
                print(rows[-1], flush=True)
            jobs = {"auto": [], "torch default (2)": []}
            for _ in range(args.rounds):
                jobs["auto"].append(_main_job(True))
                jobs["torch default (2)"].append(_main_job(False))
            rows.append({"machine": load, "config": "vaekit train (digits, 60 epochs), wall s",
                         "auto": round(statistics.median(jobs["auto"]), 1),
                         "torch default": round(statistics.median(jobs["torch default (2)"]), 1)})
            print(rows[-1], flush=True)
        finally:
            if busy is not None:
                busy.kill()
    print(table([r for r in rows if "flops_per_step" in r]))
    print(table([r for r in rows if "auto" in r]))
    save("threads", {"rows": rows, "rounds": args.rounds, "cores": len(os.sched_getaffinity(0))})


if __name__ == "__main__":
    main()
