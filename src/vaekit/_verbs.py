"""Plumbing shared by the model verbs (sample, reconstruct, interpolate, traverse, embed).

Kept in one private module so each verb file holds only its own maths: resolving ``model`` arguments,
reading a model's data with its stored preprocessing, drawing examples in the right kind of picture, and the
labels of a conditional model (``model.num_classes > 0``): read from the data when encoding, chosen by the
caller (``label=``, ``--label``) when decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaekit.errors import ConfigError, DataError, OutputError
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


def data_labels(model: VAE, examples: ExampleSet, indices: np.ndarray) -> torch.Tensor | None:
    """Labels (B,) of ``examples[indices]`` for encoding with a conditional model; ``None`` if unconditional.

    Raises
    ------
    DataError
        If the model is conditional and the data has no labels.
    """
    if not model.num_classes:
        return None
    if examples.labels is None:
        raise DataError(
            f"this model is conditional on a label in 0..{model.num_classes - 1}, but the data has no labels; "
            "pass labelled data (--data) like the data it was trained on"
        )
    return torch.as_tensor(examples.labels[np.asarray(indices, dtype=np.int64)], dtype=torch.long)


Labels = int | Sequence[int] | np.ndarray | torch.Tensor
"""A label argument: one class for every example (int) or one label per example."""


def decode_labels(model: VAE, label: Labels | None, n: int) -> torch.Tensor | None:
    """Labels (n,) to decode ``n`` latents with: one class for all (int) or one per latent; checked early.

    ``None`` stays ``None`` (an unconditional model, or a caller that picks a default).

    Raises
    ------
    ConfigError
        If a label is given to an unconditional model.
    DataError
        If a label lies outside the trained classes 0..K-1 or the count does not match ``n``.
    """
    if label is None:
        return None
    if model.conditioning is None:
        raise ConfigError(
            f"label={label!r} was given, but this model is not conditional; drop the label (--label), or "
            "train a conditional model with model.num_classes=K"
        )
    if isinstance(label, (int, np.integer)):
        y = torch.full((n,), int(label), dtype=torch.long)
    else:
        y = torch.as_tensor(np.asarray(label), dtype=torch.long).reshape(-1)
    return model.conditioning.check(y, n).to(model.device)


@torch.no_grad()
def posterior_means(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of q(z|x) (of q(z|x, y) for a conditional model) for a batch, after checking it fits. (B, L)."""
    model.eval()
    x = x.to(model.device)
    model.check_input(x)
    return model.encode(x, None if y is None else y.to(model.device)).mean
