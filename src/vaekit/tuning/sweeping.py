"""``sweep``: search configurations with Optuna, every trial an ordinary training run.

::

    sweep(config, space) ──> check the space, the metric and the data (before anything starts)
        ──> study in the storage (default sqlite:///OUT/study.db): new, or continued
        ──> recover trials a kill interrupted ──> workers: this process, or N processes (python -m
            vaekit.tuning.worker OUT/sweep.json I), each: until the study holds ``trials`` trials, ask Optuna for
            one and train it (vaekit.tuning.trials) ──> OUT/trials.csv, best.yaml, plots/ (vaekit.tuning.results)

Samplers: TPE (Optuna's default: the Tree-structured Parzen Estimator, Bergstra et al. 2011), random, or a grid
over ``cat`` keys. Pruners: ``median`` (stop a trial whose metric at an epoch is worse than the median of the
earlier trials at that epoch, after 4 trials and a tenth of the epochs), ``hyperband`` (Li et al. 2016,
arXiv:1603.06560) or ``none``. Only the per-epoch metrics ``val_nll`` and ``val_elbo`` are pruned on.

``trials`` counts the trials of the whole study, whichever process or machine ran them: finished, pruned and
failed (diverged) ones, and the ones running now. A restarted sweep therefore runs only what is missing, and a
second machine that joins shares the same total. Workers started together may run up to N - 1 trials more.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaekit.config import Config
from vaekit.errors import ConfigError, TrainingError
from vaekit.tuning import results
from vaekit.tuning.space import Param, parse_space
from vaekit.tuning.study import (
    SweepSpec,
    create_or_load,
    default_storage,
    open_storage,
    optuna_module,
    recover,
    shown_url,
    write_spec_file,
)
from vaekit.tuning.trials import DIRECTIONS, Objective, check_metric, load_anomaly_data, trial_config

logger = logging.getLogger(__name__)

METRICS = tuple(DIRECTIONS)
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random", "grid")
DEFAULT_STUDY = "vaekit"


@dataclass
class SweepResult:
    """What :func:`sweep` found (also written to ``out``: see :mod:`vaekit.tuning.results`).

    Attributes
    ----------
    out
        The sweep's folder.
    storage
        The study's storage URL (any password hidden).
    study_name
        The study's name in the storage.
    metric, direction
        What the trials were judged by, and whether lower or higher is better.
    params
        The searched keys.
    rows
        One dict per trial: ``trial``, ``state``, ``value``, the searched keys' values, ``active_units``,
        ``epochs_run``, ``seconds``, ``run_dir``, ...
    summary
        ``summary.json``: counts, the best trial, the pruner's saving, parameter importances.
    best_config
        The best trial's config (``None`` before a trial finishes); ``out/best.yaml`` holds it.
    study
        The Optuna study, for anything else (``study.trials_dataframe()``, Optuna's own plots).
    """

    out: Path
    storage: str
    study_name: str
    metric: str
    direction: str
    params: list[Param]
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    best_config: Config | None
    eval_k: int
    study: Any = field(repr=False, default=None)

    @property
    def best_yaml(self) -> Path | None:
        """``out/best.yaml``: ``vaekit train --config`` trains the best configuration again."""
        return self.out / "best.yaml" if self.best_config is not None else None

    def format_table(self) -> str:
        """The trials as a text table, then the best trial and what pruning saved."""
        lines = [results.format_table(self.rows, self.params, self.metric, self.eval_k)]
        best, pruning = self.summary["best"], self.summary["pruning"]
        if best:
            lines.append(f"best: trial {best['trial']}, {best['value']:.6g} ({self.direction}); run {best['run_dir']}")
        if pruning["pruned"]:
            saved = pruning["train_seconds_saved_estimate"]
            lines.append(f"pruned {pruning['pruned']} trials ({pruning['pruner']}): {pruning['epochs_not_run']} of "
                         f"{pruning['epochs_planned']} planned epochs not run"
                         + (f", about {saved:.0f} s of training saved" if saved is not None else ""))
        return "\n".join(lines)


def sweep(
    config: Config | None = None,
    space: Iterable[str] | Mapping[str, Any] | None = None,
    *,
    trials: int = 20,
    metric: str = "val_nll",
    out: str | Path | None = None,
    storage: str | None = None,
    study_name: str = DEFAULT_STUDY,
    workers: int = 1,
    pruner: str = "median",
    sampler: str = "tpe",
    seed: int = 0,
    eval_k: int = 100,
    anomaly_data: str | None = None,
) -> SweepResult:
    """Search the configurations of ``space`` around ``config`` with Optuna; each trial trains a model.

    Parameters
    ----------
    config
        The base configuration (default ``Config()``: the digits setup); the space's keys vary around it.
    space
        The searched keys: texts such as ``"model.latent_dim=int(2, 64, log)"``, ``"objective.beta=float(0.25, 8,
        log)"``, ``"model.architecture=cat(mlp, conv)"``, or the YAML mapping form (:mod:`vaekit.tuning.space`).
        ``None`` continues the study in ``storage`` as it was started.
    trials
        Trials in the whole study (all processes and machines together, the ones already run included).
    metric
        ``val_nll`` (the default), ``val_elbo``, ``probe`` or ``auroc``; see :mod:`vaekit.tuning.trials`.
    out
        The sweep's folder (default ``sweeps/vaekit-<time>``): ``trials/trial-NNNN`` run directories, the study
        database (unless ``storage`` is given) and the results.
    storage
        An SQLAlchemy database URL (default ``sqlite:///OUT/study.db``); machines that share one share the study.
    study_name
        The study's name in the storage.
    workers
        Processes running trials at once on this machine (each with one torch thread unless ``OMP_NUM_THREADS``
        says otherwise).
    pruner
        ``median``, ``hyperband`` or ``none``.
    sampler
        ``tpe``, ``random`` or ``grid`` (every key ``cat``).
    seed
        Seed of the sampler (worker i uses ``seed + i``); the trials' own seeds are ``train.seed``.
    eval_k
        Importance samples of the ``val_nll`` and ``auroc`` metrics.
    anomaly_data
        Labelled data of the ``auroc`` metric (a path or dataset name; label 0 normal, others anomalous).

    Returns
    -------
    SweepResult

    Raises
    ------
    ConfigError, DataError
        A bad space, metric, data, storage or argument, before any trial runs.
    """
    if trials < 1 or workers < 1 or eval_k < 1:
        raise ConfigError(f"trials, workers and eval_k must be at least 1, got {trials}, {workers}, {eval_k}")
    for name, value, valid in (("pruner", pruner, PRUNERS), ("sampler", sampler, SAMPLERS),
                               ("metric", metric, METRICS)):
        if value not in valid:
            raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(valid)}")
    out = Path(out) if out is not None else Path("sweeps") / time.strftime("vaekit-%Y%m%d-%H%M%S")
    given, objective = None, None
    if space is not None:  # the space, the metric and the data are checked before anything is written
        given = _spec(config or Config(), space, metric, eval_k, anomaly_data, pruner, sampler, seed)
        objective = _objective(given, parse_space(given.space, Config.from_dict(given.base)), out)
    store = open_storage(storage) if storage else None  # a storage given is checked before anything is written
    _make_folder(out)
    url = storage or default_storage(out)
    store = store or open_storage(url)
    study, spec = create_or_load(store, study_name, given, None if given is None else DIRECTIONS[given.metric])
    params = parse_space(spec.space, Config.from_dict(spec.base))
    if spec.sampler == "grid":
        trials = min(trials, _grid_size(params))
    objective = objective or _objective(spec, params, out)  # loads the data once for all trials
    queued = recover(study, store)
    if spec.sampler == "grid":
        enqueue_grid(study, params, trials)
    logger.info("sweep %r in %s: %d trials wanted, %d in the study%s", study_name, shown_url(url), trials,
                len(study.trials), f", {queued} interrupted trial(s) queued again" if queued else "")
    if workers == 1:
        run_trials(study, objective, trials)
    else:
        _launch_workers(out, url, study_name, trials, workers)
    summary = results.write_results(study, spec, params, out)
    best = summary["best"]
    best_config = Config.from_dict(study.best_trial.user_attrs["config"]) if best else None
    return SweepResult(
        out=out, storage=shown_url(url), study_name=study_name, metric=spec.metric, direction=DIRECTIONS[spec.metric],
        params=params, rows=results.trial_rows(study, params), summary=summary, best_config=best_config,
        eval_k=spec.eval_k, study=study,
    )


def _make_folder(out: Path) -> None:
    from vaekit.errors import OutputError

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the sweep folder {str(out)!r}: {exc.strerror}; choose another --out"
        ) from None


def _spec(config: Config, space: Iterable[str] | Mapping[str, Any], metric: str, eval_k: int,
          anomaly_data: str | None, pruner: str, sampler: str, seed: int) -> SweepSpec:
    base = trial_config(config, metric, eval_k)
    params = parse_space(space if isinstance(space, Mapping) else list(space), base)
    if sampler == "grid":
        _grid_size(params)
    if metric == "auroc" and anomaly_data:
        anomaly_data = str(Path(anomaly_data).resolve()) if Path(anomaly_data).exists() else anomaly_data
    return SweepSpec(base=base.to_dict(), space=tuple(p.describe() for p in params), metric=metric, eval_k=eval_k,
                     anomaly_data=anomaly_data if metric == "auroc" else None, pruner=pruner, sampler=sampler,
                     seed=seed)


def enqueue_grid(study: Any, params: list[Param], trials: int) -> int:
    """Queue the grid points the study does not hold yet, in grid order, until it holds ``trials`` (returns how many
    were queued). Workers then take queued trials one
    each from the database, so parallel workers never run a point twice and none is left out (Optuna's
    GridSampler alone, sampling in several processes at once, can draw one point twice)."""
    held = set()
    for trial in study.get_trials(deepcopy=False):
        fixed = trial.params or trial.system_attrs.get("fixed_params", {})
        held.add(tuple(sorted((k, repr(v)) for k, v in fixed.items())))
    added = 0
    for point in itertools.product(*(p.labels() for p in params)):
        if len(held) + added >= trials:
            break
        values = {p.key: value for p, value in zip(params, point, strict=True)}
        if tuple(sorted((k, repr(v)) for k, v in values.items())) not in held:
            study.enqueue_trial(values, skip_if_exists=False)
            added += 1
    return added


def _grid_size(params: list[Param]) -> int:
    if any(p.kind != "cat" for p in params):
        raise ConfigError("sampler grid needs every searched key as cat(...) (a list of values); use sampler tpe "
                          "or random for ranges")
    size = 1
    for param in params:
        size *= len(param.choices)
    return size


def _objective(spec: SweepSpec, params: list[Param], out: Path) -> Objective:
    """The trial function, with the base config's data loaded and the metric checked against it."""
    from vaekit.data import load_data

    base = Config.from_dict(spec.base)
    bundle = load_data(base.data)
    check_metric(spec.metric, base, bundle, params)
    anomalies = load_anomaly_data(spec.anomaly_data, bundle, base.data.data_dir) if spec.metric == "auroc" else None
    return Objective(base=base, params=params, metric=spec.metric, eval_k=spec.eval_k, out=out, bundle=bundle,
                     anomalies=anomalies)


def make_sampler(spec: SweepSpec, params: list[Param], worker: int, held: int = 0) -> Any:
    """The sampler of worker ``worker`` joining a study that holds ``held`` trials: seeded with ``spec.seed + worker
    + 1000 * held``, so a fresh sweep is reproducible and a continued one draws new points (the same seed would
    replay the random start-up draws of the first run)."""
    optuna = optuna_module()
    seed = spec.seed + worker + 1000 * held
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({p.key: p.labels() for p in params}, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: SweepSpec) -> Any:
    """The pruner: median (after 4 trials and a tenth of the epochs), hyperband over the epochs, or none."""
    optuna = optuna_module()
    epochs = int(spec.base["train"]["epochs"])
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=max(1, epochs // 10))
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _counts(study: Any) -> tuple[int, int]:
    """(trials that count towards the total, trials queued to run again)."""
    state = optuna_module().trial.TrialState
    counted = waiting = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (state.COMPLETE, state.PRUNED, state.RUNNING) or (
                trial.state == state.FAIL and "error" in trial.user_attrs):
            counted += 1
        elif trial.state == state.WAITING:
            waiting += 1
    return counted, waiting


def run_trials(study: Any, objective: Objective, trials: int, worker: int = 0) -> None:
    """Run trials in this process until the study holds ``trials`` of them and none is queued."""
    optuna = optuna_module()
    study.sampler = make_sampler(_study_spec(study), objective.params, worker, len(study.trials))
    study.pruner = make_pruner(_study_spec(study))
    ran: list[Any] = []  # the trials this process finished (another worker may have finished one since)
    callbacks = [lambda _, trial: ran.append(trial)]
    while True:
        counted, waiting = _counts(study)
        if counted >= trials and not waiting:
            return
        study.optimize(objective, n_trials=1, catch=(), callbacks=callbacks)
        last = ran[-1] if ran else None
        if last is not None and last.state == optuna.trial.TrialState.COMPLETE:
            logger.info("trial %d: %.6g%s", last.number, last.value, _params_text(last.params))
        elif last is not None and last.state == optuna.trial.TrialState.PRUNED:
            logger.info("trial %d: pruned after epoch %s%s", last.number, last.user_attrs.get("epochs_run"),
                        _params_text(last.params))


def _params_text(params: dict[str, Any]) -> str:
    return " (" + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) + ")"


def _study_spec(study: Any) -> SweepSpec:
    from vaekit.tuning.study import SPEC_ATTR

    return SweepSpec.from_dict(study.user_attrs[SPEC_ATTR])


def run_worker(spec_file: Path, index: int) -> None:
    """Worker ``index`` of a sweep started with several workers (``python -m vaekit.tuning.worker``)."""
    import json

    payload = json.loads(spec_file.read_text())
    store = open_storage(payload["storage"])
    study, spec = create_or_load(store, payload["study"], None, None)
    params = parse_space(spec.space, Config.from_dict(spec.base))
    run_trials(study, _objective(spec, params, Path(payload["out"])), int(payload["trials"]), worker=index)


def _launch_workers(out: Path, url: str, study_name: str, trials: int, workers: int) -> None:
    """Run ``workers`` worker processes on this machine and wait for them; each uses one torch thread unless
    ``OMP_NUM_THREADS`` is set."""
    spec_file = out / "sweep.json"
    write_spec_file(spec_file, {"storage": url, "study": study_name, "trials": trials, "out": str(out.resolve())})
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    processes = [
        subprocess.Popen([sys.executable, "-m", "vaekit.tuning.worker", str(spec_file), str(i)], env=env)
        for i in range(workers)
    ]
    codes = [p.wait() for p in processes]
    failed = [(i, code) for i, code in enumerate(codes) if code != 0]
    if failed:
        i, code = failed[0]
        raise TrainingError(f"sweep worker {i} of {workers} stopped with exit status {code} (its message is above); "
                            "the study keeps every finished trial: run the same command again to continue")
