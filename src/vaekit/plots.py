"""Pictures of data and training: image grids, heat maps of vectors, and loss curves.

::

    (N, C, H, W), C in {1, 3}, values in [0, 1] ──> PNG grid (Pillow, nearest-neighbour upscaled)
    (N, D) or any other shape                    ──> PNG heat map, one row per example (matplotlib)
    list of per-epoch metric dicts               ──> PNG loss curve in nats (matplotlib)

Every file is rendered in memory and written with :func:`vaekit.files.atomic_write_bytes`, so a
crash never leaves a half-written PNG. matplotlib is imported lazily with the Agg backend.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.errors import DataError
from vaekit.files import atomic_write_bytes

logger = logging.getLogger(__name__)

MIN_CELL_PX = 28  # small images (8x8 digits) are upscaled to at least this many pixels per side
PADDING_PX = 2
PADDING_VALUE = 1.0  # white lines between cells; NaN images are drawn in this colour too (blank cells)
CAPTION_PX = 11  # text height of grid captions
HEATMAP_WIDTH_IN = 8.0
DPI = 100


def is_image_shape(shape: Sequence[int]) -> bool:
    """Whether a per-example shape is a ``(C, H, W)`` image with 1 or 3 channels."""
    return len(shape) == 3 and shape[0] in (1, 3)


def _to_numpy(images: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    return np.asarray(images, dtype=np.float32)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (imported on first use: it costs about a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Render a matplotlib figure to PNG in memory, close it, and write it atomically to ``path``."""
    plt = pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    logger.debug("wrote %s", path)
    return path


def save_image_grid(
    images: torch.Tensor | np.ndarray,
    path: str | Path,
    *,
    nrow: int | None = None,
    data_shape: Sequence[int] | None = None,
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    title: str = "",
) -> Path:
    """Save examples as one PNG: a grid of images with optional captions, or a heat map for non-image data.

    Parameters
    ----------
    images
        ``(N, C, H, W)`` with ``C`` in {1, 3} and values in [0, 1] (clipped), or ``(N, H, W)``; ``(N, D)``
        rows are drawn as a heat map unless ``data_shape`` says they are flattened images. NaN values are
        drawn as blank (padding-coloured) cells.
    path
        Target PNG file.
    nrow
        Images per grid row (default ``ceil(sqrt(N))``); ignored for heat maps.
    data_shape
        Per-example shape to reshape flat rows to, e.g. ``(1, 8, 8)``.
    row_labels, col_labels
        A caption left of each grid row (e.g. "originals", "z[3]") and above each column (e.g. "-3.0"), drawn
        in black on white; empty strings leave a row or column uncaptioned.
    title
        A line of text above the grid.

    Returns
    -------
    Path
        ``path``. Grid cells are upscaled (nearest neighbour) to at least 28 px with 2 px padding.

    Raises
    ------
    DataError
        If ``images`` is empty.
    OutputError
        If ``path`` cannot be written.
    """
    path = Path(path)
    x = _to_numpy(images)
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"need a non-empty batch of examples to draw, got an array of shape {x.shape}")
    if data_shape is not None and math.prod(data_shape) == math.prod(x.shape[1:]):
        x = x.reshape(len(x), *data_shape)
    if x.ndim == 3:
        x = x[:, None]  # (N, 1, H, W)
    if not is_image_shape(x.shape[1:]):
        return save_heatmap(x.reshape(len(x), -1), path, title=title or None)
    canvas = _grid_pixels(x, nrow)  # (H, W, C) uint8
    from PIL import Image

    c = canvas.shape[2]
    image = Image.fromarray(canvas[:, :, 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")
    if row_labels or col_labels or title:
        image = _captioned(image, x.shape[2:], nrow or math.ceil(math.sqrt(len(x))), row_labels, col_labels, title)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    logger.debug("wrote %s (%d images)", path, len(x))
    return path


def _cell_size(h: int, w: int) -> tuple[int, int, int]:
    scale = max(1, math.ceil(MIN_CELL_PX / min(h, w)))
    return scale, h * scale, w * scale


def _grid_pixels(x: np.ndarray, nrow: int | None) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] tiled ``nrow`` per row, upscaled and padded: (H', W', C) uint8."""
    n, c, h, w = x.shape
    scale, ch, cw = _cell_size(h, w)
    ncol = max(1, min(nrow or math.ceil(math.sqrt(n)), n))
    nrows = math.ceil(n / ncol)
    x = np.clip(np.nan_to_num(x, nan=PADDING_VALUE), 0.0, 1.0)
    x = x.repeat(scale, axis=2).repeat(scale, axis=3)  # (N, C, h*s, w*s)
    canvas = np.full(
        (c, nrows * (ch + PADDING_PX) + PADDING_PX, ncol * (cw + PADDING_PX) + PADDING_PX),
        PADDING_VALUE,
        dtype=np.float32,
    )
    for i in range(n):
        top = PADDING_PX + (i // ncol) * (ch + PADDING_PX)
        left = PADDING_PX + (i % ncol) * (cw + PADDING_PX)
        canvas[:, top : top + ch, left : left + cw] = x[i]
    return np.round(canvas * 255).astype(np.uint8).transpose(1, 2, 0)


def _captioned(
    grid: Any, cell: Sequence[int], ncol: int, row_labels: Sequence[str], col_labels: Sequence[str], title: str
) -> Any:
    """``grid`` on a white canvas with the row captions at its left, the column captions and the title above."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=CAPTION_PX)
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))

    def width(text: str) -> int:
        return int(measure.textlength(text, font=font)) if text else 0

    _, ch, cw = _cell_size(int(cell[0]), int(cell[1]))
    left = max((width(t) for t in row_labels), default=0) + (2 * PADDING_PX if row_labels else 0)
    line = CAPTION_PX + 2 * PADDING_PX
    top = (line if title else 0) + (line if col_labels else 0)
    right = max(0, width(title) + PADDING_PX - (left + grid.width))
    canvas = Image.new(grid.mode, (left + grid.width + right, top + grid.height), 255 if grid.mode == "L" else "white")
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    ink = 0 if grid.mode == "L" else "black"
    if title:
        draw.text((PADDING_PX, PADDING_PX), title, fill=ink, font=font)
    for j, text in enumerate(col_labels[:ncol]):
        centre = left + PADDING_PX + j * (cw + PADDING_PX) + cw // 2
        draw.text((centre - width(text) // 2, top - line + PADDING_PX), text, fill=ink, font=font)
    for i, text in enumerate(row_labels):
        middle = top + PADDING_PX + i * (ch + PADDING_PX) + ch // 2
        draw.text((PADDING_PX, middle - CAPTION_PX // 2), text, fill=ink, font=font)
    return canvas


def save_heatmap(rows: torch.Tensor | np.ndarray, path: str | Path, *, title: str | None = None) -> Path:
    """Save ``(N, D)`` rows as a heat map PNG (one row per example, a shared colour scale).

    The figure is ``HEATMAP_WIDTH_IN`` inches wide at ``DPI`` (800 px) and grows with ``N`` (capped).
    NaN entries are left blank.
    """
    x = _to_numpy(rows)
    x = x.reshape(len(x), -1)  # (N, D)
    plt = pyplot()
    height = min(max(2.5, 1.5 + 0.12 * len(x)), 12.0)
    fig, ax = plt.subplots(figsize=(HEATMAP_WIDTH_IN, height))
    finite = x[np.isfinite(x)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    image = ax.imshow(x, aspect="auto", interpolation="nearest", cmap="coolwarm", vmin=-bound, vmax=bound)
    ax.set_xlabel("feature")
    ax.set_ylabel("example")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def plot_loss_curve(metrics: list[dict[str, Any]], path: str | Path) -> Path:
    """Plot the training loss and the validation negative ELBO (and NLL if logged) per epoch, in nats.

    Parameters
    ----------
    metrics
        One dict per epoch with ``epoch``, ``train_loss`` and ``val_elbo`` (nats per example); ``val_nll``
        is plotted too where present. Missing keys are skipped.
    path
        Target PNG file (600 x 400 px).

    Returns
    -------
    Path
        ``path``.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    epochs = [m.get("epoch", i + 1) for i, m in enumerate(metrics)]
    curves = (
        ("train_loss", "train loss (nats)", 1.0),
        ("val_elbo", "val -ELBO (nats)", -1.0),
        ("val_nll", "val NLL (nats)", 1.0),
    )
    for key, label, sign in curves:
        points = [
            (e, sign * float(m[key])) for e, m in zip(epochs, metrics, strict=True) if m.get(key) is not None
        ]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, Path(path))


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
