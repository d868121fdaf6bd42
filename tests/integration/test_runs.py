"""What a kill, a Ctrl-C or a umask can do to a run directory, and the data location a model remembers.

The epoch commit (vaekit.training.checkpoints): best/, last/, then state/ (with the metrics records), then
metrics.jsonl. Kills in each window resume to the weights and records of an uninterrupted run.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit.cli import main
from vaekit.config import resolve_config
from vaekit.presets import get_preset
from vaekit.training import checkpoints
from vaekit.training import loop as train_module
from vaekit.training.loop import train

TINY = ["model.latent_dim=3", "model.hidden_dims=[16]", "train.batch_size=64", "train.num_images=4",
        "train.device=cpu"]


def _config(*extra: str):
    return resolve_config(get_preset("digits"), overrides=[*TINY, *extra])


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == []


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "train_time_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "full"
    train(_config("train.epochs=3"), run)
    return run


def test_kill_after_the_state_before_the_metrics(tmp_path, uninterrupted, monkeypatch, capsys):
    """Killed after state/ of epoch 2 is committed, before metrics.jsonl has its line: the record is not lost and
    the final validation ELBO printed is the run's own."""
    original = checkpoints.write_metrics

    def killed_at_epoch_2(out, metrics):
        if len(metrics) == 2:
            raise KeyboardInterrupt
        original(out, metrics)

    monkeypatch.setattr(checkpoints, "write_metrics", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(_config("train.epochs=3"), tmp_path / "run")
    assert len(_records(tmp_path / "run")) == 1  # the window: state/ says 2 epochs, metrics.jsonl 1
    monkeypatch.setattr(checkpoints, "write_metrics", original)
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert _records(tmp_path / "run") == _records(uninterrupted)
    final = _records(uninterrupted)[-1]["val_elbo"]
    assert f"final val ELBO: {final:.4f} nats" in out
    _assert_same_weights(tmp_path / "run" / "last", uninterrupted / "last")


def test_kill_between_the_renames_that_replace_the_state(tmp_path, uninterrupted, monkeypatch):
    """Killed between moving state/ aside and renaming the new one in: .state.old holds the previous complete
    state; the resumed run continues from it (not from epoch 1) and ends with the uninterrupted weights."""
    run = tmp_path / "run"
    train(_config("train.epochs=2"), run)
    (run / "state").rename(run / ".state.old")  # the first rename happened ...
    (run / ".state.abc123").mkdir()  # ... and the new state was written but never renamed in
    (run / ".state.abc123" / "state.json").write_text("{}")
    (run / ".last.def456").mkdir()  # a model directory being written at the moment of the kill
    calls = []
    original = train_module.compute_loss

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "compute_loss", counted)
    train(_config("train.epochs=3"), run, resume=True)
    assert len(calls) == 22  # one epoch of 1,350 examples at 64 per step: it did not start over
    _assert_same_weights(run / "last", uninterrupted / "last")
    assert _records(run) == _records(uninterrupted)
    leftovers = sorted(p.name for p in run.iterdir() if p.name.startswith("."))
    assert leftovers == []  # .state.old restored, the temporaries cleaned


def test_ctrl_c_says_how_to_resume_and_the_same_command_resumes(tmp_path, uninterrupted, monkeypatch, capsys):
    run = tmp_path / "run"
    command = ["train", "--out", str(run), "--epochs", "3", "--quiet", *TINY]
    original = train_module.compute_loss

    def interrupted(model, x, y, config, step, kl_weight):
        if step == 30:  # inside epoch 2
            raise KeyboardInterrupt
        return original(model, x, y, config, step, kl_weight)

    monkeypatch.setattr(train_module, "compute_loss", interrupted)
    assert main(command) == 130
    err = capsys.readouterr().err
    assert f"vaekit train --out {run} --resume" in err and "Traceback" not in err
    monkeypatch.setattr(train_module, "compute_loss", original)
    assert main([*command, "--resume"]) == 0  # the original command line, with --resume added
    _assert_same_weights(run / "last", uninterrupted / "last")
    changed = ["train", "--out", str(run), "--epochs", "3", "--resume", "--quiet", *TINY[:-1], "train.lr=0.01"]
    assert main(changed) == 2
    assert "train.lr was 0.001, now 0.01" in capsys.readouterr().err


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_respect_the_umask(tmp_path, umask, file_mode, dir_mode):
    """Files and folders get the permissions open() and mkdir() would give them, not mkstemp's private 0600."""
    old = os.umask(umask)
    try:
        assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet", *TINY]) == 0
        assert main(["sample", str(tmp_path / "run"), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    finally:
        os.umask(old)
    for path in [tmp_path / "run" / "metrics.jsonl", tmp_path / "run" / "samples.png", tmp_path / "s.png",
                 tmp_path / "s.npy", tmp_path / "run" / "best" / "model.safetensors",
                 tmp_path / "run" / "state" / "state.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path
    for path in [tmp_path / "run" / "best", tmp_path / "run" / "state"]:
        assert stat.S_IMODE(path.stat().st_mode) == dir_mode, path


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_a_model_remembers_where_its_data_came_from(tmp_path, monkeypatch, capsys):
    """After `train --data-dir D`, `evaluate RUN` reads D again (no --data-dir, no $VAEKIT_DATA); a missing folder's
    error names --data-dir."""
    folder = tmp_path / "my-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("t10k", 30)):
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    monkeypatch.delenv("VAEKIT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cache/vaekit/data to fall back on
    run = tmp_path / "run"
    assert main(["train", "--data", "mnist", "--data-dir", str(folder), "--out", str(run), "--epochs", "1",
                 "--quiet", *TINY]) == 0
    assert main(["evaluate", str(run), "--k", "2", "--quiet"]) == 0
    assert "mnist (30 examples" in capsys.readouterr().out
    assert main(["plot-latent", str(run), "--out", str(tmp_path / "latent.png")]) == 0
    folder.rename(tmp_path / "moved")
    assert main(["evaluate", str(run), "--k", "2", "--quiet"]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_a_binary_file_is_read_as_binary_by_a_model_of_8_bit_images(tmp_path):
    """0/1 data given to a model trained on uint8 pixels (divided by 255) are 0/1 images, not 0 and 1/255: the
    scores and the ELBO are those of the images themselves."""
    from sklearn.datasets import load_digits

    import vaekit

    pixels = (load_digits().images * 15).astype(np.uint8)  # (1797, 8, 8) 8-bit
    np.save(tmp_path / "pixels.npy", pixels)
    binary = (pixels[:200] > 100).astype(np.uint8)
    np.save(tmp_path / "binary.npy", binary)
    config = _config("train.epochs=2", f"data.source={tmp_path / 'pixels.npy'}", "data.binarize=dynamic")
    model = train(config, tmp_path / "run").model
    as_tensor = torch.from_numpy(binary.astype(np.float32)).unsqueeze(1)
    from_file = vaekit.evaluate(model, str(tmp_path / "binary.npy"), k=5)
    direct = vaekit.evaluate(model, as_tensor, k=5)
    assert from_file.elbo == pytest.approx(direct.elbo, rel=1e-6) and from_file.elbo < -10
    scores = vaekit.score(model, str(tmp_path / "binary.npy"), k=5).scores
    from vaekit.apps.scoring import anomaly_scores

    np.testing.assert_allclose(scores, anomaly_scores(model, as_tensor, k=5).double().numpy(), rtol=1e-6)


def test_a_resumed_run_computes_with_the_threads_it_started_with(tmp_path, monkeypatch):
    """The automatic thread count is chosen once and kept in the state: resumed on a busier machine, the run still
    sums with as many threads as before, so it ends bit for bit where an uninterrupted one would."""
    from vaekit import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "SMALL_STEP_FLOPS", 0.0)  # treat the tiny model as large: the free cores
    monkeypatch.setattr(threads, "free_cores", lambda: 2)
    train(_config("train.epochs=1"), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "state" / "state.json").read_text())["counters"]["threads"] == 2
    monkeypatch.setattr(threads, "free_cores", lambda: 1)  # busier now
    during: list[int] = []  # the count the resumed epoch computed with (the caller's is given back after the run)
    train(_config("train.epochs=2"), tmp_path / "run", resume=True,
          on_epoch=lambda record: during.append(torch.get_num_threads()) is not None)
    assert during == [2]
