"""Mult-VAE on MovieLens 100K against Mult-DAE, popularity, EASE and PureSVD: same splits, several seeds.

The strong-generalization protocol of Liang et al. 2018 (arXiv:1802.05814), as vaekit's ``interactions`` source
builds it: ratings >= 4 are positives, users with at least 5 of them are kept (938), 100 validation and 100 test
users per seed are never trained on, and 20% of each held-out user's items are ranked among the items not folded
in (Recall@20 and Recall@50 normalised by min(k, held out), NDCG@100). Every method of a seed sees the same split:

- ``mult-vae``: the ``ml-100k`` preset (multinomial likelihood, L2-normalised input with dropout 0.2, KL weight
  annealed to the cap 0.2), best epoch by validation NDCG@100;
- ``mult-dae``: the same with no KL term (``objective.beta=0``);
- ``popularity``: the training users' item counts;
- ``ease``: Steck 2019 (arXiv:1905.03375), B = I - P diag(1/diag(P)), P = (X'X + lambda I)^-1, lambda picked by
  validation NDCG@100 from a grid;
- ``puresvd``: Cremonesi et al. 2010, scores x V_f V_f' of a rank-f truncated SVD of the training matrix, f picked
  by validation NDCG@100 from a grid.

``--pick-cap`` also runs the paper's search for the KL cap: anneal the KL weight to 1 over the whole run and
report the weight at the epoch of best validation NDCG@100 (then the preset's cap, 0.2, is what is benchmarked).

Run (about 2 CPU-minutes per seed on a quiet machine)::

    OMP_NUM_THREADS=1 python benchmarks/recommend_ml100k.py --data ../shared/data/ml-100k/u.data --seeds 5

The results go to ``benchmarks/results/recommend_ml100k.json``. Targets: Mult-VAE at or above EASE on Recall@20
and on NDCG@100 (means over the seeds), training under 5 CPU-minutes.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import ROOT, save, table
from scipy import sparse
from scipy.sparse.linalg import svds

from vaekit.config import resolve_config
from vaekit.data import load_data
from vaekit.presets import get_preset
from vaekit.training import train

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
EASE_LAMBDAS = (50.0, 100.0, 200.0, 300.0, 500.0, 800.0, 1200.0, 2000.0)
SVD_RANKS = (5, 10, 20, 30, 50, 100, 200)
METRICS = ("recall@20", "recall@50", "ndcg@100")
TARGET_CPU_MINUTES = 5.0

Predict = Callable[[torch.Tensor], torch.Tensor]


def _dense_predict(weights: np.ndarray) -> Predict:
    """x (B, D) -> x W (B, D) for an item-item matrix W (D, D)."""
    w = torch.from_numpy(weights.astype(np.float32))
    return lambda x: x @ w


def popularity(train_x: sparse.csr_matrix) -> Predict:
    counts = torch.from_numpy(np.asarray(train_x.sum(axis=0), dtype=np.float32).ravel())  # (D,)
    return lambda x: counts.expand(x.shape[0], -1)


def ease(train_x: sparse.csr_matrix, lam: float) -> Predict:
    """EASE^R (Steck 2019, arXiv:1905.03375): the closed form of a zero-diagonal item-item ridge regression."""
    gram = (train_x.T @ train_x).toarray().astype(np.float64)  # (D, D)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)  # B_ij = -P_ij / P_jj
    b[np.diag_indices_from(b)] = 0.0
    return _dense_predict(b)


def puresvd(train_x: sparse.csr_matrix, rank: int) -> Predict:
    """PureSVD (Cremonesi et al. 2010): scores x V V' of the rank-``rank`` truncated SVD of the training matrix."""
    _, _, vt = svds(train_x.astype(np.float64), k=min(rank, min(train_x.shape) - 1), random_state=0)
    return _dense_predict(vt.T @ vt)


def tuned(make: Callable[[Any], Predict], grid: tuple[Any, ...], val: Any) -> tuple[Any, Predict, float]:
    """The grid value whose predictor has the best validation NDCG@100 (and that predictor, and the NDCG)."""
    best: tuple[Any, Predict, float] | None = None
    for value in grid:
        predict = make(value)
        ndcg = val.heldout_metrics(predict)["ndcg@100"]
        if best is None or ndcg > best[2]:
            best = (value, predict, ndcg)
    assert best is not None
    return best


def train_vae(config: Any, bundle: Any, out: Path) -> tuple[Predict, dict[str, Any]]:
    """Train on the bundle's splits; the best model by validation NDCG@100 and what the run took."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = train(config, out, data=bundle)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    best = max(result.metrics, key=lambda m: m["val_ndcg@100"])
    model = result.model.eval()

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.reconstruct(x)

    info = {"train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1), "epochs": len(result.metrics),
            "best_epoch": best["epoch"], "kl_weight_at_best": round(best["kl_weight"], 4),
            "val_ndcg@100": round(best["val_ndcg@100"], 4)}
    return predict, info


def one_seed(seed: int, args: argparse.Namespace, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    base = resolve_config(get_preset("ml-100k"), overrides=[
        f"data.source={args.data}", f"data.seed={seed}", f"train.seed={seed}", "train.device=cpu",
        *([f"train.epochs={args.epochs}"] if args.epochs else []), *args.override,
    ])
    bundle = load_data(base.data)
    train_x = bundle.train.raw  # (users, items) CSR of the training users
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"seed": seed, "items": bundle.preprocessing.shape[0], "train_users": len(bundle.train)}

    def add(method: str, predict: Predict, **extra: Any) -> None:
        test = bundle.test.heldout_metrics(predict)
        rows.append({"seed": seed, "method": method, **{m: test[m] for m in METRICS}, "test_users": test["users"],
                     **extra})

    vae_predict, info["mult-vae"] = train_vae(base, bundle, work / f"vae-{seed}")
    add("mult-vae", vae_predict)
    dae = resolve_config(base, overrides=["objective.beta=0", "objective.kl_warmup_steps=0"])
    dae_predict, info["mult-dae"] = train_vae(dae, bundle, work / f"dae-{seed}")
    add("mult-dae", dae_predict)
    add("popularity", popularity(train_x))
    lam, predict, _ = tuned(lambda v: ease(train_x, v), EASE_LAMBDAS, bundle.val)
    add("ease", predict, setting=f"lambda={lam:g}")
    rank, predict, _ = tuned(lambda v: puresvd(train_x, v), SVD_RANKS, bundle.val)
    add("puresvd", predict, setting=f"rank={rank}")
    if args.pick_cap:
        search = resolve_config(base, overrides=["objective.beta=1", f"objective.kl_warmup_steps={10**9}",
                                                 "train.max_warmup_fraction=1"])
        steps = max(1, -(-len(bundle.train) // search.train.batch_size)) * search.train.epochs
        search = resolve_config(search, overrides=[f"objective.kl_warmup_steps={steps}"])  # 0 -> 1 over the run
        _, info["cap-search"] = train_vae(search, bundle, work / f"cap-{seed}")
    return rows, info


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"method": method, "seeds": len(mine)}
        for m in METRICS:
            values = [r[m] for r in mine]
            entry[m] = f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0:.4f}"
        out.append(entry)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens 100K u.data (default ../shared/...)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--epochs", type=int, default=0, help="override the preset's epochs (0: keep them)")
    parser.add_argument("--pick-cap", action="store_true", help="also anneal the KL weight to 1 and report its "
                        "value at the best validation NDCG@100 (the paper's search for the cap)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for both VAE runs (repeatable)")
    parser.add_argument("--name", default="recommend_ml100k", help="results/<name>.json (default recommend_ml100k)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(1)
    rows, infos = [], []
    with tempfile.TemporaryDirectory(prefix="vaekit-ml100k-") as tmp:
        for seed in range(args.seeds):
            seed_rows, info = one_seed(seed, args, Path(tmp))
            rows += seed_rows
            infos.append(info)
            print(table([{k: v for k, v in r.items() if k != "seed"} for r in seed_rows]), flush=True)
            print(f"seed {seed}: {info}", flush=True)
    means = summary(rows)
    print(table(means))
    mean = {r["method"]: {m: statistics.mean(x[m] for x in rows if x["method"] == r["method"]) for m in METRICS}
            for r in means}
    cpu = max(i["mult-vae"]["train_cpu_s"] for i in infos) / 60
    met = (mean["mult-vae"]["recall@20"] >= mean["ease"]["recall@20"]
           and mean["mult-vae"]["ndcg@100"] >= mean["ease"]["ndcg@100"] and cpu < TARGET_CPU_MINUTES)
    path = save(args.name, {
        "command": " ".join(["python", "benchmarks/recommend_ml100k.py", *sys.argv[1:]]),
        "protocol": "strong generalization (Liang et al. 2018): ratings >= 4, users with >= 5 positives, 100 "
                    "validation + 100 test users per seed, 20% of each held-out user's items ranked",
        "target": "Mult-VAE >= EASE on Recall@20 and NDCG@100 (means), training < 5 CPU-minutes",
        "target_met": met, "max_train_cpu_minutes": round(cpu, 2), "summary": means, "rows": rows, "runs": infos,
    })
    print(f"target (Mult-VAE >= EASE on Recall@20 and NDCG@100, < {TARGET_CPU_MINUTES:g} CPU-minutes): "
          f"{'met' if met else 'MISSED'}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
