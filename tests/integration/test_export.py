"""ONNX export: the files run in onnxruntime and match PyTorch (max abs error <= 1e-4) at any batch size."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.cli.main import main
from vaekit.data import Preprocessing
from vaekit.errors import ConfigError, OutputError
from vaekit.models.vae import VAE
from vaekit.serving.onnx import DECODER_NAME, ENCODER_NAME, MANIFEST_NAME, ExportError, export

ort = pytest.importorskip("onnxruntime")
from vaekit.serving import onnx as export_module  # noqa: E402

TOLERANCE = 1e-4


def run_onnx(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def torch_outputs(model: VAE, x: torch.Tensor, z: torch.Tensor, names: list[str]) -> list[np.ndarray]:
    """What the ONNX files must reproduce, computed through the model contract."""
    with torch.no_grad():
        qz_x = model.encode(x)
        px_z = model.decode(z).base_dist  # type: ignore[attr-defined]
        decoded = [getattr(px_z, name).expand(len(z), *model.data_shape) for name in names]
    return [t.numpy() for t in (qz_x.mean, qz_x.variance.log(), *decoded)]


@pytest.mark.parametrize(
    ("architecture", "likelihood", "shape"),
    [
        ("mlp", "bernoulli", (1, 8, 8)),
        ("mlp", "gaussian", (5,)),
        ("conv", "bernoulli", (1, 8, 8)),
        ("conv", "gaussian", (3, 8, 6)),
    ],
)
def test_onnx_matches_pytorch_at_any_batch_size(
    tmp_path: Path, tiny_model: Callable[..., VAE], architecture: str, likelihood: str, shape: tuple[int, ...]
) -> None:
    model = tiny_model(shape=shape, architecture=architecture, likelihood=likelihood).eval()
    if likelihood == "gaussian":  # a learned, non-constant scale, so the scale output is really checked
        with torch.no_grad():
            model.likelihood.log_scale.uniform_(-1.0, 0.5)  # type: ignore[operator]
    out = export(model, tmp_path / "onnx")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    names = [o["name"] for o in manifest["decoder"]["outputs"]]
    assert names == {"bernoulli": ["logits", "probs"], "gaussian": ["loc", "scale"]}[likelihood]
    assert manifest["decoder"]["mean_output"] == names[{"bernoulli": 1, "gaussian": 0}[likelihood]]
    assert manifest["encoder"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", *shape]}]
    assert [o["shape"] for o in manifest["encoder"]["outputs"]] == [["batch", 3], ["batch", 3]]
    assert manifest["decoder"]["inputs"] == [{"name": "z", "dtype": "float32", "shape": ["batch", 3]}]
    assert all(o["shape"] == ["batch", *shape] and o["dtype"] == "float32" for o in manifest["decoder"]["outputs"])
    assert manifest["check"]["max_abs_error"] <= TOLERANCE

    generator = torch.Generator().manual_seed(1)
    for batch in (1, 7):  # the traced batch was 2: both must work
        x = torch.rand(batch, *shape, generator=generator)
        z = 2 * torch.randn(batch, 3, generator=generator)
        got = run_onnx(out / ENCODER_NAME, {"x": x.numpy()}) + run_onnx(out / DECODER_NAME, {"z": z.numpy()})
        expected = torch_outputs(model, x, z, names)
        for g, e in zip(got, expected, strict=True):
            assert g.shape == e.shape and g.dtype == np.float32
            assert np.abs(g - e).max() <= TOLERANCE


def test_manifest_preprocessing_and_replacing_an_earlier_export(tmp_path: Path, tiny_model: Callable[..., VAE]) -> None:
    model = tiny_model(shape=(4,), likelihood="gaussian")
    model.preprocessing = Preprocessing(
        shape=(4,), kind="real", scale=2.0, mean=(0.5, -1.0, 0.0, 3.0), std=(1.0, 2.0, 0.5, 4.0), source="t.csv"
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text("{}")  # an earlier export: replaced as a whole
    (out / "stale.onnx").write_text("old")
    manifest = json.loads((export(model, out, check=False) / MANIFEST_NAME).read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([ENCODER_NAME, DECODER_NAME, MANIFEST_NAME])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folders left beside it
    pre = manifest["preprocessing"]
    assert manifest["check"] is None and pre["kind"] == "real" and pre["features"] == 4
    raw = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32) * 10
    documented = (raw.reshape(6, -1) / pre["scale"] - np.asarray(pre["mean"])) / np.asarray(pre["std"])
    np.testing.assert_allclose(documented, model.preprocessing.apply(raw), rtol=1e-6, atol=1e-6)
    assert pre["scaling"] == "standard" and pre["formula"].startswith("x = ((raw")
    model.preprocessing = dataclasses.replace(model.preprocessing, scaling="asinh")  # heavy tails: asinh after
    pre = json.loads((export(model, out, check=False) / MANIFEST_NAME).read_text())["preprocessing"]
    assert pre["scaling"] == "asinh" and pre["formula"].startswith("x = arcsinh(")
    np.testing.assert_allclose(np.arcsinh(documented), model.preprocessing.apply(raw), rtol=1e-6, atol=1e-6)


def test_cli_export_of_a_trained_model(
    tmp_path: Path, tiny_config: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    from vaekit.training.loop import train

    run = train(tiny_config(), tmp_path / "run")  # type: ignore[arg-type]
    out = tmp_path / "exported"
    assert main(["export", str(run.run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {ENCODER_NAME}, {DECODER_NAME} and {MANIFEST_NAME}" in printed and "matches PyTorch" in printed
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["preprocessing"]["scale"] == 16.0 and manifest["data_shape"] == [1, 8, 8]
    assert manifest["check"]["max_abs_error"] <= TOLERANCE


def test_a_failed_export_leaves_the_previous_one_intact(
    tmp_path: Path, tiny_model: Callable[..., VAE], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "onnx"
    out.mkdir()
    (out / MANIFEST_NAME).write_text('{"previous": true}\n')

    def half_written(module: object, example: object, path: Path, *args: object) -> None:
        path.write_bytes(b"partial")

    monkeypatch.setattr(export_module, "_onnx_export", half_written)
    monkeypatch.setattr(export_module, "_check", lambda *args: 0.5)  # far above the tolerance
    with pytest.raises(ExportError, match=r"differ from PyTorch by up to 0\.5"):
        export(tiny_model(), out)
    assert json.loads((out / MANIFEST_NAME).read_text()) == {"previous": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_export_refuses_bad_targets_and_formats(tmp_path: Path, tiny_model: Callable[..., VAE]) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not an earlier export"):
        export(tiny_model(), precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="unknown export format 'tflite' \\(--format\\); choose one of: onnx"):
        export(tiny_model(), tmp_path / "x", format="tflite")
    with pytest.raises(ConfigError, match="conditional"):
        export(tiny_model(num_classes=3), tmp_path / "y")
    with pytest.raises(ConfigError, match="does not support the 'discretized_logistic' likelihood yet"):
        export(tiny_model(likelihood="discretized_logistic"), tmp_path / "z")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_cli_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaekit: error: no model at") and len(err.splitlines()) == 1
