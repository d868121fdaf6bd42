"""Plumbing shared by the model verbs (sample, reconstruct, interpolate, traverse, embed).

Kept in one private module so each verb file holds only its own maths: resolving ``model`` arguments,
reading a model's data with its stored preprocessing, and drawing examples in the right kind of picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaekit.errors import ConfigError, OutputError
from vaekit.model import VAE
from vaekit.plots import is_image_shape, save_heatmap, save_image_grid

if TYPE_CHECKING:
    from vaekit.data import ExampleSet


def as_model(model: VAE | str | Path) -> VAE:
    """A model object, loading a path (model or run directory) with :func:`vaekit.serialization.load`."""
    if isinstance(model, VAE):
        return model
    from vaekit.serialization import load

    return load(model)


def load_examples_for(model: VAE, data: str | None, data_dir: str | None) -> ExampleSet:
    """Examples of ``data`` (default: the model's own source, test split) with the model's preprocessing."""
    from vaekit.data import load_examples

    if model.preprocessing is None:
        raise ConfigError(
            "the model has no stored preprocessing, so its data cannot be read; use a model saved by "
            "`vaekit train` (or set model.preprocessing)"
        )
    source = data or model.preprocessing.source
    if not source:
        raise ConfigError("the model does not record its data source; pass data (--data NAME_OR_PATH)")
    return load_examples(source, model.preprocessing, data_dir=data_dir, split="test")


def check_index(index: int, size: int, name: str) -> int:
    """Raise ConfigError unless ``0 <= index < size``."""
    if not 0 <= index < size:
        raise ConfigError(f"{name}={index} is out of range for {size} examples; choose 0..{size - 1}")
    return index


def draws_images(model: VAE) -> bool:
    """Whether the model's data are pictures in [0, 1] (else they are drawn as heat maps)."""
    kind = getattr(model.preprocessing, "kind", None)
    if kind is None:
        kind = "real" if model.config.likelihood == "gaussian" else "unit"
    return is_image_shape(model.data_shape) and kind != "real"


def check_png(out: str | Path) -> Path:
    """``out`` as a Path, or OutputError unless it ends in ``.png``."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise OutputError(f"output {str(out)!r} must be a .png file; pass --out NAME.png")
    return out


def save_examples_png(model: VAE, x: torch.Tensor | np.ndarray, out: Path, *, nrow: int) -> Path:
    """Draw ``x`` (N, *data_shape): an image grid of ``nrow`` per row, or a heat map of rows."""
    if draws_images(model):
        return save_image_grid(x, out, nrow=nrow)
    return save_heatmap(np.asarray(x, dtype=np.float32).reshape(len(x), -1), out)


@torch.no_grad()
def posterior_means(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """Mean of q(z|x) for a batch, after checking it fits the model. (B, L)."""
    model.eval()
    x = x.to(model.device)
    model.check_input(x)
    return model.encode(x).mean
