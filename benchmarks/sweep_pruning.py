"""Benchmark: a 16-trial ``vaekit sweep`` on digits, with the median pruner and without it.

The sweep: the ``digits`` preset (MLP 64-256-128-L, Bernoulli, 60 epochs), searching ``model.latent_dim`` in
int(2, 64, log), ``objective.beta`` in float(0.25, 4, log) and ``train.lr`` in float(1e-4, 1e-2, log) with TPE
(sampler seed 0), judged by the validation NLL (IWAE, k = 100, nats), ``--workers`` processes (default 2, one
torch thread each). The same sweep runs twice: ``--pruner median`` (stop a trial whose NLL at an epoch is worse
than the median of the earlier trials there, after 4 trials and 6 epochs) and ``--pruner none``. Reported for
each: the wall-clock time, the trials pruned, the epochs run of those planned, the best validation NLL and its
settings. Target: each sweep in at most 10 minutes on 2 cores.

The two sweeps do not see the same trials after the first pruned one (TPE learns from pruned trials too), so the
comparison is of the whole procedure: time, and the best NLL it finds.

    python benchmarks/sweep_pruning.py [--trials 16] [--epochs N] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import save, table

import vaekit
from vaekit.config import resolve_config
from vaekit.presets import get_preset

SPACE = ["model.latent_dim=int(2, 64, log)", "objective.beta=float(0.25, 4, log)", "train.lr=float(1e-4, 1e-2, log)"]


def run(pruner: str, args: argparse.Namespace) -> dict[str, object]:
    overrides = [f"train.epochs={args.epochs}"] if args.epochs else []
    config = resolve_config(get_preset("digits"), overrides=overrides)
    out = Path(args.out) / pruner
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = vaekit.sweep(config, SPACE, trials=args.trials, metric="val_nll", pruner=pruner, workers=args.workers,
                          eval_k=args.eval_k, out=out, seed=args.seed)
    seconds = time.perf_counter() - start
    pruning = result.summary["pruning"]
    best = result.summary["best"]
    ran = sum(r["epochs_run"] or 0 for r in result.rows)
    return {"pruner": pruner, "wall_s": round(seconds, 1), "trials": len(result.rows), "pruned": pruning["pruned"],
            "epochs_run": ran, "epochs_planned": pruning["epochs_planned"], f"best_val_nll_k{args.eval_k}":
            best["value"], "best_settings": best["params"], "failed": result.summary["trials"]["fail"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, help="epochs of every trial (default: the preset's 60)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--eval-k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "runs" / "sweep_pruning"))
    args = parser.parse_args()
    rows = [run("median", args), run("none", args)]
    print(table([{k: v for k, v in row.items() if k != "best_settings"} for row in rows]))
    for row in rows:
        print(f"{row['pruner']}: best {row['best_settings']}")
    saved = 1 - rows[0]["wall_s"] / rows[1]["wall_s"]  # type: ignore[operator]
    print(f"pruning: {rows[0]['pruned']} of {rows[0]['trials']} trials pruned, wall time {saved:.0%} lower")
    path = save("sweep_pruning", {"settings": vars(args), "space": SPACE, "rows": rows,
                                  "wall_time_saved_fraction": saved})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
