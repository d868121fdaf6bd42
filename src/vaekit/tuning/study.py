"""The Optuna study of a sweep: its storage, the sweep it records, and trials that a kill interrupted.

::

    storage URL ──> RDBStorage (SQLAlchemy: sqlite:///FILE, postgresql://..., mysql://...), with heartbeats
    study       ──> user attribute "vaekit_sweep": the sweep's definition (base config, space, metric, ...)
                    a restart or another machine must give the same one (or none: it is read from the study)

A study database stays consistent whatever is killed: every change is one database transaction (SQLite rolls
back a transaction a kill interrupted through its journal), and a new SQLite file is created under a temporary
name and renamed into place once its tables exist. A trial whose process died is recovered:

- on this machine at once: a running trial whose process (host, pid, start time) no longer exists is marked
  failed and queued again with the same parameters; the new trial resumes the same run directory;
- from another machine through Optuna's heartbeats: a running trial silent for :data:`GRACE_PERIOD_S` seconds is
  failed and queued again by the next worker that starts a trial;
- a trial stopped by Ctrl-C is failed and marked ``interrupted``; the next sweep on the study queues it again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaekit.errors import ConfigError
from vaekit.extras import import_optional

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

SPEC_ATTR = "vaekit_sweep"
HEARTBEAT_S = 20  # a running trial writes a heartbeat this often
GRACE_PERIOD_S = 60  # and is taken for dead after this long without one
SQLITE_TIMEOUT_S = 60  # how long a writer waits for another's lock (parallel workers on one file)


def optuna_module() -> Any:
    """Optuna, or a one-line error naming the extra that installs it."""
    return import_optional("optuna", "sweep", "vaekit sweep")


@dataclass(frozen=True)
class SweepSpec:
    """What defines a sweep; every worker of a study must run the same one.

    Attributes
    ----------
    base
        The config every trial starts from (``Config.to_dict()``).
    space
        The canonical texts of the searched keys (:meth:`vaekit.tuning.space.Param.describe`).
    metric
        ``val_nll``, ``val_elbo``, ``probe`` or ``auroc``.
    eval_k
        Importance samples of the validation NLL (``val_nll``) and of the anomaly scores (``auroc``).
    anomaly_data
        Labelled data of the ``auroc`` metric (labels: 0 normal, anything else anomalous).
    pruner
        ``median``, ``hyperband`` or ``none``.
    sampler
        ``tpe``, ``random`` or ``grid``.
    seed
        Seed of the sampler (worker i uses seed + i).
    """

    base: dict[str, Any]
    space: tuple[str, ...]
    metric: str
    eval_k: int
    anomaly_data: str | None
    pruner: str
    sampler: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["space"] = list(self.space)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        """The spec a study or ``sweep.json`` holds."""
        return cls(**{**data, "space": tuple(data["space"])})


def default_storage(out: Path) -> str:
    """``sqlite:///OUT/study.db`` (absolute)."""
    return f"sqlite:///{(out / 'study.db').resolve()}"


def shown_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: its own error reports it
        return url.split("@")[-1] if "@" in url else url


def _storage(url: str, retry: Any) -> Any:
    import inspect
    import warnings

    optuna = optuna_module()
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    parameters = inspect.signature(optuna.storages.RDBStorage).parameters
    callback = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in parameters \
        else "failed_trial_callback"  # renamed in Optuna 4.9
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words, and used as documented
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_PERIOD_S,
            **{callback: retry},
        )


def open_storage(url: str) -> Any:
    """Optuna's RDB storage at ``url``, with heartbeats and the retry of stale trials.

    Raises
    ------
    ConfigError
        The URL cannot be parsed, its driver is not installed, or the database cannot be opened or created.
    """
    try:
        path = _sqlite_path(url)
        if path is not None and not path.exists():
            _create_sqlite(url, path)
        return _storage(url, queue_retry)
    except ConfigError:
        raise
    except Exception as exc:  # SQLAlchemy's and the drivers' errors have no common base
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise ConfigError(
            f"cannot open the study storage {shown_url(url)!r}: {reason}; check the URL (sqlite:///PATH/study.db, "
            "postgresql://USER@HOST/DB, ...), that its folder or server exists, and that its driver is installed"
        ) from None


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (``None`` for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
        return None
    return Path(url[len("sqlite:///") :].split("?", 1)[0])


def _create_sqlite(url: str, path: Path) -> None:
    """Create the tables in a temporary file beside ``path`` and rename it into place, so a kill during the
    creation leaves no half-made database."""
    if not path.parent.is_dir():
        raise ConfigError(f"cannot open the study storage {url!r}: the folder {str(path.parent)!r} does not exist; "
                          "create it or choose another --storage")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        storage = _storage(f"sqlite:///{tmp}", None)
        storage.remove_session()
        storage.engine.dispose()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def create_or_load(storage: Any, name: str, spec: SweepSpec | None, direction: str | None) -> tuple[Any, SweepSpec]:
    """The study ``name``: created with ``spec`` if new, else loaded and checked against ``spec`` (``None``: take
    the study's own)."""
    optuna = optuna_module()
    exists = name in optuna.get_all_study_names(storage)
    if not exists:
        if spec is None:
            raise ConfigError(f"the storage holds no study {name!r}; give --space to start one (or the right --study)")
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
        if SPEC_ATTR not in study.user_attrs:  # another process may have created it a moment ago
            study.set_user_attr(SPEC_ATTR, spec.to_dict())
    study = optuna.load_study(study_name=name, storage=storage)
    saved = study.user_attrs.get(SPEC_ATTR)
    if saved is None:
        raise ConfigError(f"the study {name!r} was not made by vaekit sweep; choose another --study")
    saved_spec = SweepSpec.from_dict(saved)
    if spec is not None and spec != saved_spec:
        raise ConfigError(
            f"the study {name!r} holds another sweep ({_difference(saved_spec, spec)}); repeat its arguments, give "
            "no --space to continue it as it is, or choose another --study / --out"
        )
    return study, saved_spec


def _difference(saved: SweepSpec, given: SweepSpec) -> str:
    old, new = saved.to_dict(), given.to_dict()
    for key in old:
        if key == "base" and old[key] != new[key]:
            for section, values in old[key].items():
                for name, value in values.items():
                    if new[key][section][name] != value:
                        return f"{section}.{name} was {value!r}, now {new[key][section][name]!r}"
        if old[key] != new[key]:
            return f"{key} was {old[key]!r}, now {new[key]!r}"
    return "?"


# -- this process, and trials whose process died -----------------------------------------------------------------------
def process_id() -> dict[str, Any]:
    """Who runs a trial: host name, pid and the process's start time (Linux; ``None`` elsewhere)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks since boot


def _alive(owner: dict[str, Any]) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return True  # nothing to check: leave it to the heartbeat
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = owner.get("started")
    return started is None or _start_time(pid) == started  # another process reusing the pid is not the owner


def root_number(trial: optuna.trial.FrozenTrial | optuna.trial.Trial) -> int:
    """The trial a trial continues (itself unless it is a retry): its run directory is ``trial-<root>``."""
    return int(trial.user_attrs.get("resumes", trial.number))


def queue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a trial that was killed again, with its parameters, to resume its run directory (once)."""
    root = root_number(trial)
    for other in study.get_trials(deepcopy=False):
        if other.number > trial.number and root_number(other) == root:
            return  # already queued
    study.enqueue_trial(trial.params, user_attrs={"resumes": root}, skip_if_exists=False)
    logger.info("trial %d was interrupted; queued again to resume run trial-%04d", trial.number, root)


def recover(study: optuna.Study, storage: Any) -> int:
    """Fail the running trials of dead processes of this host and queue every interrupted trial again; returns how
    many were queued."""
    optuna = optuna_module()
    state = optuna.trial.TrialState
    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        owner = trial.user_attrs.get("owner") or {}
        if owner.get("host") == host and not _alive(owner):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, "interrupted", "its process was killed")
            storage.set_trial_state_values(trial_id, state.FAIL)
    queued = 0
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state == state.FAIL and trial.user_attrs.get("interrupted"):
            later = [t for t in trials if t.number > trial.number and root_number(t) == root_number(trial)]
            if not later:
                queue_retry(study, trial)
                queued += 1
    return queued


def write_spec_file(path: Path, payload: dict[str, Any]) -> None:
    """The workers' instructions (``OUT/sweep.json``), written atomically."""
    from vaekit.files import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
