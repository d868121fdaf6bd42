"""Benchmark: how many latent dimensions? A ``vaekit sweep`` over the latent size, validation NLL and active units.

One grid sweep (every size trained once, same seed, no pruning) of ``model.latent_dim`` around a preset:

- ``digits``: the default preset (MLP 64-256-128-L, Bernoulli, 60 epochs), L in 2, 4, 8, 16, 32, 64;
- ``mnist``: the ``mnist-mlp`` preset (784-400-L, Bernoulli on grayscale MNIST, 10 epochs), L in 2, 4, ..., 128.

For each size: the validation NLL (IWAE, k = ``--eval-k``, nats per example, of the model in ``best/``), the
validation ELBO, the active units (Var_x E[z|x] > 0.01) and the KL summed over dimensions, all on the validation
split; then the recommendation printed: the smallest size whose validation NLL is within ``--tolerance`` nats of
the best (past it, extra dimensions stay inactive and the NLL stops improving). The sweep's own folder holds the
plots (``plots/latent_dim.png``: NLL, active units and the KL of each dimension against the size); it is copied to
``results/sweep_latent_<dataset>.png``.

    python benchmarks/sweep_latent.py --dataset digits [--sizes 2,4,8,16,32,64] [--epochs N] [--workers 2]
    python benchmarks/sweep_latent.py --dataset mnist --data-dir ../shared/data/mnist [--sizes 2,4,...,128]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import DEFAULT_MNIST, RESULTS, save, table

import vaekit
from vaekit.config import resolve_config
from vaekit.presets import get_preset

PRESETS = {"digits": ("digits", "2,4,8,16,32,64"), "mnist": ("mnist-mlp", "2,4,8,16,32,64,128")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=tuple(PRESETS), default="digits")
    parser.add_argument("--sizes", help="comma-separated latent sizes (default: 2..64 digits, 2..128 mnist)")
    parser.add_argument("--epochs", type=int, help="epochs of every trial (default: the preset's)")
    parser.add_argument("--eval-k", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=1.0, help="nats from the best NLL counted as as good")
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--out", help="sweep folder (default benchmarks/runs/sweep_latent_<dataset>, replaced)")
    args = parser.parse_args()

    preset, default_sizes = PRESETS[args.dataset]
    sizes = args.sizes or default_sizes
    overrides = [f"train.epochs={args.epochs}"] if args.epochs else []
    if args.dataset == "mnist":
        overrides.append(f"data.data_dir={args.data_dir}")
    config = resolve_config(get_preset(preset), overrides=overrides)
    out = Path(args.out or Path(__file__).resolve().parent / "runs" / f"sweep_latent_{args.dataset}")
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = vaekit.sweep(config, [f"model.latent_dim=cat({sizes})"], trials=len(sizes.split(",")), metric="val_nll",
                          sampler="grid", pruner="none", eval_k=args.eval_k, out=out, workers=args.workers)
    seconds = time.perf_counter() - start
    rows = sorted(
        ({"latent_dim": r["model.latent_dim"], f"val_nll_k{args.eval_k}": r["value"], "val_elbo": r["val_elbo"],
          "active_units": r["active_units"], "kl_nats": sum(r["kl_per_dim"] or []), "best_epoch": r["best_epoch"],
          "seconds": r["seconds"]} for r in result.rows if r["state"] == "complete"),
        key=lambda row: row["latent_dim"])
    print(table(rows))
    key = f"val_nll_k{args.eval_k}"
    best = min(row[key] for row in rows)
    pick = min((row for row in rows if row[key] <= best + args.tolerance), key=lambda row: row["latent_dim"])
    advice = (f"pick latent_dim={pick['latent_dim']}: the smallest size within {args.tolerance:g} nats of the best "
              f"validation NLL ({best:.2f}); it uses {pick['active_units']} active units")
    print(advice)
    print(f"{seconds:.0f} s for the sweep; plots in {out / 'plots'}")
    plot = out / "plots" / "latent_dim.png"
    if plot.exists():
        RESULTS.mkdir(exist_ok=True)
        shutil.copyfile(plot, RESULTS / f"sweep_latent_{args.dataset}.png")
    path = save(f"sweep_latent_{args.dataset}", {
        "settings": {**vars(args), "preset": preset, "sizes": sizes}, "rows": rows, "recommendation": advice,
        "seconds": seconds, "note": "all numbers on the validation split; nats per example",
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
