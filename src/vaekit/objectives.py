"""Objectives: pure functions of a model and a batch, returning per-example terms in nats.

Every function returns per-example tensors of shape ``(B,)`` (summed over data dimensions and over latent
dimensions, never averaged over pixels) and, where it is a training objective, the scalar loss: the batch
mean, taken here and nowhere else.

Only the model contract is used (``encode``, ``decode``, ``prior``), so any encoder, likelihood or prior works.

- ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), one reparameterised sample z = mu + sigma * eps, analytic KL.
- IWAE bound (Burda, Grosse, Salakhutdinov 2015, arXiv:1509.00519)::

      log_w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),   z_i ~ q(z|x), i = 1..k
      L_k     = logsumexp_i(log_w_i) - log k                 (k = 1: a one-sample ELBO; rises with k)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.distributions import Distribution, Independent, kl_divergence


class LatentVariableModel(Protocol):
    """The model contract every objective relies on."""

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q(z|x): batch shape (B,), event shape (L,); ``y`` (B,) labels of a conditional model."""
        ...

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z) for z of shape (N, L): batch shape (N,), event shape = data shape."""
        ...

    def prior(self) -> Distribution:
        """p(z): event shape (L,)."""
        ...


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
    """

    loss: torch.Tensor
    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor
    kl_per_dim: torch.Tensor | None = None


def kl_per_dimension(qz_x: Distribution, pz: Distribution) -> torch.Tensor | None:
    """Analytic KL per latent dimension, (B, L), for factorised q and p; ``None`` when not available."""
    if isinstance(qz_x, Independent) and isinstance(pz, Independent):
        try:
            return kl_divergence(qz_x.base_dist, pz.base_dist)
        except NotImplementedError:
            return None
    return None


def kl_weight(step: int, beta: float, warmup_steps: int) -> float:
    """Linear KL warm-up: ``beta * min(1, step / warmup_steps)`` (``beta`` when warm-up is off)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)


def elbo(
    model: LatentVariableModel,
    x: torch.Tensor,
    beta: float = 1.0,
    free_bits: float = 0.0,
    y: torch.Tensor | None = None,
) -> Terms:
    """Beta-weighted ELBO with optional free bits.

    Parameters
    ----------
    model
        Anything with the model contract.
    x
        (B, *data_shape) batch.
    beta
        Weight of the KL term in the loss (Higgins et al. 2017). The reported ``elbo`` always uses 1.
    free_bits
        Floor in nats on each latent dimension's KL averaged over the batch (Kingma et al. 2016,
        arXiv:1606.04934); affects only the loss.
    y
        (B,) labels, for a conditional model.

    Returns
    -------
    Terms
        ``loss = -mean(log_px_z) + beta * sum_j max(free_bits, mean_b kl_bj)``.
    """
    qz_x = model.encode(x, y)
    z = qz_x.rsample()  # (B, L) reparameterised: mu + sigma * eps
    px_z = model.decode(z, y)
    log_px_z = px_z.log_prob(x)  # (B,)
    pz = model.prior()
    kl_dims = kl_per_dimension(qz_x, pz)
    if kl_dims is None:  # Monte Carlo KL from the same sample
        kl = qz_x.log_prob(z) - pz.log_prob(z)
        kl_penalty = kl.mean()
    else:
        kl = kl_dims.sum(-1)
        if free_bits > 0:
            kl_penalty = kl_dims.mean(0).clamp(min=free_bits).sum()
        else:
            kl_penalty = kl.mean()
    loss = -log_px_z.mean() + beta * kl_penalty
    return Terms(loss=loss, elbo=log_px_z - kl, log_px_z=log_px_z, kl=kl, kl_per_dim=kl_dims)


def _sample_terms(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    qz_x: Distribution | None = None,
    y: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For k samples z_i ~ q(z|x): log p(x|z_i) and log p(z_i) - log q(z_i|x), each (k, B)."""
    qz_x = model.encode(x, y) if qz_x is None else qz_x
    z = qz_x.rsample((k,))  # (k, B, L)
    batch = x.shape[0]
    x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * batch, *x.shape[1:])
    y_rep = None if y is None else y.repeat(k)  # (k * B,) in the same sample-major order as x_rep
    log_px_z = model.decode(z.reshape(k * batch, -1), y_rep).log_prob(x_rep).reshape(k, batch)
    log_ratio = model.prior().log_prob(z) - qz_x.log_prob(z)
    return log_px_z, log_ratio


def log_importance_weights(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    qz_x: Distribution | None = None,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) for k samples z_i ~ q(z|x).

    Returns
    -------
    torch.Tensor
        (k, B) log-weights in nats.
    """
    log_px_z, log_ratio = _sample_terms(model, x, k, qz_x, y)
    return log_px_z + log_ratio


def iwae(model: LatentVariableModel, x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> Terms:
    """Importance-weighted bound L_k as a training objective (Burda et al. 2015, arXiv:1509.00519).

    Returns
    -------
    Terms
        ``elbo`` holds L_k per example; ``log_px_z`` and ``kl`` are sample averages for logging.
    """
    log_px_z, log_ratio = _sample_terms(model, x, k, y=y)  # (k, B) each; log_ratio = -(Monte Carlo KL)
    bound = torch.logsumexp(log_px_z + log_ratio, dim=0) - math.log(k)
    return Terms(loss=-bound.mean(), elbo=bound, log_px_z=log_px_z.mean(0), kl=-log_ratio.mean(0))


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

