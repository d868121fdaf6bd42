"""Benchmark 2 (issue 5): training throughput of 1 vs 2 processes (DistributedDataParallel, gloo) on this machine.

Every run is `vaekit train` in a fresh process (`--nproc 2` for two, which re-launches through
`torch.distributed.run`) on real MNIST with the `mnist-mlp` preset (784-400-20 MLP, Bernoulli, Adam 1e-3) for
one epoch, at a global batch of 128 (the preset's) and of 512. Throughput is training images per second of
vaekit's own training-loop clock (`train_time_s` in metrics.jsonl: the loop only, validation and start-up
excluded; under two processes the mean of the two ranks' clocks); the wall time of the whole command, start-up
included, is reported beside it. Three settings: one process with every core as intra-op threads, one process
with one thread, and two processes with cores / 2 threads each (what `--nproc` sets). Rounds alternate the
settings so drift on a shared machine hits all alike; medians are reported, with the 1-minute load average
seen before each run (other users of the machine). Last, two processes time DDP's per-step communication
alone: gloo all-reduces of a tensor the size of the model's gradient (`--allreduce-only` runs just that and
adds it to the saved results).

    flock /tmp/vaekit-bench.lock python benchmarks/distributed_throughput.py [--rounds 3] [--data-dir DIR]
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
from pathlib import Path

from common import DEFAULT_MNIST, RESULTS, save, table

BATCHES = (128, 512)
CORES = len(os.sched_getaffinity(0))
SETTINGS = ((1, CORES), (1, 1), (2, max(1, CORES // 2)))  # (processes, threads per process)


def run(nproc: int, threads: int, batch_size: int, data_dir: str, seed: int) -> dict[str, float]:
    """One epoch of `vaekit train`; returns loop seconds, wall seconds, steps and the final validation ELBO."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "vaekit", "train", "--preset", "mnist-mlp", "--data-dir", data_dir,
                   "--epochs", "1", "--seed", str(seed), "--out", str(out), "--quiet", "--device", "cpu",
                   f"train.batch_size={batch_size}", "train.num_images=4"]
        if nproc > 1:
            command += ["--nproc", str(nproc)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {"loop_s": record["train_time_s"], "wall_s": wall, "steps": record["step"], "val_elbo": record["val_elbo"],
            "load_1min": load}


def allreduce_worker(repeats: int = 200) -> None:
    """Run in each of two processes by torch.distributed.run: time all-reduces of the gradient's size."""
    import torch
    import torch.distributed as dist

    from vaekit.models.vae import VAE
    from vaekit.presets import get_preset

    params = sum(p.numel() for p in VAE(get_preset("mnist-mlp").model, (1, 28, 28)).parameters())
    dist.init_process_group("gloo")
    grad = torch.randn(params)
    for _ in range(10):
        dist.all_reduce(grad)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dist.all_reduce(grad)
        times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        print(json.dumps({"parameters": params, "mib": params * 4 / 2**20,
                          "median_ms": 1e3 * statistics.median(times),
                          "p10_ms": 1e3 * statistics.quantiles(times, n=10)[0], "repeats": repeats}))
    dist.destroy_process_group()


def allreduce() -> dict[str, float]:
    """Launch :func:`allreduce_worker` in two single-thread processes; return rank 0's timings."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               __file__, "--allreduce-worker"]
    done = subprocess.run(command, check=True, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_1min"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--allreduce-only", action="store_true", help="time the all-reduce, add it to results")
    parser.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce_worker:
        allreduce_worker()
        return
    if args.allreduce_only:
        path = RESULTS / "distributed_throughput.json"
        payload = json.loads(path.read_text()) if path.exists() else {}
        payload["allreduce"] = allreduce()
        print(payload["allreduce"])
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return

    images = 55_000  # the mnist-mlp preset's training split (5,000 of the 60,000 held out for validation)
    samples: dict[tuple[int, int, int], list[dict[str, float]]] = {
        (b, p, t): [] for b in BATCHES for p, t in SETTINGS
    }
    for r in range(args.rounds):
        for batch_size in BATCHES:
            for nproc, threads in SETTINGS:
                result = run(nproc, threads, batch_size, args.data_dir, seed=r)
                samples[(batch_size, nproc, threads)].append(result)
                print(f"round {r + 1}: batch {batch_size}, {nproc} x {threads} threads: {result}", flush=True)

    rows = []
    for batch_size in BATCHES:
        base = statistics.median(images / s["loop_s"] for s in samples[(batch_size, *SETTINGS[0])])
        for nproc, threads in SETTINGS:
            runs = samples[(batch_size, nproc, threads)]
            speed = statistics.median(images / s["loop_s"] for s in runs)
            rows.append({
                "global_batch": batch_size, "processes": nproc, "threads_each": threads,
                "per_process_batch": batch_size // nproc, "img_per_s": speed, "vs_1_process": speed / base,
                "loop_s": statistics.median(s["loop_s"] for s in runs),
                "wall_s": statistics.median(s["wall_s"] for s in runs),
                "val_elbo": statistics.median(s["val_elbo"] for s in runs),
                "load_1min": statistics.median(s["load_1min"] for s in runs),
            })
    print(table(rows))
    communication = allreduce()
    print(f"gloo all-reduce of the gradient, 2 processes: {communication}")
    path = save("distributed_throughput", {
        "images": images, "epochs": 1, "rounds": args.rounds, "rows": rows, "allreduce": communication,
        "samples": {f"batch{b}_proc{p}_threads{t}": v for (b, p, t), v in samples.items()},
    })
    print(f"results: {path}")


if __name__ == "__main__":
    main()
