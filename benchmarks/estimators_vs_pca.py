"""Benchmark: the scikit-learn estimators with their default settings, next to PCA and IsolationForest.

Linear probe. For each data set: :class:`vaekit.VAETransformer` with its defaults (``latent_dim=8``), once with
the old defaults (``epochs=30``, no early stopping, ``beta=1``: "before") and once with the current ones ("after":
``epochs="auto"``, a budget of 10,000 optimizer steps with early stopping, ``beta=0.5``), next to PCA with the same 8
components, on the same train/test split. A logistic regression (``StandardScaler`` then
``LogisticRegression(max_iter=5000)``) is fitted on the training rows' codes and scored on the test rows (test
accuracy). PCA gets the data as the VAE sees it: image pixels in [0, 1] as they are, tabular features
standardized with the training rows' mean and standard deviation. ``fit_s``: wall seconds of ``fit`` alone.

- ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 images, 10 classes, pixels / 16), split by
  ``train_test_split(train_size=1200, random_state=0)``: 1,200 train, 597 test.
- ``mnist``: the first 10,000 images of the MNIST training file and the first 2,000 of the test file
  (``--data-dir``, IDX files; 784 pixels / 255; 10 classes).
- ``spambase``, ``magic``, ``cardiotocography``: ADBench ``35_SpamBase.npz`` (4,207 rows, 57 features; y =
  spam, 39.9%), ``22_magic.gamma.npz`` (19,020 rows, 10 features; y = hadron, 35.2%) and
  ``7_Cardiotocography.npz`` (2,114 rows, 21 features; y = ADBench's anomaly label, 22.0%): the ADBench tables
  with over 2,000 rows and the most balanced labels, split by ``train_test_split(test_size=0.3, stratify=y,
  random_state=0)``: 2,944 / 1,263, 13,314 / 5,706 and 1,479 / 635 rows.

Anomaly detection, a check of :class:`vaekit.AnomalyDetector`'s defaults: test AUROC (of ``-score_samples``)
with the current defaults ("after": a budget of ``max_steps`` optimizer steps, early stopping, the three-term
score) and, unless ``--no-before``, the old training length ("before": ``epochs=30``, no early stopping, with
today's score), next to scikit-learn's ``IsolationForest(random_state=0)``. Each detector is fitted
on a random half (seed 0) of the normal rows and scores the other normal rows and every anomaly (ADBench's
semi-supervised protocol):

- ``cardio``: ADBench ``6_cardio.npz`` (1,831 rows, 21 features, 176 anomalies): 827 train, 1,004 test.
- ``digits-0-4``: ``load_digits`` with digits 0-4 normal and 5-9 anomalous: 450 train, 1,347 test.

Every estimator has ``random_state=0`` and otherwise its defaults (``device="auto"``).

    OMP_NUM_THREADS=1 python benchmarks/estimators_vs_pca.py [--data-dir ../shared/data/mnist]
        [--adbench-dir ../shared/data/adbench] [--datasets digits,mnist,...,cardio,digits-0-4] [--no-before]
        [--params '{"max_steps": 5000}'] [--seeds 3]

``--params`` (JSON) overrides settings of the "after" estimators only, for sweeps; such runs save nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import DEFAULT_MNIST, save, table
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vaekit.apps.estimators import AnomalyDetector, VAETransformer
from vaekit.data import read_idx

DEFAULT_ADBENCH = DEFAULT_MNIST.parent / "adbench"
OLD_DEFAULTS: dict[str, Any] = {"epochs": 30, "patience": 0, "beta": 1.0}  # the defaults before max_steps, beta 0.5
Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


def load_digits_split(args: argparse.Namespace) -> Split:
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(data.data / 16.0, data.target, train_size=1200,
                                                        random_state=0)
    return x_train, y_train, x_test, y_test


def load_mnist_split(args: argparse.Namespace) -> Split:
    def images(name: str, n: int) -> np.ndarray:
        x = read_idx(f"{args.data_dir}/{name}-images-idx3-ubyte.gz")[:n]
        return x.reshape(len(x), -1).astype(np.float64) / 255.0

    def labels(name: str, n: int) -> np.ndarray:
        return read_idx(f"{args.data_dir}/{name}-labels-idx1-ubyte.gz")[:n].astype(np.int64)

    return images("train", 10_000), labels("train", 10_000), images("t10k", 2_000), labels("t10k", 2_000)


def adbench_split(name: str) -> Callable[[argparse.Namespace], Split]:
    def load(args: argparse.Namespace) -> Split:
        data = np.load(Path(args.adbench_dir) / f"{name}.npz")
        x, y = data["X"].astype(np.float64), data["y"].astype(np.int64)
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
        return x_train, y_train, x_test, y_test

    return load


# name -> (loader, whether PCA sees standardized features, as the VAE does for data outside [0, 1])
DATASETS: dict[str, tuple[Callable[[argparse.Namespace], Split], bool]] = {
    "digits": (load_digits_split, False),
    "mnist": (load_mnist_split, False),
    "spambase": (adbench_split("35_SpamBase"), True),
    "magic": (adbench_split("22_magic.gamma"), True),
    "cardiotocography": (adbench_split("7_Cardiotocography"), True),
}


def probe_accuracy(train_codes: np.ndarray, y_train: np.ndarray, test_codes: np.ndarray, y_test: np.ndarray) -> float:
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return float(classifier.fit(train_codes, y_train).score(test_codes, y_test))


def run_transformer(split: Split, params: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    x_train, y_train, x_test, y_test = split
    start = time.perf_counter()
    vae = VAETransformer(random_state=seed, **params).fit(x_train)
    fit_s = time.perf_counter() - start
    history = vae.history_
    best = max(history, key=lambda m: m["val_elbo"])
    return {"acc": probe_accuracy(vae.transform(x_train), y_train, vae.transform(x_test), y_test),
            "fit_s": fit_s, "epochs": vae.n_iter_, "steps": history[-1]["step"], "best_epoch": best["epoch"],
            "best_val_elbo": best["val_elbo"]}


def run_pca(split: Split, standardize: bool, components: int) -> dict[str, Any]:
    x_train, y_train, x_test, y_test = split
    start = time.perf_counter()
    pca = make_pipeline(StandardScaler(), PCA(components)) if standardize else PCA(components)
    pca.fit(x_train)
    fit_s = time.perf_counter() - start
    return {"acc": probe_accuracy(pca.transform(x_train), y_train, pca.transform(x_test), y_test), "fit_s": fit_s}


def probe_row(name: str, args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    loader, standardize = DATASETS[name]
    split = loader(args)
    runs = [run_transformer(split, params, seed) for seed in range(args.seeds)]
    accuracies = [r["acc"] for r in runs]
    after = {**runs[0], "acc": float(np.mean(accuracies)), "acc_sd": float(np.std(accuracies)),
             "acc_per_seed": accuracies, "fit_s": float(np.mean([r["fit_s"] for r in runs]))}
    before = run_transformer(split, OLD_DEFAULTS) if args.before else None
    pca = run_pca(split, standardize, VAETransformer().latent_dim)
    row: dict[str, Any] = {"data": name, "train": len(split[0]), "test": len(split[2]), "features": split[0].shape[1]}
    if before is not None:
        row |= {"acc_before": before["acc"]}
    row |= {"acc_after": after["acc"]}
    if args.seeds > 1:
        row |= {"acc_after_sd": after["acc_sd"], "seeds": args.seeds}
    row |= {"acc_pca8": pca["acc"]}
    if before is not None:
        row |= {"fit_s_before": before["fit_s"]}
    row |= {"fit_s_after": after["fit_s"], "fit_s_pca8": pca["fit_s"], "epochs_after": after["epochs"],
            "steps_after": after["steps"], "best_epoch_after": after["best_epoch"]}
    print(table([row]), flush=True)
    return row | {"detail": {"before": before, "after": after, "pca": pca}}


def cardio_split(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADBench's semi-supervised protocol: fit on a random half of the normal rows, test on the rest."""
    data = np.load(Path(args.adbench_dir) / "6_cardio.npz")
    x, y = data["X"].astype(np.float64), data["y"].astype(np.int64)
    normal = np.flatnonzero(y == 0)
    train = np.random.default_rng(0).permutation(normal)[: len(normal) // 2]
    test = np.setdiff1d(np.arange(len(y)), train)
    return x[train], x[test], y[test]


def digits_split(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits 0-4 normal, 5-9 anomalous: fit on a random half of the normal images, test on the rest."""
    data = load_digits()
    x, y = data.data / 16.0, (data.target >= 5).astype(np.int64)
    normal = np.flatnonzero(y == 0)
    train = np.random.default_rng(0).permutation(normal)[: len(normal) // 2]
    test = np.setdiff1d(np.arange(len(y)), train)
    return x[train], x[test], y[test]


ANOMALY_SETS = {"cardio": cardio_split, "digits-0-4": digits_split}


def anomaly_row(name: str, args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    x_train, x_test, y_test = ANOMALY_SETS[name](args)
    row: dict[str, Any] = {"data": name, "train": len(x_train), "test": len(x_test), "anomalies": int(y_test.sum())}
    detectors: dict[str, Any] = {
        "after": AnomalyDetector(random_state=0, **params),
        "iforest": IsolationForest(random_state=0),
    }
    if args.before:
        detectors = {"before": AnomalyDetector(random_state=0, **OLD_DEFAULTS), **detectors}
    times = {}
    for label, detector in detectors.items():
        start = time.perf_counter()
        detector.fit(x_train)
        times[f"fit_s_{label}"] = time.perf_counter() - start
        row[f"auroc_{label}"] = float(roc_auc_score(y_test, -detector.score_samples(x_test)))
    row |= times
    print(table([row]), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--adbench-dir", default=str(DEFAULT_ADBENCH))
    parser.add_argument("--datasets", default=",".join([*DATASETS, *ANOMALY_SETS]))
    parser.add_argument("--no-before", dest="before", action="store_false", help="skip the old defaults")
    parser.add_argument("--params", default="{}", help="JSON settings of the 'after' estimators (sweeps)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="fit the 'after' transformer with random_state 0..N-1 and report the mean probe accuracy "
                             "and its standard deviation (default 1: random_state=0); the splits stay fixed")
    parser.add_argument("--name", default="", help="save a sweep (--params) as benchmarks/results/NAME.json")
    args = parser.parse_args()
    params = json.loads(args.params)
    names = args.datasets.split(",")
    unknown = set(names) - set(DATASETS) - set(ANOMALY_SETS)
    if unknown:
        parser.error(f"unknown data sets {sorted(unknown)}; choose from {[*DATASETS, *ANOMALY_SETS]}")
    rows = [probe_row(name, args, params) for name in names if name in DATASETS]
    anomaly = [anomaly_row(name, args, params) for name in names if name in ANOMALY_SETS]
    print("\nlinear probe (test accuracy) on 8 features: VAETransformer before / after vs PCA-8")
    if rows:
        print(table([{k: v for k, v in row.items() if k != "detail"} for row in rows]))
    if anomaly:
        print("\nanomaly detection (test AUROC): AnomalyDetector before / after vs IsolationForest")
        print(table(anomaly))
    defaults = {k: v for k, v in VAETransformer().get_params().items() if k in ("epochs", "max_steps", "patience")}
    payload = {"defaults": defaults, "old_defaults": OLD_DEFAULTS, "params": params, "seeds": args.seeds,
               "probe": rows, "anomaly": anomaly}
    if not params or args.name:
        print(f"results: {save(args.name or 'estimators_vs_pca', payload)}")


if __name__ == "__main__":
    main()
