"""Posteriors q(z|x): torch distributions with the optional parts of the model contract made explicit.

:class:`Posterior` adds to ``torch.distributions.Distribution`` what objectives, anomaly scores and bits-back coders
use beyond ``rsample`` / ``log_prob``: ``kl_per_dim`` (analytic KL per latent dimension, or ``None``),
``reparameterize`` (a draw from given standard-normal noise) and ``layers`` (one stochastic layer at a time).
:class:`DiagonalGaussian` is the posterior of the one-layer VAE; the hierarchical VAE's is
:class:`vaekit.models.hierarchical.TopDownPosterior`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence


class LayerwisePosterior:
    """q(z_l | z_>l, x) one stochastic layer at a time, top layer first (the order of z).

    ``conditional(i, upper)`` gives layer i's Gaussian (mean, scale), each (B, n_i), given the values ``upper``
    (B, sum of the sizes above) already fixed for the layers above it.
    """

    def __init__(self, sizes: list[int], conditional: Callable[[int, torch.Tensor], tuple[torch.Tensor, ...]]):
        self.sizes = sizes
        self._conditional = conditional

    def conditional(self, i: int, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, scale = self._conditional(i, upper)
        return mean, scale


class Posterior(Distribution):
    """The interface of q(z|x) beyond ``torch.distributions.Distribution`` (see the module docstring)."""

    def kl_per_dim(self, pz: Distribution, z: torch.Tensor | None = None) -> torch.Tensor | None:
        """Analytic KL(q || pz) per latent dimension, (..., L), given the draw ``z`` where the posterior's later
        layers depend on earlier ones; ``None`` when there is no closed form for this prior."""
        return None

    def reparameterize(self, eps: torch.Tensor) -> torch.Tensor:
        """The draw z (..., B, L) made with standard-normal noise ``eps`` (..., B, L)."""
        raise NotImplementedError

    def layers(self) -> LayerwisePosterior:
        """Layer-by-layer access, top layer first."""
        raise NotImplementedError


def is_standard_normal(pz: Distribution) -> bool:
    """Whether p(z) is N(0, I) (a factorised Normal with zero means and unit scales)."""
    base = pz.base_dist if isinstance(pz, Independent) else None
    return (
        isinstance(base, Normal) and bool((base.loc == 0).all()) and bool((base.scale == 1).all())
    )


class DiagonalGaussian(Independent, Posterior):
    """q(z|x) = N(mu, diag sigma^2): batch shape (B,), event shape (L,)."""

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        super().__init__(Normal(mu, sigma, validate_args=False), 1, validate_args=False)

    def kl_per_dim(self, pz: Distribution, z: torch.Tensor | None = None) -> torch.Tensor | None:
        """KL per dimension; for N(0, I): -1/2 (1 + log sigma^2 - mu^2 - sigma^2)."""
        if isinstance(pz, Independent) and isinstance(pz.base_dist, Normal):
            return kl_divergence(self.base_dist, pz.base_dist)
        return None

    def reparameterize(self, eps: torch.Tensor) -> torch.Tensor:
        return self.mean + self.stddev * eps  # z = mu + sigma * eps

    def layers(self) -> LayerwisePosterior:
        mean, scale = self.mean, self.stddev
        return LayerwisePosterior([mean.shape[-1]], lambda i, upper: (mean, scale))
