"""The README's code runs as written, and its set-up commands are the ones CI uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vaekit.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (code,) = _blocks("python")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the documented example, unchanged
    report = namespace["report"]
    assert report.num_examples == 297 and report.k == 500  # digits test split, k as written
    assert report.nll_nats <= -report.elbo + 1.0  # IWAE with k=500 is at least the one-sample ELBO (MC slack)
    assert tuple(namespace["x"].shape) == (16, 1, 8, 8)
    assert (tmp_path / "runs" / "interp.png").is_file()
    assert (tmp_path / "runs" / "digits-example" / "best" / "model.safetensors").is_file()


def test_readme_setup_commands_are_what_ci_runs() -> None:
    bash = _blocks("bash")
    main_job, test_command = bash[0].strip(), bash[1].strip()
    assert main_job.endswith("vaekit train") and "pip install torch==2.13.0" in main_job
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci and "-c constraints-dev.txt" in test_command
    assert "python3 -m venv" in ci  # both commands run in fresh virtual environments
    assert main_job.replace("-e .", '-e "$repo"') in ci


def test_every_cli_command_in_readme_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = set(re.findall(r"^vaekit ([\w-]+)", README, flags=re.M))
    assert {"train", "evaluate", "sample", "reconstruct", "interpolate", "traverse", "embed"} <= commands
    for command in sorted(commands):
        assert main([command, "--help"]) == 0
        assert "usage: vaekit" in capsys.readouterr().out


def test_readme_sweep_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    section = README[README.index("## Choosing a model: `vaekit sweep`") :]
    (code,) = re.findall(r"```py\n(.*?)```", section[: section.index("\n## ", 3)], flags=re.S)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the documented example, unchanged
    result = namespace["result"]
    assert len(result.study.trials) >= 4 and (tmp_path / "sweeps" / "example" / "best.yaml").is_file()
