"""Benchmark 3: `binarized-mnist` on dynamically binarized MNIST under a 15-minute CPU training budget.

Protocol: train the preset with `train.time_budget_s=900` (training time only; validation excluded), the
cosine learning rate decaying over the budget. Every `--eval-every` epochs the validation NLL (IWAE, k = 100,
on one fixed binarization of the 5,000 validation images) is logged against training time: that is the curve.
Final figure: importance-weighted NLL with k = 1000 on the 10,000 test images, binarized once with seed 0,
evaluated with the best model (highest validation ELBO). Target: at or below 90 nats.

    python benchmarks/binarized_mnist_nll.py [--data-dir ../shared/data/mnist] [--budget 900] [--k 1000]
"""

from __future__ import annotations

import argparse
import shutil

from common import DEFAULT_MNIST, nll_curve, plot_nll_curve, save, table

from vaekit.config import resolve_config
from vaekit.evaluation.report import evaluate
from vaekit.presets import get_preset
from vaekit.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--budget", type=float, default=900.0, help="training seconds")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--out", default="runs/bench-binarized-mnist")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    config = resolve_config(
        get_preset("binarized-mnist"),
        overrides=[f"data.data_dir={args.data_dir}", f"train.time_budget_s={args.budget}", "train.epochs=100000",
                   "train.eval_k=100", f"train.eval_every={args.eval_every}", *args.overrides],
    )
    result = train(config, args.out, progress=False)
    curve = nll_curve(result.metrics)
    print(table(curve))
    report = evaluate(result.model_dir, data_dir=args.data_dir, k=args.k, seed=0)
    print()
    print(report.format_table())
    print(f"\ntest NLL (k={args.k}) {report.nll_nats:.2f} nats after {result.metrics[-1]['train_time_s']:.0f} s "
          f"of training, {len(result.metrics)} epochs (target <= 90)")
    plot_nll_curve(curve, report.nll_nats, args.k, "binarized_mnist_nll", "binarized-mnist")
    path = save("binarized_mnist_nll", {"config": config.to_dict(), "curve": curve, "test": report.to_dict(),
                                         "epochs": len(result.metrics)})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
