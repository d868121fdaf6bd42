"""Priors p(z), registered by name (``model.prior``).

A prior is an ``nn.Module`` whose ``forward()`` returns p(z) (a distribution with event shape (L,)) and whose
``draw(n, temperature, generator)`` makes a seeded draw at a temperature (the standard deviation scaled by it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vaekit.registry import Registry


class Prior(nn.Module):
    """Base class of priors over ``latent_dim`` dimensions."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self) -> Distribution:
        """p(z): batch shape (), event shape (latent_dim,)."""
        raise NotImplementedError

    def draw(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, latent_dim) draws of p(z) with the spread scaled by ``temperature`` (1: p(z) itself)."""
        raise NotImplementedError


PRIORS: Registry[type[Prior]] = Registry("prior", "model.prior")


@PRIORS.register("standard_normal")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I) over ``latent_dim`` dimensions; at temperature T, N(0, T^2 I)."""

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)

    def draw(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + temperature * self.scale * eps  # (n, L)
