"""Benchmark: linear-probe and 5-NN accuracy of 20-dimensional vaekit latents on MNIST vs PCA-20, same split.

A VAE with 20 latents is trained on MNIST (8-bit grayscale scaled to [0, 1], Bernoulli decoder; the
`mnist-conv` preset, conv 32-64 and dense 256, with ``model.latent_dim=20`` unless ``--preset`` says otherwise;
55,000 training images, 5,000 held out for validation). Then :func:`vaekit.probe.probe` fits a logistic
regression and a 5-NN classifier on the posterior means of all 60,000 training images and tests them on the
10,000 test images, next to PCA with 20 components fitted on the same 60,000 images. Target: linear probe at
least 2 points above PCA-20.

    python benchmarks/probe_mnist.py [--data-dir ../shared/data/mnist] [--preset mnist-conv] [--epochs 8]
                                     [--out runs/bench-probe-mnist] [key=value ...]
"""

from __future__ import annotations

import argparse
import shutil
import time

from common import DEFAULT_MNIST, save, table

from vaekit.config import resolve_config
from vaekit.evaluation.probing import probe
from vaekit.presets import get_preset
from vaekit.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--preset", default="mnist-conv")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", default="runs/bench-probe-mnist")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="more config overrides")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    overrides = [f"data.data_dir={args.data_dir}", f"train.epochs={args.epochs}", "model.latent_dim=20",
                 *args.overrides]
    config = resolve_config(get_preset(args.preset), overrides=overrides)
    start = time.perf_counter()
    result = train(config, args.out)
    train_s = time.perf_counter() - start
    report = probe(result.model_dir, "mnist", data_dir=args.data_dir, k_neighbors=5)
    rows = [
        {"features": "vaekit latents (20)", "logistic_acc": report.latent_logistic, "knn5_acc": report.latent_knn},
        {"features": "PCA-20", "logistic_acc": report.pca_logistic, "knn5_acc": report.pca_knn},
    ]
    print(table(rows))
    margin = 100 * (report.latent_logistic - report.pca_logistic)
    verdict = "met" if margin >= 2.0 else f"missed by {2.0 - margin:.2f} points"
    print(f"\nlinear probe {margin:+.2f} points vs PCA-20 (target >= +2: {verdict}); "
          f"trained {len(result.metrics)} epochs in {train_s:.0f} s, final val ELBO "
          f"{result.metrics[-1]['val_elbo']:.1f} nats")
    payload = {"config": config.to_dict(), "report": report.to_dict(), "train_s": round(train_s, 1),
               "margin_points": round(margin, 2), "metrics": result.metrics}
    print(f"results: {save('probe_mnist', payload)}")


if __name__ == "__main__":
    main()
