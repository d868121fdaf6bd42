"""One trial of a sweep: an ordinary training run in its own run directory, and the metric it is judged by.

::

    trial ──suggest──> values ──> config (base + values, checked) ──> RUN = OUT/trials/trial-<root>
          ──> vaekit.train(config, RUN, resume=RUN exists, on_epoch=report) ──> metric ──> Optuna
                                              │
                          every epoch: trial.report(metric, epoch); trial.should_prune() stops the run

Every number a trial is judged by comes from the *validation* split (the held-out part of the training data),
never from the test split, so a sweep can be followed by an honest test evaluation of the model it picked:

=============  ================================================================================  =========
metric         value (of the model in ``RUN/best/``, the epoch with the highest validation ELBO)  direction
=============  ================================================================================  =========
``val_nll``    importance-weighted NLL -L_k (Burda et al. 2015, arXiv:1509.00519), k = eval_k,   minimize
               nats per example; computed every epoch (``train.eval_k``, ``train.eval_every=1``)
``val_elbo``   ELBO, nats per example                                                            maximize
``probe``      accuracy of a linear probe (logistic regression on standardized posterior means)  maximize
               fitted on up to :data:`PROBE_FIT_EXAMPLES` training examples, tested on the
               validation split; needs labels and an unconditional model
``auroc``      area under the ROC curve of the anomaly score -L_k relative to the saturated      maximize
               model (``vaekit score --method iwae --relative``, k = eval_k; plain -L_k for a
               likelihood without a saturated form) on labelled data (label 0 normal, others
               anomalous)
=============  ================================================================================  =========

``val_nll`` and ``val_elbo`` are reported to Optuna after every epoch, so a pruner can stop a trial that trails
the others; ``probe`` and ``auroc`` are measured once, at the end (a run is never pruned on them).

A trial killed mid-run is queued again with the same parameters (:mod:`vaekit.tuning.study`); it resumes the same
run directory, ``trial-<root>`` where root is the number of the first attempt, first reporting the epochs the
killed attempt had finished.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vaekit.config import Config
from vaekit.errors import ConfigError, DataError, TrainingError, VaeKitError
from vaekit.tuning.space import Param, apply_values
from vaekit.tuning.study import optuna_module, process_id, root_number

if TYPE_CHECKING:
    import optuna
    import torch

    from vaekit.data import DataBundle
    from vaekit.models import LatentVariableModel

logger = logging.getLogger(__name__)

DIRECTIONS = {"val_nll": "minimize", "val_elbo": "maximize", "probe": "maximize", "auroc": "maximize"}
PER_EPOCH = ("val_nll", "val_elbo")  # metrics every epoch's record holds, reported for pruning
PROBE_FIT_EXAMPLES = 10_000  # training examples the linear probe is fitted on (a seeded subset of larger sets)
STATS_EXAMPLES = 10_000  # validation examples the active units and KL per dimension are measured on
ACTIVE_UNIT_THRESHOLD = 0.01  # as vaekit.evaluation: Var_x[E[z|x]] above this (Burda et al. 2015)


def trial_config(base: Config, metric: str, eval_k: int) -> Config:
    """The base config as trials train it: ``val_nll`` needs the NLL of every epoch (``train.eval_k = eval_k``,
    ``train.eval_every = 1``)."""
    if metric != "val_nll":
        return base
    train = {**base.to_dict()["train"], "eval_k": eval_k, "eval_every": 1}
    return Config.from_dict({**base.to_dict(), "train": train})


@dataclass
class Labelled:
    """Labelled examples (the ``auroc`` metric's data), read through the training data's preprocessing."""

    x: torch.Tensor
    anomalous: np.ndarray  # (N,) bool


def load_anomaly_data(source: str | None, bundle: DataBundle, data_dir: str | None) -> Labelled:
    """The ``auroc`` metric's data, checked: readable by the model, labelled, with normal and anomalous examples."""
    import torch

    from vaekit.data import load_examples

    if not source:
        raise ConfigError(
            "metric auroc needs labelled data to score: pass --anomaly-data FILE (an .npz with x and y, a table with "
            "data.label_column, ...; label 0 = normal, anything else = anomalous), or choose another --metric"
        )
    examples = load_examples(source, bundle.preprocessing, data_dir=data_dir)
    if examples.labels is None:
        raise DataError(f"{source!r} has no labels, so metric auroc cannot be computed; give labels (0 normal, "
                        "anything else anomalous) or choose another --metric")
    anomalous = np.asarray(examples.labels) != 0
    if anomalous.all() or not anomalous.any():
        raise DataError(f"the labels of {source!r} are all {'anomalous' if anomalous.all() else 'normal (0)'}; "
                        "metric auroc needs both normal (0) and anomalous examples")
    return Labelled(torch.as_tensor(examples.tensor()), anomalous)


def check_metric(metric: str, config: Config, bundle: DataBundle, params: list[Param]) -> None:
    """Refuse, before the study starts, a metric the model or data cannot produce."""
    if metric not in DIRECTIONS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(DIRECTIONS)}")
    if metric != "probe":
        return
    conditional = config.model.num_classes > 0 or any(
        p.key == "model.num_classes" and any(c != 0 for c in p.choices) for p in params)
    if conditional:
        raise ConfigError("metric probe measures the label information in the codes, which a conditional model "
                          "(model.num_classes > 0) is given; search unconditional models or choose another --metric")
    if bundle.train.labels is None or bundle.val.labels is None:
        raise DataError(f"metric probe needs labelled data, but {config.data.source!r} has no labels; use labelled "
                        "data (digits, mnist, an .npz with y, data.label_column, ...) or another --metric")


@dataclass
class Objective:
    """The function Optuna calls with each trial (see the module docstring).

    Attributes
    ----------
    base
        The config trials start from (already :func:`trial_config`).
    params
        The searched keys.
    metric, eval_k
        What a trial is judged by; importance samples of ``val_nll`` and ``auroc``.
    out
        The sweep's folder; runs go in ``out/trials``.
    bundle
        The data loaded for ``base.data`` (reused while a trial's data config is the same).
    anomalies
        The ``auroc`` metric's data.
    """

    base: Config
    params: list[Param]
    metric: str
    eval_k: int
    out: Path
    bundle: DataBundle | None = None
    anomalies: Labelled | None = None
    pruned: bool = field(default=False, init=False)

    def __call__(self, trial: optuna.trial.Trial) -> float:
        optuna = optuna_module()
        values = {param.key: param.suggest(trial) for param in self.params}
        trial.set_user_attr("owner", process_id())
        try:
            config = apply_values(self.base, self.params, values)
        except ConfigError as exc:  # a combination the checks of single values could not see
            return self._failed(trial, f"invalid combination: {exc}")
        run_dir = self.out / "trials" / f"trial-{root_number(trial):04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("config", config.to_dict())
        self.pruned = False
        if (run_dir / "config.json").exists() and self._replay(trial, run_dir):
            raise optuna.TrialPruned(f"pruned at epoch {trial.user_attrs.get('epochs_run')} (resumed)")
        try:
            result = self._train(trial, config, run_dir)
        except (TrainingError, ConfigError, DataError) as exc:  # a diverging setting, a model too large for memory
            return self._failed(trial, str(exc))  # or data a setting cannot model: a result, not the end of the search
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", "Ctrl-C")
            raise
        if self.pruned:
            raise optuna.TrialPruned(f"pruned at epoch {len(result.metrics)} of {config.train.epochs}")
        return self._finish(trial, config, result)

    def _failed(self, trial: optuna.trial.Trial, message: str) -> float:
        trial.set_user_attr("error", message)
        logger.warning("trial %d failed: %s", trial.number, message)
        return math.nan  # Optuna marks the trial failed and goes on

    def _replay(self, trial: optuna.trial.Trial, run_dir: Path) -> bool:
        """Report the epochs an earlier attempt finished; returns whether the pruner stops the trial there."""
        from vaekit.training.checkpoints import prepare_resume

        prepare_resume(run_dir)
        records = _read_records(run_dir)
        for record in records:
            self._report_only(trial, record)
        trial.set_user_attr("epochs_run", len(records))
        return bool(records) and self.metric in PER_EPOCH and trial.should_prune()

    def _report_only(self, trial: optuna.trial.Trial, record: dict[str, Any]) -> None:
        value = record.get(self.metric)
        if self.metric in PER_EPOCH and value is not None and math.isfinite(value):
            trial.report(float(value), int(record["epoch"]))

    def _train(self, trial: optuna.trial.Trial, config: Config, run_dir: Path) -> Any:
        from vaekit.training import train

        def on_epoch(record: dict[str, Any]) -> bool:
            self._report_only(trial, record)
            trial.set_user_attr("epochs_run", int(record["epoch"]))
            trial.set_user_attr("train_time_s", float(record["train_time_s"]))
            self.pruned = self.metric in PER_EPOCH and trial.should_prune()
            return self.pruned

        bundle = self.bundle if self.bundle is not None and config.data == self.base.data else None
        start = time.perf_counter()
        result = train(config, run_dir, resume=(run_dir / "config.json").exists(), data=bundle, on_epoch=on_epoch)
        trial.set_user_attr("seconds", time.perf_counter() - start)
        if result.metrics:
            trial.set_user_attr("epochs_run", int(result.metrics[-1]["epoch"]))
            trial.set_user_attr("train_time_s", float(result.metrics[-1]["train_time_s"]))
        return result

    def _finish(self, trial: optuna.trial.Trial, config: Config, result: Any) -> float:
        """The trial's metric on its best model, with the statistics the plots show."""
        best = max(result.metrics, key=lambda r: r["val_elbo"])  # the epoch best/ holds (first of equals)
        trial.set_user_attr("best_epoch", int(best["epoch"]))
        trial.set_user_attr("val_elbo", float(best["val_elbo"]))
        if "val_nll" in best:
            trial.set_user_attr("val_nll", float(best["val_nll"]))
        bundle = self.bundle if self.bundle is not None and config.data == self.base.data else None
        stats = latent_statistics(result.model, config, bundle)
        for name, value in stats.items():
            trial.set_user_attr(name, value)
        if self.metric in PER_EPOCH:
            value = best.get(self.metric)
            if value is None:
                raise VaeKitError(f"the run's records hold no {self.metric}")  # internal: trial_config sets eval_k
            return float(value)
        if self.metric == "probe":
            return probe_accuracy(result.model, config, bundle)
        assert self.anomalies is not None  # internal: sweep() loads them for auroc
        return anomaly_auroc(result.model, self.anomalies, self.eval_k)


def _read_records(run_dir: Path) -> list[dict[str, Any]]:
    import json

    path = run_dir / "state" / "state.json"
    try:
        return list(json.loads(path.read_text()).get("metrics") or [])
    except (OSError, ValueError):
        return []


def _validation(config: Config, bundle: DataBundle | None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Up to :data:`STATS_EXAMPLES` validation examples (x, labels), binarized as training validates them;
    ``None`` for streamed (sharded) data."""
    import torch

    from vaekit.data import ExampleSet, load_data

    bundle = bundle or load_data(config.data)
    if not isinstance(bundle.val, ExampleSet):
        return None
    examples = bundle.val.subset(np.arange(min(len(bundle.val), STATS_EXAMPLES)))
    x = examples.tensor()
    if config.data.binarize == "dynamic":  # one fixed draw, as the training loop validates on
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(config.train.seed + 3))
    y = None if examples.labels is None else torch.as_tensor(examples.labels, dtype=torch.long)
    return x, y


def latent_statistics(model: LatentVariableModel, config: Config, bundle: DataBundle | None) -> dict[str, Any]:
    """Active units (Var_x E[z|x] > 0.01) and the KL of each latent dimension (nats per example) on the validation
    split, through :func:`vaekit.evaluation.evaluate` with k = 1 (its NLL is not used)."""
    from vaekit.evaluation import evaluate

    data = _validation(config, bundle)
    if data is None:
        return {}
    x, y = data
    report = evaluate(model, x.to(model.device), k=1, labels=y if model.num_classes else None)
    return {"active_units": report.active_units, "latent_dim": report.latent_dim,
            "kl_per_dim": [round(v, 5) for v in report.kl_per_dim]}


def probe_accuracy(model: LatentVariableModel, config: Config, bundle: DataBundle | None) -> float:
    """Accuracy on the validation split of a logistic regression on standardized posterior means fitted on up to
    :data:`PROBE_FIT_EXAMPLES` training examples (a subset drawn with ``data.seed``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from vaekit.data import ExampleSet, load_data

    bundle = bundle or load_data(config.data)
    if not isinstance(bundle.train, ExampleSet) or not isinstance(bundle.val, ExampleSet):
        raise DataError("metric probe needs data held in memory or memory-mapped, not a directory of shards")
    rng = np.random.default_rng(config.data.seed)
    fit_rows = np.sort(rng.permutation(len(bundle.train))[:PROBE_FIT_EXAMPLES])
    fit, test = bundle.train.subset(fit_rows), bundle.val
    z_fit, z_test = _codes(model, fit), _codes(model, test)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(z_fit, fit.labels)
    return float(probe.score(z_test, test.labels))


def _codes(model: LatentVariableModel, examples: Any, batch_size: int = 1024) -> np.ndarray:
    """Posterior means (N, L) of an example set, float64."""
    import torch

    from vaekit.models.inputs import posterior_means

    with torch.no_grad():
        parts = [posterior_means(model, examples.batch(np.arange(i, min(i + batch_size, len(examples))))).cpu()
                 for i in range(0, len(examples), batch_size)]
    return torch.cat(parts).double().numpy()


def anomaly_auroc(model: LatentVariableModel, data: Labelled, k: int) -> float:
    """AUROC of the relative IWAE anomaly score (:func:`vaekit.apps.scoring.anomaly_scores`, k samples, seed 0)."""
    from sklearn.metrics import roc_auc_score

    from vaekit.apps.scoring import SATURATED, anomaly_scores

    relative = model.config.likelihood in SATURATED.names()  # a likelihood without a saturated form: plain -L_k
    scores = anomaly_scores(model, data.x.to(model.device), "iwae", k=k, relative=relative).cpu().numpy()
    return float(roc_auc_score(data.anomalous, scores))
