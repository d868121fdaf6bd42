"""``reconstruct``: pass examples through the model, x -> q(z|x) -> z -> mean of p(x|z).

The picture shows originals and reconstructions in alternating rows, so each reconstruction sits right
below its original. A conditional model encodes and decodes each example with its own label from the data.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from vaekit._verbs import as_model, check_png, data_labels, draws_images, load_examples_for, save_examples_png
from vaekit.errors import ConfigError
from vaekit.model import VAE

logger = logging.getLogger(__name__)
ROW_WIDTH = 8  # examples per row of the picture


def interleave_rows(originals: np.ndarray, reconstructions: np.ndarray, width: int) -> np.ndarray:
    """Stack examples as rows of ``width``: originals row, reconstructions row, ... (NaN-padded).

    Returns
    -------
    np.ndarray
        ``(2 * ceil(N / width) * width, *shape)``; NaN cells are drawn blank.
    """
    n = len(originals)
    padded = math.ceil(n / width) * width
    pad = np.full((padded - n, *originals.shape[1:]), np.nan, dtype=np.float32)
    rows_a = np.concatenate([originals, pad]).reshape(-1, width, *originals.shape[1:])
    rows_b = np.concatenate([reconstructions, pad]).reshape(-1, width, *originals.shape[1:])
    return np.stack([rows_a, rows_b], axis=1).reshape(-1, *originals.shape[1:])


@torch.no_grad()
def reconstruct(
    model: VAE | str | Path,
    data: str | None = None,
    *,
    n: int = 32,
    data_dir: str | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruct the first ``n`` examples of ``data``.

    Parameters
    ----------
    model
        A model, or the path of a model or run directory.
    data
        A built-in dataset (its test split) or a path; default the model's training source.
    n
        Number of examples (fewer if the data holds fewer).
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    seed
        ``None`` (default) decodes the posterior mean; an integer decodes one seeded posterior draw.
    out
        A ``.png`` path for the picture (alternate rows of originals and reconstructions).

    Returns
    -------
    tuple of np.ndarray
        ``(originals, reconstructions)``, each float32 ``(n, *data_shape)`` in the model's input space.

    Raises
    ------
    ConfigError
        If ``n < 1``, or the data cannot be resolved.
    DataError
        If the data does not fit the model (or a conditional model's data has no labels).
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    png = check_png(out) if out is not None else None
    model = as_model(model)
    model.eval()
    examples = load_examples_for(model, data, data_dir)
    indices = np.arange(min(n, len(examples)))
    x = examples.batch(indices).to(model.device)  # (n, *shape)
    model.check_input(x)
    y = data_labels(model, examples, indices)  # (n,) or None
    y = None if y is None else y.to(model.device)
    qz_x = model.encode(x, y)
    if seed is None:
        z = qz_x.mean  # (n, L)
    else:
        generator = torch.Generator(device=model.device).manual_seed(seed)
        z = qz_x.mean + qz_x.stddev * torch.randn(qz_x.mean.shape, generator=generator, device=model.device)
    x_hat = model.decode(z, y).mean
    originals, reconstructions = x.float().cpu().numpy(), x_hat.float().cpu().numpy()
    if png is not None:
        width = min(ROW_WIDTH, len(originals)) if draws_images(model) else 1
        save_examples_png(model, interleave_rows(originals, reconstructions, width), png, nrow=width)
    return originals, reconstructions
