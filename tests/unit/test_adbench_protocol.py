"""benchmarks/adbench.py: the semi-supervised split, the ranks and the target check it reports, its cache and its
errors (a file without labels)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
adbench = pytest.importorskip("adbench")


def test_split_trains_on_half_of_the_normal_rows_and_tests_on_the_rest() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(1000, dtype=np.float64)[:, None] * np.ones((1, 3))  # row i holds i: rows are traceable
    y = (rng.random(1000) < 0.1).astype(np.int64)
    x_train, x_test, y_test = adbench.split(x, y, seed=3, max_rows=0)
    train, test = set(x_train[:, 0].astype(int)), set(x_test[:, 0].astype(int))
    normal = set(np.flatnonzero(y == 0))
    assert train <= normal and len(train) == round(len(normal) / 2)
    assert not train & test and train | test == set(range(1000))  # every anomaly and the other normal rows
    np.testing.assert_array_equal(y_test, y[x_test[:, 0].astype(int)])
    again = adbench.split(x, y, seed=3, max_rows=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (x_train, x_test, y_test), strict=True))
    other = adbench.split(x, y, seed=4, max_rows=0)[0]
    assert set(other[:, 0].astype(int)) != train  # another seed, another half
    capped = adbench.split(x, y, seed=3, max_rows=500)
    assert len(capped[0]) + len(capped[1]) == 500


def test_average_ranks_share_ties_and_target_check() -> None:
    means = {"vaekit": {"a": 0.9, "b": 0.8}, "KNN": {"a": 0.9, "b": 0.7}, "PCA": {"a": 0.5, "b": 0.75}}
    ranks = adbench.average_ranks(means, ["vaekit", "KNN", "PCA"])
    assert ranks == {"vaekit": 1.25, "KNN": 2.25, "PCA": 2.5}
    summary = {d: {"mean_auroc": 100 * float(np.mean(list(v.values()))), "average_rank": ranks[d], "cpu_s": 60.0,
                   "fits": 2} for d, v in means.items()}
    verdict = adbench.check_target(summary, "vaekit")
    assert "best mean AUROC yes, best average rank yes, +5.00 points against KNN" in verdict


def test_a_file_without_labels_is_refused_and_results_are_cached(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "1_nolabels.npz", X=np.zeros((10, 2)))
    with pytest.raises(SystemExit) as exited:
        adbench.load_set(tmp_path, "1_nolabels")
    assert exited.value.code == 2 and "lacks the label array 'y'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        adbench.load_set(tmp_path, "2_missing")
    assert exited.value.code == 2
    assert re.search(r"no data set '2_missing'.*choose from 1_nolabels", capsys.readouterr().err)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = np.zeros(300, dtype=np.int64)
    x[:20] += 6.0
    y[:20] = 1
    np.savez(tmp_path / "3_toy.npz", X=x, y=y)
    args = argparse.Namespace(cache=str(tmp_path / "cache"), fresh=False, vaekit_params={}, pyod_vae_steps=100)
    loader = adbench.SplitLoader(tmp_path, "3_toy", 0, 0)
    first = adbench.cached_result("3_toy", 0, "IForest", args, loader)
    assert first["auroc"] > 0.95 and first["n_train"] == 140 and first["n_test"] == 160
    path = tmp_path / "cache" / "3_toy" / "seed0" / "IForest.json"
    assert json.loads(path.read_text())["auroc"] == first["auroc"]
    path.write_text(json.dumps({**first, "auroc": 0.5}))  # a cached result is read back, not recomputed
    assert adbench.cached_result("3_toy", 0, "IForest", args, loader)["auroc"] == 0.5
    args.vaekit_params = {"epochs": 3}
    assert adbench.detector_key("vaekit", args).startswith("vaekit[") and adbench.detector_key("KNN", args) == "KNN"
    vaekit_path = tmp_path / "cache" / "3_toy" / "seed0" / f"{adbench.detector_key('vaekit', args)}.json"
    settings = adbench.vaekit_settings(args)
    assert settings["epochs"] == 3 and settings["neighbors"] == 1  # the defaults, with the overrides over them
    vaekit_path.parent.mkdir(parents=True, exist_ok=True)
    vaekit_path.write_text(json.dumps({**first, "detector": "vaekit", "auroc": 0.5, "settings": settings}))
    assert adbench.cached_result("3_toy", 0, "vaekit", args, loader)["auroc"] == 0.5
    vaekit_path.write_text(json.dumps({**first, "auroc": 0.5, "settings": {**settings, "neighbors": 0}}))
    refitted = adbench.cached_result("3_toy", 0, "vaekit", args, loader)  # fitted with other settings: refitted
    assert refitted["auroc"] > 0.95 and refitted["settings"] == settings
