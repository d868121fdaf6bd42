"""How the verbs write examples: one writer per modality, registered by name and chosen by the model.

A verb (sample, reconstruct, interpolate, traverse) computes examples (N, *data_shape) in the model's input space
and hands them to the writer of the model's modality (:meth:`vaekit.models.LatentVariableModel.modality`) with a
:class:`Layout` (how many per row, what each row and column shows). Registered:

=========  ========================================================================================
``image``  a PNG grid of images (C x H x W with 1 or 3 channels, values in [0, 1]), with captions
``vector`` a PNG heat map, one row per example (real-valued or flat data)
=========  ========================================================================================

A new modality (text, audio, ranked items) registers a writer here; the verbs do not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from vaekit.errors import OutputError
from vaekit.models import LatentVariableModel
from vaekit.plots import save_heatmap, save_image_grid
from vaekit.registry import Registry


@dataclass(frozen=True)
class Layout:
    """How a verb's examples are arranged: ``ncol`` per row, a caption per row and per column (empty strings
    for none), and a title."""

    ncol: int
    row_labels: tuple[str, ...] = ()
    col_labels: tuple[str, ...] = ()
    title: str = ""
    extras: dict[str, object] = field(default_factory=dict)


class ExampleWriter(Protocol):
    """Writes examples of one modality to a file."""

    suffixes: tuple[str, ...]

    def write(self, model: LatentVariableModel, x: np.ndarray, out: Path, layout: Layout) -> Path:
        """Write ``x`` (N, *data_shape) to ``out``; returns the path written."""
        ...


WRITERS: Registry[ExampleWriter] = Registry("example writer")


class _ImageGrid:
    suffixes: tuple[str, ...] = (".png",)

    def write(self, model: LatentVariableModel, x: np.ndarray, out: Path, layout: Layout) -> Path:
        return save_image_grid(x, out, nrow=layout.ncol, row_labels=layout.row_labels,
                               col_labels=layout.col_labels, title=layout.title)


class _HeatMap:
    suffixes: tuple[str, ...] = (".png",)

    def write(self, model: LatentVariableModel, x: np.ndarray, out: Path, layout: Layout) -> Path:
        return save_heatmap(np.asarray(x, dtype=np.float32).reshape(len(x), -1), out, title=layout.title or None)


WRITERS.register("image")(_ImageGrid())
WRITERS.register("vector")(_HeatMap())


def writer_for(model: LatentVariableModel) -> ExampleWriter:
    """The registered writer of the model's modality."""
    return WRITERS.get(model.modality())


def check_output(model: LatentVariableModel | None, out: str | Path, suffixes: tuple[str, ...] = (".png",),
                 option: str = "--out") -> Path:
    """``out`` as a Path, or OutputError unless it ends in one of the suffixes the model's writer writes (or
    ``suffixes`` before the model is loaded); the message names the command-line ``option`` that gave it."""
    out = Path(out)
    allowed = writer_for(model).suffixes if model is not None else suffixes
    if out.suffix.lower() not in allowed:
        names = " or ".join(f"NAME{suffix}" for suffix in allowed)
        raise OutputError(f"output {str(out)!r} must be a {'/'.join(allowed)} file; pass {option} {names}")
    return out


def write_examples(
    model: LatentVariableModel, x: torch.Tensor | np.ndarray, out: Path, layout: Layout
) -> Path:
    """Write ``x`` (N, *data_shape) with the writer of the model's modality."""
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return writer_for(model).write(model, array, check_output(model, out), layout)
