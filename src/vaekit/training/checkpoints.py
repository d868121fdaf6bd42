"""The run directory and the training state: what an epoch commits, and how ``--resume`` reads it back.

::

    RUN/config.json         the fully resolved Config (written once, before the first epoch)
    RUN/best/, RUN/last/    exported models (config.json + model.safetensors + metadata.json)
    RUN/state/              state.safetensors: weights, EMA weights, optimizer moments, every rank's RNG states
                            state.json: counters, the optimizer's scalars, and every epoch's metrics record
    RUN/metrics.jsonl       one JSON record per epoch, rewritten from state/ after each commit

The end of an epoch commits in this order: ``best/`` (when better), ``last/``, then ``state/``, the commit point:
one directory swapped in atomically (:func:`vaekit.files.atomic_dir`, every file synced to disk first) holding
the weights, the optimizer, the RNG streams, the counters and the metrics together. ``metrics.jsonl`` is derived
from it. So whatever a kill interrupts:

- before ``state/`` is swapped in, the run resumes from the previous epoch and replays this one exactly;
- after, but before ``metrics.jsonl`` is rewritten, the resumed run takes the records from ``state/`` and
  rewrites ``metrics.jsonl`` at once;
- between the two renames of the swap, ``state/`` is missing and ``.state.old`` holds the previous complete state:
  :func:`prepare_resume` puts it back;
- temporary directories of an interrupted write (``.last.XXXX``, ``.state.XXXX``, ...) are removed on resume.

Tensors are stored as safetensors and the rest as JSON: nothing is ever unpickled. A state written by vaekit 0.1
has no metrics in ``state.json``; its records come from ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vaekit.config import Config
from vaekit.data import DATASETS
from vaekit.errors import ConfigError, ModelFileError, OutputError
from vaekit.files import (
    atomic_dir,
    atomic_write_text,
    recover_dir,
    remove_stale_temporaries,
    save_tensors,
)
from vaekit.models import LatentVariableModel

logger = logging.getLogger(__name__)

STATE_DIR = "state"
RUN_ENTRIES = ("best", "last", STATE_DIR, "config.json", "metrics.jsonl", "loss_curve.png", "samples.png",
               "reconstructions.png", "samples.txt", "reconstructions.txt")


@dataclass
class State:
    """Counters carried across epochs and saved for resume, with the metrics record of every epoch so far."""

    epoch: int = 0
    step: int = 0
    best_val_elbo: float = -math.inf
    epochs_without_improvement: int = 0
    skipped_steps: int = 0
    skipped_grad_norm: int = 0
    train_time_s: float = 0.0
    world_size: int = 1
    bad_in_row: int = 0  # updates skipped in a row (training stops at train.max_bad_steps)
    threads: int = 0  # torch threads the run computes with (0: not chosen yet; runs saved by vaekit 0.1)
    metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Trainables:
    """What the state holds besides counters: the model, its EMA copy, the optimizer and the named generators."""

    model: LatentVariableModel
    optimizer: torch.optim.Optimizer
    generators: dict[str, torch.Generator]
    ema: LatentVariableModel | None = None


# -- RNG streams ------------------------------------------------------------------------------------------------------
def rng_states(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """This process's RNG states: the global torch RNG, the CUDA one, and the named generators."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    for name, generator in generators.items():
        states[name] = generator.get_state().cpu()
    return states


def _rng_key(rank: int, name: str) -> str:
    return f"rng.{name}" if rank == 0 else f"rng.rank{rank}.{name}"


def _restore_rng(tensors: dict[str, torch.Tensor], generators: dict[str, torch.Generator], rank: int) -> None:
    if _rng_key(rank, "torch") not in tensors:  # resumed with more processes than saved: fresh seeds here
        return
    torch.set_rng_state(tensors[_rng_key(rank, "torch")])
    if _rng_key(rank, "cuda") in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[_rng_key(rank, "cuda")])
    for name, generator in generators.items():
        generator.set_state(tensors[_rng_key(rank, name)].to(generator.get_state().device))


# -- saving and loading the state -------------------------------------------------------------------------------------
def save_state(path: Path, parts: Trainables, state: State, rng: list[dict[str, torch.Tensor]]) -> None:
    """Commit the training state to ``path`` in one swap; ``rng[r]`` holds rank r's RNG states."""
    tensors = {f"model.{k}": v.detach().cpu() for k, v in parts.model.state_dict().items()}
    if parts.ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu() for k, v in parts.ema.state_dict().items()})
    opt_state = parts.optimizer.state_dict()
    opt_json: dict[str, Any] = {"param_groups": opt_state["param_groups"], "state": {}}
    for index, entry in opt_state["state"].items():
        opt_json["state"][str(index)] = {}
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu()
            else:
                opt_json["state"][str(index)][name] = value
    for rank, states in enumerate(rng):
        tensors.update({_rng_key(rank, name): value for name, value in states.items()})
    counters = {k: v for k, v in state.__dict__.items() if k != "metrics"}
    info = {"counters": counters, "optimizer": opt_json, "metrics": state.metrics}
    with atomic_dir(path) as tmp:
        save_tensors({k: v.contiguous() for k, v in tensors.items()}, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(info, indent=1) + "\n")


def load_state(path: Path, parts: Trainables, rank: int = 0) -> State:
    """Restore weights, EMA, optimizer and this rank's RNG streams from ``path``; return the counters and records.

    Raises
    ------
    ModelFileError
        The state is missing or corrupted.
    """
    try:
        tensors = load_file(str(path / "state.safetensors"))
        info = json.loads((path / "state.json").read_text())
        counters = info["counters"]
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError) as exc:
        raise ModelFileError(
            f"cannot resume: the training state in {str(path)!r} is missing or corrupted ({exc}); "
            "start a new run with another --out"
        ) from None
    parts.model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    if parts.ema is not None:
        saved = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
        parts.ema.load_state_dict(saved if saved else parts.model.state_dict())  # saved without EMA: start it here
    opt_json = info["optimizer"]
    opt_state: dict[str, Any] = {"param_groups": opt_json["param_groups"], "state": {}}
    for index, entry in opt_json["state"].items():
        opt_state["state"][int(index)] = dict(entry)
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            opt_state["state"].setdefault(int(index), {})[name] = value
    parts.optimizer.load_state_dict(opt_state)
    _restore_rng(tensors, parts.generators, rank)
    state = State(**{k: v for k, v in counters.items() if k != "metrics"})
    state.metrics = list(info.get("metrics") or _read_metrics(path.parent / "metrics.jsonl"))[: state.epoch]
    return state


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_metrics(out: Path, metrics: list[dict[str, Any]]) -> None:
    """Rewrite ``RUN/metrics.jsonl`` from the records (one JSON line per epoch)."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))


# -- the run directory ------------------------------------------------------------------------------------------------
def prepare_resume(out: Path) -> bool:
    """Make ``out`` ready to resume after whatever a kill left (see the module docstring); return whether a saved
    state exists (a run killed in its first epoch has none and starts from the beginning)."""
    if recover_dir(out / STATE_DIR):
        logger.warning("recovered the training state of %s from .state.old (the run was killed mid-save)", out)
    removed = remove_stale_temporaries(out, RUN_ENTRIES)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted save in %s", len(removed), out)
    return (out / STATE_DIR).is_dir()


def absolute_source(config: Config) -> Config:
    """``config`` with ``data.source`` made absolute when it names an existing file or folder (not a built-in
    dataset): the model records where its data is, and verbs run from another folder must find it."""
    source = config.data.source
    if not source or source in DATASETS or not Path(source).expanduser().exists():
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, source=str(
        Path(source).expanduser().resolve())))


def resolve_run_config(config: Config | None, out: Path, resume: bool) -> Config:
    """The config of the run: ``config`` for a new run; ``out/config.json`` to resume, with ``train.epochs`` from
    ``config`` when given (every other field must match the saved one). Data sources are made absolute
    (:func:`absolute_source`), the saved one too (a run saved before they were)."""
    config = None if config is None else absolute_source(config)
    config_path = out / "config.json"
    if not resume:
        if config_path.exists():
            raise ConfigError(
                f"{str(out)!r} already holds a run; pass --resume to continue it or choose another --out"
            )
        return config or Config()
    if not config_path.is_file():
        raise ConfigError(f"cannot resume: {str(out)!r} holds no run (no config.json); check --out")
    try:
        saved = absolute_source(Config.from_dict(json.loads(config_path.read_text())))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"cannot resume: {str(config_path)!r} is unreadable ({exc})") from None
    if config is None:
        return saved
    saved_dict = saved.to_dict()
    resumed = Config.from_dict({**saved_dict, "train": {**saved_dict["train"], "epochs": config.train.epochs}})
    if resumed != config:  # compare every field, train.* included: a changed lr must not be ignored silently
        changed = _first_difference(resumed.to_dict(), config.to_dict())
        raise ConfigError(
            f"cannot resume with a different config ({changed}); only train.epochs may change when resuming"
        )
    return resumed


def _first_difference(saved: dict[str, Any], given: dict[str, Any]) -> str:
    for section, values in saved.items():
        for key, value in values.items():
            if given[section][key] != value:
                return f"{section}.{key} was {value!r}, now {given[section][key]!r}"
    return "?"


def remove_unstarted_run(out: Path) -> None:
    """Remove the run directory ``out`` if it holds nothing but its ``config.json`` (no epoch was committed)."""
    if out.is_dir() and {p.name for p in out.iterdir()} <= {"config.json"}:
        shutil.rmtree(out, ignore_errors=True)


def write_run_config(config: Config, out: Path) -> None:
    """Create the run directory and write its ``config.json``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create run directory {str(out)!r}: {exc.strerror}; choose a writable --out"
        ) from None
    atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
