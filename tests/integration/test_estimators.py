"""The scikit-learn estimators: scikit-learn's own estimator checks, pipelines, and what they detect and learn."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from vaekit.apps import estimators
from vaekit.apps.estimators import AnomalyDetector, VAETransformer
from vaekit.config import Config
from vaekit.errors import ConfigError, DataError
from vaekit.training import loop

TINY: dict[str, Any] = {"latent_dim": 2, "hidden_dims": (8,), "epochs": 2, "batch_size": 32, "device": "cpu"}


@pytest.fixture
def no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the three PNGs `train` draws into the estimators' temporary run directory, which is deleted
    unread: they are most of the time of a tiny fit, and scikit-learn's checks fit about a hundred times."""
    monkeypatch.setattr(loop, "write_figures", lambda *args, **kwargs: None)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.data / 16.0, data.target  # (1797, 64) in [0, 1]


# Every check of scikit-learn applies and passes: nothing is listed as an expected failure. Two settings make
# that so: inference runs in float64 (a row's output must not depend on the rows it is computed with), and
# the anomaly score's posterior draws are shared by every row (scores are deterministic).
@parametrize_with_checks([VAETransformer(**TINY), AnomalyDetector(**TINY, k=5)])
def test_scikit_learn_estimator_checks(estimator: Any, check: Any, no_figures: None) -> None:
    check(estimator)


def test_package_exports_the_estimators() -> None:
    import vaekit

    assert vaekit.AnomalyDetector is AnomalyDetector and vaekit.VAETransformer is VAETransformer
    with pytest.raises(AttributeError, match="has no attribute 'AnomalyDetecter'"):
        vaekit.AnomalyDetecter  # noqa: B018


def test_constructor_stores_arguments_unchanged() -> None:
    hidden = [16, 8]  # even a list: stored as given, not converted
    detector = AnomalyDetector(latent_dim=3, hidden_dims=hidden, contamination=0.7, random_state=5)  # type: ignore[arg-type]
    assert detector.hidden_dims is hidden and detector.contamination == 0.7  # checked only in fit
    params = detector.get_params()
    assert params["latent_dim"] == 3 and params["random_state"] == 5 and params["method"] == "iwae"
    assert clone(detector).get_params()["hidden_dims"] == hidden
    assert detector.set_params(latent_dim=4).latent_dim == 4
    detector_only = {"method", "k", "relative", "neighbors", "input_neighbors", "contamination"}
    assert set(VAETransformer().get_params()) == set(params) - detector_only


def test_detector_finds_noise_among_digits(digits: tuple[np.ndarray, np.ndarray], no_figures: None) -> None:
    x, _ = digits
    detector = AnomalyDetector(latent_dim=4, hidden_dims=(64,), epochs=15, k=20, contamination=0.05,
                               random_state=0, device="cpu").fit(x[:1000])
    assert detector.model_.latent_dim == 4 and detector.n_iter_ == 15 and len(detector.history_) == 15
    train_flags = detector.predict(x[:1000])
    assert set(np.unique(train_flags)) == {-1, 1}
    assert np.mean(train_flags == -1) == pytest.approx(0.05, abs=0.01)  # contamination of the training rows
    noise = np.random.default_rng(0).random((100, 64))
    assert np.mean(detector.predict(noise) == -1) > 0.95
    assert np.mean(detector.predict(x[1000:]) == -1) < 0.2  # held-out digits are mostly inliers
    scores = detector.score_samples(x[1000:1010])
    np.testing.assert_allclose(detector.decision_function(x[1000:1010]), scores - detector.offset_)
    assert detector.score_samples(noise).max() < np.median(scores)  # higher = more normal


class _Planned(Exception):
    """Raised by the stand-in for `train` below, carrying the config the estimator would have trained with."""

    def __init__(self, config: Config, n_train: int) -> None:
        super().__init__()
        self.config, self.n_train = config, n_train


def planned_run(monkeypatch: pytest.MonkeyPatch, estimator: Any, n_rows: int) -> _Planned:
    """What `fit` on `n_rows` rows would train: the config it passes to `train` (nothing is trained)."""
    def plan(config: Config, out: Path, *, data: Any) -> None:
        raise _Planned(config, len(data.train))

    monkeypatch.setattr(estimators, "train", plan)
    with pytest.raises(_Planned) as info:
        estimator.fit(np.random.default_rng(0).normal(size=(n_rows, 2)))
    return info.value


@pytest.mark.parametrize(("n_rows", "epochs", "patience"), [(50, 10_000, 500), (1_000, 1250, 63), (100_000, 15, 10)])
def test_default_training_is_a_budget_of_steps(
    monkeypatch: pytest.MonkeyPatch, n_rows: int, epochs: int, patience: int
) -> None:
    plan = planned_run(monkeypatch, VAETransformer(), n_rows)
    steps_per_epoch = math.ceil(plan.n_train / 128)
    assert (plan.config.train.epochs, plan.config.train.patience) == (epochs, patience)
    # about 10,000 optimizer steps whatever the size of the data: many passes over small data, few over large
    assert 10_000 <= epochs * steps_per_epoch < 10_000 + steps_per_epoch


def test_training_length_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    def train_config(estimator: Any, n_rows: int = 1_000) -> tuple[int, int]:
        config = planned_run(monkeypatch, estimator, n_rows).config.train
        return config.epochs, config.patience

    assert train_config(VAETransformer(max_steps=80, batch_size=100)) == (9, 10)  # 900 rows: 9 steps a pass
    assert train_config(VAETransformer(epochs=200, patience=7)) == (200, 7)  # a number of passes is kept
    assert train_config(VAETransformer(epochs=300)) == (300, 15)  # patience="auto": a twentieth of the epochs
    assert train_config(VAETransformer(epochs=15, patience=0)) == (15, 0)
    # the detector's default: a budget of 4,500 steps; 900 training rows are repeated 15 times within a pass (106
    # steps), so it validates every ~100 steps rather than every 8 (benchmarks/adbench.py measures the defaults)
    assert train_config(AnomalyDetector()) == (43, 10)
    assert train_config(AnomalyDetector(epochs=30)) == (30, 10)  # a number of passes: the rows as they are


def test_early_stopping_ends_a_long_run(no_figures: None) -> None:
    x = np.random.default_rng(0).normal(size=(200, 4))  # noise: nothing to learn after a few epochs
    vae = VAETransformer(latent_dim=2, hidden_dims=(16,), batch_size=32, max_steps=100_000, patience=5,
                         random_state=0, device="cpu").fit(x)
    assert vae.n_iter_ < 200 < 100_000 / 6  # far fewer epochs than the budget's 16,667
    best = max(vae.history_, key=lambda m: m["val_elbo"])["epoch"]
    assert best == vae.n_iter_ - 5  # stopped after 5 epochs without a better validation ELBO
    assert vae.history_[-1]["step"] == 6 * vae.n_iter_  # 180 training rows: 6 steps a pass


def test_default_transformer_beats_pca_on_digits(no_figures: None) -> None:
    """The issue's case (about 12 s on one core): 30 epochs of 1,080 rows underfit, the step budget does not."""
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(data.data / 16.0, data.target, train_size=1200,
                                                        random_state=0)
    vae = VAETransformer(random_state=0, device="cpu").fit(x_train)
    assert vae.n_iter_ < 1112  # early stopping ended the 1,112 planned epochs (10,000 steps of 9 a pass)
    pca = PCA(8).fit(x_train)

    def probe(encode: Any) -> float:
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        return float(classifier.fit(encode(x_train), y_train).score(encode(x_test), y_test))

    assert probe(pca.transform) == pytest.approx(0.884, abs=0.002)
    assert probe(vae.transform) > probe(pca.transform) + 0.005  # 30 epochs (the old default) gave 0.796


def test_the_transformer_trains_at_kl_weight_half_and_the_detector_on_the_elbo(no_figures: None) -> None:
    """Codes for another model keep more of each row at beta 0.5 (BENCHMARKS.md, "Estimator defaults": ADBench
    magic 78.9% against 76.7% at beta 1); the detector's scores stay the ELBO's."""
    x = np.random.default_rng(0).normal(size=(120, 5))
    small = {"latent_dim": 2, "hidden_dims": (8,), "epochs": 2, "random_state": 0, "device": "cpu"}
    assert {m["kl_weight"] for m in VAETransformer(**small).fit(x).history_} == {0.5}
    assert {m["kl_weight"] for m in AnomalyDetector(**small).fit(x).history_} == {1.0}
    assert {m["kl_weight"] for m in VAETransformer(beta=1.0, **small).fit(x).history_} == {1.0}


def test_transformer_in_a_pipeline_learns_useful_codes(digits: tuple[np.ndarray, np.ndarray], no_figures: None) -> None:
    x, y = digits
    pipeline = Pipeline([
        ("vae", VAETransformer(latent_dim=8, hidden_dims=(128,), epochs=20, random_state=0, device="cpu")),
        ("classify", LogisticRegression(max_iter=2000)),
    ]).fit(x[:1400], y[:1400])
    assert pipeline.score(x[1400:], y[1400:]) > 0.8  # chance is 0.1
    codes = pipeline.named_steps["vae"].transform(x[:5])
    assert codes.shape == (5, 8) and codes.dtype == np.float64
    assert list(pipeline.named_steps["vae"].get_feature_names_out()) == [f"vaetransformer{i}" for i in range(8)]


def test_model_selection_over_a_pipeline(digits: tuple[np.ndarray, np.ndarray], no_figures: None) -> None:
    x, y = digits
    pipeline = Pipeline([("vae", VAETransformer(**TINY, random_state=0)), ("classify", LogisticRegression())])
    search = GridSearchCV(pipeline, {"vae__latent_dim": [1, 4]}, cv=2).fit(x[:300], y[:300])
    assert search.best_params_ == {"vae__latent_dim": 4}
    assert search.best_estimator_.named_steps["vae"].model_.latent_dim == 4


def test_inverse_transform_returns_original_units(no_figures: None) -> None:
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(400, 2))
    x = 100.0 + 5.0 * (latent @ rng.normal(size=(2, 6)))  # real values far from 0: standardized inside
    vae = VAETransformer(latent_dim=2, hidden_dims=(32,), epochs=60, random_state=0, device="cpu").fit(x)
    x_hat = vae.inverse_transform(vae.transform(x))
    assert x_hat.shape == x.shape
    assert np.abs(x_hat.mean(0) - x.mean(0)).max() < 2.0  # back in the data's units, not standardized ones
    assert min(np.corrcoef(x_hat[:, i], x[:, i])[0, 1] for i in range(6)) > 0.85  # a 2-D code of 2-D data
    with pytest.raises(DataError, match="codes have 3 dimensions but the model has latent_dim=2"):
        vae.inverse_transform(np.zeros((2, 3)))


def test_tables_images_and_reproducibility(digits: tuple[np.ndarray, np.ndarray], no_figures: None) -> None:
    pd = pytest.importorskip("pandas")
    x, _ = digits
    table = pd.DataFrame(x[:200], columns=[f"pixel{i}" for i in range(64)])
    conv = dict(TINY, architecture="conv", channels=(4,), data_shape=(1, 8, 8), random_state=3)
    first = VAETransformer(**conv).fit(table)
    assert list(first.feature_names_in_) == list(table.columns) and first.model_.config.architecture == "conv"
    assert first.model_.config.likelihood == "bernoulli"  # values in [0, 1]
    np.testing.assert_array_equal(VAETransformer(**conv).fit(table).transform(table), first.transform(table))
    with pytest.raises(DataError, match="data_shape=\\(1, 9, 9\\) holds 81 values but X has 64 features"):
        VAETransformer(**dict(conv, data_shape=(1, 9, 9))).fit(table)


def test_estimators_leave_no_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    VAETransformer(**TINY).fit(np.random.default_rng(0).normal(size=(50, 3)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("estimator", "x", "error", "match"),
    [
        (AnomalyDetector(**TINY, contamination=0.7), None, ConfigError, r"contamination=0.7 is outside its range"),
        (AnomalyDetector(**TINY, method="lof"), None, ConfigError, "unknown anomaly score 'lof'"),
        (AnomalyDetector(**dict(TINY, k=2.5)), None, ConfigError, r"k=2.5: give a whole number of importance"),
        (AnomalyDetector(**dict(TINY, k=0)), None, ConfigError, r"k=0: give a whole number of importance"),
        (VAETransformer(**dict(TINY, likelihood="poisson")), None, ConfigError, "unknown likelihood 'poisson'"),
        (VAETransformer(**TINY), np.ones((1, 4)), DataError, "1 sample"),
        (VAETransformer(**dict(TINY, epochs=0)), None, ConfigError, "epochs=0: give 'auto'"),
        (VAETransformer(**dict(TINY, epochs="long")), None, ConfigError, "epochs='long': give 'auto'"),
        (AnomalyDetector(**dict(TINY, epochs=2.5)), None, ConfigError, "epochs=2.5: give 'auto'"),
        (VAETransformer(**TINY, max_steps=0), None, ConfigError, "max_steps=0: give a number of optimizer steps"),
        (VAETransformer(**TINY, patience=-1), None, ConfigError, "patience=-1: give 'auto' or a number of epochs"),
        (AnomalyDetector(**TINY, patience=True), None, ConfigError, "patience=True: give 'auto'"),
        (AnomalyDetector(**TINY, neighbors=-1), None, ConfigError, "neighbors=-1: give a number of neighbours"),
        (AnomalyDetector(**TINY, neighbors=1.5), None, ConfigError, "neighbors=1.5: give a number of neighbours"),
        (AnomalyDetector(**TINY, input_neighbors=-2), None, ConfigError,
         "input_neighbors=-2: give a number of neighbours >= 1, or 0 to leave that term out"),
        (AnomalyDetector(**TINY, neighbors=20), None, ConfigError,
         r"neighbors=20 and input_neighbors=1 need more than 20 training rows, and X has 20; give fewer"),
        (AnomalyDetector(**TINY, neighbors=0, input_neighbors=25), None, ConfigError,
         r"input_neighbors=25 need more than 25 training rows"),
        (VAETransformer(**dict(TINY, batch_size=0)), None, ConfigError, "batch_size=0: give a number of examples"),
    ],
)
def test_bad_settings_fail_in_fit(estimator: Any, x: np.ndarray | None, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        estimator.fit(np.random.default_rng(0).normal(size=(20, 4)) if x is None else x)


def test_numpy_numbers_are_settings_like_any_other(no_figures: None) -> None:
    x = np.random.default_rng(0).normal(size=(40, 4))
    detector = AnomalyDetector(**dict(TINY, k=np.int64(3)), contamination=np.float32(0.25)).fit(x)
    assert (detector.predict(x) == -1).sum() == 10  # a quarter of the training rows flagged


@pytest.mark.parametrize("kind", ["transformer", "detector"])
def test_bad_data_after_fit_is_a_one_line_data_error(kind: str) -> None:
    train = np.random.default_rng(0).normal(size=(40, 4))
    if kind == "transformer":
        method = VAETransformer(**TINY, random_state=0).fit(train).transform
    else:
        method = AnomalyDetector(**TINY, k=3, random_state=0).fit(train).predict
    x = np.random.default_rng(1).normal(size=(5, 4))
    x[2, 1] = np.nan
    with pytest.raises(DataError, match=r"X holds 1 NaN or infinite values \(first in row 2\); impute") as info:
        method(x)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"X has 3 features, but .* is expecting 4 features as input"):
        method(np.zeros((2, 3)))


def test_text_columns_are_named_with_the_way_to_encode_them() -> None:
    # scikit-learn's "could not convert string to float: 'paris'" named a value, not the column holding it
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": np.arange(20.0), "city": ["paris", "rome"] * 10, "ok": [True, False] * 10})
    with pytest.raises(DataError, match=r"X has text in column 'city'; .*OneHotEncoder") as info:
        AnomalyDetector(**TINY).fit(frame)
    assert "\n" not in str(info.value)
    rows = np.array([[1.0, "x", 2.0, "y"], [2.0, "z", 3.0, "w"]], dtype=object)
    with pytest.raises(DataError, match=r"X has text in columns 1, 3; "):
        VAETransformer(**TINY).fit(rows)


def _grid_clusters(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows of 25 tight clusters on a 5 x 5 grid of spacing 1 (standard deviation 0.03 around each centre)."""
    centres = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2)
    return centres[rng.integers(0, len(centres), n)] + 0.03 * rng.normal(size=(n, 2))


def test_latent_neighbours_find_rows_between_clusters(no_figures: None) -> None:
    # a smooth density gives the gaps between many small clusters a good likelihood (ADBench's ALOI is such a
    # set); the distance to the nearest training code does not
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    train, normal = _grid_clusters(rng, 1000), _grid_clusters(rng, 100)
    gaps = _grid_clusters(rng, 100) + rng.choice([[0.5, 0.0], [0.0, 0.5]], size=100)  # halfway to a neighbour
    test, is_anomaly = np.concatenate([normal, gaps]), np.r_[np.zeros(100), np.ones(100)]
    settings = {"latent_dim": 2, "hidden_dims": (32,), "max_steps": 600, "random_state": 0, "device": "cpu"}
    auroc = {(n, m): roc_auc_score(is_anomaly, -AnomalyDetector(**settings, neighbors=n, input_neighbors=m)
                                   .fit(train).score_samples(test))
             for n, m in ((0, 0), (1, 0), (0, 1))}
    # measured: 0.39 with the likelihood alone, 0.996 with the code distance, 1.0 with the row distance
    assert auroc[1, 0] > 0.95 and auroc[0, 1] > 0.95 and auroc[0, 0] < 0.7, auroc


@pytest.mark.parametrize("latent_dim", [2, 16])
def test_score_is_the_sum_of_the_robust_z_scores_of_its_terms(no_figures: None, latent_dim: int) -> None:
    import torch

    rng = np.random.default_rng(1)
    train = rng.normal(size=(300, 3))
    train[250:] = train[:50]  # 50 rows twice: each copy is the other's neighbour at distance 0
    train[200:203] = train[203]  # four copies of one row
    new = np.concatenate([rng.normal(size=(40, 3)), train[[0, 100, 203]]])  # and three rows seen in training
    detector = AnomalyDetector(**dict(TINY, latent_dim=latent_dim), k=3, neighbors=2, input_neighbors=0,
                               random_state=0).fit(train)
    likelihood_only = clone(detector).set_params(neighbors=0).fit(train)  # the same seed: the same model

    def codes(x: np.ndarray) -> np.ndarray:
        model = detector.model_
        with torch.no_grad():
            return model.encode(torch.from_numpy(model.preprocessing.apply(x)).double()).mean.numpy()

    training_codes = codes(train)

    def distances(x: np.ndarray) -> np.ndarray:  # brute force over every training row, the row itself left out
        gaps = np.linalg.norm(codes(x)[:, None] - training_codes[None], axis=-1)  # (n, 300)
        for row, own in enumerate(np.argmin(gaps, axis=1)):
            if gaps[row, own] <= 1e-9:  # the row is a training row: one copy of it is itself
                gaps[row, own] = np.inf
        return np.sort(gaps, axis=1)[:, :2].mean(axis=1)

    assert len(detector.codes_) == 247 and sorted(detector.code_counts_)[-5:] == [2, 2, 2, 2, 4]
    terms_train = np.stack([-likelihood_only.score_samples(train), distances(train)])
    low, median, high = np.percentile(terms_train, [25, 50, 75], axis=1)
    np.testing.assert_allclose(detector.score_center_, median)
    np.testing.assert_allclose(detector.score_scale_, high - low)
    nearest_other = np.sort(np.linalg.norm(training_codes[:50, None] - training_codes[None], axis=-1), axis=1)[:, 2]
    np.testing.assert_allclose(distances(train[:50]), nearest_other / 2, atol=1e-9)  # its copy at 0, then the next
    for x in (train, new):
        terms = np.stack([-likelihood_only.score_samples(x), distances(x)])
        expected = -((terms - median[:, None]) / (high - low)[:, None]).sum(axis=0)
        np.testing.assert_allclose(detector.score_samples(x), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.mean(detector.predict(train) == -1), 0.1, atol=0.01)  # contamination


def test_the_row_term_is_the_distance_to_the_nearest_scaled_training_row(no_figures: None) -> None:
    # the third z-score: each row, scaled by the detector's robust scaling, against every training row (brute
    # force), the row itself left out (a duplicate is a neighbour at distance 0)
    rng = np.random.default_rng(4)
    train = rng.standard_t(3, size=(300, 4)) * [1.0, 10.0, 100.0, 0.1]  # heavy tails, columns of unlike spread
    train[250:] = train[:50]
    new = np.concatenate([rng.normal(size=(30, 4)) * [3.0, 30.0, 300.0, 0.3], train[[0, 7]]])
    detector = AnomalyDetector(**TINY, k=3, random_state=2).fit(train)
    codes_only = clone(detector).set_params(input_neighbors=0).fit(train)  # the same seed: the same model
    assert detector.get_params()["input_neighbors"] == 1 and len(detector.score_center_) == 3
    scaled = detector.model_.preprocessing.apply  # median and IQR of the training split (tested with the scalings)

    def distances(x: np.ndarray) -> np.ndarray:
        gaps = np.linalg.norm(scaled(x)[:, None] - scaled(train)[None], axis=-1)
        for row, own in enumerate(np.argmin(gaps, axis=1)):
            if gaps[row, own] <= 1e-9:
                gaps[row, own] = np.inf
        return gaps.min(axis=1)

    assert len(detector.rows_) == 250 and detector.row_counts_.sum() == 300
    np.testing.assert_array_equal(distances(train[:50]), 0.0)  # each of the first 50 rows has a copy
    two = codes_only.score_samples  # minus the z-scores of the likelihood and the code distance
    rows_train = distances(train)
    low, median, high = np.percentile(rows_train, [25, 50, 75])
    np.testing.assert_allclose(detector.score_center_[2], median, rtol=1e-6)
    np.testing.assert_allclose(detector.score_scale_[2], high - low, rtol=1e-6)
    np.testing.assert_allclose(detector.score_center_[:2], codes_only.score_center_)
    for x in (train, new):
        expected = two(x) - (distances(x) - median) / (high - low)
        np.testing.assert_allclose(detector.score_samples(x), expected, rtol=1e-6, atol=1e-6)
        # score_terms: each term's z-score, summing to the score; the row term is the brute-force one
        terms = detector.score_terms(x)
        assert terms.shape == (len(x), 3)
        np.testing.assert_allclose(terms.sum(axis=1), -detector.score_samples(x), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(terms[:, 2], (distances(x) - median) / (high - low), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(terms[:, :2], codes_only.score_terms(x), rtol=1e-9, atol=1e-9)
    assert detector.term_names_ == ["likelihood", "code distance", "row distance"]
    alone = clone(detector).set_params(neighbors=0, input_neighbors=0).fit(train)
    assert alone.term_names_ == ["likelihood"]
    np.testing.assert_array_equal(alone.score_terms(new)[:, 0], -alone.score_samples(new))  # nats, as they are


def test_neighbours_of_a_large_training_set_are_a_seeded_sample(monkeypatch: pytest.MonkeyPatch,
                                                                no_figures: None) -> None:
    monkeypatch.setattr(estimators, "NEIGHBOR_ROWS", 100)  # 25,000 in use: the same path on a small table
    train = np.random.default_rng(2).normal(size=(400, 3))
    detector = AnomalyDetector(**TINY, k=3, random_state=0).fit(train)
    assert detector.code_counts_.sum() == 100 and len(detector.codes_) == 100
    again = AnomalyDetector(**TINY, k=3, random_state=0).fit(train)
    np.testing.assert_array_equal(again.codes_, detector.codes_)  # the same sample for the same seed
    assert np.isfinite(detector.score_samples(train)).all()
    np.testing.assert_allclose(np.mean(detector.predict(train) == -1), 0.1, atol=0.01)  # contamination
