"""The VAE: one model contract that everything else uses.

::

    x (B, *shape) ──encoder──> (mu, log sigma^2) (B, L) ──> q(z|x) = N(mu, diag sigma^2)      encode(x)
                                                               │ z = mu + sigma * eps
    p(z) = N(0, I)                                      prior()  ▼
    z (N, L) ──decoder──> params (N, P, *shape) ──likelihood──> p(x|z)                         decode(z)

Evaluation, sampling, anomaly scores and compression use only ``encode``, ``decode`` and ``prior``, so a
new architecture, likelihood or prior works with all of them at once.

A conditional model (``num_classes = K > 0``) takes labels ``y`` (N,) in both ``encode(x, y)`` and
``decode(z, y)`` through one component, :class:`LabelConditioning`: the one-hot label is appended to z before
the decoder, and a learned per-class offset shifts the encoder's (mu, log sigma^2). Unconditional models
ignore ``y`` and pay nothing for it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vaekit import objectives
from vaekit.config import ModelConfig
from vaekit.errors import ConfigError, DataError
from vaekit.likelihoods import LIKELIHOODS, Likelihood
from vaekit.nn import ARCHITECTURES
from vaekit.priors import PRIORS


class LabelConditioning(nn.Module):
    """Feeds a categorical condition to encoder and decoder: one-hot y appended to z, a per-class offset on
    the encoder's output."""

    def __init__(self, num_classes: int, encoder_features: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder_offset = nn.Embedding(num_classes, encoder_features)
        nn.init.zeros_(self.encoder_offset.weight)

    def check(self, y: torch.Tensor | None, n: int) -> torch.Tensor:
        """Validate labels (N,) for a batch of ``n``; raise DataError naming the problem."""
        if y is None:
            raise DataError(
                f"this model is conditional on a label in 0..{self.num_classes - 1}; pass labels "
                "(y=..., or --label at the command line)"
            )
        if y.shape != (n,):
            raise DataError(f"labels must have shape ({n},), got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise DataError(
                f"label {int(y.max()) if int(y.max()) >= self.num_classes else int(y.min())} is outside the "
                f"trained classes 0..{self.num_classes - 1}; pass a label in that range"
            )
        return y.long()

    def encoder_shift(self, y: torch.Tensor) -> torch.Tensor:
        return self.encoder_offset(y)  # (B, 2L)

    def decoder_input(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        one_hot = nn.functional.one_hot(y, self.num_classes).to(z.dtype)  # (N, K)
        return torch.cat([z, one_hot], dim=-1)  # (N, L + K)


class VAE(nn.Module):
    """Variational autoencoder with a diagonal Gaussian posterior (Kingma and Welling 2013, arXiv:1312.6114).

    Parameters
    ----------
    config
        Architecture, likelihood and sizes.
    data_shape
        Shape of one example, e.g. ``(1, 28, 28)`` or ``(13,)``.

    Attributes
    ----------
    preprocessing
        How raw data becomes model input (set by training and by :func:`vaekit.load`); ``None`` for a bare model.
    metadata
        Version, data description and training summary read from the model directory (empty for a new model).
    """

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        if config.latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be at least 1, got {config.latent_dim}")
        if any(h < 1 for h in (*config.hidden_dims, *config.channels)):
            raise ConfigError("model.hidden_dims and model.channels must hold positive sizes")
        self.config = config
        self.data_shape = tuple(int(d) for d in data_shape)
        architecture = ARCHITECTURES.get(config.architecture)
        self.likelihood: Likelihood = LIKELIHOODS.get(config.likelihood)(self.data_shape, config)
        if config.num_classes < 0:
            raise ConfigError(f"model.num_classes must be 0 (unconditional) or positive, got {config.num_classes}")
        self.conditioning = LabelConditioning(config.num_classes, 2 * config.latent_dim) if config.num_classes else None
        self.encoder = architecture.build_encoder(self.data_shape, 2 * config.latent_dim, config)
        self.decoder = architecture.build_decoder(
            config.latent_dim + config.num_classes, self.data_shape, self.likelihood.param_channels, config
        )
        self._prior = PRIORS.get("standard_normal")(config.latent_dim)
        self.preprocessing: Any = None
        self.metadata: dict[str, Any] = {}

    # -- the contract ------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q(z|x) = N(mu, diag sigma^2): batch shape (B,), event shape (L,). ``y`` (B,): labels, conditional only."""
        h = self.encoder(x)  # (B, 2L)
        if self.conditioning is not None:
            h = h + self.conditioning.encoder_shift(self.conditioning.check(y, x.shape[0]))
        mu, log_var = h.chunk(2, dim=-1)  # (B, L) each
        return Independent(Normal(mu, torch.exp(0.5 * log_var), validate_args=False), 1)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z) for z of shape (N, L): batch shape (N,), event shape ``data_shape``. ``y`` (N,): labels."""
        if self.conditioning is not None:
            z = self.conditioning.decoder_input(z, self.conditioning.check(y, z.shape[0]))
        return self.likelihood(self.decoder(z))

    def prior(self) -> Distribution:
        """p(z) = N(0, I) over ``latent_dim`` dimensions."""
        return self._prior()

    # -- conveniences built on the contract ----------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def num_classes(self) -> int:
        """Number of label classes of a conditional model; 0 if unconditional."""
        return self.config.num_classes

    @property
    def num_dims(self) -> int:
        """Number of data dimensions D (for bits/dim)."""
        return math.prod(self.data_shape)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` if ``x`` does not fit the model's data shape or likelihood support."""
        if tuple(x.shape[1:]) != self.data_shape:
            raise DataError(
                f"data of shape {tuple(x.shape[1:])} per example does not match the model's data shape "
                f"{self.data_shape}; use data like the data the model was trained on"
            )
        self.likelihood.check_support(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> objectives.Terms:
        """The ELBO terms of a batch (see :func:`vaekit.objectives.elbo`)."""
        return objectives.elbo(self, x, y=y)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        mean: bool = True,
        y: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` examples: z ~ N(0, temperature^2 I), then the mean of p(x|z) (or a draw if ``mean=False``).

        ``y``: for a conditional model, one label for all (int) or (n,) labels.

        Returns
        -------
        torch.Tensor
            (n, *data_shape).
        """
        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        if y is not None and self.conditioning is None:
            raise ConfigError("this model is not conditional; sample without a label (or train with model.num_classes)")
        if isinstance(y, int):
            y = torch.full((n,), y, dtype=torch.long)
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device) * temperature
        px_z = self.decode(z, None if y is None else y.to(self.device))
        return px_z.mean if mean else px_z.sample()

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, sample_latent: bool = False, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean of p(x|z) at z = the posterior mean (or a posterior draw if ``sample_latent``). (B, *shape)."""
        qz_x = self.encode(x, y)
        z = qz_x.sample() if sample_latent else qz_x.mean
        return self.decode(z, y).mean

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example ELBO in nats, one posterior sample, analytic KL. (B,)."""
        return objectives.elbo(self, x, y=y).elbo

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, k: int = 1000, chunk_size: int = 100, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Importance-weighted estimate of log p(x) (log p(x|y) if conditional) with ``k`` samples, in nats. (B,)."""
        return objectives.iwae_bound(self, x, k, chunk_size, y=y)


def build_model(config: ModelConfig, data_shape: tuple[int, ...]) -> VAE:
    """The model a config describes: :class:`VAE`, or :class:`vaekit.hvae.HierarchicalVAE` when
    ``config.latent_layers`` is set."""
    if config.latent_layers:
        from vaekit.hvae import HierarchicalVAE

        return HierarchicalVAE(config, data_shape)
    return VAE(config, data_shape)
