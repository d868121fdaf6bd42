"""The density fitted to the training codes (``model.latent_density``): the fit, its draws, where sampling takes
z from, saving and loading, and the families that refuse it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vaekit
from vaekit.errors import ConfigError, DataError
from vaekit.models import load, save_model
from vaekit.models.latent_density import REG_COVAR, FittedLatents, fit_latent_density


def _codes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Codes of three well-separated classes (N = 600, L = 3) with different covariances."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 200)
    centres = np.array([[4.0, 0.0, 0.0], [0.0, -4.0, 1.0], [-3.0, 3.0, -2.0]])
    mixing = rng.normal(size=(3, 3, 3)) * 0.5
    codes = centres[labels] + np.einsum("nij,nj->ni", mixing[labels], rng.normal(size=(600, 3)))
    return codes, labels


def test_one_gaussian_per_class_is_the_class_mean_and_covariance() -> None:
    codes, labels = _codes()
    density = FittedLatents(3, components=1, num_classes=3)
    assert not density.is_fitted
    density.fit(codes, labels)
    assert density.is_fitted
    for c in range(3):
        own = codes[labels == c]
        np.testing.assert_allclose(density.means[c].numpy(), own.mean(0), atol=1e-5)
        cov = (density.scale_tril[c] @ density.scale_tril[c].T).double().numpy()
        np.testing.assert_allclose(cov, np.cov(own.T, bias=True) + REG_COVAR * np.eye(3), atol=1e-5)
        assert int(density.classes[c]) == c and float(density.weights[c]) == pytest.approx(1.0)


def test_draws_follow_the_fitted_gaussian_of_the_asked_class_and_scale_with_temperature() -> None:
    codes, labels = _codes()
    density = FittedLatents(3, components=1, num_classes=3)
    density.fit(codes, labels)
    y = torch.full((20_000,), 2)
    z = density.draw(20_000, 1.0, torch.Generator().manual_seed(1), y).double().numpy()
    own = codes[labels == 2]
    np.testing.assert_allclose(z.mean(0), own.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(z.T), np.cov(own.T, bias=True), atol=0.08)
    # the same seed: the same components and noise, the spread about the mean halved at T = 0.5
    z1 = density.draw(50, 1.0, torch.Generator().manual_seed(3), y[:50])
    z_half = density.draw(50, 0.5, torch.Generator().manual_seed(3), y[:50])
    mean = density.means[2]
    torch.testing.assert_close(z_half - mean, 0.5 * (z1 - mean))
    with pytest.raises(ConfigError, match="pass a label"):
        density.draw(4)


def test_a_mixture_per_class_a_small_class_and_a_missing_one() -> None:
    codes, labels = _codes()
    keep = (labels != 1) | (np.arange(len(labels)) < 202)  # class 1 keeps 2 examples, fewer than 4 components
    codes, labels = codes[keep], labels[keep]
    labels[labels == 2] = 3  # class 2 never seen
    density = FittedLatents(3, components=4, num_classes=4)
    density.fit(codes, labels)
    weights = density.weights.view(4, 4)
    torch.testing.assert_close(weights.sum(1), torch.ones(4, dtype=weights.dtype))
    assert int((weights[1] > 0).sum()) == 2  # as many components as examples
    torch.testing.assert_close(density.means[8], torch.zeros(3))  # class 2: N(0, I)
    torch.testing.assert_close(density.scale_tril[8], torch.eye(3))
    z = density.draw(4000, 1.0, torch.Generator().manual_seed(0), torch.full((4000,), 2)).numpy()
    np.testing.assert_allclose(z.std(0), np.ones(3), atol=0.05)


def test_bad_codes_are_refused() -> None:
    density = FittedLatents(3, components=1, num_classes=2)
    with pytest.raises(DataError, match="shape"):
        density.fit(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(DataError, match="NaN"):
        density.fit(np.full((5, 3), np.nan), np.zeros(5))
    with pytest.raises(DataError, match="labels"):
        density.fit(np.zeros((5, 3)))


def test_sampling_takes_z_from_the_fitted_density_only_when_the_model_has_one(tiny_model, tmp_path) -> None:
    model = tiny_model(shape=(64,), num_classes=3, latent_density=1).eval()
    generator = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    prior = model.latent_prior.draw(6, 1.0, generator())
    # unfitted: auto is the prior, fitted is refused
    torch.testing.assert_close(model.sample_latents(6, 1.0, generator(), torch.zeros(6, dtype=torch.long), "auto"),
                               prior)
    with pytest.raises(ConfigError, match="no fitted latent density"):
        model.sample_latents(6, 1.0, generator(), None, "fitted")
    _, labels = _codes()
    x = torch.randn(600, 64)
    batches = [(x[i : i + 100], torch.as_tensor(labels[i : i + 100])) for i in range(0, 600, 100)]
    assert fit_latent_density(model, batches) == 600
    with torch.no_grad():
        mu = model.encode(x, torch.as_tensor(labels)).mean
    torch.testing.assert_close(model.latent_density.means[1], mu[labels == 1].mean(0), atol=1e-5, rtol=1e-5)
    y = torch.full((6,), 1)
    fitted = model.sample_latents(6, 1.0, generator(), y, "auto")
    torch.testing.assert_close(fitted, model.latent_density.draw(6, 1.0, generator(), y))
    torch.testing.assert_close(model.sample_latents(6, 1.0, generator(), y, "prior"), prior)
    with pytest.raises(ConfigError, match="latents must be one of"):
        model.sample_latents(6, 1.0, generator(), y, "posterior")
    # saved with the weights: the loaded model draws the same samples
    model.preprocessing = None
    save_model(model, tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert loaded.latent_density is not None and loaded.latent_density.is_fitted
    np.testing.assert_array_equal(vaekit.sample(loaded, 6, seed=2, label=1), vaekit.sample(model, 6, seed=2, label=1))


def test_a_model_without_the_setting_has_no_density_and_refuses_fitting(tiny_model) -> None:
    model = tiny_model(shape=(64,))
    assert model.latent_density is None
    with pytest.raises(ConfigError, match=r"without model\.latent_density"):
        fit_latent_density(model, [(torch.randn(4, 64), None)])


@pytest.mark.parametrize("fields", [{"latent_layers": (2, 2)}])
def test_other_families_refuse_it(tiny_model, fields) -> None:
    with pytest.raises(ConfigError, match=r"latent_density is for the vae family"):
        tiny_model(shape=(64,), latent_density=1, **fields)
