"""Benchmark: credit-card fraud (ULB / Worldline, Dal Pozzolo et al. 2015), trained on day 1, scored on day 2.

Data: ``../shared/data/creditcard/creditcard.csv.gz`` (284,807 transactions over two days, 492 frauds): features
``V1``-``V28`` (PCA components) and ``Amount``; ``Time`` (seconds since the first transaction) only splits the
days and is not a feature (a model of day 1's clock would call every day-2 transaction new). Every detector is
fitted on the normal transactions of day 1 (``Time < 86400``; frauds left out, as in the semi-supervised
protocol) and scores every transaction of day 2; AUROC and AUPRC (``average_precision_score``, fraud positive).

Detectors: vaekit's :class:`vaekit.AnomalyDetector` with its defaults (fed the raw columns; ``random_state=0``);
``vaekit-cli``, the same detector saved (``AnomalyDetector.save``) and day 2 scored from a CSV file by ``vaekit
score DIR --data day2.csv --out scores.csv --quiet`` in its own process (score time: that process, reading and
writing included; writing the CSV is not timed); and on the same rows, standardized with day 1's mean and
standard deviation: scikit-learn ``IsolationForest`` (``random_state=0``), PyOD ``KNN`` (5 neighbours, largest
distance) and PyOD ``PCA`` (defaults). Times: fit and score wall seconds, the process's CPU seconds (not counting
``vaekit-cli``'s scoring process), and scoring throughput in rows per second.

    OMP_NUM_THREADS=1 python benchmarks/creditcard.py [--data ../shared/data/creditcard/creditcard.csv.gz]
        [--detectors vaekit,vaekit-cli,IForest,KNN,PCA] [--max-train N] [--name creditcard]

``--max-train N`` fits every detector on a random N of the day-1 normal rows (seeded; for quick checks: KNN's
queries against all 142,000 day-1 rows take a while on one core); the default uses them all.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import ROOT, fail, save
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "creditcard" / "creditcard.csv.gz"
FEATURES = [f"V{i}" for i in range(1, 29)] + ["Amount"]
DAY_S = 86_400


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_days(path: str, max_train: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """(day-1 normal rows, day-2 rows, day-2 labels, counts)."""
    table = pd.read_csv(path)
    missing = [c for c in (*FEATURES, "Time", "Class") if c not in table.columns]
    if missing:
        fail(f"{path} lacks columns {missing}: not the ULB credit-card file")
    day1, day2 = table[table["Time"] < DAY_S], table[table["Time"] >= DAY_S]
    normal1 = day1[day1["Class"] == 0]
    x_train = normal1[FEATURES].to_numpy(np.float64)
    if max_train and len(x_train) > max_train:
        x_train = x_train[np.sort(np.random.default_rng(0).choice(len(x_train), max_train, replace=False))]
    counts = {"day1_normal": len(normal1), "day1_fraud": int(day1["Class"].sum()), "train_rows": len(x_train),
              "day2_rows": len(day2), "day2_fraud": int(day2["Class"].sum())}
    return x_train, day2[FEATURES].to_numpy(np.float64), day2["Class"].to_numpy(np.int64), counts


def detector(name: str) -> Any:
    """An object with fit(x) and score(x) -> anomaly scores (higher = more anomalous)."""
    if name == "vaekit":
        from vaekit.apps.estimators import AnomalyDetector

        class VaekitDetector:
            def fit(self, x: np.ndarray) -> None:
                self.model = AnomalyDetector(random_state=0).fit(x)

            def score(self, x: np.ndarray) -> np.ndarray:
                return -self.model.score_samples(x)

        return VaekitDetector()
    if name == "vaekit-cli":
        return SavedDetector()

    class Standardized:
        def fit(self, x: np.ndarray) -> None:
            self.scaler = StandardScaler().fit(x)
            x = self.scaler.transform(x)
            if name == "IForest":
                from sklearn.ensemble import IsolationForest

                self.model = IsolationForest(random_state=0).fit(x)
            elif name == "KNN":
                from pyod.models.knn import KNN

                self.model = KNN().fit(x)
            else:
                from pyod.models.pca import PCA

                self.model = PCA(random_state=0).fit(x)

        def score(self, x: np.ndarray) -> np.ndarray:
            x = self.scaler.transform(x)
            if name == "IForest":
                return np.asarray(-self.model.score_samples(x))
            return np.asarray(self.model.decision_function(x))

    return Standardized()


class SavedDetector:
    """The default AnomalyDetector, saved, then ``vaekit score`` on a CSV of the rows in a process of its own."""

    def fit(self, x: np.ndarray) -> None:
        from vaekit.apps.estimators import AnomalyDetector

        self.work = Path(tempfile.mkdtemp(prefix="vaekit-creditcard-"))
        AnomalyDetector(random_state=0).fit(pd.DataFrame(x, columns=FEATURES)).save(self.work / "detector")

    def score(self, x: np.ndarray) -> np.ndarray:
        table, out = self.work / "day2.csv", self.work / "scores.csv"
        pd.DataFrame(x, columns=FEATURES).to_csv(table, index=False)
        command = [sys.executable, "-m", "vaekit", "score", str(self.work / "detector"), "--data", str(table),
                   "--out", str(out), "--quiet"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        self.timed_s = time.perf_counter() - start  # the scoring process alone, not the CSV written above
        if done.returncode:
            fail(f"vaekit score failed: {done.stderr.strip()}")
        scores = pd.read_csv(out)["score"].to_numpy()
        if len(scores) != len(x):
            fail(f"vaekit score wrote {len(scores)} scores for {len(x)} rows")
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--detectors", default="vaekit,IForest,KNN,PCA")
    parser.add_argument("--max-train", type=int, default=0, help="fit on a random N of the day-1 normal rows")
    parser.add_argument("--name", default="", help="results file name (default creditcard, creditcard_maxN)")
    args = parser.parse_args()
    x_train, x_test, y_test, counts = load_days(args.data, args.max_train)
    print(", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
    rows = []
    for name in (d.strip() for d in args.detectors.split(",") if d.strip()):
        model = detector(name)
        wall, cpu = time.perf_counter(), cpu_seconds()
        model.fit(x_train)
        fit_s, fit_cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        wall, cpu = time.perf_counter(), cpu_seconds()
        scores = model.score(x_test)
        score_s, score_cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        score_s = getattr(model, "timed_s", score_s)  # vaekit-cli: its own process (CPU: see the wall time)
        row = {"detector": name, "auroc": float(roc_auc_score(y_test, scores)),
               "auprc": float(average_precision_score(y_test, scores)), "fit_s": fit_s, "fit_cpu_s": fit_cpu,
               "score_s": score_s, "score_cpu_s": score_cpu, "rows_per_s": len(x_test) / score_s}
        rows.append(row)
        print(f"{name:<8} AUROC {100 * row['auroc']:6.2f}  AUPRC {100 * row['auprc']:6.2f}  fit {fit_s:7.1f} s "
              f"(CPU {fit_cpu:7.1f} s)  score {score_s:6.1f} s ({row['rows_per_s']:,.0f} rows/s)", flush=True)
    name = args.name or ("creditcard" if not args.max_train else f"creditcard_max{args.max_train}")
    payload = {"settings": vars(args), "counts": counts, "results": rows,
               "threads": os.environ.get("OMP_NUM_THREADS", "unset")}
    print(f"results: {save(name, payload)}")


if __name__ == "__main__":
    main()
