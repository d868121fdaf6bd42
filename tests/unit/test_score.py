"""Anomaly scores, thresholds and the ``score`` function (small models on the 8x8 digits)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from vaekit import objectives
from vaekit.apps.scoring import (
    SATURATED,
    SCORES,
    ScoreResult,
    anomaly_scores,
    check_rate,
    plot_score_histogram,
    quantile_threshold,
    score,
)
from vaekit.config import Config
from vaekit.data import Preprocessing
from vaekit.errors import ConfigError, DataError, OutputError
from vaekit.models.serialization import save_model
from vaekit.models.vae import VAE
from vaekit.training.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_config: Callable[..., Config]) -> VAE:
    """A small MLP trained on the digits for a few seconds, saved like `vaekit train` saves it."""
    config = tiny_config("train.epochs=6", "model.latent_dim=4", "model.hidden_dims=[64]")
    return train(config, tmp_path_factory.mktemp("score") / "run").model


@pytest.fixture(scope="module")
def trained_dir(trained: VAE, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(trained, tmp_path_factory.mktemp("model") / "model", trained.metadata)


# -- anomaly_scores -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["iwae", "elbo", "recon"])
def test_scores_do_not_depend_on_batching_or_other_examples(
    tiny_model: Callable[..., VAE], digits_x: torch.Tensor, method: str
) -> None:
    model = tiny_model()
    full = anomaly_scores(model, digits_x, method, k=7, batch_size=64)
    assert full.shape == (64,) and torch.isfinite(full).all()
    by_batches = anomaly_scores(model, digits_x, method, k=7, batch_size=5)
    reversed_order = anomaly_scores(model, digits_x.flip(0), method, k=7).flip(0)
    alone = anomaly_scores(model, digits_x[10:11], method, k=7)
    torch.testing.assert_close(by_batches, full, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(reversed_order, full, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(alone, full[10:11], rtol=1e-5, atol=1e-4)
    assert torch.equal(anomaly_scores(model, digits_x, method, k=7), full)  # reproducible


def test_seed_changes_the_draws_but_not_recon(tiny_model: Callable[..., VAE], digits_x: torch.Tensor) -> None:
    model = tiny_model()
    a = anomaly_scores(model, digits_x, "iwae", k=3, seed=0)
    b = anomaly_scores(model, digits_x, "iwae", k=3, seed=1)
    assert not torch.allclose(a, b)
    recon = anomaly_scores(model, digits_x, "recon", seed=0)
    assert torch.equal(anomaly_scores(model, digits_x, "recon", seed=1), recon)


def test_iwae_score_is_the_negated_bound_with_the_shared_draws(
    tiny_model: Callable[..., VAE], digits_x: torch.Tensor
) -> None:
    model = tiny_model().eval()
    x = digits_x[:6]
    k = 150  # more than one chunk of draws
    eps = torch.randn(k, model.latent_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        qz_x = model.encode(x)
        z = qz_x.mean + qz_x.stddev * eps[:, None, :]  # (k, 6, L)
        log_px_z = torch.stack([model.decode(z[i]).log_prob(x) for i in range(k)])  # (k, 6)
        log_w = log_px_z + model.prior().log_prob(z) - qz_x.log_prob(z)
    expected = -(torch.logsumexp(log_w, 0) - math.log(k))
    torch.testing.assert_close(anomaly_scores(model, x, "iwae", k=k, seed=4), expected, rtol=1e-5, atol=1e-4)
    # Jensen with the same draws: log mean w >= mean log w, so the IWAE score is at most the MC -ELBO.
    assert (expected <= -log_w.mean(0) + 1e-4).all()


def test_elbo_score_matches_the_objective_on_average(tiny_model: Callable[..., VAE], digits_x: torch.Tensor) -> None:
    model = tiny_model().eval()
    torch.manual_seed(0)
    with torch.no_grad():
        reference = -torch.stack([objectives.elbo(model, digits_x).elbo for _ in range(400)]).mean(0)
    ours = anomaly_scores(model, digits_x, "elbo", k=400)
    torch.testing.assert_close(ours, reference, rtol=0.0, atol=0.5)


def test_recon_score_is_the_squared_error_of_the_reconstruction(
    tiny_model: Callable[..., VAE], digits_x: torch.Tensor
) -> None:
    model = tiny_model()
    expected = ((model.reconstruct(digits_x) - digits_x) ** 2).sum((1, 2, 3))
    torch.testing.assert_close(anomaly_scores(model, digits_x, "recon"), expected)


def test_bits_per_dim_is_nats_over_d_ln2(tiny_model: Callable[..., VAE], digits_x: torch.Tensor) -> None:
    model = tiny_model()
    nats = anomaly_scores(model, digits_x, "elbo", k=3)
    bits = anomaly_scores(model, digits_x, "elbo", k=3, unit="bits")
    torch.testing.assert_close(bits, nats / (64 * math.log(2)))


def test_relative_scores_subtract_the_saturated_log_likelihood(
    tiny_model: Callable[..., VAE], digits_x: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_model()
    flat = digits_x.flatten(1).double()
    entropy = -(flat * flat.log().nan_to_num(0.0) + (1 - flat) * (1 - flat).log().nan_to_num(0.0)).sum(1)
    for method in ("iwae", "elbo"):
        plain = anomaly_scores(model, digits_x, method, k=5)
        relative = anomaly_scores(model, digits_x, method, k=5, relative=True)
        torch.testing.assert_close(relative.double(), plain.double() - entropy, rtol=0, atol=1e-3)
        assert (relative < plain).all()  # grey pixels carry entropy
    binary = (digits_x > 0.5).float()
    assert torch.equal(anomaly_scores(model, binary, relative=True, k=5), anomaly_scores(model, binary, k=5))
    gaussian = tiny_model(likelihood="gaussian", gaussian_scale=0.5)
    shift = anomaly_scores(gaussian, digits_x, k=5, relative=True) - anomaly_scores(gaussian, digits_x, k=5)
    expected = -64 * (math.log(0.5) + 0.5 * math.log(2 * math.pi))  # log N(x | x, 0.5) summed over 64 pixels
    torch.testing.assert_close(shift, torch.full((64,), expected), rtol=0, atol=1e-3)
    with pytest.raises(ConfigError, match="relative applies to the likelihood scores"):
        anomaly_scores(model, digits_x, "recon", relative=True)
    monkeypatch.delitem(SATURATED._items, "gaussian")
    with pytest.raises(ConfigError, match="saturated log-likelihood of the 'gaussian' likelihood, which vaekit knows"):
        anomaly_scores(gaussian, digits_x, relative=True)


def test_trained_model_scores_noise_as_anomalous(trained: VAE, digits_x: torch.Tensor) -> None:
    noise = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = torch.cat([digits_x, noise])
    is_anomaly = np.r_[np.zeros(64), np.ones(64)]
    for method in SCORES.names():
        scores = anomaly_scores(trained, x, method, k=20).numpy()
        assert roc_auc_score(is_anomaly, scores) > 0.95, method


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "lof"}, ConfigError, r"unknown anomaly score 'lof' \(--method\); choose one of: elbo, iwae, recon"),
        ({"unit": "bytes"}, ConfigError, "unknown score unit 'bytes'"),
        ({"method": "recon", "unit": "bits"}, ConfigError, "squared error, not a rate"),
        ({"k": 0}, ConfigError, "k must be at least 1, got 0"),
        ({"batch_size": 0}, ConfigError, "batch_size must be at least 1"),
    ],
)
def test_bad_score_arguments(
    tiny_model: Callable[..., VAE], digits_x: torch.Tensor, kwargs: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        anomaly_scores(tiny_model(), digits_x, **kwargs)


def test_data_of_another_shape_or_with_nan_is_a_data_error(
    tiny_model: Callable[..., VAE], digits_x: torch.Tensor
) -> None:
    with pytest.raises(DataError, match=r"shape \(1, 28, 28\) per example does not match the model's data shape"):
        anomaly_scores(tiny_model(), torch.rand(3, 1, 28, 28))
    x = digits_x.clone()
    x[3, 0, 2, 2] = float("nan")
    with pytest.raises(DataError, match="NaN or infinite"):
        anomaly_scores(tiny_model(), x)


# -- thresholds ---------------------------------------------------------------------------------------------
def test_quantile_threshold_flags_the_asked_fraction() -> None:
    scores = np.random.default_rng(0).normal(size=10_000)
    for rate in (0.01, 0.05, 0.2):
        assert (scores > quantile_threshold(scores, rate)).mean() == pytest.approx(rate, abs=1e-3)
    with pytest.raises(DataError, match="no examples to compute a threshold from"):
        quantile_threshold(np.zeros(0), 0.1)


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_rates_outside_their_range(value: float) -> None:
    with pytest.raises(ConfigError, match=r"fpr=.* is outside its range \(0, 1\)"):
        check_rate(value, "fpr")


def test_contamination_may_be_one_half_but_not_more() -> None:
    assert check_rate(0.5, "contamination", 0.5, include_upper=True) == 0.5
    with pytest.raises(ConfigError, match=r"contamination=0.6 is outside its range \(0, 0.5\]"):
        check_rate(0.6, "contamination", 0.5, include_upper=True)


# -- score(): the CLI-facing function -----------------------------------------------------------------------
def test_score_contamination_flags_that_fraction_and_writes_csv(trained_dir: Path, tmp_path: Path) -> None:
    result = score(trained_dir, k=10, contamination=0.1, out=tmp_path / "scores.csv")
    assert result.source == "digits" and len(result.scores) == 297  # the digits test split
    assert result.num_flagged == pytest.approx(30, abs=1)
    assert result.decisions is not None
    assert np.array_equal(result.decisions, (result.scores > result.threshold).astype(np.int8))
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0] == "index,label,score,decision" and len(lines) == 298
    index, label, value, decision = lines[5].split(",")
    assert int(index) == 4 and int(label) == result.labels[4]  # type: ignore[index]
    assert float(value) == result.scores[4] and int(decision) == result.decisions[4]


def test_score_fpr_on_the_validation_split(trained_dir: Path, tmp_path: Path) -> None:
    result = score(trained_dir, k=10, fpr=0.1, out=tmp_path / "scores.npy", histogram=tmp_path / "hist.png")
    assert "the validation split of digits" in result.threshold_rule and "150 held-out" in result.threshold_rule
    # Test digits are as normal as the validation digits: roughly fpr of them are flagged.
    assert 0.02 < result.num_flagged / len(result.scores) < 0.25
    records = np.load(tmp_path / "scores.npy", allow_pickle=False)
    assert records.dtype.names == ("index", "label", "score", "decision")
    assert np.array_equal(records["score"], result.scores) and np.array_equal(records["index"], np.arange(297))
    with Image.open(tmp_path / "hist.png") as image:
        assert image.size == (600, 400)


def test_score_fpr_calibrated_on_given_data_and_a_fixed_threshold(trained_dir: Path) -> None:
    calibrated = score(trained_dir, k=10, fpr=0.2, calibrate="digits")  # calibrated on the scored data itself
    assert calibrated.threshold_rule == "fpr=0.2 on 297 held-out normal examples of digits"
    assert calibrated.num_flagged == pytest.approx(0.2 * 297, abs=1)
    fixed = score(trained_dir, k=10, threshold=25.0)
    assert fixed.threshold == 25.0 and fixed.num_flagged == int((fixed.scores > 25.0).sum())
    assert fixed.labels is not None and fixed.threshold_rule == "threshold=25 (given)"
    plain = score(trained_dir, k=10)
    assert plain.decisions is None and plain.threshold is None and np.array_equal(plain.scores, fixed.scores)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"threshold": 1.0, "fpr": 0.1}, ConfigError, "give one of threshold, fpr, contamination, not threshold and"),
        ({"fpr": 1.2}, ConfigError, r"fpr=1.2 is outside its range \(0, 1\)"),
        ({"contamination": 0.0}, ConfigError, r"contamination=0.0 is outside its range \(0, 0.5\]"),
        ({"threshold": float("inf")}, ConfigError, "threshold=inf is outside its range"),
        ({"calibrate": "digits"}, ConfigError, "give fpr= too"),
        ({"out": "scores.txt"}, OutputError, r"use a file ending in .csv, .npy"),
        ({"histogram": "hist.jpg"}, OutputError, "must be a .png file"),
    ],
)
def test_score_bad_arguments(trained_dir: Path, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        score(trained_dir, k=2, **kwargs)


def test_score_data_of_another_shape(trained_dir: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "big.npy", np.random.rand(5, 28, 28).astype(np.float32))
    with pytest.raises(DataError, match=r"shape \(1, 28, 28\) but the model expects \(1, 8, 8\)"):
        score(trained_dir, str(tmp_path / "big.npy"))


def test_score_data_with_nan(trained_dir: Path, tmp_path: Path) -> None:
    x = np.random.rand(5, 8, 8).astype(np.float32)
    x[2, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(DataError, match=r"holds 1 NaN or infinite values \(first in example 2\)"):
        score(trained_dir, str(tmp_path / "nan.npy"))


def test_fpr_without_a_rebuildable_validation_split_asks_for_calibration_data(tmp_path: Path) -> None:
    model = VAE(Config().model, (1, 8, 8))
    model.preprocessing = Preprocessing(shape=(1, 8, 8), kind="unit", scale=16.0, source="digits")
    with pytest.raises(ConfigError, match="pass held-out normal data to calibrate the threshold on"):
        score(model, k=2, fpr=0.05)


def test_histogram_without_threshold(tmp_path: Path) -> None:
    result = ScoreResult(
        scores=np.random.default_rng(0).normal(size=100), labels=None, decisions=None, threshold=None,
        threshold_rule="none", method="recon", k=1, unit="nats", source="test",
    )
    assert plot_score_histogram(result, tmp_path / "h.png").is_file()
    assert result.to_records().dtype.names == ("index", "score")
