"""``plot_latent``: a 2-D map of the latent space, one point per example, coloured by label.

Each example is placed at its posterior mean mu(x) = E[z|x], brought to two dimensions by a registered
projection:

- ``auto`` (default): ``first`` when the latent has one or two dimensions, else ``pca``.
- ``first``: the first two latent dimensions as they are (a 1-D latent is drawn against 0).
- ``pca``: the top two principal components of the posterior means of the plotted examples (exact SVD,
  deterministic; axes name the share of variance each explains). Linear, so distances along the axes are
  latent distances; clusters that overlap here may still be apart in the other dimensions.

Points are coloured by the data's labels when it has them (a legend of classes for up to 20 classes, a
colour bar beyond), else drawn in one colour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vaekit.apps.writers import check_output
from vaekit.errors import ConfigError
from vaekit.models import LatentVariableModel, with_latents
from vaekit.models.inputs import data_labels, examples_for, posterior_means
from vaekit.plots import pyplot, save_figure
from vaekit.registry import Registry

logger = logging.getLogger(__name__)

Projection = Callable[[np.ndarray], tuple[np.ndarray, tuple[str, str]]]
PROJECTIONS: Registry[Projection] = Registry("latent projection", "--projection")
MAX_LEGEND_CLASSES = 20


@PROJECTIONS.register("first")
def _first(mu: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    if mu.shape[1] == 1:
        return np.concatenate([mu, np.zeros_like(mu)], axis=1), ("z[0]", "")
    return mu[:, :2], ("z[0]", "z[1]")


@PROJECTIONS.register("pca")
def _pca(mu: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    from sklearn.decomposition import PCA

    if mu.shape[1] < 2 or len(mu) < 2:
        raise ConfigError(
            f"projection 'pca' needs at least 2 latent dimensions and 2 examples, got {mu.shape}; use 'first'"
        )
    pca = PCA(n_components=2, svd_solver="full").fit(mu)
    share = pca.explained_variance_ratio_
    return pca.transform(mu), (f"PC 1 of the posterior means ({share[0]:.0%})", f"PC 2 ({share[1]:.0%})")


@PROJECTIONS.register("auto")
def _auto(mu: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    return (_first if mu.shape[1] <= 2 else _pca)(mu)


def _draw(points: np.ndarray, labels: np.ndarray | None, axis_names: tuple[str, str], title: str, out: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 6.0))
    size = 4.0 if len(points) > 2000 else 12.0
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6, linewidths=0)
    else:
        classes = np.unique(labels)
        if len(classes) <= MAX_LEGEND_CLASSES:
            cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
            for i, c in enumerate(classes):
                pick = labels == c
                ax.scatter(points[pick, 0], points[pick, 1], s=size, alpha=0.6, linewidths=0, color=cmap(i),
                           label=str(c))
            ax.legend(title="label", markerscale=3.0 if size < 10 else 1.5, fontsize=8, loc="best")
        else:
            image = ax.scatter(points[:, 0], points[:, 1], c=labels, s=size, alpha=0.6, linewidths=0,
                               cmap="viridis")
            fig.colorbar(image, ax=ax, label="label")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    if not axis_names[1]:
        ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, out)


@torch.no_grad()
def plot_latent(
    model: LatentVariableModel | str | Path,
    data: str | None = None,
    *,
    data_dir: str | None = None,
    projection: str = "auto",
    max_points: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    out: str | Path = "latent.png",
    progress: bool = False,
) -> np.ndarray:
    """Draw the posterior means of a dataset on a 2-D map coloured by label, as a PNG.

    Parameters
    ----------
    model
        A model, or the path of a model or run directory.
    data
        A built-in dataset (its test split) or a path; default the model's own source.
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    projection
        ``auto``, ``first`` or ``pca`` (see the module docstring).
    max_points
        Plot at most this many examples, drawn at random (seeded by ``seed``); ``None`` plots all.
    seed
        Seed of the ``max_points`` subsample.
    batch_size
        Examples encoded at once.
    out
        The ``.png`` file to write.
    progress
        Show a progress bar while encoding.

    Returns
    -------
    np.ndarray
        (n, 2) float64 coordinates of the plotted examples, in the order they were read.

    Raises
    ------
    ConfigError
        Unknown projection, ``max_points`` or ``batch_size`` below 1.
    DataError
        Data that does not fit the model (other shapes, NaN values).
    OutputError
        ``out`` not ending in ``.png`` or not writable.
    """
    project = PROJECTIONS.get(projection)
    out = check_output(None, out)
    if max_points is not None and max_points < 1:
        raise ConfigError(f"max_points must be at least 1, got {max_points}; or None to plot every example")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    model = with_latents(model, "map")
    examples = examples_for(model, data, data_dir)
    rows = np.arange(len(examples))
    if max_points is not None and max_points < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
    means = []
    for start in tqdm(range(0, len(rows), batch_size), desc="encode", disable=not progress, leave=False, unit="batch"):
        batch = rows[start : start + batch_size]
        means.append(posterior_means(model, examples.batch(batch), data_labels(model, examples, batch)).cpu())
    mu = torch.cat(means).double().numpy()  # (n, L)
    points, axis_names = project(mu)
    labels = None if examples.labels is None else examples.labels[rows]
    source = data or getattr(model.preprocessing, "source", "") or "data"
    title = f"latent space of {source}: {len(rows)} posterior means, L = {model.latent_dim}, projection {projection}"
    _draw(points, labels, axis_names, title, out)
    logger.debug("wrote %s (%d points)", out, len(points))
    return np.asarray(points, dtype=np.float64)
