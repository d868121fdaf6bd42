"""Model directories: ``config.json`` + ``model.safetensors`` + ``metadata.json``. Nothing is unpickled.

::

    model/
    ├── config.json        ModelConfig fields (the family among them) and the data shape: enough to rebuild it
    ├── model.safetensors  weights (and buffers)
    └── metadata.json      vaekit version, format version, preprocessing, training summary

Every file is written to a temporary directory that is synced and renamed into place
(:func:`vaekit.files.atomic_dir`), so a crash never leaves a half-written model. Models written before families
existed (vaekit 0.1) have no ``family`` in ``config.json``; they load as the family ``auto`` picks for their
config, which is what they were.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vaekit._version import __version__
from vaekit.config import Config
from vaekit.data.preprocessing import preprocessing_from_dict
from vaekit.errors import ConfigError, ModelFileError
from vaekit.files import atomic_dir, check_replaceable, save_tensors
from vaekit.models.contract import LatentVariableModel
from vaekit.models.families import build_model, family_name

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
METADATA_NAME = "metadata.json"


WRITTEN_METADATA = ("format_version", "vaekit_version", "data_shape", "preprocessing")  # what save_model writes itself


def extra_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The part of a loaded model's ``metadata`` that was passed to :func:`save_model` as ``extra`` (training config,
    metrics, ...): what saving the model again must carry over, since save_model writes the rest afresh."""
    return {k: v for k, v in metadata.items() if k not in WRITTEN_METADATA}


def save_model(model: LatentVariableModel, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to the directory ``path`` (replaced atomically if it exists).

    Parameters
    ----------
    model
        The model; its ``preprocessing`` (if any) is stored in the metadata.
    path
        Target directory.
    extra
        More JSON-ready metadata (training config, metrics).
    """
    check_replaceable(path, CONFIG_NAME, "a saved model")
    with atomic_dir(path) as tmp:
        write_model(model, tmp, extra)
    return Path(path)


def write_model(model: LatentVariableModel, directory: Path, extra: dict[str, Any] | None = None) -> None:
    """The files of :func:`save_model`, written into the existing directory ``directory`` (a temporary one from
    :func:`vaekit.files.atomic_dir`, when more files go beside them before the directory is committed)."""
    config = {**Config(model=model.config).to_dict()["model"], "data_shape": list(model.data_shape)}
    config["family"] = model.family  # a model's config names its family; a bare LatentVariableModel's may not
    written = (FORMAT_VERSION, __version__, list(model.data_shape),
               model.preprocessing.to_dict() if model.preprocessing is not None else None)
    metadata: dict[str, Any] = {**dict(zip(WRITTEN_METADATA, written, strict=True)), **(extra or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    save_tensors(state, directory / WEIGHTS_NAME)
    (directory / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n")


def find_model_dir(path: str | Path) -> Path:
    """Resolve a model directory, or a run directory holding ``best/`` or ``last/``, to a model directory."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).exists():
        return path
    for sub in ("best", "last"):
        if (path / sub / CONFIG_NAME).is_file():
            return path / sub
    if not path.exists():
        raise ModelFileError(f"no model at {str(path)!r}: the path does not exist; pass a model or run directory")
    raise ModelFileError(
        f"no model at {str(path)!r}: expected {CONFIG_NAME} and {WEIGHTS_NAME} (or a run directory with "
        "best/ or last/); pass the directory that `vaekit train` wrote"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"model file {str(path)!r} is missing; the model directory is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelFileError(
            f"model file {str(path)!r} is corrupted (not valid JSON); re-export or retrain the model"
        ) from None
    if not isinstance(data, dict):
        raise ModelFileError(f"model file {str(path)!r} is corrupted (expected a JSON object)")
    return data


def load(path: str | Path, device: str | None = None) -> LatentVariableModel:
    """Rebuild a model from a model directory (or a run directory holding one).

    Parameters
    ----------
    path
        Model directory with ``config.json`` and ``model.safetensors``, or a run directory.
    device
        Where to put the model (``cpu``, ``cuda``); default CPU.

    Raises
    ------
    ModelFileError
        If the directory is missing, truncated, corrupted or from an incompatible version.
    """
    model_dir = find_model_dir(path)
    metadata = _read_json(model_dir / METADATA_NAME)
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"model at {str(model_dir)!r} was written by vaekit {metadata.get('vaekit_version', '?')} in format "
            f"{version!r}; this vaekit {__version__} reads format {FORMAT_VERSION} or older: upgrade vaekit"
        )
    config_data = _read_json(model_dir / CONFIG_NAME)
    data_shape = config_data.pop("data_shape", None)
    if not isinstance(data_shape, list) or not all(isinstance(d, int) and d > 0 for d in data_shape):
        raise ModelFileError(f"model file {str(model_dir / CONFIG_NAME)!r} has no valid data_shape; it is corrupted")
    try:
        config = Config.from_dict({"model": config_data}).model
        model = build_model(config, tuple(data_shape))
        if model.family != family_name(config):  # internal invariant: the registry maps names to their classes
            raise ConfigError(f"family {family_name(config)!r} built a {model.family!r} model")
    except ConfigError as exc:
        raise ModelFileError(f"model config in {str(model_dir)!r} is invalid: {exc}") from None
    try:
        state = load_file(str(model_dir / WEIGHTS_NAME))
    except FileNotFoundError:
        raise ModelFileError(f"model weights {str(model_dir / WEIGHTS_NAME)!r} are missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"model weights {str(model_dir / WEIGHTS_NAME)!r} are truncated or corrupted ({exc}); "
            "retrain or copy the model again"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ModelFileError(
            f"model weights in {str(model_dir)!r} do not match its config.json; the directory is corrupted"
        ) from None
    if metadata.get("preprocessing") is not None:
        model.preprocessing = preprocessing_from_dict(metadata["preprocessing"])
    model.metadata = metadata
    model.eval()
    if device is not None:
        model.to(_device(device))
    return model


def _device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this machine has; ConfigError (one line) if not."""
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {str(device)!r}; use cpu or cuda (cuda:N)") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but this machine has no CUDA GPU torch can use; use cpu")
    return chosen


def as_model(model: LatentVariableModel | str | Path) -> LatentVariableModel:
    """A model object: ``model`` itself, or the model of a model or run directory loaded with :func:`load` (on
    CUDA when available)."""
    if isinstance(model, LatentVariableModel):
        return model
    return load(model, device="cuda" if torch.cuda.is_available() else None)


def with_latents(model: LatentVariableModel | str | Path, what: str) -> LatentVariableModel:
    """:func:`as_model`, refused for a model without a latent variable (``model.latent_dim=0``: the language-model
    baseline of the text presets), which has nothing to ``what`` (e.g. "reconstruct from").

    Raises
    ------
    ConfigError
        The model has no latent variable.
    """
    model = as_model(model)
    if model.latent_dim == 0:
        raise ConfigError(f"this model has no latent variable (model.latent_dim=0: a language model) to {what}; use "
                          "a model with latents (for text, a sentence VAE such as the ptb preset)")
    return model

