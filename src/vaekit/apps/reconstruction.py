"""``reconstruct``: pass examples through the model, x -> q(z|x) -> z -> mean of p(x|z).

The picture shows originals and reconstructions in alternating rows, so each reconstruction sits right
below its original. A conditional model encodes and decodes each example with its own label from the data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vaekit.apps.writers import Layout, check_output, write_examples
from vaekit.errors import ConfigError
from vaekit.models import LatentVariableModel, with_latents
from vaekit.models.inputs import data_labels, examples_for
from vaekit.plots import interleave_rows

logger = logging.getLogger(__name__)
ROW_WIDTH = 8  # examples per row of the picture


@torch.no_grad()
def reconstruct(
    model: LatentVariableModel | str | Path,
    data: str | None = None,
    *,
    n: int = 32,
    data_dir: str | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    writer_options: Mapping[str, object] | None = None,
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
    writer_options
        Options of the modality's writer (:mod:`vaekit.apps.writers`), e.g. ``{"griffin_lim_iters": 100}`` for
        audio models; ``None``: the writer's defaults.

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
    model = with_latents(model, "reconstruct from")
    png = check_output(model, out) if out is not None else None
    model.eval()
    examples = examples_for(model, data, data_dir)
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
        z = qz_x.reparameterize(torch.randn(qz_x.mean.shape, generator=generator, device=model.device))
    x_hat = model.decode(z, y).mean
    originals, reconstructions = x.float().cpu().numpy(), x_hat.float().cpu().numpy()
    if png is not None:
        width = min(ROW_WIDTH, len(originals)) if model.modality() == "image" else 1
        rows = interleave_rows(originals, reconstructions, width)
        captions = tuple("originals" if i % 2 == 0 else "reconstructed" for i in range(len(rows) // width))
        how = "posterior means" if seed is None else f"one posterior draw (seed {seed})"
        title = f"examples 0-{len(originals) - 1} of {data or model.preprocessing.source}, decoded from {how}"
        write_examples(model, rows, png, Layout(ncol=width, row_labels=captions, title=title,
                                                       extras=dict(writer_options or {})))
    return originals, reconstructions
