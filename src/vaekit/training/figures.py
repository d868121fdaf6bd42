"""The figures of a run directory: the loss curve, samples, and validation reconstructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vaekit.models import LatentVariableModel
from vaekit.plots import interleave_rows, plot_loss_curve, save_image_grid


def write_figures(
    out: Path,
    model: LatentVariableModel,
    metrics: list[dict[str, Any]],
    originals: torch.Tensor,
    labels: torch.Tensor | None,
    n: int,
    seed: int,
) -> None:
    """Loss curve, a grid of samples and a grid of validation reconstructions (rows of originals, each above
    its row of reconstructions)."""
    plot_loss_curve(metrics, out / "loss_curve.png")
    generator = torch.Generator(device=model.device).manual_seed(seed)
    sample_labels = torch.arange(n) % model.num_classes if model.num_classes else None  # each class in turn
    save_image_grid(model.sample(n, generator=generator, y=sample_labels).cpu(), out / "samples.png")
    recon = model.reconstruct(originals, y=labels)
    width = 8
    rows = interleave_rows(originals.cpu().numpy(), recon.cpu().numpy(), width)
    save_image_grid(rows, out / "reconstructions.png", nrow=width)
