"""Sample-quality metrics: FID, KID, precision/recall against closed forms and brute force, the feature-extractor
classifier and its cache, and the sanity ordering real halves << samples << noise on digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.config import resolve_config
from vaekit.data import Preprocessing, load_examples
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation import classifier as classifier_module
from vaekit.evaluation import quality as quality_module
from vaekit.evaluation.classifier import (
    CLASSIFIER_VERSION,
    Classifier,
    ClassifierSettings,
    cache_root,
    classifier_key,
    data_fingerprint,
    get_classifier,
    load_classifier,
    save_classifier,
)
from vaekit.evaluation.quality import (
    class_accuracy,
    fid,
    frechet_distance,
    kid,
    knn_radii,
    mmd2_unbiased,
    precision_recall,
    quality_rows,
    sample_quality,
)
from vaekit.models.vae import VAE
from vaekit.presets import get_preset
from vaekit.training.loop import train

DIGITS = Preprocessing(shape=(1, 8, 8), kind="unit", scale=16.0, source="digits")
FAST = ClassifierSettings(steps=300)  # a few seconds; ~90% test accuracy on digits


def random_cov(rng: np.random.Generator, dim: int, rank: int | None = None) -> np.ndarray:
    factor = rng.normal(size=(dim, rank or dim))
    return factor @ factor.T / dim


# -- FID --------------------------------------------------------------------------------------------------
def test_frechet_distance_of_identical_gaussians_is_zero() -> None:
    rng = np.random.default_rng(0)
    mu, cov = rng.normal(size=16), random_cov(rng, 16)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_diagonal_closed_form() -> None:
    # For diagonal covariances the product is diagonal: FD = |mu_a - mu_b|^2 + sum_i (s_a,i - s_b,i)^2.
    rng = np.random.default_rng(1)
    mu_a, mu_b = rng.normal(size=8), rng.normal(size=8)
    s_a, s_b = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.1, 3.0, size=8)
    expected = ((mu_a - mu_b) ** 2).sum() + ((s_a - s_b) ** 2).sum()
    assert frechet_distance(mu_a, np.diag(s_a**2), mu_b, np.diag(s_b**2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances() -> None:
    from scipy import linalg

    rng = np.random.default_rng(2)
    mu_a, mu_b = rng.normal(size=12), rng.normal(size=12)
    cov_a, cov_b = random_cov(rng, 12), random_cov(rng, 12)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_singular_covariances_is_finite_and_symmetric() -> None:
    rng = np.random.default_rng(3)
    cov_a, cov_b = random_cov(rng, 20, rank=5), random_cov(rng, 20, rank=7)  # fewer examples than features
    mu = np.zeros(20)
    forward, backward = frechet_distance(mu, cov_a, mu, cov_b), frechet_distance(mu, cov_b, mu, cov_a)
    assert math.isfinite(forward) and forward > 0
    assert forward == pytest.approx(backward, rel=1e-9)


def test_fid_of_a_shifted_copy_is_the_squared_shift() -> None:
    features = np.random.default_rng(4).normal(size=(500, 6))
    shift = np.array([1.0, -2.0, 0.0, 0.5, 0.0, 3.0])
    assert fid(features, features + shift) == pytest.approx((shift**2).sum(), rel=1e-9)


def test_fid_rejects_mismatched_or_bad_features() -> None:
    with pytest.raises(DataError, match="width"):
        fid(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(DataError, match="NaN"):
        fid(np.full((10, 3), np.nan), np.zeros((10, 3)))


# -- KID --------------------------------------------------------------------------------------------------
def test_mmd2_unbiased_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 3)), rng.normal(1.0, size=(9, 3))

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float((a @ b / 3 + 1) ** 3)

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / (7 * 9)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_near_zero_for_one_distribution_and_positive_for_two() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    same_mean, same_std = kid(a, b, subsets=20, subset_size=300)
    different, _ = kid(a, b + 0.5, subsets=20, subset_size=300)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert different > 10 * max(abs(same_mean), same_std)


# -- precision and recall ------------------------------------------------------------------------------------
def test_knn_radii_match_brute_force() -> None:
    x = np.random.default_rng(7).normal(size=(50, 4))
    distances = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_allclose(knn_radii(x, 3), np.sort(distances, axis=1)[:, 2], rtol=1e-9)


def test_precision_recall_identical_disjoint_and_mode_dropping() -> None:
    rng = np.random.default_rng(8)
    modes = np.concatenate([rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 20.0])
    assert precision_recall(modes, modes) == (1.0, 1.0)
    assert precision_recall(modes, modes + 1000.0) == (0.0, 0.0)
    one_mode = rng.normal(size=(200, 2))  # samples from one of the two modes: precise, half the recall
    precision, recall = precision_recall(modes, one_mode)
    assert precision > 0.95 and 0.4 < recall < 0.6


# -- the feature extractor -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def extractor_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One extractor cache for the session (tests/integration/test_conditional.py reuses the digits one)."""
    return tmp_path_factory.getbasetemp() / "classifier-cache"


@pytest.fixture(scope="session")
def digits_classifier(extractor_cache: Path) -> Classifier:
    return get_classifier("digits", DIGITS, cache_dir=extractor_cache, settings=FAST)


def test_classifier_is_accurate_and_documented(digits_classifier: Classifier) -> None:
    info = digits_classifier.info
    assert info["test_accuracy"] > 0.85 and info["test_examples"] == 297 and info["train_examples"] == 1500
    assert info["version"] == CLASSIFIER_VERSION and info["architecture"] == "conv"
    assert digits_classifier.name.startswith(f"vaekit-conv-v{CLASSIFIER_VERSION}/digits@")
    assert "test accuracy" in digits_classifier.describe()
    test = load_examples("digits", DIGITS, split="test")
    features = digits_classifier.features(test.tensor())
    assert features.shape == (297, 128) and features.dtype == np.float64
    accuracy, per_class = class_accuracy(digits_classifier, test.tensor(), test.labels)
    assert accuracy == pytest.approx(info["test_accuracy"]) and len(per_class) == 10


def test_classifier_cache_is_reused_and_survives_a_round_trip(
    digits_classifier: Classifier, extractor_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached extractor should have been loaded")

    monkeypatch.setattr(classifier_module, "fit_classifier", no_training)
    again = get_classifier("digits", DIGITS, cache_dir=extractor_cache, settings=FAST)
    x = torch.rand(5, 1, 8, 8)
    np.testing.assert_array_equal(again.features(x), digits_classifier.features(x))
    folder = next(extractor_cache.iterdir())
    assert {p.name for p in folder.iterdir()} == {"classifier.safetensors", "classifier.json"}
    assert json.loads((folder / "classifier.json").read_text())["key"] in folder.name
    copy = load_classifier(save_classifier(again, tmp_path / "copy"))
    np.testing.assert_array_equal(copy.features(x), again.features(x))


def test_classifier_key_depends_on_recipe_and_data() -> None:
    key = classifier_key("digits", DIGITS, FAST)
    assert key == classifier_key("digits", DIGITS, ClassifierSettings(steps=300))
    assert key != classifier_key("digits", DIGITS, ClassifierSettings(steps=301))
    assert key != classifier_key("mnist", DIGITS, FAST)
    assert key != classifier_key("digits", Preprocessing(shape=(1, 8, 8), kind="unit", scale=15.0), FAST)


def test_classifier_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path))
    assert cache_root() == tmp_path / "classifiers"
    assert cache_root(tmp_path / "x") == tmp_path / "x"


def test_corrupted_cache_is_retrained(extractor_cache: Path, tmp_path: Path) -> None:
    settings = ClassifierSettings(steps=20)
    first = get_classifier("digits", DIGITS, cache_dir=tmp_path, settings=settings)
    folder = next(tmp_path.iterdir())
    (folder / "classifier.safetensors").write_bytes(b"not safetensors")
    second = get_classifier("digits", DIGITS, cache_dir=tmp_path, settings=settings)
    x = torch.rand(4, 1, 8, 8)
    np.testing.assert_allclose(second.features(x), first.features(x))  # seeded: the same extractor again


def test_classifier_needs_labels_and_fitting_shapes(tmp_path: Path, digits_classifier: Classifier) -> None:
    path = tmp_path / "unlabelled.npy"
    np.save(path, np.random.default_rng(0).random((40, 5)).astype(np.float32))
    with pytest.raises(DataError, match="no labels"):
        get_classifier(str(path), Preprocessing(shape=(5,), kind="unit"), cache_dir=tmp_path, settings=FAST)
    with pytest.raises(DataError, match="do not fit the feature extractor"):
        digits_classifier.features(torch.rand(3, 1, 28, 28))


def test_classifier_of_a_labelled_table_holds_out_examples(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    x = (rng.normal(size=(300, 4)) + 3.0 * y[:, None]).astype(np.float32)  # separable classes
    np.savez(tmp_path / "table.npz", x=x, y=y)
    classifier = get_classifier(
        str(tmp_path / "table.npz"),
        Preprocessing(shape=(4,), kind="real"),
        cache_dir=tmp_path / "cache",
        settings=ClassifierSettings(steps=200),
    )
    assert classifier.architecture == "mlp"
    assert classifier.info["test_examples"] == 30 and classifier.info["test_accuracy"] > 0.9


# -- on a model -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_vae(tmp_path_factory: pytest.TempPathFactory) -> VAE:
    """The ``digits`` preset as it is (60 epochs, about 4 s on one CPU core): FID of its samples about 8 on
    the extractor of ``FAST``, real halves about 1.6, uniform noise about 28."""
    config = resolve_config(get_preset("digits"), overrides=["train.device=cpu", "train.num_images=4"])
    return train(config, tmp_path_factory.mktemp("quality") / "run").model


def test_sanity_real_halves_far_below_samples_far_below_noise(digits_vae: VAE, digits_classifier: Classifier) -> None:
    test = load_examples("digits", DIGITS, split="test").tensor()  # (297, 1, 8, 8)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    half_a, half_b = test[order[:148]], test[order[148:296]]
    samples = digits_vae.sample(148, generator=torch.Generator().manual_seed(0))
    noise = torch.rand(148, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    features = {
        name: digits_classifier.features(x)
        for name, x in {"a": half_a, "b": half_b, "samples": samples, "noise": noise}.items()
    }
    real = fid(features["b"], features["a"])
    model = fid(features["samples"], features["a"])
    random = fid(features["noise"], features["a"])
    assert real < 0.3 * model, (real, model, random)
    assert model < 0.5 * random, (real, model, random)
    assert real < 0.1 * random, (real, model, random)


def test_sample_quality_report_names_the_extractor(digits_vae: VAE, digits_classifier: Classifier) -> None:
    report = sample_quality(digits_vae, 148, classifier=digits_classifier, kid_subsets=5)
    assert report.extractor == digits_classifier.name and report.num_reference == 148
    assert report.conditional_accuracy is None
    for value in (report.fid, report.kid_mean, report.real_fid, report.precision, report.recall):
        assert math.isfinite(value)
    assert 0 <= report.precision <= 1 and 0 <= report.real_recall <= 1
    metric_rows = [value for name, value in quality_rows(report.to_dict()) if name != "feature extractor"]
    assert metric_rows and all(f"[{report.extractor}]" in value for value in metric_rows)
    assert "test accuracy" in report.format_table()


def test_random_halves_are_a_seeded_shuffle_of_the_test_split(digits_vae: VAE, digits_classifier: Classifier) -> None:
    # a split read in an order that makes its halves differ (FSDD: digits 0-4, then 5-9) needs shuffled halves
    report = sample_quality(digits_vae, 148, classifier=digits_classifier, kid_subsets=5, halves="random", seed=2)
    test = load_examples("digits", DIGITS, split="test").tensor()
    order = torch.as_tensor(np.random.default_rng(2 + 7).permutation(len(test)))
    a, b = (digits_classifier.features(test[i]) for i in (order[:148], order[148:296]))
    assert report.halves == "random" and report.real_fid == pytest.approx(fid(b, a), rel=1e-9)
    ordered = sample_quality(digits_vae, 148, classifier=digits_classifier, kid_subsets=5, seed=2)
    assert ordered.halves == "ordered"
    assert ordered.real_fid == pytest.approx(fid(digits_classifier.features(test[148:296]),
                                                 digits_classifier.features(test[:148])), rel=1e-9)
    assert "real halves (148 each, random)" in report.format_table()


def test_sample_quality_bad_arguments(digits_vae: VAE, digits_classifier: Classifier) -> None:
    with pytest.raises(ConfigError, match="n must exceed"):
        sample_quality(digits_vae, 3, classifier=digits_classifier)
    with pytest.raises(ConfigError, match="subsets"):
        sample_quality(digits_vae, 20, classifier=digits_classifier, kid_subsets=0)
    with pytest.raises(ConfigError, match="halves='first' is not one of ordered, random"):
        sample_quality(digits_vae, 20, classifier=digits_classifier, halves="first")


def test_evaluate_samples_adds_quality_to_the_report(
    digits_vae: VAE, digits_classifier: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaekit.evaluation.report import evaluate

    monkeypatch.setattr(
        quality_module, "get_classifier", lambda *a, **k: digits_classifier
    )
    report = evaluate(digits_vae, k=2, samples=100)
    assert report.sample_quality is not None and report.sample_quality["num_samples"] == 100
    table = report.format_table()
    assert "FID (100 samples)" in table and digits_classifier.name in table
    assert json.loads(json.dumps(report.to_dict()))["sample_quality"]["extractor"] == digits_classifier.name


def test_classifier_key_follows_the_data_not_its_place(tmp_path: Path) -> None:
    preprocessing = Preprocessing(shape=(5,), kind="unit")
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):  # the same files written twice: other paths and times, the same data
        (folder / "sub").mkdir(parents=True)
        (folder / "x.csv").write_text("1,2\n3,4\n")
        (folder / "sub" / "y.csv").write_text("5,6\n")
    key = classifier_key(str(first), preprocessing, FAST)
    assert key == classifier_key(str(second), preprocessing, FAST)
    (second / "sub" / "y.csv").rename(second / "y.csv")  # the same files, one moved within the folder
    assert key != classifier_key(str(second), preprocessing, FAST)
    (second / "y.csv").rename(second / "sub" / "y.csv")
    assert key == classifier_key(str(second), preprocessing, FAST)
    (second / "sub" / "y.csv").write_text("5,7\n")  # same size, other contents
    assert key != classifier_key(str(second), preprocessing, FAST)
    # over the size limit: names, sizes and modification times, not contents
    assert data_fingerprint(first, limit=1) != data_fingerprint(second, limit=1)
    assert data_fingerprint(first / "x.csv") == data_fingerprint(second / "x.csv")
    with pytest.raises(DataError, match="does not exist"):
        classifier_key(str(tmp_path / "missing"), preprocessing, FAST)
