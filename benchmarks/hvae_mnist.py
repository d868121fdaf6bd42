"""Issue 6, benchmarks 1 and 3: a hierarchical VAE preset under a wall-clock training budget on this machine.

Protocol: train the preset (``binarized-mnist-hvae``: dynamically binarized MNIST; ``mnist8-hvae``: 8-bit
MNIST) with ``train.time_budget_s = --budget`` (training time only; validation excluded), the learning rate
warmed up, then cosine-decayed over the budget. Every ``--eval-every`` epochs the validation NLL (IWAE, k = 100,
on one fixed binarization of the 5,000 validation images) is logged against training time: that is the curve.
Final figures, with the best model (highest validation ELBO, EMA weights): the importance-weighted NLL with
k = ``--k`` (1000) on the 10,000 test images, binarized once with seed 0 (8-bit: as they are), then with
k = ``--k-final`` (5000) on the first ``--final-examples`` test images (all by default) beside k = ``--k`` on the
same images (``--final-range START:STOP`` computes these two for one range of test images alone, so the final
evaluation can be split into runs). ``--compress`` also compresses the test set with ``vaekit compress`` and
reports bits per pixel.

    python benchmarks/hvae_mnist.py --preset binarized-mnist-hvae [--budget 3600] [--final-examples 10000]
    python benchmarks/hvae_mnist.py --preset mnist8-hvae --budget 3600 --compress --tune-malloc
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import DEFAULT_MNIST, nll_curve, plot_nll_curve, save, table

from vaekit.allocator import tune_allocator
from vaekit.config import resolve_config
from vaekit.evaluation.report import evaluate
from vaekit.models.inputs import model_data as load_model_data
from vaekit.models.serialization import load
from vaekit.presets import get_preset
from vaekit.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="binarized-mnist-hvae")
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--budget", type=float, default=3600.0, help="training seconds")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--k-final", type=int, default=5000)
    parser.add_argument("--final-examples", type=int, default=10_000)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--compress", action="store_true", help="also run vaekit compress on the test set")
    parser.add_argument("--out", default=None)
    parser.add_argument("--skip-train", action="store_true", help="evaluate the model already in --out")
    parser.add_argument("--tune-malloc", action="store_true", help="call vaekit.allocator.tune_allocator() first")
    parser.add_argument("--final-range", metavar="START:STOP",
                        help="only the final figures (k-final and k) on test images START:STOP of the model in --out; "
                             "results in <preset>_final_START_STOP.json, to be averaged with the other ranges")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args()
    tuned = args.tune_malloc and tune_allocator()
    out = Path(args.out or f"runs/bench-{args.preset}")
    name = args.preset.replace("-", "_")
    if args.final_range:
        _final_range(out, args, name)
        return
    config = resolve_config(
        get_preset(args.preset),
        overrides=[f"data.data_dir={args.data_dir}", f"train.time_budget_s={args.budget}", "train.epochs=1000000",
                   "train.eval_k=100", f"train.eval_every={args.eval_every}", *args.overrides],
    )
    wall = time.perf_counter()
    if not args.skip_train:
        shutil.rmtree(out, ignore_errors=True)
        train(config, out, progress=False)
    train_wall_s = time.perf_counter() - wall
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve = nll_curve(metrics)
    print(table(curve))
    print(f"\n{len(metrics)} epochs, {metrics[-1]['train_time_s']:.0f} s of training, {train_wall_s:.0f} s wall "
          f"(with validation), skipped updates: {metrics[-1]['skipped_steps']} non-finite, "
          f"{metrics[-1].get('skipped_grad_norm', 0)} large gradient norm")

    report = evaluate(out / "best", data_dir=args.data_dir, k=args.k, seed=0)
    print()
    print(report.format_table())
    model = load(out / "best")
    x, _, _, how = load_model_data(model, None, args.data_dir, seed=0)
    subset = x[: args.final_examples]
    final = evaluate(model, subset, k=args.k_final, seed=1)
    same = report if len(subset) == len(x) else evaluate(model, subset, k=args.k, seed=1)
    rows = [
        {"estimate": f"IWAE k={args.k}", "examples": len(x), "nll_nats": report.nll_nats,
         "bits_per_dim": report.bits_per_dim, "chunk": report.chunk_size, "seconds": report.seconds},
        {"estimate": f"IWAE k={args.k_final}", "examples": len(subset), "nll_nats": final.nll_nats,
         "bits_per_dim": final.bits_per_dim, "chunk": final.chunk_size, "seconds": final.seconds},
        {"estimate": "-ELBO", "examples": len(x), "nll_nats": -report.elbo,
         "bits_per_dim": report.elbo_bits_per_dim, "chunk": 1, "seconds": 0.0},
    ]
    if same is not report:
        rows.insert(1, {"estimate": f"IWAE k={args.k}", "examples": len(subset), "nll_nats": same.nll_nats,
                        "bits_per_dim": same.bits_per_dim, "chunk": same.chunk_size, "seconds": same.seconds})
    print()
    print(table(rows))
    print(f"test data: {how}")
    compressed = _compress(out / "best", args.data_dir) if args.compress else None
    plot_nll_curve(curve, report.nll_nats, args.k, name, args.preset)
    path = save(name, {"config": config.to_dict(), "curve": curve, "test": report.to_dict(),
                       "final": final.to_dict(), "rows": rows, "epochs": len(metrics),
                       "train_time_s": metrics[-1]["train_time_s"], "compress": compressed,
                       "allocator_tuned": tuned})
    print(f"results: {path}")


def _final_range(out: Path, args: argparse.Namespace, name: str) -> None:
    """The k-final and k estimates on one range of the test images, so that a long final evaluation can be
    split over several runs: the estimates are per-image means, so ranges combine by a weighted average."""
    start, stop = (int(part) for part in args.final_range.split(":"))
    model = load(out / "best")
    x, _, _, how = load_model_data(model, None, args.data_dir, seed=0)
    subset = x[start:stop]
    rows = []
    for k in (args.k_final, args.k):
        report = evaluate(model, subset, k=k, seed=1)
        rows.append({"estimate": f"IWAE k={k}", "images": f"{start}:{stop}", "nll_nats": report.nll_nats,
                     "bits_per_dim": report.bits_per_dim, "chunk": report.chunk_size, "seconds": report.seconds})
    print(table(rows))
    print(f"test data: {how}")
    path = save(f"{name}_final_{start}_{stop}", {"rows": rows, "model": str(out / "best")})
    print(f"results: {path}")


def _compress(model_dir: Path, data_dir: str) -> dict:
    """Compress the 10,000 uint8 test images with ``vaekit compress`` and decompress them again."""
    import gzip

    import numpy as np

    from vaekit.codec.compression import compress, decompress

    raw = np.frombuffer(gzip.open(Path(data_dir) / "t10k-images-idx3-ubyte.gz").read()[16:], np.uint8)
    images = raw.reshape(-1, 1, 28, 28)
    report = compress(model_dir, images, "runs/bench-compress-test.vkz")
    back = decompress(model_dir, "runs/bench-compress-test.vkz")
    exact = back.array is not None and bool(np.array_equal(back.array.reshape(images.shape), images))
    result = {**report.to_dict(), "exact_round_trip": exact, "decompress_seconds": back.seconds}
    print(f"\nvaekit compress: {report.compressed_bytes} bytes, {report.bits_per_dim:.4f} bits/pixel "
          f"(-ELBO {report.elbo_bits_per_dim:.4f}), exact round trip: {exact}")
    return result


if __name__ == "__main__":
    main()
