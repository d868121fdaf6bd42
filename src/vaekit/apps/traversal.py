"""``traverse``: vary one latent dimension at a time around a starting point and decode.

Each row of the picture holds one dimension set to ``steps`` values evenly spaced over ``[-span, span]``
(absolute values: the prior is N(0, 1) per dimension, so ``span=3`` covers nearly all of it) while the
other dimensions keep the starting point's values.

A conditional model decodes the whole grid as one class, ``label``: by default the label of the starting
example (which is also encoded with it); starting from z = 0 needs ``label`` (``--label``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from vaekit.apps.writers import Layout, check_output, write_examples
from vaekit.errors import ConfigError
from vaekit.models import LatentVariableModel, with_latents
from vaekit.models.inputs import check_index, data_labels, decode_labels, examples_for, posterior_means

DEFAULT_MAX_DIMS = 10


def traversal_latents(z0: torch.Tensor, dims: Sequence[int], span: float, steps: int) -> torch.Tensor:
    """Latents of a traversal: ``z0`` with dimension ``dims[i]`` set to ``linspace(-span, span, steps)``.

    Parameters
    ----------
    z0
        Starting point ``(L,)``.
    dims
        Dimensions to vary, one row each.
    span, steps
        Range ``[-span, span]`` and number of values.

    Returns
    -------
    torch.Tensor
        ``(len(dims), steps, L)``; row ``i`` differs from ``z0`` only in dimension ``dims[i]``.
    """
    values = torch.linspace(-span, span, steps, dtype=z0.dtype, device=z0.device)  # (S,)
    z = z0.expand(len(dims), steps, z0.shape[-1]).clone()  # (len(dims), S, L)
    for row, dim in enumerate(dims):
        z[row, :, dim] = values
    return z


@torch.no_grad()
def traverse(
    model: LatentVariableModel | str | Path,
    data: str | None = None,
    *,
    index: int = 0,
    dims: Sequence[int] | None = None,
    span: float = 3.0,
    steps: int = 9,
    label: int | None = None,
    data_dir: str | None = None,
    out: str | Path | None = None,
    writer_options: Mapping[str, object] | None = None,
) -> np.ndarray:
    """Decode latent traversals from the posterior mean of one example (or from z = 0 with ``data=None``).

    Parameters
    ----------
    model
        A model, or the path of a model or run directory.
    data
        A built-in dataset (its test split) or a path to start from example ``index``; ``None`` starts
        from z = 0 (the prior mean).
    index
        Position of the starting example in ``data``.
    dims
        Latent dimensions to vary; default the first ``min(latent_dim, 10)``.
    span
        Each dimension runs over ``[-span, span]``, positive.
    steps
        Values per dimension, at least 2.
    label
        Conditional models only: the class (0..K-1) the grid is decoded as; default the starting example's
        label (required when starting from z = 0).
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    out
        A ``.png`` path for the grid (one row per dimension).
    writer_options
        Options of the modality's writer (:mod:`vaekit.apps.writers`), e.g. ``{"griffin_lim_iters": 100}`` for
        audio models; ``None``: the writer's defaults.

    Returns
    -------
    np.ndarray
        float32 ``(len(dims), steps, *data_shape)``: decoded means.

    Raises
    ------
    ConfigError
        For a dimension outside ``[0, latent_dim)``, ``span <= 0``, ``steps < 2``, an index out of range, or a
        label for an unconditional model.
    DataError
        For a label outside the trained classes, or a conditional model without a label to decode with.
    """
    if steps < 2:
        raise ConfigError(f"steps must be at least 2, got {steps}")
    if not span > 0:
        raise ConfigError(f"span must be positive, got {span}")
    model = with_latents(model, "traverse")
    png = check_output(model, out) if out is not None else None
    model.eval()
    latent_dim = model.latent_dim
    dims = list(range(min(latent_dim, DEFAULT_MAX_DIMS))) if dims is None else [int(d) for d in dims]
    if not dims or any(not 0 <= d < latent_dim for d in dims):
        raise ConfigError(f"dims {dims} must be a non-empty list of latent dimensions in 0..{latent_dim - 1}")
    n = len(dims) * steps
    y = decode_labels(model, label, n)  # (n,) or None
    if data is None:
        z0 = model.prior().mean.to(model.device).expand(latent_dim).clone()  # the prior mean (z = 0 for N(0, I))
    else:
        examples = examples_for(model, data, data_dir)
        check_index(index, len(examples), "index")
        y0 = data_labels(model, examples, np.array([index]))  # (1,) or None
        z0 = posterior_means(model, examples.batch(np.array([index])), y0)[0]  # (L,)
        if y is None and y0 is not None:
            y = y0.expand(n).to(model.device)
    z = traversal_latents(z0, dims, span, steps)  # (len(dims), S, L)
    x = model.decode(z.reshape(-1, latent_dim), y).mean.float().cpu().numpy()  # (len(dims) * S, *shape)
    if png is not None:
        values = torch.linspace(-span, span, steps).tolist()
        start = "z = 0" if data is None else f"the posterior mean of example {index}"
        layout = Layout(ncol=steps, row_labels=tuple(f"z[{d}]" for d in dims),
                        col_labels=tuple(f"{v:+.2g}" for v in values),
                        title=f"each row sets one latent dimension to the value above it, from {start}",
                        extras=dict(writer_options or {}))
        write_examples(model, x, png, layout)
    return x.reshape(len(dims), steps, *model.data_shape)
