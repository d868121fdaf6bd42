"""``interpolate``: decode points on a path between the posterior means of two examples.

``linear`` follows the straight line; ``spherical`` (slerp, Shoemake 1985; advocated for latent spaces by
White 2016, arXiv:1609.04468) follows the great circle, which keeps points at the norms typical of a
Gaussian prior instead of cutting through the low-density centre.

With a conditional model each end is encoded with its own label from the data, q(z | x, y), and the whole
path is decoded with one class, ``label`` (default: the label of example ``index_a``): the latent carries the
style, the label the class, so ``label=3`` morphs the style of one example into another's, drawn as a 3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from vaekit.apps.writers import Layout, check_output, write_examples
from vaekit.errors import ConfigError
from vaekit.models import LatentVariableModel, with_latents
from vaekit.models.inputs import check_index, data_labels, decode_labels, examples_for, posterior_means
from vaekit.registry import Registry

Path_ = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``path(a, b, t) -> (S, L)``: points at positions t (S,) in [0, 1] between latents a and b (L,)."""
INTERPOLATIONS: Registry[Path_] = Registry("interpolation method", "--method")



@INTERPOLATIONS.register("linear")
def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation ``(1 - t) a + t b``.

    Parameters
    ----------
    a, b
        End points ``(L,)``.
    t
        Positions ``(S,)`` in [0, 1].

    Returns
    -------
    torch.Tensor
        ``(S, L)``.
    """
    t = t.to(a.dtype)[:, None]  # (S, 1)
    return (1 - t) * a + t * b


@INTERPOLATIONS.register("spherical")
def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation ``sin((1-t) w)/sin(w) a + sin(t w)/sin(w) b``, ``w`` the angle between a and b.

    Falls back to :func:`lerp` when ``a`` and ``b`` are (nearly) parallel or one is (nearly) zero, where the
    formula divides by ~0; the end points are returned exactly.

    Parameters
    ----------
    a, b
        End points ``(L,)``.
    t
        Positions ``(S,)`` in [0, 1].

    Returns
    -------
    torch.Tensor
        ``(S, L)``; for ``|a| = |b|`` every point has that norm.
    """
    norm_a, norm_b = a.norm(), b.norm()
    if float(norm_a) < eps or float(norm_b) < eps:
        return lerp(a, b, t)
    u, v = a / norm_a, b / norm_b
    # The angle as 2 atan2(|u - v|, |u + v|) stays accurate near 0 and pi, where arccos(u . v) does not.
    omega = 2 * torch.atan2((u - v).norm(), (u + v).norm())
    sin = torch.sin(omega)
    if abs(float(sin)) < eps:
        # Parallel or antiparallel: no unique great circle; a straight line is the honest choice.
        return lerp(a, b, t)
    t = t.to(a.dtype)[:, None]  # (S, 1)
    path = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin
    path[t[:, 0] == 0] = a
    path[t[:, 0] == 1] = b
    return path


def interpolate_latents(z_a: torch.Tensor, z_b: torch.Tensor, steps: int, method: str = "linear") -> torch.Tensor:
    """``steps`` points (steps, L) from ``z_a`` to ``z_b`` (both ends included) on the registered path ``method``.

    Raises
    ------
    ConfigError
        For an unknown method (the message lists the registered ones) or ``steps < 2``.
    """
    path = INTERPOLATIONS.get(method)
    if steps < 2:
        raise ConfigError(f"steps must be at least 2 (both end points), got {steps}")
    return path(z_a, z_b, torch.linspace(0.0, 1.0, steps, device=z_a.device))


@torch.no_grad()
def interpolate(
    model: LatentVariableModel | str | Path,
    data: str | None = None,
    *,
    index_a: int = 0,
    index_b: int = 1,
    steps: int = 10,
    method: str = "linear",
    label: int | None = None,
    data_dir: str | None = None,
    out: str | Path | None = None,
    writer_options: Mapping[str, object] | None = None,
) -> np.ndarray:
    """Decode ``steps`` points between the posterior means of examples ``index_a`` and ``index_b``.

    Parameters
    ----------
    model
        A model, or the path of a model or run directory.
    data
        A built-in dataset (its test split) or a path; default the model's training source.
    index_a, index_b
        Positions of the two examples in ``data``.
    steps
        Number of points including both ends, at least 2.
    method
        ``linear`` or ``spherical``.
    label
        Conditional models only: the class (0..K-1) every point is decoded as; default the label of
        example ``index_a``.
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    out
        A ``.png`` path for the strip (one row).
    writer_options
        Options of the modality's writer (:mod:`vaekit.apps.writers`), e.g. ``{"griffin_lim_iters": 100}`` for
        audio models; ``None``: the writer's defaults.

    Returns
    -------
    np.ndarray
        float32 ``(steps, *data_shape)``: decoded means along the path.

    Raises
    ------
    ConfigError
        For an unknown method, ``steps < 2``, an index out of range, or a label for an unconditional model.
    DataError
        For a label outside the trained classes, or a conditional model with unlabelled data.
    """
    INTERPOLATIONS.get(method)
    if steps < 2:
        raise ConfigError(f"steps must be at least 2 (both end points), got {steps}")
    model = with_latents(model, "interpolate along")
    png = check_output(model, out) if out is not None else None
    y = decode_labels(model, label, steps)  # (steps,) or None; checked before any data is read
    examples = examples_for(model, data, data_dir)
    for name, index in (("index_a", index_a), ("index_b", index_b)):
        check_index(index, len(examples), name)
    ends = np.array([index_a, index_b])
    y_ends = data_labels(model, examples, ends)  # (2,) or None
    z_ends = posterior_means(model, examples.batch(ends), y_ends)  # (2, L)
    if y is None and y_ends is not None:
        y = y_ends[:1].expand(steps).to(model.device)
    z = interpolate_latents(z_ends[0], z_ends[1], steps, method)  # (steps, L)
    x = model.decode(z, y).mean.float().cpu().numpy()  # (steps, *shape)
    if png is not None:
        columns = tuple(f"#{index_a}" if i == 0 else f"#{index_b}" if i == steps - 1 else "" for i in range(steps))
        title = f"{method} path between the posterior means of examples {index_a} and {index_b}"
        write_examples(model, x, png, Layout(ncol=steps, col_labels=columns, title=title,
                                                    extras=dict(writer_options or {})))
    return x
