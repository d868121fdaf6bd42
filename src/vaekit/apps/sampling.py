"""``sample``: draw new examples from a model, z ~ N(0, T^2 I) -> mean of p(x|z).

Temperature ``T`` below 1 trades diversity for typicality (the "reduced temperature" samples of Kingma and
Dhariwal 2018, arXiv:1807.03039). Only the model contract (``prior`` / ``decode``) is used.

A conditional model (``model.num_classes = K``, a conditional VAE, Sohn et al. 2015) decodes every latent with
a label: ``label=3`` asks for examples of class 3 (``vaekit sample MODEL --label 3``), a sequence gives one
label per sample, and no label cycles through the classes 0, 1, ..., K-1, 0, 1, ... (one class per column of
the picture when K <= 16).

A model trained with ``model.latent_density`` carries a Gaussian mixture fitted to its training codes (per class
for a conditional model, :mod:`vaekit.models.latent_density`); ``latents="auto"`` (the default) draws from it
when the model has one, ``"prior"`` from N(0, I) (draws of the model's own p(x), the one its NLL measures),
``"fitted"`` insists on the fitted one.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vaekit.apps.writers import Layout, check_output, write_examples
from vaekit.errors import ConfigError
from vaekit.files import atomic_write_bytes, check_file_targets, npy_bytes
from vaekit.models import LatentVariableModel, as_model
from vaekit.models.inputs import Labels, check_samples_fit, decode_labels

logger = logging.getLogger(__name__)
MAX_CLASS_COLUMNS = 16  # a conditional grid puts one class per column up to this many classes


@torch.no_grad()
def sample(
    model: LatentVariableModel | str | Path,
    n: int = 64,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    label: Labels | None = None,
    out: str | Path | None = None,
    writer_options: Mapping[str, object] | None = None,
    latents: str = "auto",
    draw: bool = False,
) -> np.ndarray:
    """Draw ``n`` examples: decoded means of latents drawn from the prior (or the fitted latent density) at
    ``temperature`` (or, with ``draw``, draws of p(x|z)).

    Parameters
    ----------
    model
        A model, or the path of a model or run directory.
    n
        Number of examples, at least 1.
    temperature
        Multiplier of the prior's standard deviation, positive.
    seed
        Seed of the latent draw (the same seed gives the same samples).
    label
        Conditional models only: the class to generate (an int in 0..K-1) or ``(n,)`` labels, one per
        sample; ``None`` cycles through the classes.
    out
        A ``.png`` path: writes the picture (an image grid, or a heat map for real-valued data) and the
        array as ``.npy`` beside it (same stem); a conditional model also writes the labels as
        ``<stem>_labels.npy``.
    writer_options
        Options of the modality's writer (:mod:`vaekit.apps.writers`), e.g. ``{"griffin_lim_iters": 100}`` for
        audio models; ``None``: the writer's defaults.
    latents
        Where z comes from: ``auto`` (the fitted latent density if the model has one, else the prior), ``prior``
        or ``fitted`` (see the module docstring).
    draw
        Decode a draw of p(x|z) (seeded by ``seed``) instead of its mean: the likelihood's noise on every value,
        e.g. a spectrogram's noise floor (FSDD's samples lie closer to real clips this way, BENCHMARKS.md "Audio"),
        or 0/1 pixels of a Bernoulli model. The default, the mean, is the smooth expected example.

    Returns
    -------
    np.ndarray
        float32 ``(n, *data_shape)``, in the model's input space (preprocessed units).

    Raises
    ------
    ConfigError
        If ``n < 1``, ``temperature <= 0``, a label is given to an unconditional model, ``latents`` is unknown,
        or ``fitted`` for a model without a fitted density.
    DataError
        If a label lies outside the trained classes 0..K-1.
    OutputError
        If ``out`` is not a ``.png`` path or cannot be written.
    """
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"n must be at least 1 (a whole number of samples), got {n!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if not 0 < temperature < math.inf:
        raise ConfigError(f"temperature must be a positive finite number, got {temperature}; 1.0 samples the prior")
    model = as_model(model)
    png = check_output(model, out) if out is not None else None
    check_samples_fit(model, n, "ask for fewer samples (-n), or draw them in several calls")
    model.eval()
    y = decode_labels(model, label, n)  # (n,) or None
    ncol = max(1, int(np.ceil(np.sqrt(n))))
    if y is None and model.num_classes:
        y = torch.arange(n, device=model.device) % model.num_classes  # each class in turn
        ncol = model.num_classes if model.num_classes <= MAX_CLASS_COLUMNS else ncol
    generator = torch.Generator(device=model.device).manual_seed(seed)
    z = model.sample_latents(n, temperature, generator, y, latents)  # (n, L), seeded draws
    px_z = model.decode(z, y)
    if draw:
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            torch.manual_seed(seed)  # the draw of p(x|z) seeded too, without touching the caller's random state
            x = px_z.sample().float().cpu().numpy()  # (n, *shape)
    else:
        x = px_z.mean.float().cpu().numpy()  # (n, *shape)
    if png is not None:
        by_class = label is None and model.num_classes and ncol == model.num_classes
        columns = tuple(f"class {c}" for c in range(ncol)) if by_class else ()
        asked = f", class {label}" if isinstance(label, (int, np.integer)) else ""
        fitted = ", fitted latents" if model.latents_used(latents) == "fitted" else ""
        drawn = ", draws of p(x|z)" if draw else ""
        title = f"{n} samples, temperature {temperature:g}, seed {seed}{asked}{fitted}{drawn}"
        check_file_targets(png, png.with_suffix(".npy"), png.with_name(f"{png.stem}_labels.npy"))
        write_examples(model, x, png, Layout(ncol=ncol, col_labels=columns, title=title,
                                                    extras=dict(writer_options or {})))
        atomic_write_bytes(png.with_suffix(".npy"), npy_bytes(x))
        if y is not None:
            atomic_write_bytes(png.with_name(f"{png.stem}_labels.npy"), npy_bytes(y.cpu().numpy()))
        logger.debug("wrote %d samples to %s and %s", n, png, png.with_suffix(".npy"))
    return x
