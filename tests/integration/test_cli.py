"""The ``vaekit`` command line, run in-process through ``main([...])`` (plus one ``python -m vaekit``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.cli.main import main

TINY = ["--epochs", "2", "--quiet", "model.hidden_dims=[32]", "model.latent_dim=4", "train.num_images=8"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vaekit: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


# -- help, version, listing -------------------------------------------------------------------------------
def test_help_exits_zero_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "examples:" in out and "vaekit train" in out
    for command in (
        "train",
        "evaluate",
        "sample",
        "reconstruct",
        "interpolate",
        "traverse",
        "embed",
        "presets",
    ):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "examples:" in out and f"vaekit {command}" in out
    code, out, _ = run(capsys, "data", "download", "--help")
    assert code == 0 and "vaekit data download mnist" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from vaekit import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out


def test_presets_lists_digits(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "presets")
    assert code == 0
    assert any(line.startswith("digits ") for line in out.splitlines())


def test_python_m_vaekit_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vaekit", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "examples:" in result.stdout


# -- errors: one line, exit 2, no traceback ------------------------------------------------------------------
def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "fly")
    assert_one_line_error(code, err, "invalid choice", "'fly'")


def test_unknown_preset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "train", "--preset", "nope", "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "unknown preset 'nope'", "digits")


def test_unknown_config_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "r"), "train.nope=1")
    assert_one_line_error(code, err, "train.nope")


def test_resume_needs_out(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "--resume")
    assert_one_line_error(code, err, "--out")


def test_missing_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "sample", str(tmp_path / "nothing"), "--out", str(tmp_path / "s.png"))
    assert_one_line_error(code, err, "no model at")


def test_bad_sample_count(capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "sample", str(run_dir), "-n", "0", "--out", str(tmp_path / "s.png"))
    assert_one_line_error(code, err, "n must be at least 1")


def test_unwritable_out(capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run(capsys, "sample", str(run_dir), "--out", str(blocker / "s.png"))
    assert_one_line_error(code, err, "cannot write", "s.png")
    code, _, err = run(capsys, "train", "--out", str(blocker / "run"), *TINY)
    assert_one_line_error(code, err, "--out")


def test_bad_dims_is_usage_error(capsys: pytest.CaptureFixture[str], run_dir: Path) -> None:
    code, _, err = run(capsys, "traverse", str(run_dir), "--dims", "a,b")
    assert_one_line_error(code, err, "comma-separated integers")


# -- end to end on digits ---------------------------------------------------------------------------------
def test_chain_on_digits(capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    model = str(run_dir)
    assert (run_dir / "best" / "model.safetensors").is_file()

    code, out, _ = run(capsys, "evaluate", model, "--k", "5", "--json", str(tmp_path / "e.json"), "--quiet")
    assert code == 0 and "ELBO" in out
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["k"] == 5 and report["elbo"] < 0

    code, out, _ = run(
        capsys, "sample", model, "-n", "9", "--temperature", "0.8", "--out", str(tmp_path / "s.png")
    )
    assert code == 0 and "s.npy" in out
    assert np.load(tmp_path / "s.npy").shape == (9, 1, 8, 8)
    width, height = Image.open(tmp_path / "s.png").size  # a 3 x 3 grid of 34 px cells under a title line
    assert width >= 3 * 34 + 2 and height == 3 * 34 + 2 + 15

    code, _, _ = run(capsys, "reconstruct", model, "-n", "4", "--out", str(tmp_path / "r.png"))
    width, height = Image.open(tmp_path / "r.png").size  # originals over reconstructions, captioned at the left
    assert code == 0 and width > 4 * 34 + 2 and height == 2 * 34 + 2 + 15

    argv = ["--a", "1", "--b", "2", "--steps", "6", "--method", "spherical", "--out", str(tmp_path / "i.png")]
    code, _, _ = run(capsys, "interpolate", model, "--data", "digits", *argv)
    width, height = Image.open(tmp_path / "i.png").size  # a title and the end points' indices above the strip
    assert code == 0 and width >= 6 * 34 + 2 and height == 36 + 30

    code, out, _ = run(
        capsys, "traverse", model, "--dims", "0,3", "--steps", "5", "--out", str(tmp_path / "t.png")
    )
    assert code == 0 and "2 latent dimensions" in out
    width, height = Image.open(tmp_path / "t.png").size  # a title, the values above, the dimensions at the left
    assert width > 5 * 34 + 2 and height == 2 * 34 + 2 + 30

    code, _, _ = run(capsys, "embed", model, "--out", str(tmp_path / "codes.csv"))
    assert code == 0
    header = (tmp_path / "codes.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "mu_0" and "logvar_3" in header and header[-1] == "label"


def test_train_prints_summary_and_resumes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", "--out", str(out), "--seed", "3", *TINY)
    assert code == 0
    assert "run directory" in stdout and "best model" in stdout and "final val ELBO" in stdout
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 3
    code, _, err = run(capsys, "train", "--out", str(out), "--resume", "--seed", "4")
    assert_one_line_error(code, err, "only train.epochs may change")
    code, _, _ = run(capsys, "train", "--out", str(out), "--resume", "--epochs", "3", "--quiet")
    assert code == 0
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_train_default_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(
        capsys, "train", "--epochs", "1", "--quiet", "model.hidden_dims=[16]", "train.num_images=4"
    )
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("digits-") and (run_dir / "best").is_dir()


def test_overrides_may_follow_an_option(tmp_path):
    """`key=value` after an option belongs to the overrides (argparse alone ends the positional list there)."""
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "train.epochs=1", "--quiet", "model.latent_dim=2",
                 "model.hidden_dims=[8]"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["latent_dim"] == 2 and config["train"]["epochs"] == 1
    assert main(["evaluate", str(out), "train.epochs=1"]) == 2  # a command without overrides still refuses them


@pytest.mark.parametrize("nproc", ["0", "-2"])
def test_nproc_must_be_positive(tmp_path, capsys, nproc):
    assert main(["train", "--out", str(tmp_path / "run"), "--nproc", nproc, "--epochs", "1"]) == 2
    assert f"--nproc must be at least 1 (processes on this machine), got {nproc}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
