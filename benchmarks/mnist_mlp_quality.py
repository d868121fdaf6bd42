"""Benchmark 2: quality of the `mnist-mlp` preset after 10 epochs.

Test loss as the classic PyTorch example reports it: summed BCE (on 8-bit grayscale targets scaled to [0, 1],
no binarization) plus KL, one posterior sample, nats per image, over the 10,000 MNIST test images; that is
-ELBO from `vaekit evaluate`. Target: at or below 106. Also reports the IWAE bound with k = 100 (on grayscale
targets this is a cross-entropy score, not a likelihood).

    python benchmarks/mnist_mlp_quality.py [--data-dir ../shared/data/mnist] [--epochs 10] [--out runs/bench-mnist-mlp]
"""

from __future__ import annotations

import argparse
import shutil

from common import DEFAULT_MNIST, save, table

from vaekit.config import resolve_config
from vaekit.evaluation.report import evaluate
from vaekit.presets import get_preset
from vaekit.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/bench-mnist-mlp")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    config = resolve_config(get_preset("mnist-mlp"),
                            overrides=[f"data.data_dir={args.data_dir}", f"train.epochs={args.epochs}"])
    result = train(config, args.out)
    report = evaluate(result.model_dir, data_dir=args.data_dir, k=100)
    rows = [{"epochs": args.epochs, "test_loss_nats": -report.elbo, "recon_nats": -report.log_px_z,
             "kl_nats": report.kl, "iwae_k100_nats": report.nll_nats, "active_units": report.active_units,
             "train_time_s": result.metrics[-1]["train_time_s"]}]
    print(table(rows))
    print(f"\ntest loss {-report.elbo:.2f} nats/image (target <= 106)")
    print(f"results: {save('mnist_mlp_quality', {'result': rows[0], 'metrics': result.metrics})}")


if __name__ == "__main__":
    main()
