"""Training objectives: pure functions of a model and a batch, registered by name (``objective.name``).

An objective returns :class:`Terms`: per-example terms of shape ``(B,)`` in nats (summed over data dimensions and
over latent dimensions, never averaged over pixels) and the scalar loss, the batch mean. It uses only the model
contract (``encode``, ``decode``, ``prior``), so any family, encoder, likelihood or prior trains with it.

=========  ======================================================================================================
``elbo``   beta-weighted ELBO with optional free bits (:func:`vaekit.models.bounds.elbo`); the training loop
           passes the KL weight of its warm-up schedule as beta
``iwae``   the importance-weighted bound L_k with ``objective.k`` samples (Burda et al. 2015, arXiv:1509.00519),
           with the plain (``estimator=iwae``) or the doubly reparameterised gradient (``estimator=dreg``)
=========  ======================================================================================================

The doubly reparameterised gradient (Tucker, Lawson, Gu and Maddison 2018, arXiv:1810.04152), whose variance for
the inference network does not grow with k. With normalised weights w~_i = softmax_i(log_w_i)::

    generative parameters theta:  sum_i w~_i   d/dtheta log w_i                        (the IWAE gradient)
    inference through z_i:        sum_i w~_i^2 d log w_i / dz_i  dz_i/dphi,  with q's parameters held fixed
                                  in log q(z_i|x) (their direct, score-function term is dropped)

is implemented with one backward pass: log q is evaluated with detached parameters, and a hook scales the
gradient reaching each z_i by w~_i, so paths through z carry w~_i^2 and direct paths w~_i.

The bounds themselves (ELBO, IWAE bound, importance weights, bits/dim) are in :mod:`vaekit.models.bounds` and
re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.distributions import Distribution, Independent, Normal

from vaekit.config import ObjectiveConfig
from vaekit.models.bounds import (
    Terms,
    bits_per_dim,
    elbo,
    iwae_bound,
    kl_per_dimension,
    log_importance_weights,
    repeat_batch,
    sample_terms,
)
from vaekit.models.contract import LatentVariableModel
from vaekit.registry import Registry

__all__ = [
    "OBJECTIVES",
    "Objective",
    "Terms",
    "bits_per_dim",
    "elbo",
    "iwae",
    "iwae_bound",
    "kl_per_dimension",
    "log_importance_weights",
]

Objective = Callable[[LatentVariableModel, torch.Tensor, "torch.Tensor | None", ObjectiveConfig, float], Terms]
"""``objective(model, x, y, config, kl_weight) -> Terms``; ``kl_weight`` is beta after the warm-up schedule."""

OBJECTIVES: Registry[Objective] = Registry("objective", "objective.name")


@OBJECTIVES.register("elbo")
def _elbo_objective(
    model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None, config: ObjectiveConfig, kl_weight: float
) -> Terms:
    return elbo(model, x, beta=kl_weight, free_bits=config.free_bits, y=y, free_bits_per=config.free_bits_per)


@OBJECTIVES.register("iwae")
def _iwae_objective(
    model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None, config: ObjectiveConfig, kl_weight: float
) -> Terms:
    return iwae(model, x, config.k, y=y, estimator=config.estimator)


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
        log_px_z, log_ratio = sample_terms(model, x, k, y=y)  # (k, B) each; log_ratio = -(Monte Carlo KL)
        bound = torch.logsumexp(log_px_z + log_ratio, dim=0) - math.log(k)
        return Terms(loss=-bound.mean(), elbo=bound, log_px_z=log_px_z.mean(0), kl=-log_ratio.mean(0))
    qz_x = model.encode(x, y)
    z = qz_x.rsample((k,))  # (k, B, L)
    weights: list[torch.Tensor] = []
    if z.requires_grad:  # paths through z get a second factor w~_i (see the module docstring)
        z.register_hook(lambda grad: grad * weights[0].unsqueeze(-1))
    batch = x.shape[0]
    x_rep, y_rep = repeat_batch(x, y, k)
    # decode, not decode_draw: the gradient must reach the decoder through z, where the hook scales it
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
