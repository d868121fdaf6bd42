"""Benchmark 3: conditional generation and sample quality on MNIST (8-bit grayscale, no binarization).

Trains the ``mnist-cvae`` preset (a conditional VAE: labels from the dataset enter encoder and decoder; KL
weight 2), the same network without labels (``model.num_classes=0``) and, as an ablation, the preset with KL
weight 1, then measures in the feature space of vaekit's MNIST classifier (:mod:`vaekit.classifier`, trained
on the 60,000 training images, cached):

- class-conditional accuracy: 5,000 samples asked for digits 0..9 in turn, the fraction the extractor
  classifies as the digit asked for (target: at least 95%);
- FID, KID, precision/recall of 5,000 unconditional samples (the unconditional model; and the conditional
  model with labels drawn from the label frequencies, i.e. its marginal p(x)) against the first half of the
  MNIST test set, next to the same figures for the test set's second half against its first half (and FID
  of two random halves: the first 5,000 test images come from NIST's original training set, SD-3, "cleaner
  and easier", the last 5,000 from its test set, SD-1, so the two fixed halves differ by more than sampling
  noise).

The equivalent commands::

    vaekit train --preset mnist-cvae --data-dir ../shared/data/mnist --out runs/bench-cvae
    vaekit sample runs/bench-cvae --label 3 -n 64 --out threes.png
    vaekit evaluate runs/bench-cvae --k 1 --samples 5000 --data-dir ../shared/data/mnist

Run (under the shared lock)::

    flock /tmp/vaekit-bench.lock python benchmarks/conditional_mnist.py [--data-dir ../shared/data/mnist] \\
        [--epochs 20] [--samples 5000] [--threads 1] [--skip-ablation] [--out runs/bench-conditional]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from common import DEFAULT_MNIST, save, table

from vaekit.config import resolve_config
from vaekit.data import load_examples
from vaekit.evaluation.classifier import get_classifier
from vaekit.evaluation.quality import QualityReport, fid, sample_quality
from vaekit.presets import get_preset
from vaekit.training.loop import TrainResult, train

TARGET_ACCURACY = 0.95


def train_model(name: str, out: Path, data_dir: str, epochs: int, overrides: list[str]) -> TrainResult:
    shutil.rmtree(out, ignore_errors=True)
    config = resolve_config(
        get_preset("mnist-cvae"), overrides=[f"data.data_dir={data_dir}", f"train.epochs={epochs}", *overrides]
    )
    start = time.perf_counter()
    result = train(config, out)
    print(f"{name}: trained {epochs} epochs in {time.perf_counter() - start:.0f} s wall", flush=True)
    return result


def row(name: str, report: QualityReport, result: TrainResult | None = None) -> dict[str, object]:
    """A table row: the samples' figures, or (``result=None``) the real second half's."""
    prefix = "" if result is not None else "real_"
    accuracy = report.conditional_accuracy if result is not None else None
    return {
        "samples": name,
        "class_accuracy": "" if accuracy is None else f"{accuracy:.2%}",
        "FID": getattr(report, f"{prefix}fid"),
        "KIDx1000": 1000 * getattr(report, f"{prefix}kid_mean"),
        "precision": getattr(report, f"{prefix}precision"),
        "recall": getattr(report, f"{prefix}recall"),
        "val_ELBO": "" if result is None else result.metrics[-1]["val_elbo"],
        "train_s": "" if result is None else result.metrics[-1]["train_time_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--epochs", type=int, default=get_preset("mnist-cvae").train.epochs)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-ablation", action="store_true", help="do not train the KL-weight-1 variant")
    parser.add_argument("--out", default="runs/bench-conditional")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)

    models = {
        "mnist-cvae (labels from p(y))": train_model("mnist-cvae", out / "cvae", args.data_dir, args.epochs, []),
        "unconditional (num_classes=0)": train_model(
            "same network, no labels", out / "vae", args.data_dir, args.epochs, ["model.num_classes=0"]
        ),
    }
    if not args.skip_ablation:
        models["mnist-cvae, KL weight 1"] = train_model(
            "mnist-cvae with objective.beta=1", out / "cvae-beta1", args.data_dir, args.epochs, ["objective.beta=1"]
        )
    preprocessing = models["mnist-cvae (labels from p(y))"].model.preprocessing
    start = time.perf_counter()
    extractor = get_classifier("mnist", preprocessing, data_dir=args.data_dir)
    cached = time.perf_counter() - start < 0.5 * extractor.info["train_time_s"]
    reports = {
        name: sample_quality(result.model, args.samples, data_dir=args.data_dir, classifier=extractor)
        for name, result in models.items()
    }

    test = load_examples("mnist", preprocessing, data_dir=args.data_dir, split="test")
    order = np.random.default_rng(0).permutation(len(test))
    half = len(test) // 2
    features = extractor.features(test.tensor())
    random_halves_fid = fid(features[order[half:]], features[order[:half]])

    first = next(iter(reports.values()))
    rows = [row("real: test 2nd half vs 1st half", first)]
    rows.append({**{k: "" for k in rows[0]}, "samples": "real: two random test halves", "FID": random_halves_fid})
    rows += [row(name, reports[name], models[name]) for name in models]
    print()
    print(
        f"extractor: {extractor.describe()}, trained in {extractor.info['train_time_s']:.0f} s"
        f"{' (loaded from the cache)' if cached else ''}"
    )
    print(f"samples: {args.samples} decoded means at temperature 1 vs the first {half} test images\n")
    print(table(rows))
    cvae = reports["mnist-cvae (labels from p(y))"]
    accuracy = cvae.conditional_accuracy or 0.0
    per_class = " ".join(f"{v:.3f}" for v in cvae.per_class_accuracy or [])
    print(
        f"\nclass-conditional accuracy {accuracy:.2%} (target >= {TARGET_ACCURACY:.0%}): "
        f"{'met' if accuracy >= TARGET_ACCURACY else 'MISSED'}; per digit {per_class}"
    )
    path = save(
        "conditional_mnist",
        {
            "epochs": args.epochs,
            "samples": args.samples,
            "threads": torch.get_num_threads(),
            "extractor": {k: v for k, v in extractor.info.items() if k != "preprocessing"},
            "conditional_accuracy": accuracy,
            "per_class_accuracy": cvae.per_class_accuracy,
            "target_met": accuracy >= TARGET_ACCURACY,
            "random_halves_fid": random_halves_fid,
            "rows": rows,
            "reports": {name: report.to_dict() for name, report in reports.items()},
            "metrics": {name: result.metrics[-1] for name, result in models.items()},
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
