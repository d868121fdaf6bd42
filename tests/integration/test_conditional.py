"""Conditional generation end to end: train a conditional VAE on digits, then every verb with labels, from
Python and from the command line, and the bad-input cases (a label outside the trained classes, a label for
an unconditional model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from vaekit.cli.main import main
from vaekit.config import resolve_config
from vaekit.data import load_data, load_examples
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation import quality
from vaekit.evaluation.classifier import Classifier, ClassifierSettings, get_classifier
from vaekit.evaluation.quality import sample_quality
from vaekit.models.vae import VAE
from vaekit.presets import get_preset

TINY = ["--epochs", "2", "--quiet", "model.hidden_dims=[32]", "model.latent_dim=4", "train.num_images=10"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conditional model of the digits, trained through the CLI (labels come from the dataset)."""
    out = tmp_path_factory.mktemp("cvae") / "run"
    assert main(["train", "--out", str(out), *TINY, "model.num_classes=10"]) == 0
    return out


@pytest.fixture(scope="module")
def cvae(cvae_run: Path) -> VAE:
    return vaekit.load(cvae_run)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vae") / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


# -- sample ------------------------------------------------------------------------------------------------
def test_sample_a_chosen_class_from_the_cli(capsys: pytest.CaptureFixture[str], cvae_run: Path, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "sample", cvae_run, "--label", "3", "-n", "6", "--out", tmp_path / "threes.png")
    assert code == 0 and "6 samples of class 3" in out
    assert np.load(tmp_path / "threes.npy").shape == (6, 1, 8, 8)
    np.testing.assert_array_equal(np.load(tmp_path / "threes_labels.npy"), np.full(6, 3))


def test_sample_label_decides_the_class(cvae: VAE, tmp_path: Path) -> None:
    ones, twos = vaekit.sample(cvae, 4, seed=0, label=1), vaekit.sample(cvae, 4, seed=0, label=2)
    assert not np.allclose(ones, twos)  # same latents, other class
    np.testing.assert_array_equal(vaekit.sample(cvae, 4, seed=0, label=[1, 1, 1, 1]), ones)
    mixed = vaekit.sample(cvae, 4, seed=0, label=np.array([1, 2, 1, 2]))  # one label per sample
    np.testing.assert_array_equal(mixed[::2], ones[::2])
    np.testing.assert_array_equal(mixed[1::2], twos[1::2])
    # The Python verb and the model method agree on the decoder's use of the label.
    z = torch.randn(4, cvae.latent_dim, generator=torch.Generator().manual_seed(0))
    expected = cvae.decode(z, torch.full((4,), 1)).mean.detach().numpy()
    np.testing.assert_allclose(ones, expected, rtol=1e-6)


def test_sample_without_a_label_cycles_through_the_classes(cvae: VAE, tmp_path: Path) -> None:
    vaekit.sample(cvae, 23, out=tmp_path / "all.png")
    np.testing.assert_array_equal(np.load(tmp_path / "all_labels.npy"), np.arange(23) % 10)


@pytest.mark.parametrize("label", ["10", "-1"])
def test_label_outside_the_trained_classes(capsys: pytest.CaptureFixture[str], cvae_run: Path, label: str) -> None:
    code, _, err = run(capsys, "sample", cvae_run, "--label", label)
    assert_one_line_error(code, err, f"label {label} is outside the trained classes 0..9")
    for command in ("interpolate", "traverse"):
        code, _, err = run(capsys, command, cvae_run, "--label", label)
        assert_one_line_error(code, err, "outside the trained classes 0..9")


def test_label_for_an_unconditional_model(capsys: pytest.CaptureFixture[str], vae_run: Path) -> None:
    for command in ("sample", "interpolate", "traverse"):
        code, _, err = run(capsys, command, vae_run, "--label", "3")
        assert_one_line_error(code, err, "not conditional", "--label")
    with pytest.raises(ConfigError, match="not conditional"):
        vaekit.sample(vae_run, 2, label=3)
    with pytest.raises(ConfigError, match="not conditional"):
        vaekit.load(vae_run).sample(2, y=3)


def test_wrong_number_of_labels(cvae: VAE) -> None:
    with pytest.raises(DataError, match=r"shape \(4,\)"):
        vaekit.sample(cvae, 4, label=[1, 2])


# -- interpolate, traverse: a chosen class for decoding ---------------------------------------------------------
def test_interpolate_with_a_label(
    capsys: pytest.CaptureFixture[str], cvae_run: Path, cvae: VAE, tmp_path: Path
) -> None:
    sevens = vaekit.interpolate(cvae, index_a=0, index_b=5, steps=5, label=7)
    assert sevens.shape == (5, 1, 8, 8)
    labels = load_examples("digits", cvae.preprocessing).labels
    default = vaekit.interpolate(cvae, index_a=0, index_b=5, steps=5)  # decoded as example 0's class
    np.testing.assert_array_equal(
        default, vaekit.interpolate(cvae, index_a=0, index_b=5, steps=5, label=int(labels[0]))
    )
    assert not np.allclose(sevens, vaekit.interpolate(cvae, index_a=0, index_b=5, steps=5, label=(7 + 1) % 10))
    code, _, _ = run(capsys, "interpolate", cvae_run, "--label", "7", "--steps", "4", "--out", tmp_path / "i.png")
    assert code == 0 and (tmp_path / "i.png").is_file()


def test_traverse_with_a_label(capsys: pytest.CaptureFixture[str], cvae_run: Path, cvae: VAE, tmp_path: Path) -> None:
    grid = vaekit.traverse(cvae, dims=[0, 1], steps=3, label=2)  # from z = 0, drawn as a 2
    assert grid.shape == (2, 3, 1, 8, 8)
    from_example = vaekit.traverse(cvae, "digits", index=4, dims=[0], steps=3)  # that example's label
    assert from_example.shape == (1, 3, 1, 8, 8)
    with pytest.raises(DataError, match="--label"):
        vaekit.traverse(cvae, dims=[0], steps=3)  # z = 0 and no label: nothing says which class to draw
    code, _, _ = run(capsys, "traverse", cvae_run, "--label", "2", "--dims", "0,1", "--out", tmp_path / "t.png")
    assert code == 0 and (tmp_path / "t.png").is_file()


# -- reconstruct, embed: labels from the data ---------------------------------------------------------------
def test_reconstruct_and_embed_encode_with_the_data_labels(cvae: VAE, tmp_path: Path) -> None:
    examples = load_examples("digits", cvae.preprocessing)
    x, y = examples.batch(np.arange(6)), torch.as_tensor(examples.labels[:6])
    originals, reconstructions = vaekit.reconstruct(cvae, n=6, out=tmp_path / "r.png")
    np.testing.assert_array_equal(originals, x.numpy())
    np.testing.assert_allclose(reconstructions, cvae.reconstruct(x, y=y).numpy(), rtol=1e-5, atol=1e-6)
    mu, _ = vaekit.embed(cvae, out=tmp_path / "codes.npy")
    assert mu.shape == (len(examples), cvae.latent_dim)
    np.testing.assert_allclose(mu[:6], cvae.encode(x, y).mean.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_conditional_model_needs_labelled_data(cvae: VAE) -> None:
    from vaekit.data import ExampleSet
    from vaekit.models.inputs import data_labels

    unlabelled = ExampleSet(np.zeros((3, 8, 8), np.uint8), cvae.preprocessing)
    with pytest.raises(DataError, match="no labels"):
        data_labels(cvae, unlabelled, np.arange(3))


# -- the point of it: samples of the class asked for --------------------------------------------------------
@pytest.fixture(scope="module")
def fast_classifier(tmp_path_factory: pytest.TempPathFactory, cvae: VAE) -> Classifier:
    cache = tmp_path_factory.getbasetemp() / "classifier-cache"  # shared with tests/unit/test_quality.py
    return get_classifier("digits", cvae.preprocessing, cache_dir=cache, settings=ClassifierSettings(steps=300))


def test_conditional_samples_are_classified_as_the_requested_class(
    tmp_path: Path, fast_classifier: Classifier, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = resolve_config(
        get_preset("digits"), overrides=["model.num_classes=10", "train.epochs=20", "train.device=cpu"]
    )
    result = vaekit.train(config, tmp_path / "run")
    report = sample_quality(result.model, 200, classifier=fast_classifier, kid_subsets=5)
    assert report.conditional_accuracy is not None and report.conditional_accuracy >= 0.9, report.per_class_accuracy
    assert report.per_class_accuracy is not None and len(report.per_class_accuracy) == 10
    # The same figures through `vaekit evaluate --samples`, with the extractor named beside them.
    monkeypatch.setattr(quality, "get_classifier", lambda *a, **k: fast_classifier)
    code, out, _ = run(capsys, "evaluate", tmp_path / "run", "--k", "2", "--samples", "200", "--quiet")
    assert code == 0 and "class-conditional accuracy" in out and fast_classifier.name in out


def test_mnist_cvae_preset_is_conditional() -> None:
    config = get_preset("mnist-cvae")
    assert config.model.num_classes == 10 and config.data.source == "mnist"


def test_training_fits_the_latent_density_and_sample_draws_from_it(tmp_path: Path, capsys) -> None:
    """model.latent_density=1: when training ends, best/ holds one Gaussian per class, fitted to the training
    split's posterior means; `sample` draws from it by default and from the prior with --latents prior."""
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "model.num_classes=10", "model.latent_density=1"]) == 0
    model = vaekit.load(out)
    assert model.latent_density is not None and model.latent_density.is_fitted
    assert model.metadata["latent_density"]["gaussians_per_class"] == 1
    config = resolve_config(get_preset("digits"), overrides=["model.num_classes=10"])
    train = load_data(config.data).train  # the split training used (validation rows taken out)
    with torch.no_grad():
        mu = model.encode(train.tensor(), torch.as_tensor(train.labels)).mean
    assert model.metadata["latent_density"]["examples"] == len(train) == len(mu)
    labels = np.asarray(train.labels)
    for c in (0, 7):
        torch.testing.assert_close(model.latent_density.means[c], mu[labels == c].mean(0), atol=1e-4, rtol=1e-4)
    assert config.model.latent_density == 0  # the preset itself is unchanged
    code, stdout, _ = run(capsys, "sample", out, "--label", "7", "-n", "5", "--out", tmp_path / "fitted.png")
    assert code == 0 and "samples of class 7" in stdout
    run(capsys, "sample", out, "--label", "7", "-n", "5", "--latents", "prior", "--out", tmp_path / "prior.png")
    fitted, prior = np.load(tmp_path / "fitted.npy"), np.load(tmp_path / "prior.npy")
    np.testing.assert_array_equal(fitted, vaekit.sample(model, 5, label=7, latents="fitted"))
    np.testing.assert_array_equal(prior, vaekit.sample(model, 5, label=7, latents="prior"))
    assert not np.allclose(fitted, prior)
    run(capsys, "sample", out, "--label", "7", "-n", "5", "--draw", "--out", tmp_path / "drawn.png")
    drawn = np.load(tmp_path / "drawn.npy")  # draws of p(x|z) at the fitted latents: 0/1 pixels of this model
    np.testing.assert_array_equal(drawn, vaekit.sample(model, 5, label=7, draw=True))
    assert set(np.unique(drawn)) <= {0.0, 1.0} and not np.array_equal(drawn, fitted)


def test_latents_fitted_without_a_fitted_density_is_one_line(cvae_run: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "sample", cvae_run, "--latents", "fitted", "--out", tmp_path / "s.png")
    assert_one_line_error(code, err, "no fitted latent density", "--latents prior")
    assert not (tmp_path / "s.png").exists()


def test_an_fpr_threshold_of_a_conditional_model_scores_its_labelled_validation_split(cvae_run: Path) -> None:
    from vaekit.apps.scoring import anomaly_scores, quantile_threshold, score

    result = score(str(cvae_run), fpr=0.1, k=4)
    model = vaekit.load(cvae_run)
    val = load_data(resolve_config(get_preset("digits"), overrides=["model.num_classes=10"]).data).val
    x, y = val.tensor(), torch.as_tensor(val.labels)
    expected = quantile_threshold(anomaly_scores(model, x, "iwae", k=4, y=y).double().numpy(), 0.1)
    assert result.threshold == pytest.approx(expected, rel=1e-6)
    assert "validation split of digits" in result.threshold_rule
