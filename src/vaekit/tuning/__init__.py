"""Sweeps: searching configurations with Optuna, each trial an ordinary training run.

::

    space.py      the search space: KEY=int(...) / float(...) / cat(...), checked against the config's types
    study.py      the Optuna study: its storage (sqlite or any database URL), the sweep it records, killed trials
    trials.py     one trial: its config, its run directory (resumable), per-epoch reports for pruning, its metric
    results.py    the table of trials, the best config as YAML, plots, parameter importances
    sweeping.py   sweep(): the whole search, in this process or in N worker processes (worker.py)

Optuna (``pip install 'vaekit[sweep]'``) is imported on first use.
"""

from vaekit.tuning.space import Param, parse_space
from vaekit.tuning.sweeping import METRICS, SweepResult, sweep

__all__ = ["METRICS", "Param", "SweepResult", "parse_space", "sweep"]
