"""The Python API as a user meets it: tensors of any dtype, the caller's RNG and thread count left alone, devices
checked when a model is loaded, labels that are classes, and a clear error where a path is read but a tensor came."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from vaekit.apps.scoring import anomaly_scores
from vaekit.errors import ConfigError, DataError
from vaekit.presets import get_preset


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api") / "cvae"
    config = vaekit.resolve_config(get_preset("digits"), overrides=[
        "train.epochs=1", "model.hidden_dims=[16]", "model.latent_dim=2", "model.num_classes=10", "train.num_images=4"])
    torch.set_num_threads(3)  # a count the run would not choose on its own
    vaekit.train(config, out, progress=False)
    return out


def test_training_gives_the_caller_its_thread_count_back(run: Path) -> None:
    assert torch.get_num_threads() == 3  # set before the run, which chose its own for this small model


def test_tensors_of_other_dtypes_are_converted(run: Path) -> None:
    model = vaekit.load(run)
    x = torch.rand(6, 1, 8, 8)
    y = list(range(6))
    reference = vaekit.evaluate(model, x, k=4, labels=y).nll_nats
    assert vaekit.evaluate(model, x.double(), k=4, labels=y).nll_nats == pytest.approx(reference, rel=1e-5)
    binary = x > 0.5
    assert torch.allclose(anomaly_scores(model, binary, k=3, y=torch.tensor(y)),
                          anomaly_scores(model, binary.float(), k=3, y=torch.tensor(y)))


def test_evaluate_leaves_the_callers_random_numbers_alone(run: Path) -> None:
    model = vaekit.load(run)
    torch.manual_seed(123)
    vaekit.evaluate(model, torch.rand(6, 1, 8, 8), k=2, labels=list(range(6)))
    after = torch.rand(3)
    torch.manual_seed(123)
    torch.rand(6, 1, 8, 8)  # what the caller drew itself
    assert torch.equal(after, torch.rand(3))


def test_devices_are_checked_when_loading(run: Path) -> None:
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        vaekit.load(run, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            vaekit.load(run, device="cuda")


def test_labels_are_whole_classes_in_any_container(run: Path) -> None:
    model = vaekit.load(run)
    with pytest.raises(DataError, match=r"labels must be whole class numbers in 0\.\.9"):
        vaekit.sample(model, 3, label=[0.5, 1.9, 2.2])
    with pytest.raises(DataError, match="labels must be whole class numbers"):
        vaekit.sample(model, 3, label=2.7)
    torch.manual_seed(0)
    a = model.sample(3, y=np.int64(3))
    torch.manual_seed(0)
    b = model.sample(3, y=[3, 3, 3])
    torch.manual_seed(0)
    assert torch.equal(a, b) and torch.equal(a, model.sample(3, y=3))


@pytest.mark.parametrize("call", [
    lambda m: vaekit.reconstruct(m, torch.zeros(3, 64)),
    lambda m: vaekit.embed(m, np.zeros((3, 64), np.float32)),
    lambda m: vaekit.score(m, torch.rand(4, 1, 8, 8), k=2),
])
def test_a_tensor_where_a_source_is_read_is_a_clear_error(run: Path, call) -> None:
    with pytest.raises(DataError, match=r"data must be a dataset name or a path, got (Tensor|ndarray)"):
        call(vaekit.load(run))


def test_arguments_of_the_wrong_kind_are_named(tmp_path: Path, tiny_model) -> None:
    with pytest.raises(ConfigError, match="data must be a DataBundle, got ndarray; build one from arrays"):
        vaekit.train(None, tmp_path / "r", data=np.zeros((4, 64), np.float32))
    with pytest.raises(ConfigError, match="config must be a vaekit Config, got str"):
        vaekit.train("digits", tmp_path / "r")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="data must be a numpy array, a dataset name or a path, got Tensor"):
        vaekit.compress(tiny_model(), torch.zeros(2, 1, 8, 8))  # an unconditional Bernoulli model
    assert not (tmp_path / "r").exists()

