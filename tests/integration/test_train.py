"""End-to-end training on tiny models: run directories, exact resume, non-finite losses, early stopping,
objectives, likelihoods, bad inputs, and the numbers ``evaluate`` reports."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vaekit.config import Config
from vaekit.errors import ConfigError, DataError, TrainingError
from vaekit.evaluation.report import evaluate
from vaekit.models.serialization import load
from vaekit.presets import get_preset

# ``vaekit.train`` the attribute is the function re-exported by the package; the module is needed to patch it.
from vaekit.training import loop as train_module
from vaekit.training.loop import train

ORIGINAL_LOSS = train_module.compute_loss
RUN_FILES = {"config.json", "metrics.jsonl", "loss_curve.png", "samples.png", "reconstructions.png",
             "best", "last", "state"}


def _same_weights(a: Path, b: Path) -> None:
    tensors_a, tensors_b = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert tensors_a.keys() == tensors_b.keys()
    different = [k for k in tensors_a if not torch.equal(tensors_a[k], tensors_b[k])]
    assert different == [], f"tensors differ: {different}"


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "train_time_s"} for line in lines]


class StepCounter:
    """Wraps ``vaekit.training.loop.compute_loss``: counts calls, and can poison or interrupt chosen steps."""

    def __init__(self, nan_steps=(), nan_from: int | None = None, interrupt_at: int | None = None):
        self.original = ORIGINAL_LOSS
        self.calls = 0
        self.nan_steps, self.nan_from, self.interrupt_at = set(nan_steps), nan_from, interrupt_at

    def __call__(self, model, x, y, config, step, kl_weight):
        if step == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls += 1
        terms = self.original(model, x, y, config, step, kl_weight)
        if step in self.nan_steps or (self.nan_from is not None and step >= self.nan_from):
            return dataclasses.replace(terms, loss=terms.loss * float("nan"))
        return terms


@pytest.fixture(scope="module")
def steps_per_epoch(tiny_config) -> int:
    """Updates per digits epoch at batch size 64 (1,500 examples, 10% held out)."""
    config = tiny_config()
    return math.ceil(1350 / config.train.batch_size)


# -- one finished run, shared by the tests that only read it --------------------------------------------------
@pytest.fixture(scope="module")
def finished(tiny_config, tmp_path_factory):
    config = tiny_config("train.epochs=3", "train.eval_k=5")
    out = tmp_path_factory.mktemp("runs") / "digits"
    return config, train(config, out, progress=False)


def test_run_dir_contents(finished):
    config, result = finished
    run = result.run_dir
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert Config.from_dict(json.loads((run / "config.json").read_text())) == config
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records == result.metrics
    for record in records:
        for key in ("train_loss", "val_elbo", "val_log_px_z", "val_kl", "val_nll", "lr", "kl_weight"):
            assert math.isfinite(record[key]), key
        assert record["val_elbo"] == pytest.approx(record["val_log_px_z"] - record["val_kl"], abs=1e-3)
        assert record["skipped_steps"] == 0
    assert records[-1]["val_elbo"] > records[0]["val_elbo"]  # it learns something even in 3 tiny epochs
    for name in ("loss_curve.png", "samples.png", "reconstructions.png"):
        with Image.open(run / name) as image:
            assert image.format == "PNG" and image.width > 8 and image.height > 8
    for sub in ("best", "last"):
        assert {p.name for p in (run / sub).iterdir()} == {"config.json", "model.safetensors", "metadata.json"}
    assert {p.name for p in (run / "state").iterdir()} == {"state.safetensors", "state.json"}
    assert result.model_dir == run / "best" and result.last_dir == run / "last"


def test_best_model_is_the_best_epoch_and_loads(finished):
    config, result = finished
    best = load(result.run_dir)
    metadata = best.metadata
    best_record = max(result.metrics, key=lambda r: r["val_elbo"])
    assert metadata["metrics"]["epoch"] == best_record["epoch"]
    assert metadata["training"]["config"] == config.to_dict()
    assert best.preprocessing is not None and best.preprocessing.shape == (1, 8, 8)
    assert all(torch.equal(v, result.model.state_dict()[k]) for k, v in best.state_dict().items())
    assert load(result.last_dir).metadata["metrics"]["epoch"] == 3


def test_existing_run_dir_without_resume_is_refused(finished, tiny_config):
    _, result = finished
    before = (result.run_dir / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_config(), result.run_dir)
    assert (result.run_dir / "metrics.jsonl").read_text() == before


def test_resume_into_empty_dir_is_refused(tmp_path, tiny_config):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no run"):
        train(tiny_config(), tmp_path / "empty", resume=True)
    with pytest.raises(ConfigError, match="no run"):
        train(tiny_config(), tmp_path / "missing", resume=True)


@pytest.mark.parametrize("override", ["model.latent_dim=4", "objective.beta=2", "train.lr=0.01",
                                      "train.batch_size=32", "data.binarize=static"])
def test_resume_with_a_different_config_is_refused(finished, tiny_config, override):
    config, result = finished
    changed = tiny_config("train.epochs=3", "train.eval_k=5", override)
    assert changed != config
    with pytest.raises(ConfigError, match=r"only train\.epochs may change"):
        train(changed, result.run_dir, resume=True)


def test_resume_of_a_finished_run_trains_nothing(finished, monkeypatch):
    config, result = finished
    counter = StepCounter()
    monkeypatch.setattr(train_module, "compute_loss", counter)
    again = train(config, result.run_dir, resume=True)
    assert counter.calls == 0
    assert again.metrics == result.metrics


# -- exact resume --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        (),
        # a warm-up short enough that train.max_warmup_fraction of either run length does not cut it
        ("data.binarize=dynamic", "objective.kl_warmup_steps=10", "train.optimizer=adamw",
         "train.weight_decay=0.01", "train.grad_clip=5", "train.eval_k=3"),
    ],
    ids=["plain", "dynamic-warmup-adamw-clip"],
)
def test_resume_after_fewer_epochs_is_bit_exact(tmp_path, tiny_config, monkeypatch, steps_per_epoch, extra):
    four = tiny_config("train.epochs=4", *extra)
    two = tiny_config("train.epochs=2", *extra)
    train(four, tmp_path / "a")
    train(two, tmp_path / "b")
    first_two = _records(tmp_path / "b")
    counter = StepCounter()
    monkeypatch.setattr(train_module, "compute_loss", counter)
    resumed = train(four, tmp_path / "b", resume=True)
    assert counter.calls == 2 * steps_per_epoch  # it continued; it did not start over
    _same_weights(tmp_path / "a" / "last", tmp_path / "b" / "last")
    _same_weights(tmp_path / "a" / "best", tmp_path / "b" / "best")
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    assert _records(tmp_path / "b")[:2] == first_two
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3, 4]
    saved = Config.from_dict(json.loads((tmp_path / "b" / "config.json").read_text()))
    assert dataclasses.replace(saved, train=four.train) == four  # only epochs may differ


def test_resume_after_an_interruption_mid_epoch_is_bit_exact(tmp_path, tiny_config, monkeypatch, steps_per_epoch):
    config = tiny_config(
        "train.epochs=4", "data.binarize=dynamic", "train.schedule=cosine", "objective.kl_warmup_steps=50",
    )
    reference = train(config, tmp_path / "a")
    assert reference.metrics[-1]["kl_weight"] == pytest.approx(1.0)
    lrs = [r["lr"] for r in reference.metrics]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-12)  # cosine reached 0

    interrupt = StepCounter(interrupt_at=2 * steps_per_epoch + 5)  # inside epoch 3
    monkeypatch.setattr(train_module, "compute_loss", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "b")
    assert len(_records(tmp_path / "b")) == 2
    assert load(tmp_path / "b" / "last").metadata["metrics"]["epoch"] == 2

    counter = StepCounter()
    monkeypatch.setattr(train_module, "compute_loss", counter)
    train(config, tmp_path / "b", resume=True)
    assert counter.calls == 2 * steps_per_epoch
    _same_weights(tmp_path / "a" / "last", tmp_path / "b" / "last")
    _same_weights(tmp_path / "a" / "best", tmp_path / "b" / "best")
    assert _records(tmp_path / "a") == _records(tmp_path / "b")


# -- non-finite losses ---------------------------------------------------------------------------------------
def test_a_few_nan_losses_are_skipped_and_counted(tmp_path, tiny_config, monkeypatch, steps_per_epoch):
    counter = StepCounter(nan_steps={3, 4, steps_per_epoch + 1})
    monkeypatch.setattr(train_module, "compute_loss", counter)
    result = train(tiny_config("train.max_bad_steps=3"), tmp_path / "run")
    assert result.skipped_steps == 3
    assert [r["skipped_steps"] for r in result.metrics] == [2, 3]
    assert [r["step"] for r in result.metrics] == [steps_per_epoch, 2 * steps_per_epoch]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_elbo"]) for r in result.metrics)
    assert all(bool(torch.isfinite(p).all()) for p in result.model.parameters())


def test_nan_forever_raises_and_keeps_the_last_good_model(tmp_path, tiny_config, monkeypatch, steps_per_epoch):
    counter = StepCounter(nan_from=steps_per_epoch + 2)  # epoch 1 is fine, epoch 2 goes bad
    monkeypatch.setattr(train_module, "compute_loss", counter)
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(tiny_config("train.epochs=3", "train.max_bad_steps=4"), out)
    message = str(info.value)
    assert str(out / "last") in message and "4 updates in a row" in message
    last = load(out / "last")
    assert last.metadata["metrics"]["epoch"] == 1
    assert all(bool(torch.isfinite(p).all()) for p in last.parameters())
    assert counter.calls == steps_per_epoch + 2 + 4


def test_nan_in_the_first_epoch_leaves_no_run_to_block_a_retry(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setattr(train_module, "compute_loss", StepCounter(nan_from=0))
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="no epoch had finished, so no model was saved"):
        train(tiny_config("train.epochs=2", "train.max_bad_steps=3"), out)
    assert not out.exists()
    monkeypatch.setattr(train_module, "compute_loss", ORIGINAL_LOSS)
    assert len(train(tiny_config("train.epochs=1"), out).metrics) == 1  # the same --out, a new config


def test_a_run_without_a_finite_validation_elbo_says_so(tmp_path, tiny_config, monkeypatch):
    original = train_module.validate

    def never_finite(*args, **kwargs):
        return {**original(*args, **kwargs), "val_elbo": float("nan")}

    monkeypatch.setattr(train_module, "validate", never_finite)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"no epoch reached a finite validation ELBO .* lower train.lr"):
        train(tiny_config("train.epochs=2"), out)
    assert not (out / "best").exists() and load(out / "last").metadata["metrics"]["epoch"] == 2


# -- early stopping ------------------------------------------------------------------------------------------
@pytest.fixture
def worsening_validation(monkeypatch):
    """Make every epoch's validation ELBO worse than the one before."""
    original = train_module.validate
    calls = []

    def fake(*args, **kwargs):
        record = original(*args, **kwargs)
        calls.append(record)
        return {**record, "val_elbo": -100.0 - len(calls)}

    monkeypatch.setattr(train_module, "validate", fake)
    return calls


def test_early_stopping(tmp_path, tiny_config, worsening_validation):
    result = train(tiny_config("train.epochs=5", "train.patience=2"), tmp_path / "run")
    assert result.stopped_early
    assert [r["epoch"] for r in result.metrics] == [1, 2, 3]
    assert load(result.run_dir).metadata["metrics"]["epoch"] == 1  # best stays the first epoch
    assert load(result.last_dir).metadata["metrics"]["epoch"] == 3
    before = load_file(result.last_dir / "model.safetensors")
    resumed = train(tiny_config("train.epochs=5", "train.patience=2"), tmp_path / "run", resume=True)
    assert resumed.stopped_early and [r["epoch"] for r in resumed.metrics] == [1, 2, 3]  # an ended run stays ended
    after = load_file(result.last_dir / "model.safetensors")
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_a_run_that_spent_its_time_budget_stays_ended_on_resume(tmp_path, tiny_config):
    config = tiny_config("train.epochs=100000", "train.time_budget_s=0.5", "train.schedule=constant")
    result = train(config, tmp_path / "run")  # ends by the clock
    before = load_file(result.last_dir / "model.safetensors")
    resumed = train(config, tmp_path / "run", resume=True)
    assert [r["step"] for r in resumed.metrics] == [r["step"] for r in result.metrics]  # not one more update
    after = load_file(result.last_dir / "model.safetensors")
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_no_early_stopping_during_kl_warmup(tmp_path, tiny_config, worsening_validation):
    config = tiny_config("train.epochs=4", "train.patience=1", "objective.kl_warmup_steps=100000",
                         "train.max_warmup_fraction=1")  # no cap: the warm-up outlasts the run
    result = train(config, tmp_path / "run")
    assert not result.stopped_early
    assert [r["epoch"] for r in result.metrics] == [1, 2, 3, 4]
    weights = [r["kl_weight"] for r in result.metrics]
    assert weights == sorted(weights) and weights[-1] < 0.01  # still warming up, linearly


# -- objectives and likelihoods ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        ("objective.name=iwae", "objective.k=3"),
        ("objective.free_bits=0.5",),
        ("objective.beta=4",),
        ("model.architecture=conv", "data.binarize=static"),
    ],
    ids=["iwae", "free-bits", "beta", "conv-static"],
)
def test_objectives_train(tmp_path, tiny_config, extra):
    result = train(tiny_config(*extra), tmp_path / "run")
    for record in result.metrics:
        assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))
    assert result.metrics[-1]["train_loss"] < result.metrics[0]["train_loss"] * 1.5
    assert dataclasses.replace(result.model.config, family="auto") == tiny_config(*extra).model
    assert result.model.config.family == result.model.family


def _real_table(path: Path, n: int = 240, d: int = 6) -> Path:
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(n, 2))
    x = latent @ rng.normal(size=(2, d)) * 3 + 10 + 0.1 * rng.normal(size=(n, d))
    np.save(path, x.astype(np.float32))
    return path


def test_gaussian_on_real_valued_table(tmp_path, tiny_config):
    source = _real_table(tmp_path / "table.npy")
    config = tiny_config(f"data.source={source}", "train.epochs=3", "train.batch_size=32",
                         base=get_preset("tabular"))
    assert config.model.likelihood == "gaussian"
    result = train(config, tmp_path / "run")
    assert result.model.data_shape == (6,)
    assert result.model.preprocessing.mean is not None  # standardized on the train split
    assert abs(np.mean(result.model.preprocessing.mean) - 10) < 3
    assert all(math.isfinite(r["val_elbo"]) for r in result.metrics)
    assert (result.run_dir / "samples.png").is_file()  # vectors still get pictures
    report = evaluate(result.run_dir, str(source), k=20)
    assert report.num_dims == 6 and math.isfinite(report.nll_nats)


def test_bernoulli_on_real_values_fails_before_training(tmp_path, tiny_config):
    source = _real_table(tmp_path / "table.npy")
    out = tmp_path / "run"
    with pytest.raises(DataError, match="gaussian"):
        train(tiny_config(f"data.source={source}"), out)
    assert not (out / "state").exists() and not (out / "last").exists()


def test_the_discretized_logistic_trains_on_8_bit_data_only(tmp_path, tiny_config):
    out = tmp_path / "run"  # digits are 0..16: not the 256 levels the likelihood's bins are
    with pytest.raises(DataError, match=r"models 8-bit data \(values k/255\), but 'digits' .* divisor of 16"):
        train(tiny_config("model.likelihood=discretized_logistic"), out)
    assert not out.exists()
    np.save(tmp_path / "pixels.npy", np.random.default_rng(0).integers(0, 256, (80, 1, 4, 4), dtype=np.uint8))
    result = train(tiny_config(f"data.source={tmp_path / 'pixels.npy'}", "model.likelihood=discretized_logistic",
                               "train.epochs=1", "model.architecture=mlp"), tmp_path / "pixels")
    assert len(result.metrics) == 1


# -- bad inputs ----------------------------------------------------------------------------------------------
def test_nan_in_data(tmp_path, tiny_config):
    x = np.random.default_rng(0).random((50, 5)).astype(np.float32)
    x[7, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(DataError, match="NaN"):
        train(tiny_config(f"data.source={tmp_path / 'nan.npy'}"), tmp_path / "run")


def test_empty_dataset(tmp_path, tiny_config):
    np.save(tmp_path / "empty.npy", np.zeros((0, 5), np.float32))
    with pytest.raises(DataError, match="0 examples"):
        train(tiny_config(f"data.source={tmp_path / 'empty.npy'}"), tmp_path / "run")


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("model.likelihood=poisson", "bernoulli, discretized_logistic, gaussian"),
        ("model.architecture=resnet", "conv, mlp"),
    ],
)
def test_unknown_component_lists_the_names(tmp_path, tiny_config, override, names):
    with pytest.raises(ConfigError, match=names):
        train(tiny_config(override), tmp_path / "run")


def test_a_failed_start_does_not_block_the_run_dir(tmp_path, tiny_config):
    """Errors found before training must not leave a half-made run that blocks retrying with the same out."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError):
        train(tiny_config("model.likelihood=poisson"), out)
    with pytest.raises(DataError):
        train(tiny_config(f"data.source={tmp_path / 'missing.npy'}"), out)
    with pytest.raises(DataError, match=r"span 0\.\.9, outside 0\.\.0"):  # found when the data meet the model
        train(tiny_config("model.num_classes=1"), out)
    assert not out.exists()
    result = train(tiny_config("train.epochs=1"), out)
    assert len(result.metrics) == 1


# -- evaluate ------------------------------------------------------------------------------------------------
def test_evaluate_reports_consistent_numbers(finished):
    _, result = finished
    report = evaluate(result.run_dir, k=200, seed=0)
    assert report.num_examples == 297 and report.num_dims == 64  # digits test split
    assert report.k == 200
    assert report.nll_nats <= -report.elbo + 0.05, (report.nll_nats, report.elbo)
    assert report.nll_nats > 0
    assert report.bits_per_dim == pytest.approx(report.nll_nats / (64 * math.log(2)), rel=1e-9)
    assert report.elbo_bits_per_dim == pytest.approx(-report.elbo / (64 * math.log(2)), rel=1e-9)
    assert report.elbo == pytest.approx(report.log_px_z - report.kl, abs=1e-3)
    assert 0 <= report.active_units <= report.latent_dim == 3
    assert len(report.kl_per_dim) == 3
    assert sum(report.kl_per_dim) == pytest.approx(report.kl, rel=1e-3)
    assert 0 <= report.recon_mse < 1
    again = evaluate(result.run_dir, k=200, seed=0)
    assert again.nll_nats == report.nll_nats  # seeded
    assert set(report.to_dict()) >= {"nll_nats", "bits_per_dim", "kl_per_dim", "active_units"}
    assert "NLL (IWAE, k=200)" in report.format_table()


def test_evaluate_tensor_input_and_k1(finished):
    _, result = finished
    model = load(result.run_dir)
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images[-40:].astype(np.float32) / 16).unsqueeze(1)
    report = evaluate(model, x, k=1, batch_size=16)
    assert report.num_examples == 40 and report.data == "tensor"
    assert math.isfinite(report.nll_nats)


def test_evaluate_on_data_of_another_shape(finished, tmp_path):
    _, result = finished
    np.save(tmp_path / "five.npy", np.random.default_rng(0).random((20, 5)).astype(np.float32))
    with pytest.raises(DataError, match="shape"):
        evaluate(result.run_dir, str(tmp_path / "five.npy"), k=5)
    with pytest.raises(DataError, match="shape"):
        evaluate(result.run_dir, torch.rand(4, 5), k=5)


def test_evaluate_rejects_bad_k(finished):
    _, result = finished
    with pytest.raises(ConfigError, match="k must be at least 1"):
        evaluate(result.run_dir, k=0)


def test_a_relative_data_path_is_recorded_as_absolute(tmp_path, monkeypatch, tiny_config):
    """Verbs read the model's own data from any folder: the run records where the data is, not how it was typed."""
    from vaekit.cli.main import main
    from vaekit.data import load_examples

    (tmp_path / "project").mkdir()
    np.save(tmp_path / "project" / "x.npy", np.random.default_rng(0).random((120, 6)).astype(np.float32))
    monkeypatch.chdir(tmp_path / "project")
    train(tiny_config("data.source=x.npy", "train.epochs=1", "model.likelihood=gaussian"), Path("run"))
    saved = json.loads((tmp_path / "project" / "run" / "config.json").read_text())
    assert saved["data"]["source"] == str(tmp_path / "project" / "x.npy")
    monkeypatch.chdir(tmp_path)
    model = load(tmp_path / "project" / "run")
    assert len(load_examples(model.preprocessing.source, model.preprocessing)) == 120
    assert main(["evaluate", str(tmp_path / "project" / "run"), "--k", "2", "--quiet"]) == 0
    assert main(["train", "--resume", "--out", str(tmp_path / "project" / "run"), "--epochs", "2", "--quiet"]) == 0
