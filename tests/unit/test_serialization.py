"""Model directories: exact contents, atomic writes, and clear errors for every way a directory can be broken."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import torch

import vaekit
from vaekit import files
from vaekit.data import Preprocessing
from vaekit.errors import ModelFileError, OutputError, VaeKitError
from vaekit.models.serialization import (
    CONFIG_NAME,
    FORMAT_VERSION,
    METADATA_NAME,
    WEIGHTS_NAME,
    find_model_dir,
    load,
    save_model,
)
from vaekit.models.vae import VAE


@pytest.fixture
def model(tiny_model) -> VAE:
    model = tiny_model(likelihood="gaussian")
    model.preprocessing = Preprocessing(shape=(1, 8, 8), kind="unit", scale=16.0, source="digits")
    return model


@pytest.fixture
def saved(model, tmp_path) -> Path:
    return save_model(model, tmp_path / "model", {"training": {"note": "unit test"}})


def test_model_dir_holds_exactly_three_files(saved):
    assert sorted(p.name for p in saved.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME, METADATA_NAME])
    config = json.loads((saved / CONFIG_NAME).read_text())
    assert config["data_shape"] == [1, 8, 8]
    assert config["likelihood"] == "gaussian" and config["hidden_dims"] == [16]
    metadata = json.loads((saved / METADATA_NAME).read_text())
    assert metadata["format_version"] == FORMAT_VERSION
    assert metadata["vaekit_version"] == vaekit.__version__
    assert metadata["preprocessing"]["scale"] == 16.0
    assert metadata["training"] == {"note": "unit test"}


def test_round_trip_restores_weights_preprocessing_and_metadata(model, saved):
    loaded = load(saved)
    assert loaded.config == model.config
    assert loaded.preprocessing == model.preprocessing
    assert loaded.metadata["training"] == {"note": "unit test"}
    assert not loaded.training  # loaded models are in eval mode
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_save_replaces_an_existing_model(model, tiny_model, saved):
    other = tiny_model(seed=5, likelihood="gaussian")
    save_model(other, saved)
    loaded = load(saved)
    assert torch.equal(loaded.encoder[1][0].weight, other.encoder[1][0].weight)
    assert not torch.equal(loaded.encoder[1][0].weight, model.encoder[1][0].weight)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model"]  # no temporary or .old dirs


def test_failed_save_leaves_old_model_and_no_temp_dirs(model, saved, tiny_model, monkeypatch):
    before = (saved / WEIGHTS_NAME).read_bytes()

    def broken_save_file(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken_save_file)
    with pytest.raises(RuntimeError, match="disk full"):
        save_model(tiny_model(seed=3, likelihood="gaussian"), saved)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model"]
    assert (saved / WEIGHTS_NAME).read_bytes() == before
    load(saved)


def test_run_dir_resolves_to_best_then_last(saved, tmp_path):
    run = tmp_path / "run"
    (run / "last").mkdir(parents=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME, METADATA_NAME):
        (run / "last" / name).write_bytes((saved / name).read_bytes())
    assert find_model_dir(run) == run / "last"
    os.rename(run / "last", run / "best")
    assert find_model_dir(run) == run / "best"
    assert find_model_dir(saved) == saved
    assert isinstance(load(run), VAE)


# -- broken directories --------------------------------------------------------------------------------------
def _load_error(path: Path) -> str:
    with pytest.raises(ModelFileError) as info:
        load(path)
    assert isinstance(info.value, VaeKitError) and isinstance(info.value, OSError)
    return str(info.value)


def test_missing_dir(tmp_path):
    message = _load_error(tmp_path / "nowhere")
    assert "does not exist" in message and "nowhere" in message


def test_dir_without_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "expected config.json and model.safetensors" in _load_error(tmp_path / "empty")


def test_missing_weights(saved):
    (saved / WEIGHTS_NAME).unlink()
    assert WEIGHTS_NAME in _load_error(saved)


def test_missing_metadata(saved):
    (saved / METADATA_NAME).unlink()
    message = _load_error(saved)
    assert METADATA_NAME in message and "missing" in message


def test_truncated_weights(saved):
    path = saved / WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _load_error(saved)
    assert "truncated or corrupted" in message and WEIGHTS_NAME in message


@pytest.mark.parametrize("size", [0, 7, 64, 5000])
def test_corrupted_weights(saved, size):
    (saved / WEIGHTS_NAME).write_bytes(os.urandom(size))
    assert "truncated or corrupted" in _load_error(saved)


def test_weights_that_do_not_match_the_config(saved, tiny_model, tmp_path):
    other = save_model(tiny_model(latent_dim=5), tmp_path / "other")
    (saved / WEIGHTS_NAME).write_bytes((other / WEIGHTS_NAME).read_bytes())
    assert "do not match its config.json" in _load_error(saved)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2, 3]", "expected a JSON object"),
        ("\udcff", "not valid JSON"),
    ],
)
def test_corrupted_config_json(saved, text, match):
    (saved / CONFIG_NAME).write_bytes(text.encode("utf-8", "surrogateescape"))
    message = _load_error(saved)
    assert match in message and CONFIG_NAME in message


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"data_shape": None}, "data_shape"),
        ({"data_shape": [1, -8, 8]}, "data_shape"),
        ({"latent_dim": "three"}, "model.latent_dim"),
        ({"architecture": "transformer"}, "conv, mlp"),
        ({"wings": 2}, "model.wings"),
    ],
)
def test_invalid_config_contents(saved, change, match):
    config = json.loads((saved / CONFIG_NAME).read_text())
    config.update(change)
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    assert match in _load_error(saved)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99, "1", None])
def test_future_or_invalid_format_version(saved, version):
    metadata = json.loads((saved / METADATA_NAME).read_text())
    metadata["format_version"] = version
    metadata["vaekit_version"] = "9.0.0"
    (saved / METADATA_NAME).write_text(json.dumps(metadata))
    message = _load_error(saved)
    assert "upgrade vaekit" in message and str(FORMAT_VERSION) in message


def test_output_under_a_regular_file_is_an_output_error(model, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError) as info:
        save_model(model, blocker / "model")
    assert "file.txt" in str(info.value)
    with pytest.raises(OutputError):
        files.atomic_write_text(blocker / "notes.txt", "x")
    assert blocker.read_text() == "not a directory"


def test_atomic_write_replaces_without_leftovers(tmp_path):
    target = tmp_path / "metrics.jsonl"
    files.atomic_write_text(target, "one\n")
    files.atomic_write_text(target, "two\n")
    assert target.read_text() == "two\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_nothing_in_the_package_unpickles():
    """Model and state files are safetensors + JSON: no pickle, no torch.load, no np.load(allow_pickle=True)."""
    source_root = Path(vaekit.__file__).parent
    pattern = re.compile(
        r"^\s*(import|from)\s+(c?pickle|dill|joblib|cloudpickle)\b|torch\.load\(|allow_pickle\s*=\s*True"
        r"|weights_only\s*=\s*False",
        re.MULTILINE,
    )
    files = sorted(source_root.rglob("*.py"))
    assert len(files) >= 10
    offenders = [f"{p.name}: {m.group(0)}" for p in files for m in pattern.finditer(p.read_text())]
    assert offenders == []


def test_files_and_their_directory_reach_the_disk_before_and_after_the_rename(tmp_path, monkeypatch) -> None:
    """A power cut cannot leave a renamed but empty file: the data is fsynced before the rename, the directory
    after it (and a directory's files before it is swapped in)."""
    events: list[str] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, Path.rename

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("replace")
        real_replace(src, dst)

    def rename(self, target):
        events.append("rename")
        return real_rename(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "rename", rename)
    files.atomic_write_text(tmp_path / "a.txt", "data")
    assert events == ["fsync-file", "replace", "fsync-dir"]
    events.clear()
    with files.atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "x.bin").write_bytes(b"1234")
    assert events.index("fsync-file") < events.index("rename") < len(events) - 1 and events[-1] == "fsync-dir"
