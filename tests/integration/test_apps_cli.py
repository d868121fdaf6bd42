"""``vaekit score``, ``vaekit plot-latent`` and ``vaekit probe`` from the command line, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.apps.latent_map import plot_latent
from vaekit.cli.main import main
from vaekit.config import ModelConfig
from vaekit.data import Preprocessing
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation.probing import probe
from vaekit.models.vae import VAE

TRAIN = ["--epochs", "5", "--quiet", "model.hidden_dims=[64]", "model.latent_dim=4", "train.num_images=4"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vaekit: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("apps") / "run"
    assert main(["train", "--out", str(out), *TRAIN]) == 0
    return out


def test_help_of_each_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("score", "plot-latent", "probe"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "examples:" in out and f"vaekit {command} " in out


def test_score_with_fpr_writes_csv_and_histogram(
    capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path
) -> None:
    csv, png = tmp_path / "scores.csv", tmp_path / "scores.png"
    code, out, _ = run(capsys, "score", str(run_dir), "--k", "20", "--fpr", "0.05", "--out", str(csv),
                       "--histogram", str(png), "--quiet")
    assert code == 0
    assert "scored 297 examples of digits: importance-weighted NLL (k=20), nats per example" in out
    assert "the validation split of digits" in out and f"wrote {csv}" in out
    rows = csv.read_text().splitlines()
    assert rows[0] == "index,label,score,decision" and len(rows) == 298
    decisions = np.array([int(r.split(",")[3]) for r in rows[1:]])
    assert set(np.unique(decisions)) <= {0, 1} and 0 < decisions.sum() < 60
    with Image.open(png) as image:
        assert image.format == "PNG"


def test_score_recon_contamination_to_npy(capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "scores.npy"
    code, out, _ = run(capsys, "score", str(run_dir), "--method", "recon", "--contamination", "0.1",
                       "--out", str(out_file), "--quiet")
    assert code == 0 and "reconstruction squared error" in out and "flagged 30 of 297" in out
    records = np.load(out_file, allow_pickle=False)
    assert records["decision"].sum() == 30 and (records["score"] >= 0).all()
    flagged = records["score"][records["decision"] == 1]
    assert flagged.min() > records["score"][records["decision"] == 0].max()  # the top 10% of the scores


def test_score_in_bits_per_dim_matches_nats(capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    for unit in ("nats", "bits"):
        assert run(capsys, "score", str(run_dir), "--method", "elbo", "--k", "5", "--unit", unit,
                   "--out", str(tmp_path / f"{unit}.npy"), "--quiet")[0] == 0
    nats, bits = (np.load(tmp_path / f"{unit}.npy")["score"] for unit in ("nats", "bits"))
    np.testing.assert_allclose(bits, nats / (64 * np.log(2)), rtol=1e-5)
    code, out, _ = run(capsys, "score", str(run_dir), "--method", "elbo", "--k", "5", "--relative",
                       "--out", str(tmp_path / "relative.npy"), "--quiet")
    assert code == 0 and "-ELBO (k=5) relative to the saturated model, nats per example" in out
    assert (np.load(tmp_path / "relative.npy")["score"] < nats).all()  # the digits' own entropy is removed


def test_score_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "mnist_like.npy", np.random.rand(4, 28, 28).astype(np.float32))
    nan = np.random.rand(4, 8, 8).astype(np.float32)
    nan[1, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    message = one_line_error(capsys, "score", str(run_dir), "--data", str(tmp_path / "mnist_like.npy"))
    assert "shape (1, 28, 28) but the model expects (1, 8, 8); the model was trained on other data" in message
    message = one_line_error(capsys, "score", str(run_dir), "--data", str(tmp_path / "nan.npy"))
    assert "holds 1 NaN or infinite values (first in example 1)" in message
    assert "fpr=1.5 is outside its range (0, 1)" in one_line_error(capsys, "score", str(run_dir), "--fpr", "1.5")
    message = one_line_error(capsys, "score", str(run_dir), "--contamination", "0.9")
    assert "contamination=0.9 is outside its range (0, 0.5]" in message
    message = one_line_error(capsys, "score", str(run_dir), "--fpr", "0.1", "--threshold", "3")
    assert "not allowed with argument" in message
    assert "choose one of: elbo, iwae, recon" in one_line_error(capsys, "score", str(run_dir), "--method", "lof")
    message = one_line_error(capsys, "score", str(run_dir), "--histogram", str(tmp_path / "h.jpg"))
    assert "must be a .png file; pass --histogram NAME.png" in message
    message = one_line_error(capsys, "score", str(run_dir), "--likelihood-only")
    assert "--likelihood-only (detector=False) is for a saved AnomalyDetector" in message
    message = one_line_error(capsys, "probe", str(run_dir), "--test-fraction", "1.5")  # digits: its own test split
    assert "test_fraction must be in (0, 1), got 1.5" in message


def test_plot_latent_and_probe(capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "latent.png"
    code, out, _ = run(capsys, "plot-latent", str(run_dir), "--out", str(png), "--max-points", "200")
    assert code == 0 and "wrote a map of 200 examples" in out
    with Image.open(png) as image:
        assert image.size == (700, 600)
    report_file = tmp_path / "probe.json"
    code, out, _ = run(capsys, "probe", str(run_dir), "--json", str(report_file), "--quiet")
    assert code == 0 and "vaekit latents" in out and "PCA" in out and "5-NN" in out
    report = json.loads(report_file.read_text())
    assert report["num_fit"] == 1500 and report["num_test"] == 297 and report["dims"] == 4
    assert report["latent_logistic"] > 0.5 and report["pca_logistic"] > 0.5  # chance is 0.1
    assert "must be a .png file" in one_line_error(capsys, "plot-latent", str(run_dir), "--out", "x.jpg")


def test_plot_latent_projections(run_dir: Path, tmp_path: Path) -> None:
    pca = plot_latent(run_dir, out=tmp_path / "pca.png")
    first = plot_latent(run_dir, projection="first", out=tmp_path / "first.png")
    assert pca.shape == first.shape == (297, 2)
    assert abs(np.corrcoef(pca[:, 0], pca[:, 1])[0, 1]) < 1e-6  # principal components are uncorrelated
    assert pca[:, 0].var() >= pca[:, 1].var()
    assert not np.allclose(np.abs(pca), np.abs(first))


def test_probe_on_a_labelled_file_uses_a_stratified_split(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    data = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, x=(data.data / 16).astype(np.float32), y=data.target)
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=5, hidden_dims=(16,)), (64,))  # untrained: only the protocol is tested
    model.preprocessing = Preprocessing(shape=(64,), kind="unit", source=str(path))
    report = probe(model, test_fraction=0.25, seed=1)
    assert (report.num_fit, report.num_test, report.dims) == (1347, 450, 5)
    assert report.split == f"a stratified random 75%/25% split of {path} (seed 1)"
    assert report.pca_logistic > 0.6 and report.pca_knn > 0.6  # 5 principal components of the digits
    np.savez(tmp_path / "unlabelled.npz", x=(data.data[:50] / 16).astype(np.float32))
    with pytest.raises(DataError, match="has no labels; probe needs labelled data"):
        probe(model, str(tmp_path / "unlabelled.npz"))
    conditional = VAE(ModelConfig(latent_dim=2, hidden_dims=(8,), num_classes=10), (64,))
    conditional.preprocessing = model.preprocessing
    with pytest.raises(ConfigError, match="this conditional model encodes x given its label"):
        probe(conditional)


def test_long_commands_show_progress_and_quiet_silences_them(run_dir: Path, tmp_path: Path, capsys) -> None:
    """score (both passes with --fpr), probe and plot-latent draw a progress bar on stderr; --quiet draws none."""
    for argv, bar in [
        (["score", str(run_dir), "--k", "3", "--fpr", "0.1"], "score (iwae, k=3)"),
        (["probe", str(run_dir)], "encode the test split"),
        (["plot-latent", str(run_dir), "--out", str(tmp_path / "latent.png")], "encode"),
    ]:
        code, _, err = run(capsys, *argv)
        assert code == 0 and bar in err, err
        code, _, err = run(capsys, *argv, "--quiet")
        assert code == 0 and err == ""
