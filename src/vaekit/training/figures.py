"""The figures of a run directory: the loss curve, samples, and validation reconstructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vaekit.files import atomic_write_text
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
    its row of reconstructions); for text (a preprocessing record with ``as_text``), ``samples.txt`` and
    ``reconstructions.txt`` (each original, then its decode). A record with a ``pictures(x)`` method (audio:
    spectrograms in colour) draws the examples; others are drawn as they are."""
    plot_loss_curve(metrics, out / "loss_curve.png")
    generator = torch.Generator(device=model.device).manual_seed(seed)
    sample_labels = torch.arange(n) % model.num_classes if model.num_classes else None  # each class in turn
    as_text = getattr(model.preprocessing, "as_text", None)  # a record whose examples are lines of text
    if as_text is not None:
        samples = as_text(model.sample(n, generator=generator, y=sample_labels, latents="auto").cpu())
        pairs = zip(as_text(originals.cpu()), as_text(model.reconstruct(originals, y=labels).cpu()), strict=True)
        atomic_write_text(out / "samples.txt", "".join(f"{line}\n" for line in samples))
        atomic_write_text(out / "reconstructions.txt", "".join(f"{a}\n  -> {b}\n" for a, b in pairs))
        return
    pictures = getattr(model.preprocessing, "pictures", None)  # examples drawn by their record (audio)
    samples = model.sample(n, generator=generator, y=sample_labels, latents="auto").cpu()
    save_image_grid(samples if pictures is None else pictures(samples.numpy()), out / "samples.png")
    recon = model.reconstruct(originals, y=labels)
    width = 8
    rows = interleave_rows(originals.cpu().numpy(), recon.cpu().numpy(), width)
    rows = rows if pictures is None else pictures(rows)
    save_image_grid(rows, out / "reconstructions.png", nrow=width)
