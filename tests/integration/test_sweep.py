"""`vaekit sweep` / `vaekit.sweep`: trials that are ordinary runs, per-epoch pruning, results, kills and restarts,
workers, and bad input as one-line errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from safetensors.torch import load_file

from vaekit.cli import main
from vaekit.config import resolve_config
from vaekit.training import train
from vaekit.tuning import sweep

TINY = ["model.hidden_dims=[16]", "train.batch_size=64", "train.num_images=4", "train.device=cpu"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_on_epoch_hook_stops_a_run_and_resume_stays_exact(tiny_config, tmp_path):
    config = tiny_config("train.epochs=3")
    seen: list[int] = []
    stopped = train(config, tmp_path / "a", on_epoch=lambda r: seen.append(r["epoch"]) or r["epoch"] == 2)
    assert seen == [1, 2] and len(stopped.metrics) == 2
    resumed = train(config, tmp_path / "a", resume=True)
    whole = train(config, tmp_path / "b")
    assert [m["val_elbo"] for m in resumed.metrics] == [m["val_elbo"] for m in whole.metrics]
    a, b = load_file(str(tmp_path / "a/last/model.safetensors")), load_file(str(tmp_path / "b/last/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    config = resolve_config(overrides=[*TINY, "train.epochs=3"])
    result = sweep(config, ["model.latent_dim=int(2, 12, log)", "objective.beta=float(0.5, 2, log)"], trials=4,
                   out=out, eval_k=10, pruner="none")
    return result


def test_every_trial_is_a_run_whose_metric_is_its_best_epochs_validation_nll(small_sweep):
    result = small_sweep
    assert [r["state"] for r in result.rows] == ["complete"] * 4
    for row in result.rows:
        run = Path(row["run_dir"])
        config = json.loads((run / "config.json").read_text())
        assert config["model"]["latent_dim"] == row["model.latent_dim"]
        assert config["objective"]["beta"] == pytest.approx(row["objective.beta"])
        assert config["train"]["eval_k"] == 10 and config["train"]["eval_every"] == 1
        records = _metrics(run)
        best = max(records, key=lambda r: r["val_elbo"])
        assert row["value"] == pytest.approx(best["val_nll"])  # the model in best/ is the one judged
        assert (run / "best" / "model.safetensors").exists()
        assert len(row["kl_per_dim"]) == row["model.latent_dim"] and 0 <= row["active_units"] <= row["latent_dim"]
    values = [r["value"] for r in result.rows]
    assert result.summary["best"]["value"] == min(values)


def test_results_are_a_table_a_best_config_for_train_and_plots(small_sweep, tmp_path):
    result = small_sweep
    out = result.out
    lines = (out / "trials.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("trial,state,value,model.latent_dim,objective.beta")
    best = result.summary["best"]
    assert result.best_config is not None
    assert resolve_config(config_file=out / "best.yaml") == result.best_config
    assert result.best_config.model.latent_dim == best["params"]["model.latent_dim"]
    for name in ("metric_vs_model.latent_dim.png", "metric_vs_objective.beta.png", "latent_dim.png",
                 "importances.png"):
        assert (out / "plots" / name).stat().st_size > 1000, name
    assert set(result.summary["importances"]) == {"model.latent_dim", "objective.beta"}
    table = result.format_table()
    assert "validation NLL (IWAE, k=10), nats" in table and f"best: trial {best['trial']}" in table
    # the best config trains as it is
    assert main(["train", "--config", str(out / "best.yaml"), "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0


def test_a_finished_sweep_run_again_runs_nothing_more_and_more_trials_extend_it(small_sweep):
    out = small_sweep.out
    space = ["model.latent_dim=int(2, 12, log)", "objective.beta=float(0.5, 2, log)"]
    config = resolve_config(overrides=[*TINY, "train.epochs=3"])
    again = sweep(config, space, trials=4, out=out, eval_k=10, pruner="none")
    assert len(again.rows) == 4
    more = sweep(None, None, trials=5, out=out)  # no space: the study's own sweep
    assert [r["state"] for r in more.rows] == ["complete"] * 5
    drawn = [(r["model.latent_dim"], r["objective.beta"]) for r in more.rows]
    assert drawn[4] not in drawn[:4]  # continuing draws new points: the sampler is not replayed from its seed
    from vaekit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"holds another sweep .*objective\.beta"):
        sweep(config, [*space[:1], "objective.beta=float(0.5, 4, log)"], trials=5, out=out, eval_k=10, pruner="none")


def test_the_median_pruner_stops_trials_behind_the_median(tmp_path):
    config = resolve_config(overrides=[*TINY, "train.epochs=5", "model.latent_dim=4"])
    result = sweep(config, ["train.lr=float(1e-6, 3e-3, log)"], trials=7, out=tmp_path / "p", metric="val_elbo",
                   sampler="random", seed=3)
    study = result.study
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [r["train.lr"] for r in result.rows]
    for trial in pruned:
        step = max(trial.intermediate_values)
        earlier = [t.intermediate_values[step] for t in study.trials
                   if t.number < trial.number and step in t.intermediate_values
                   and t.state == optuna.trial.TrialState.COMPLETE]
        assert trial.intermediate_values[step] < np.median(earlier)  # maximize: below the median is behind
        assert len(_metrics(Path(trial.user_attrs["run_dir"]))) == step < 5  # the run stopped there
    pruning = result.summary["pruning"]
    assert pruning["pruned"] == len(pruned)
    assert pruning["epochs_not_run"] == sum(5 - max(t.intermediate_values) for t in pruned)


def _sweep_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vaekit", "sweep", "--out", str(out), "--space", "model.latent_dim=int(2, 8)",
            "--metric", "val_elbo", "--pruner", "none", *extra, *TINY]


def test_a_trial_whose_process_died_is_queued_again_and_resumes_its_run(tmp_path):
    """The recovery a kill needs, in one process: a running trial owned by a dead process of this host."""
    out = tmp_path / "d"
    config = resolve_config(overrides=[*TINY, "train.epochs=4"])
    space = ["model.latent_dim=int(2, 8)"]
    sweep(config, space, trials=1, out=out, metric="val_elbo", pruner="none")  # creates the study; trial 0 done
    study = optuna.load_study(study_name="vaekit", storage=f"sqlite:///{out / 'study.db'}")
    trial = study.ask({"model.latent_dim": optuna.distributions.IntDistribution(2, 8)})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    trial.set_user_attr("owner", {"host": os.uname().nodename, "pid": int(dead.stdout), "started": None})
    run = out / "trials" / f"trial-{trial.number:04d}"
    trial_config = resolve_config(config, overrides=[f"model.latent_dim={trial.params['model.latent_dim']}",
                                                     "train.eval_k=0"])
    train(trial_config, run, on_epoch=lambda record: record["epoch"] == 2)  # killed after epoch 2, say
    result = sweep(config, space, trials=2, out=out, metric="val_elbo", pruner="none")
    states = [r["state"] for r in result.rows]
    assert states == ["complete", "fail", "complete"], states
    assert result.rows[2]["resumes"] == 1 and result.rows[2]["run_dir"] == str(run)
    assert [r["epoch"] for r in _metrics(run)] == [1, 2, 3, 4]  # resumed after epoch 2, not restarted


@pytest.mark.slow
def test_a_killed_sweep_keeps_a_sound_database_and_resumes_the_killed_trial(tmp_path):
    out = tmp_path / "k"
    command = _sweep_command(out, "--trials", "1", "train.epochs=40")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = out / "trials" / "trial-0000" / "state" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if len(json.loads(state.read_text())["metrics"]) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(json.loads(state.read_text())["metrics"])  # metrics.jsonl may lag: the kill can fall between
    assert 2 <= killed_at < 40
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    restarted = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert "queued again" in restarted.stderr
    study = optuna.load_study(study_name="vaekit", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    retry = study.trials[1]
    assert retry.user_attrs["resumes"] == 0 and retry.params == study.trials[0].params
    records = _metrics(out / "trials" / "trial-0000")
    assert [r["epoch"] for r in records] == list(range(1, 41))  # the killed run went on, not restarted
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_worker_process_runs_trials_of_the_study_its_file_names(tmp_path):
    """What each of the N processes of --workers N runs (here in this process)."""
    from vaekit.tuning.study import write_spec_file
    from vaekit.tuning.sweeping import run_worker

    out = tmp_path / "w1"
    config = resolve_config(overrides=[*TINY, "train.epochs=1"])
    sweep(config, ["model.latent_dim=int(2, 8)"], trials=1, out=out, metric="val_elbo", pruner="none")
    spec_file = out / "sweep.json"
    write_spec_file(spec_file, {"storage": f"sqlite:///{out / 'study.db'}", "study": "vaekit", "trials": 3,
                                "out": str(out)})
    run_worker(spec_file, 1)
    study = optuna.load_study(study_name="vaekit", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert {t.user_attrs["owner"]["pid"] for t in study.trials} == {os.getpid()}
    assert (out / "trials" / "trial-0002" / "best").is_dir()


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    out = tmp_path / "w"
    config = resolve_config(overrides=[*TINY, "train.epochs=1"])
    result = sweep(config, ["model.latent_dim=int(2, 8)"], trials=3, out=out, workers=2, metric="val_elbo",
                   pruner="none")
    finished = [r for r in result.rows if r["state"] == "complete"]
    assert 3 <= len(finished) <= 4  # two workers starting together may run one more
    owners = {t.user_attrs["owner"]["pid"] for t in result.study.trials}
    assert len(owners) == 2 and os.getpid() not in owners
    assert (out / "sweep.json").exists() and (out / "best.yaml").exists()


def test_probe_and_auroc_metrics(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "anomalies.npz"
    rows = np.arange(300)
    np.savez(path, x=(digits.images[rows] / 16.0).astype(np.float32), y=(digits.target[rows] != 1).astype(int))
    config = resolve_config(overrides=[*TINY, "train.epochs=2"])
    probe = sweep(config, ["model.latent_dim=cat(2, 6)"], trials=2, out=tmp_path / "p", metric="probe",
                  sampler="grid")
    assert probe.direction == "maximize"
    assert all(0.2 < r["value"] <= 1.0 for r in probe.rows)  # 10 classes: chance is 0.1
    auroc = sweep(config, ["model.latent_dim=cat(2, 6)"], trials=2, out=tmp_path / "a", metric="auroc",
                  anomaly_data=str(path), eval_k=5, sampler="grid")
    assert all(0.0 <= r["value"] <= 1.0 for r in auroc.rows)


def _one_line_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("vaekit: error: ")]
    assert code == 2 and len(errors) == 1 and not any("Traceback" in line for line in err), err
    return errors[0]


@pytest.mark.parametrize(("argv", "named"), [
    (["--space", "model.latnt_dim=int(2, 8)"], "unknown config key 'model.latnt_dim'"),
    (["--space", "model.latent_dim=int(8, 2)"], "the range is empty"),
    (["--space", "model.latent_dim=float(2, 8)"], "is an integer, not a real number"),
    (["--space", "model.latent_dim=int(2, 8)", "--storage", "sqlite:////nonexistent/folder/s.db"],
     "cannot open the study storage"),
    (["--space", "model.latent_dim=int(2, 8)", "--storage", "nosuchdb://x"], "cannot open the study storage"),
    (["--space", "model.latent_dim=int(2, 8)", "--metric", "auroc"], "metric auroc needs labelled data"),
    (["--space", "model.latent_dim=int(2, 8)", "--sampler", "grid"], "sampler grid needs every searched key as cat"),
    (["--space", "model.num_classes=cat(0, 10)", "--metric", "probe"], "conditional model"),
    (["--trials", "3"], "holds no study"),
    (["--trials", "3", "--epochs", "5", "--sampler-seed", "7"], "drop --sampler-seed, --epochs (only --trials"),
    (["--trials", "3", "train.lr=0.1"], "drop key=value overrides"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, named):
    out = tmp_path / "bad"
    line = _one_line_error(capsys, "sweep", "--out", str(out), *argv, *(TINY if "--space" in argv else ()))
    assert named in line
    assert not out.exists() or argv == ["--trials", "3"]  # a study that is not there: only the empty folder


def test_probe_without_labels_is_refused(tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((200, 8)).astype(np.float32))
    line = _one_line_error(capsys, "sweep", "--data", str(data), "--space", "model.latent_dim=int(2, 4)",
                           "--metric", "probe", "--out", str(tmp_path / "o"), *TINY)
    assert "metric probe needs labelled data" in line


def test_the_yaml_form_of_a_sweep(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        "model: {hidden_dims: [16]}\n"
        "train: {epochs: 2, batch_size: 64, num_images: 4, device: cpu}\n"
        "sweep:\n"
        "  metric: val_elbo\n"
        "  trials: 2\n"
        "  pruner: none\n"
        "  space:\n"
        "    model.latent_dim: {type: int, low: 2, high: 8, log: true}\n"
        "    objective.beta: float(0.5, 2)\n"
    )
    assert main(["sweep", "--config", str(config), "--out", str(tmp_path / "y"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "validation ELBO, nats" in printed and "best config:" in printed
    summary = json.loads((tmp_path / "y" / "summary.json").read_text())
    assert summary["space"] == ["model.latent_dim=int(2, 8, log)", "objective.beta=float(0.5, 2)"]
    assert summary["trials"]["complete"] == 2
    config.write_text("sweep: {spaces: {}}\n")
    assert "unknown key sweep.spaces" in _one_line_error(capsys, "sweep", "--config", str(config))
