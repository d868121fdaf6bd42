"""Model directories: ``config.json`` + ``model.safetensors`` + ``metadata.json``. Nothing is unpickled.

::

    model/
    ├── config.json        ModelConfig fields and the data shape: enough to rebuild the network
    ├── model.safetensors  weights (and buffers)
    └── metadata.json      vaekit version, format version, preprocessing, training summary

Every file is written to a temporary directory that is renamed into place, so a crash never leaves a
half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vaekit.config import Config
from vaekit.errors import ConfigError, ModelFileError, OutputError
from vaekit.model import VAE, build_model

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
METADATA_NAME = "metadata.json"


def _version() -> str:
    from vaekit import __version__

    return __version__


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise OutputError(f"cannot write to {str(path)!r}: {exc.strerror}; choose a writable --out") from None
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary stream to ``path`` through a temporary file beside it, renamed into place on success and
    deleted on failure, so a crash never leaves a half-written file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}; choose a writable output path") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename."""
    atomic_write_bytes(path, text.encode())


def save_model(model: VAE, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
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
    config = {**Config(model=model.config).to_dict()["model"], "data_shape": list(model.data_shape)}
    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "vaekit_version": _version(),
        "data_shape": list(model.data_shape),
        "preprocessing": model.preprocessing.to_dict() if model.preprocessing is not None else None,
        **(extra or {}),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(path) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n")
    return Path(path)


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


def load(path: str | Path, device: str | None = None) -> VAE:
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
    from vaekit.data import Preprocessing

    model_dir = find_model_dir(path)
    metadata = _read_json(model_dir / METADATA_NAME)
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"model at {str(model_dir)!r} was written by vaekit {metadata.get('vaekit_version', '?')} in format "
            f"{version!r}; this vaekit {_version()} reads format {FORMAT_VERSION} or older: upgrade vaekit"
        )
    config_data = _read_json(model_dir / CONFIG_NAME)
    data_shape = config_data.pop("data_shape", None)
    if not isinstance(data_shape, list) or not all(isinstance(d, int) and d > 0 for d in data_shape):
        raise ModelFileError(f"model file {str(model_dir / CONFIG_NAME)!r} has no valid data_shape; it is corrupted")
    try:
        config = Config.from_dict({"model": config_data}).model
        model = build_model(config, tuple(data_shape))
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
        model.preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
    model.metadata = metadata
    model.eval()
    if device is not None:
        model.to(device)
    return model
