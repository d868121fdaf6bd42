"""Bad configurations and exhausted resources end in one line (exit 2, no traceback) or, where the input is legal
but suspicious, train with a warning; a full disk names the path and the cause and leaves nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vaekit.cli import main

TINY = ["model.latent_dim=3", "model.hidden_dims=[16]", "train.batch_size=64", "train.num_images=4",
        "train.device=cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "--out", str(run), "--epochs", "1", "--quiet", *TINY]) == 0
    return run


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vaekit: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("override", "named"),
    [("train.lr=nan", "train.lr"), ("train.lr=.nan", "train.lr"), ("train.lr=.inf", "train.lr"),
     ("train.epochs=0", "train.epochs"), ("objective.beta=.nan", "objective.beta")],
)
def test_bad_values_are_refused_before_training(tmp_path, capsys, override, named):
    message = _one_line_error(capsys, "train", "--out", str(tmp_path / "run"), *TINY, override)
    assert named in message
    assert not (tmp_path / "run").exists()


def test_a_model_too_big_for_memory_is_refused_with_the_figures(tmp_path, capsys):
    message = _one_line_error(capsys, "train", "--out", str(tmp_path / "run"), "model.hidden_dims=[200000,200000]")
    assert "of memory needed" in message and "available" in message and "model.hidden_dims" in message
    assert not (tmp_path / "run").exists()


def test_a_model_file_claiming_a_huge_model_is_refused(run_dir, tmp_path, capsys):
    for field, value in (("latent_dim", 10**10), ("data_shape", [100_000, 100_000, 100])):
        copy = tmp_path / field
        shutil.copytree(run_dir / "best", copy)
        config = json.loads((copy / "config.json").read_text())
        config[field] = value
        (copy / "config.json").write_text(json.dumps(config))
        message = _one_line_error(capsys, "evaluate", str(copy), "--k", "2")
        assert "of memory needed" in message and str(copy) in message


def test_impossible_samples_are_refused(run_dir, tmp_path, capsys):
    assert "TiB of memory needed" in _one_line_error(capsys, "sample", str(run_dir), "-n", "10000000000")
    out = tmp_path / "s.png"
    assert "positive finite number" in _one_line_error(capsys, "sample", str(run_dir), "--temperature", "inf",
                                                        "--out", str(out))
    assert not out.exists() and not out.with_suffix(".npy").exists()


def test_a_directory_as_the_json_report_is_an_output_error(run_dir, tmp_path, capsys):
    folder = tmp_path / "reports"
    folder.mkdir()
    message = _one_line_error(capsys, "evaluate", str(run_dir), "--k", "2", "--json", str(folder), "--quiet")
    assert str(folder) in message and "directory" in message


def test_examples_without_values_are_refused_before_the_run_directory(tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((40, 0), np.float32))
    message = _one_line_error(capsys, "train", "--data", str(tmp_path / "empty.npy"), "--out", str(tmp_path / "run"),
                              "--preset", "tabular")
    assert "no values" in message
    assert not (tmp_path / "run").exists()


def test_suspicious_tables_train_with_a_warning(tmp_path, caplog):
    table = tmp_path / "t.csv"
    rows = ["a,b,c", *(f"{i},{7},{1e30 * (1 + i % 3)}" for i in range(30))]
    table.write_text("\n".join(rows) + "\n")
    code = main(["train", "--preset", "tabular", "--data", str(table), "--out", str(tmp_path / "run"), "--epochs",
                 "1", "model.latent_dim=2", "model.hidden_dims=[8]", "train.num_images=4", "--quiet"])
    err = caplog.text
    assert code == 0
    assert "constant on the training split" in err  # column b
    assert "values around" in err  # 1e30
    assert "too few for a VAE" in err  # 27 training rows
    two = tmp_path / "two.csv"
    two.write_text("a,b\n1,2\n3,4\n")
    caplog.clear()
    assert main(["train", "--preset", "tabular", "--data", str(two), "--out", str(tmp_path / "two"), "--epochs", "1",
                 "model.latent_dim=2", "model.hidden_dims=[8]", "train.num_images=4", "--quiet"]) == 0
    assert "1 training examples" in caplog.text


FULL_DISK_COMMANDS = [
    ["train", "--out", "{disk}/run", "--epochs", "1", *TINY],
    ["sample", "{run}", "-n", "4000", "--out", "{disk}/s.png"],
    ["evaluate", "{run}", "--k", "2", "--json", "{disk}/report.json"],
    ["embed", "{run}", "--out", "{disk}/codes.csv"],
    ["score", "{run}", "--k", "2", "--out", "{disk}/scores.csv"],
    ["reconstruct", "{run}", "-n", "32", "--out", "{disk}/r.png"],
]


def _fill(disk: Path) -> None:
    """Fill the disk: whatever is written next fails with ENOSPC."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096) > 0:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("argv", FULL_DISK_COMMANDS, ids=lambda argv: argv[0])
def test_a_full_disk_gives_one_line_naming_the_path(run_dir, tmp_path, argv):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 1 MB tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        _fill(disk)
        before = {p.name for p in disk.iterdir()}
        command = [part.format(disk=disk, run=run_dir) for part in argv]
        done = subprocess.run([sys.executable, "-m", "vaekit", *command, "--quiet"], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, done.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("vaekit: error: cannot write"), done.stderr[-2000:]
        assert str(disk) in lines[0] and ("No space left" in lines[0] or "space" in lines[0])
        leftovers = {p.name for p in disk.iterdir()} - before
        assert all(not name.startswith(".") for name in leftovers), leftovers  # no temporary files left behind
    finally:
        subprocess.run(["umount", str(disk)], check=False)
