"""A hierarchical VAE through the whole toolkit: training with EMA, gradient-norm skipping, DReG and schedules,
exact resume, ``--time-budget``, evaluation with per-layer KL, anomaly scores, compression and the presets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit.apps.scoring import anomaly_scores
from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.evaluation.report import evaluate
from vaekit.models import build_model
from vaekit.models.hierarchical import HierarchicalVAE
from vaekit.models.serialization import load
from vaekit.presets import get_preset
from vaekit.training.loop import train


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from vaekit.cli.main import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert all(fragment in lines[0] for fragment in fragments), err

from vaekit.training import loop as train_module  # noqa: E402

HVAE = ("model.latent_layers=[4, 2]", "model.hidden_dims=[16]", "model.weight_norm=true")


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "train_time_s"} for line in lines]


@pytest.fixture(scope="module")
def hvae_run(tiny_config, tmp_path_factory):
    config = tiny_config(*HVAE, "train.epochs=4", "train.ema=0.9", "train.warmup_steps=10",
                         "train.schedule=cosine", "train.eval_k=5", "objective.free_bits=0.1",
                         "objective.free_bits_per=layer")
    out = tmp_path_factory.mktemp("runs") / "hvae"
    return out, train(config, out, progress=False)


def test_hierarchical_training_improves_and_saves_the_ema_weights(hvae_run):
    out, result = hvae_run
    assert isinstance(result.model, HierarchicalVAE) and result.model.config.weight_norm
    elbos = [m["val_elbo"] for m in result.metrics]
    assert elbos[-1] > elbos[0] + 2  # it learns
    layers = [m["val_kl_per_layer"] for m in result.metrics]
    assert all(
        len(kl) == 2 and math.isclose(sum(kl), m["val_kl"], rel_tol=1e-4)
        for kl, m in zip(layers, result.metrics, strict=True)
    )
    state = load_file(str(out / "state" / "state.safetensors"))
    saved = load_file(str(out / "last" / "model.safetensors"))
    for name, value in saved.items():  # the model files hold the EMA weights, the state holds both
        assert torch.equal(value, state[f"ema.{name}"])
    assert any(not torch.equal(value, state[f"model.{name}"]) for name, value in saved.items())
    assert isinstance(load(out / "best"), HierarchicalVAE)


def test_evaluate_reports_kl_per_layer_and_chunks(hvae_run, capsys):
    out, _ = hvae_run
    report = evaluate(out / "best", k=30, chunk_size=7)
    assert len(report.kl_per_layer) == 2 and math.isclose(sum(report.kl_per_layer), report.kl, rel_tol=1e-4)
    assert report.chunk_size == 7 and report.k == 30 and report.nll_nats <= -report.elbo + 0.5
    code, text, _ = run(capsys, "evaluate", str(out), "--k", "20", "--chunk-size", "6", "--quiet")
    assert code == 0 and "KL per layer (top first)" in text and "k=20 in chunks of 6" in text
    code, _, err = run(capsys, "evaluate", str(out), "--k", "20", "--chunk-size", "0", "--quiet")
    assert_one_line_error(code, err, "chunk_size must be at least 1")


def test_anomaly_scores_and_compression_use_the_hierarchy_unchanged(hvae_run, tmp_path, capsys):
    out, result = hvae_run
    model = result.model
    from sklearn.datasets import load_digits

    x = torch.from_numpy((load_digits().images[:40] / 16.0).astype(np.float32)).unsqueeze(1)
    scores = anomaly_scores(model, x, "iwae", k=50)
    nll = -torch.stack([model.log_likelihood(x, k=50) for _ in range(10)]).mean(0)
    assert torch.allclose(scores, nll, rtol=0.05, atol=1.0)
    binary = (load_digits().images[:40] >= 8).astype(np.uint8)
    np.save(tmp_path / "bits.npy", binary)
    code, _, _ = run(capsys, "compress", str(out / "best"), str(tmp_path / "bits.npy"), "-o", str(tmp_path / "b.vkz"),
                     "--quiet")
    assert code == 0
    code, _, _ = run(capsys, "decompress", str(out / "best"), str(tmp_path / "b.vkz"), "-o",
                     str(tmp_path / "back.npy"), "--quiet")
    assert code == 0 and np.array_equal(np.load(tmp_path / "back.npy"), binary)
    code, _, err = run(capsys, "export", str(out / "best"), "--out", str(tmp_path / "onnx"))
    assert_one_line_error(code, err, "hierarchical")


@pytest.mark.parametrize(
    "extra",
    [("train.ema=0.8", "train.schedule=step", "train.warmup_steps=7"),
     ("objective.name=iwae", "objective.k=3", "objective.estimator=dreg", "train.ema=0.5")],
    ids=["ema-step", "dreg"],
)
def test_resume_of_a_hierarchical_run_is_bit_exact(tmp_path, tiny_config, monkeypatch, extra):
    """Interrupted inside epoch 3 and resumed, a run ends where an uninterrupted one does: EMA weights, the
    warm-up and the step decay (which depends on the run's total length) all replay exactly."""
    config = tiny_config(*HVAE, "train.epochs=4", *extra)
    train(config, tmp_path / "a")
    original, per_epoch = train_module.compute_loss, math.ceil(1350 / config.train.batch_size)

    def interrupted(model, x, y, cfg, step, kl_weight):
        if step == 2 * per_epoch + 5:
            raise KeyboardInterrupt
        return original(model, x, y, cfg, step, kl_weight)

    monkeypatch.setattr(train_module, "compute_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "b")
    assert len(_records(tmp_path / "b")) == 2
    monkeypatch.setattr(train_module, "compute_loss", original)
    train(config, tmp_path / "b", resume=True)
    for name in ("last", "best"):
        a = load_file(str(tmp_path / "a" / name / "model.safetensors"))
        b = load_file(str(tmp_path / "b" / name / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _records(tmp_path / "a") == _records(tmp_path / "b")


def test_updates_with_an_exploding_gradient_norm_are_skipped_and_counted(tmp_path, tiny_config):
    config = tiny_config(*HVAE, "train.epochs=1", "train.skip_grad_norm=1e-9", "train.max_bad_steps=1000")
    torch.manual_seed(config.train.seed)
    initial = build_model(config.model, (1, 8, 8)).state_dict()
    result = train(config, tmp_path / "run")
    steps = result.metrics[-1]["step"]
    assert result.skipped_grad_norm == steps == result.metrics[-1]["skipped_grad_norm"] and result.skipped_steps == 0
    assert all(torch.equal(initial[k], v) for k, v in result.model.state_dict().items())  # nothing moved


def test_training_options_are_checked(tmp_path, tiny_config):
    with pytest.raises(ConfigError, match=r"train\.ema"):
        train(tiny_config(*HVAE, "train.ema=1.5"), tmp_path / "a")
    with pytest.raises(ConfigError, match="skip_grad_norm"):
        train(tiny_config(*HVAE, "train.skip_grad_norm=-1"), tmp_path / "b")


def test_time_budget_flag_trains_until_the_budget_is_spent(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, _ = run(capsys, "train", "--time-budget", "2s", "--quiet", "--out", str(out), *HVAE,
                     "train.num_images=4")
    assert code == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["train_time_s"] >= 2.0 and len(metrics) < 1000
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["time_budget_s"] == 2.0 and saved["epochs"] == 1_000_000
    for bad, why in (("soon", "not a duration"), ("0", "must be positive"), ("-5m", "must be positive")):
        code, _, err = run(capsys, "train", f"--time-budget={bad}", "--out", str(tmp_path / "x"))
        assert code == 2 and why in err and "Traceback" not in err


@pytest.mark.parametrize(("preset", "layers"), [("binarized-mnist-hvae", [32, 64]), ("mnist8-hvae", [32, 64])])
def test_hierarchical_presets_build_and_take_a_step(preset, layers):
    config = get_preset(preset)
    assert config.train.time_budget_s == 3600 and config.train.ema > 0 and config.model.weight_norm
    model = build_model(config.model, (1, 28, 28))
    assert isinstance(model, HierarchicalVAE) and model.layer_sizes == layers
    x = torch.randint(0, 256, (4, 1, 28, 28)).float() / 255
    if config.model.likelihood == "bernoulli":
        x = torch.bernoulli(x)
    loss = train_module.compute_loss(model, x, None, config, step=0, kl_weight=0.0).loss
    loss.backward()
    assert math.isfinite(loss.item())


def test_a_flat_config_still_builds_a_flat_vae():
    model = build_model(ModelConfig(latent_dim=3, hidden_dims=(8,)), (5,))
    assert not isinstance(model, HierarchicalVAE)
