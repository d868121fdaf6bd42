"""Bounds on log p(x), computed through the model contract only: the ELBO and the importance-weighted bound.

Every function returns per-example tensors of shape ``(B,)`` in nats, summed over data dimensions and over latent
dimensions (never averaged over pixels); where a scalar loss is returned it is the batch mean, taken here and
nowhere else.

- ELBO = E_q[log p(x|z)] - beta KL(q(z|x) || p(z)), one reparameterised draw z = mu + sigma * eps, the KL analytic
  where the posterior gives it per dimension (:meth:`vaekit.models.contract.Posterior.kl_per_dim`), else a
  Monte Carlo estimate from the same draw. The reported ``elbo`` always uses beta = 1 and no free bits.
- IWAE bound (Burda, Grosse, Salakhutdinov 2015, arXiv:1509.00519)::

      log_w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),   z_i ~ q(z|x), i = 1..k
      L_k     = logsumexp_i(log_w_i) - log k                 (k = 1: a one-sample ELBO; rises with k)

The training objectives built on these (beta, free bits, KL warm-up, IWAE and DReG gradients) are in
:mod:`vaekit.objectives`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.distributions import Distribution, Independent, kl_divergence

from vaekit.models.posteriors import Posterior

if TYPE_CHECKING:
    from vaekit.models.contract import LatentVariableModel


@dataclass
class Terms:
    """Per-example terms of one objective evaluation, in nats.

    Attributes
    ----------
    loss
        Scalar training loss (batch mean of the penalised negative bound).
    elbo
        (B,) the bound itself: the ELBO (beta = 1, no free bits) or, for IWAE, L_k.
    log_px_z
        (B,) reconstruction term log p(x|z) (for IWAE: averaged over the k samples).
    kl
        (B,) KL(q(z|x) || p(z)) (for IWAE: the Monte Carlo estimate averaged over samples).
    kl_per_dim
        (B, L) analytic KL per latent dimension, or ``None`` if the prior has no analytic KL.
    kl_per_layer
        (B, S) KL of each stochastic layer of a hierarchical model (top layer first), or ``None``.
    """

    loss: torch.Tensor
    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor
    kl_per_dim: torch.Tensor | None = None
    kl_per_layer: torch.Tensor | None = None


def kl_per_dimension(qz_x: Distribution, pz: Distribution, z: torch.Tensor | None = None) -> torch.Tensor | None:
    """Analytic KL(q || p) per latent dimension (..., L) given the draw ``z``, or ``None`` without a closed form.

    A :class:`vaekit.models.posteriors.Posterior` gives it (``kl_per_dim``); for other factorised distributions
    (``Independent`` over both) torch's registered KL of the base distributions is used where one exists."""
    if isinstance(qz_x, Posterior):
        return qz_x.kl_per_dim(pz, z)
    if isinstance(qz_x, Independent) and isinstance(pz, Independent):
        try:
            return kl_divergence(qz_x.base_dist, pz.base_dist)
        except NotImplementedError:
            return None
    return None


def split_layers(per_dim: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Sum a (..., L) per-dimension quantity into (..., S) stochastic layers of the given sizes."""
    return torch.stack([part.sum(-1) for part in per_dim.split(sizes, dim=-1)], dim=-1)


def elbo(
    model: LatentVariableModel,
    x: torch.Tensor,
    beta: float = 1.0,
    free_bits: float = 0.0,
    y: torch.Tensor | None = None,
    free_bits_per: str = "dimension",
) -> Terms:
    """Beta-weighted ELBO with optional free bits (the loss); the reported ``elbo`` uses beta = 1.

    Parameters
    ----------
    model
        Anything with the model contract.
    x
        (B, *data_shape) batch.
    beta
        Weight of the KL term in the loss (Higgins et al. 2017).
    free_bits
        Floor in nats on the KL of each latent dimension (or of each stochastic layer, see ``free_bits_per``)
        averaged over the batch (Kingma et al. 2016, arXiv:1606.04934); affects only the loss.
    y
        (B,) labels, for a conditional model.
    free_bits_per
        ``dimension`` or ``layer``: what the free-bits floor applies to (a flat VAE has one layer).

    Returns
    -------
    Terms
        ``loss = -mean(log_px_z) + beta * sum_j max(free_bits, mean_b kl_bj)`` over dimensions or layers j.
    """
    qz_x = model.encode(x, y)
    z = qz_x.rsample()  # (B, L) reparameterised: mu + sigma * eps
    px_z = model.decode_draw(qz_x, z, y)
    log_px_z = px_z.log_prob(x)  # (B,)
    pz = model.prior()
    kl_dims = kl_per_dimension(qz_x, pz, z)
    kl_layers = None
    if kl_dims is None:  # Monte Carlo KL from the same sample
        kl = qz_x.log_prob(z) - pz.log_prob(z)
        kl_penalty = kl.mean()
    else:
        kl = kl_dims.sum(-1)
        sizes = model.layer_sizes
        if len(sizes) > 1:
            kl_layers = split_layers(kl_dims, sizes)  # (B, S)
        if free_bits > 0:
            units = kl_dims if free_bits_per == "dimension" else (kl_layers if kl_layers is not None else kl[:, None])
            kl_penalty = units.mean(0).clamp(min=free_bits).sum()
        else:
            kl_penalty = kl.mean()
    loss = -log_px_z.mean() + beta * kl_penalty
    return Terms(loss=loss, elbo=log_px_z - kl, log_px_z=log_px_z, kl=kl, kl_per_dim=kl_dims, kl_per_layer=kl_layers)


def repeat_batch(x: torch.Tensor, y: torch.Tensor | None, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (B, ...) and labels (B,) repeated k times, sample-major: (k B, ...) and (k B,), the order of k draws."""
    x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * x.shape[0], *x.shape[1:])
    return x_rep, (None if y is None else y.repeat(k))


def sample_terms(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    qz_x: Posterior | None = None,
    y: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For k samples z_i ~ q(z|x): log p(x|z_i) and log p(z_i) - log q(z_i|x), each (k, B)."""
    qz_x = model.encode(x, y) if qz_x is None else qz_x
    z = qz_x.rsample((k,))  # (k, B, L)
    x_rep, y_rep = repeat_batch(x, y, k)
    log_px_z = model.decode_draw(qz_x, z, y_rep).log_prob(x_rep).reshape(k, x.shape[0])
    log_ratio = model.prior().log_prob(z) - qz_x.log_prob(z)
    return log_px_z, log_ratio


def log_importance_weights(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    qz_x: Posterior | None = None,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) for k samples z_i ~ q(z|x): (k, B) nats."""
    log_px_z, log_ratio = sample_terms(model, x, k, qz_x, y)
    return log_px_z + log_ratio


@torch.no_grad()
def iwae_bound(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    chunk_size: int = 100,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """Importance-weighted log-likelihood estimate log p(x) >= L_k, with memory bounded by chunking.

    The k samples are drawn ``chunk_size`` at a time and combined with a running logsumexp, so memory holds
    ``chunk_size * B`` decoder outputs whatever k is.

    Returns
    -------
    torch.Tensor
        (B,) L_k in nats (an estimate of log p(x); its negation is the NLL).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    qz_x = model.encode(x, y)
    running = torch.full((x.shape[0],), -math.inf, device=x.device)
    done = 0
    while done < k:
        size = min(chunk_size, k - done)
        log_w = log_importance_weights(model, x, size, qz_x, y)
        running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))
        done += size
    return running - math.log(k)


def bits_per_dim(nats: float | torch.Tensor, num_dims: int) -> float | torch.Tensor:
    """Convert nats per example to bits per dimension: nats / (D ln 2)."""
    return nats / (num_dims * math.log(2.0))
