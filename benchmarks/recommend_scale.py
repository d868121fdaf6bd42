"""Mult-VAE at MovieLens-20M size: one epoch's time and peak memory, in one process and with ``--nproc 2``.

A synthetic interaction set the size of ML-20M is generated first (138,000 users x 20,000 items, about 10M positives):
item popularity follows a power law (p_i proportional to (i + 10)^-1.1, as long-tailed as MovieLens), the number of
items per user a log-normal law (at least 5). Items are drawn with replacement, so repeated (user, item) rows occur
(the loader collapses them); the number of rows is scaled so that about 10M distinct pairs remain. It is written as a
Parquet file of integer ids (``user_id``, ``item_id``; no ratings: every row a positive) in a temporary folder.

Then ``vaekit train --preset ml-100k`` runs for one epoch on it, as a separate process, with the paper's ML-20M
settings (its items-600-200 tanh network with input dropout 0.5, 10,000 validation and 10,000 test users, batch
500): the wall time of the whole command (reading the
file, building the sparse matrices, one epoch, validation NDCG@100 of 10,000 users, writing the run), the epoch's
training time from ``metrics.jsonl``, and the peak resident memory of the process tree (its RSS summed over every
process, sampled every 0.1 s from /proc, and each process's own peak from the kernel, ``VmHWM``: the largest, and
their sum, an upper bound of the tree's peak). The same
again with ``--nproc 2`` (two processes of one thread each: DistributedDataParallel on gloo).

Full run (about 20-30 minutes on 2 CPU cores; run alone)::

    python benchmarks/recommend_scale.py

A small check that it works (a tenth of the users and items)::

    python benchmarks/recommend_scale.py --users 13800 --items 2000 --positives 1000000 --heldout-users 1000

Targets: peak RSS under 4 GiB and an epoch under 10 minutes on 2 cores; ``--nproc 2`` works.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import save, table

TARGET_RSS_GIB = 4.0
PAPER_NETWORK = ("model.hidden_dims=[600]", "model.latent_dim=200", "model.input_dropout=0.5")  # for ML-20M
TARGET_EPOCH_MINUTES = 10.0


def _draw(rng: np.random.Generator, users: int, items: int, rows: float) -> tuple[np.ndarray, np.ndarray]:
    popularity = (np.arange(items) + 10.0) ** -1.1
    popularity /= popularity.sum()
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=users)
    per_user = np.maximum(5, np.round(activity / activity.mean() * rows / users)).astype(np.int64)
    user = np.repeat(np.arange(users, dtype=np.int32), per_user)
    return user, rng.choice(items, size=int(per_user.sum()), p=popularity).astype(np.int32)


def generate(path: Path, users: int, items: int, positives: int, seed: int = 0) -> dict[str, Any]:
    """Write the synthetic interactions to ``path`` (Parquet) and describe them: about ``positives`` distinct
    (user, item) pairs (rows are drawn with replacement, so a first draw measures how many repeat)."""
    import pyarrow as pa
    from pyarrow import parquet

    user, item = _draw(np.random.default_rng(seed), users, items, positives)
    distinct_share = len(np.unique(user.astype(np.int64) * items + item)) / len(user)
    user, item = _draw(np.random.default_rng(seed), users, items, positives / distinct_share)
    rows = len(user)
    parquet.write_table(pa.table({"user_id": user, "item_id": item}), path)
    distinct = len(np.unique(user.astype(np.int64) * items + item))
    per_user = np.bincount(user, minlength=users)
    return {"users": users, "items": items, "rows": rows, "distinct_positives": distinct,
            "median_items_per_user": float(np.median(per_user)), "file_mb": round(path.stat().st_size / 2**20, 1)}


def _tree_memory(root: int) -> dict[int, tuple[int, int]]:
    """pid -> (resident bytes, peak resident bytes: VmHWM) of ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    memory: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, ppid = int(entry), int(fields.get("PPid", "0").strip() or 0)
        children.setdefault(ppid, []).append(pid)
        memory[pid] = (int(fields.get("VmRSS", "0 kB").split()[0]) * 1024,
                       int(fields.get("VmHWM", "0 kB").split()[0]) * 1024)
    tree, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in memory:
            tree[pid] = memory[pid]
        stack += children.get(pid, [])
    return tree


def run_training(data: Path, out: Path, nproc: int, heldout: int, batch: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "vaekit", "train", "--preset", "ml-100k", "--data", str(data), "--out", str(out),
               "--epochs", "1", "--quiet", f"data.heldout_users={heldout}", f"train.batch_size={batch}",
               "train.device=cpu", *PAPER_NETWORK]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if nproc > 1 else dict(os.environ)
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]  # the most the tree held at once (sampled)
    high_water: dict[int, int] = {}  # each process's own peak (the kernel's, so no spike is missed)

    def watch() -> None:
        while proc.poll() is None:
            tree = _tree_memory(proc.pid)
            peak[0] = max(peak[0], sum(rss for rss, _ in tree.values()))
            for pid, (_, hwm) in tree.items():
                high_water[pid] = max(high_water.get(pid, 0), hwm)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output, _ = proc.communicate()
    watcher.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({' '.join(command)}):\n{output[-3000:]}")
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {
        "processes": nproc, "command_wall_s": round(wall, 1), "epoch_train_s": record["train_time_s"],
        "peak_rss_gib_tree": round(peak[0] / 2**30, 3),
        "peak_rss_gib_largest_process": round(max(high_water.values(), default=0) / 2**30, 3),
        "peak_rss_gib_sum_of_process_peaks": round(sum(high_water.values()) / 2**30, 3),
        "val_ndcg@100": round(record["val_ndcg@100"], 4), "val_users": record["val_users"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--positives", type=int, default=10_000_000, help="distinct (user, item) positives, about")
    parser.add_argument("--heldout-users", type=int, default=10_000, help="validation and test users each")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--nproc", default="1,2", help="process counts to run (default 1,2)")
    parser.add_argument("--name", default="recommend_scale", help="results/<name>.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vaekit-scale-") as tmp:
        data = Path(tmp) / "interactions.parquet"
        start = time.perf_counter()
        described = generate(data, args.users, args.items, args.positives)
        print(f"generated {described} in {time.perf_counter() - start:.0f} s", flush=True)
        for nproc in (int(n) for n in args.nproc.split(",")):
            row = run_training(data, Path(tmp) / f"run-{nproc}", nproc, args.heldout_users, args.batch_size)
            rows.append(row)
            print(row, flush=True)
    print(table(rows))
    one = next((r for r in rows if r["processes"] == 1), None)
    met = None if one is None else (one["peak_rss_gib_sum_of_process_peaks"] < TARGET_RSS_GIB
                                    and one["epoch_train_s"] < 60 * TARGET_EPOCH_MINUTES)
    path = save(args.name, {
        "command": " ".join(["python", "benchmarks/recommend_scale.py", *sys.argv[1:]]),
        "data": described, "target": f"peak RSS < {TARGET_RSS_GIB:g} GiB, epoch < {TARGET_EPOCH_MINUTES:g} min (one "
        "process); --nproc 2 works", "target_met": met, "rows": rows,
    })
    print(f"target: {'met' if met else 'MISSED' if met is False else 'not measured'}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
