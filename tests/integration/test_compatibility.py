"""Files written by vaekit 0.1.0 (tests/fixtures/v0.1.0, made by its make.sh at that release) keep working: models
load with the outputs 0.1.0 computed, an interrupted run resumes to the weights of the uninterrupted one, and .vkz
files decompress to the original bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.datasets import load_digits

import vaekit
from vaekit.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v0.1.0"
MODELS = ("run-digits", "model-hvae", "model-cvae", "model-8bit")


@pytest.mark.parametrize("name", MODELS)
def test_models_load_with_the_outputs_they_had(name: str) -> None:
    reference = np.load(FIXTURES / "reference.npz")
    model = vaekit.load(FIXTURES / name).double()
    x = torch.from_numpy(load_digits().images[:4].astype(np.float32) / 16).unsqueeze(1).double()
    y = torch.arange(4) if name == "model-cvae" else None
    torch.manual_seed(0)
    z = torch.randn(4, model.latent_dim, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_array_equal(model.encode(x, y).mean.numpy(), reference[f"{name}.mu"])
        np.testing.assert_array_equal(model.decode(z, y).mean.numpy(), reference[f"{name}.decoded"])
    model_dir = FIXTURES / name / "best" if name.startswith("run") else FIXTURES / name
    assert "family" not in (model_dir / "config.json").read_text()  # 0.1.0 wrote none: the family is inferred
    assert model.family == ("hierarchical" if name == "model-hvae" else "vae")


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path: Path, monkeypatch) -> None:
    """Bit for bit, computing as 0.1.0 did: with torch's default of one thread per core of the 2-core machine that
    wrote the fixtures (sums split over another number of threads round differently)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run-digits", run)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "4", "--quiet"]) == 0
    resumed = load_file(str(run / "last" / "model.safetensors"))
    uninterrupted = load_file(str(FIXTURES / "model-digits-4-epochs" / "model.safetensors"))
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize(("model", "packed", "original"), [
    ("model-8bit", "digits8.vkz", "digits8.npy"),
    ("model-hvae", "binary.vkz", "binary.npy"),
])
def test_vkz_files_decompress_to_the_original_bytes(model: str, packed: str, original: str, tmp_path: Path) -> None:
    out = tmp_path / "restored.npy"
    assert main(["decompress", str(FIXTURES / model), str(FIXTURES / packed), "-o", str(out), "--quiet"]) == 0
    assert out.read_bytes() == (FIXTURES / original).read_bytes()
