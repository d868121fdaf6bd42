"""Anomaly scores: one number per example, higher for more anomalous examples.

=========  =========================================================================  ===============
method     score                                                                      unit
=========  =========================================================================  ===============
``iwae``   -L_k: the importance-weighted NLL estimate with k samples (the default)    nats / bits-dim
``elbo``   -ELBO, averaged over k posterior samples (analytic KL)                     nats / bits-dim
``recon``  squared error between x and the decoded posterior mean, summed over dims   squared error
=========  =========================================================================  ===============

The likelihood-based scores (``iwae``, ``elbo``) are in nats per example, or bits/dim with ``unit="bits"``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vaekit import objectives
from vaekit.errors import ConfigError
from vaekit.model import VAE
from vaekit.registry import Registry

ScoreFn = Callable[[VAE, torch.Tensor, int, "torch.Tensor | None"], torch.Tensor]
SCORES: Registry[ScoreFn] = Registry("anomaly score")
UNITS = ("nats", "bits")


@SCORES.register("iwae")
def _iwae(model: VAE, x: torch.Tensor, k: int, y: torch.Tensor | None) -> torch.Tensor:
    return -objectives.iwae_bound(model, x, k, y=y)


@SCORES.register("elbo")
def _elbo(model: VAE, x: torch.Tensor, k: int, y: torch.Tensor | None) -> torch.Tensor:
    total = torch.zeros(x.shape[0], device=x.device)
    for _ in range(k):
        total -= objectives.elbo(model, x, y=y).elbo
    return total / k


@SCORES.register("recon")
def _recon(model: VAE, x: torch.Tensor, k: int, y: torch.Tensor | None) -> torch.Tensor:
    x_hat = model.decode(model.encode(x, y).mean, y).mean
    return ((x_hat - x) ** 2).flatten(1).sum(1)


@torch.no_grad()
def anomaly_scores(
    model: VAE,
    x: torch.Tensor,
    method: str = "iwae",
    *,
    k: int = 100,
    unit: str = "nats",
    y: torch.Tensor | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Score examples: higher means more anomalous.

    Parameters
    ----------
    model
        A trained model.
    x
        (N, *data_shape) preprocessed examples.
    method
        ``iwae`` (default), ``elbo`` or ``recon``; see the module docstring.
    k
        Importance samples (``iwae``) or posterior samples averaged (``elbo``).
    unit
        ``nats`` per example, or ``bits`` per dimension (likelihood scores only).
    y
        (N,) labels for a conditional model.
    batch_size
        Examples per batch (memory holds about ``batch_size * min(k, 100)`` decoded examples).

    Returns
    -------
    torch.Tensor
        (N,) scores on the CPU.
    """
    score_fn = SCORES.get(method)
    if unit not in UNITS:
        raise ConfigError(f"unknown score unit {unit!r}; choose one of: {', '.join(UNITS)}")
    if unit == "bits" and method == "recon":
        raise ConfigError("the recon score is a squared error, not a rate; use unit=nats with method=recon")
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    model.eval()
    model.check_input(x)
    scores = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(model.device)
        yb = None if y is None else y[start : start + batch_size].to(model.device)
        scores.append(score_fn(model, xb, k, yb).cpu())
    result = torch.cat(scores) if scores else torch.zeros(0)
    if unit == "bits":
        result = objectives.bits_per_dim(result, model.num_dims)  # type: ignore[assignment]
    return result
