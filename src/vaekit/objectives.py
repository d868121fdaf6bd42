"""Objectives: pure functions of a model and a batch, returning per-example terms in nats.

Every function returns per-example tensors of shape ``(B,)`` (summed over data dimensions and over latent
dimensions, never averaged over pixels) and, where it is a training objective, the scalar loss: the batch
mean, taken here and nowhere else.

Only the model contract is used (``encode``, ``decode``, ``prior``), so any encoder, likelihood or prior works.

- ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), one reparameterised sample z = mu + sigma * eps, analytic KL.
- IWAE bound (Burda, Grosse, Salakhutdinov 2015, arXiv:1509.00519)::

      log_w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),   z_i ~ q(z|x), i = 1..k
      L_k     = logsumexp_i(log_w_i) - log k                 (k = 1: a one-sample ELBO; rises with k)

- Its gradient, either the plain reparameterised one (``estimator="iwae"``) or the doubly reparameterised
  one (``estimator="dreg"``, Tucker, Lawson, Gu and Maddison 2018, arXiv:1810.04152), whose variance for the
  inference network does not grow with k. With normalised weights w~_i = softmax_i(log_w_i)::

      generative parameters theta:  sum_i w~_i   d/dtheta log w_i                        (the IWAE gradient)
      inference through z_i:        sum_i w~_i^2 d log w_i / dz_i  dz_i/dphi,  with q's parameters held fixed
                                    in log q(z_i|x) (their direct, score-function term is dropped)

  Implemented with one backward pass: log q is evaluated with detached parameters, and a hook scales the
  gradient reaching each z_i by w~_i, so paths through z carry w~_i^2 and direct paths w~_i.

Hierarchical posteriors (:class:`vaekit.hvae.TopDownPosterior`) give an analytic KL per dimension *given* the
sampled upper layers (``analytic_kl``); the ELBO uses it when present, else the analytic KL of factorised
distributions, else a Monte Carlo estimate. Free bits apply per latent dimension or per stochastic layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence


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
    """Analytic KL per latent dimension, (B, L), for factorised q and p, or for a hierarchical posterior given the
    upper layers of its sample ``z``; ``None`` when not available."""
    analytic = getattr(qz_x, "analytic_kl", None)
    if analytic is not None:
        return analytic(z) if z is not None else None
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


def layer_sizes(model: object, latent_dim: int) -> list[int]:
    """Sizes of the model's stochastic layers in z's order (one layer of ``latent_dim`` for a flat VAE)."""
    sizes = getattr(model, "layer_sizes", None)
    return list(sizes) if sizes else [latent_dim]


def elbo(
    model: LatentVariableModel,
    x: torch.Tensor,
    beta: float = 1.0,
    free_bits: float = 0.0,
    y: torch.Tensor | None = None,
    free_bits_per: str = "dimension",
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
    px_z = model.decode(z, y)
    log_px_z = px_z.log_prob(x)  # (B,)
    pz = model.prior()
    kl_dims = kl_per_dimension(qz_x, pz, z)
    kl_layers = None
    if kl_dims is None:  # Monte Carlo KL from the same sample
        kl = qz_x.log_prob(z) - pz.log_prob(z)
        kl_penalty = kl.mean()
    else:
        kl = kl_dims.sum(-1)
        sizes = layer_sizes(model, kl_dims.shape[-1])
        if len(sizes) > 1:
            kl_layers = torch.stack([part.sum(-1) for part in kl_dims.split(sizes, dim=-1)], dim=-1)  # (B, S)
        if free_bits > 0:
            units = kl_dims if free_bits_per == "dimension" else (kl_layers if kl_layers is not None else kl[:, None])
            kl_penalty = units.mean(0).clamp(min=free_bits).sum()
        else:
            kl_penalty = kl.mean()
    loss = -log_px_z.mean() + beta * kl_penalty
    return Terms(loss=loss, elbo=log_px_z - kl, log_px_z=log_px_z, kl=kl, kl_per_dim=kl_dims, kl_per_layer=kl_layers)


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


def iwae(
    model: LatentVariableModel, x: torch.Tensor, k: int, y: torch.Tensor | None = None, estimator: str = "iwae"
) -> Terms:
    """Importance-weighted bound L_k as a training objective (Burda et al. 2015, arXiv:1509.00519).

    Parameters
    ----------
    estimator
        ``iwae`` (plain reparameterised gradient) or ``dreg`` (doubly reparameterised, arXiv:1810.04152; see
        the module docstring). Both give the same loss value; only the gradient differs.

    Returns
    -------
    Terms
        ``elbo`` holds L_k per example; ``log_px_z`` and ``kl`` are sample averages for logging.
    """
    if estimator not in ("iwae", "dreg"):
        raise ValueError(f"estimator must be 'iwae' or 'dreg', got {estimator!r}")
    if estimator == "iwae":
        log_px_z, log_ratio = _sample_terms(model, x, k, y=y)  # (k, B) each; log_ratio = -(Monte Carlo KL)
        bound = torch.logsumexp(log_px_z + log_ratio, dim=0) - math.log(k)
        return Terms(loss=-bound.mean(), elbo=bound, log_px_z=log_px_z.mean(0), kl=-log_ratio.mean(0))
    qz_x = model.encode(x, y)
    z = qz_x.rsample((k,))  # (k, B, L)
    weights: list[torch.Tensor] = []
    if z.requires_grad:  # paths through z get a second factor w~_i (see the module docstring)
        z.register_hook(lambda grad: grad * weights[0].unsqueeze(-1))
    batch = x.shape[0]
    x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * batch, *x.shape[1:])
    y_rep = None if y is None else y.repeat(k)
    log_px_z = model.decode(z.reshape(k * batch, -1), y_rep).log_prob(x_rep).reshape(k, batch)
    log_ratio = model.prior().log_prob(z) - _log_q_fixed_parameters(model, qz_x, x, y, z)
    log_w = log_px_z + log_ratio  # (k, B)
    weights.append(torch.softmax(log_w.detach(), dim=0))  # w~ (k, B)
    surrogate = (weights[0] * log_w).sum(0)  # value differs from L_k; its gradient is the estimator's
    bound = torch.logsumexp(log_w.detach(), dim=0) - math.log(k)
    loss = -surrogate.mean() + (surrogate - bound).detach().mean()  # the value of -L_k, DReG's gradient
    return Terms(loss=loss, elbo=bound, log_px_z=log_px_z.mean(0).detach(), kl=-log_ratio.mean(0).detach())


def _log_q_fixed_parameters(
    model: LatentVariableModel, qz_x: Distribution, x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor
) -> torch.Tensor:
    """log q(z|x) with the parameters of q held fixed (gradient only through ``z``): (k, B)."""
    base = qz_x.base_dist if isinstance(qz_x, Independent) else None
    if isinstance(base, Normal):  # the distribution's parameters are q's only dependence on phi
        return Independent(Normal(base.loc.detach(), base.scale.detach(), validate_args=False), 1).log_prob(z)
    if not isinstance(model, torch.nn.Module):
        raise TypeError("DReG needs a torch module or a factorised Gaussian posterior")
    from torch.func import functional_call

    fixed = {f"model.{name}": p.detach() for name, p in model.named_parameters()}
    return functional_call(_PosteriorLogProb(model), fixed, (x, y, z))


class _PosteriorLogProb(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        encode = self.model.encode
        assert callable(encode)
        return encode(x, y).log_prob(z)


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

