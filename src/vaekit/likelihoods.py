"""Likelihoods p(x|z): turn decoder outputs into distributions over one example.

A likelihood is an ``nn.Module`` with::

    param_channels: int                       P, decoder outputs per data element
    forward(params (B, P, *shape)) -> p(x|z)  a distribution with batch shape (B,) and event shape ``shape``
    check_support(x)                          raise DataError if x lies outside the support

``log_prob`` of the returned distribution sums over all data dimensions (nats per example).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError, DataError
from vaekit.registry import Registry

LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood")


class Likelihood(nn.Module):
    """Base class: a decoder-parameterised distribution over one example of shape ``data_shape``."""

    param_channels: int = 1

    def __init__(self, data_shape: tuple[int, ...], config: ModelConfig) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)

    def check_support(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` if ``x`` has values this likelihood cannot model."""
        if not bool(torch.isfinite(x).all()):
            raise DataError("data contains NaN or infinite values; clean or impute them before using the model")


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli per element, parameterised by logits (BCE-with-logits, never sigmoid-then-BCE).

    For data in [0, 1] that is not binary (grayscale pixels) ``log_prob`` is the negative binary cross-entropy,
    as in the classic PyTorch example; it is then a score, not a normalised likelihood. Binarize the data
    (``data.binarize=dynamic``) for a true likelihood.
    """

    def forward(self, params: torch.Tensor) -> Distribution:
        logits = params[:, 0]  # (B, *shape)
        return Independent(Bernoulli(logits=logits, validate_args=False), len(self.data_shape))

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        if bool((x < 0).any()) or bool((x > 1).any()):
            lo, hi = float(x.min()), float(x.max())
            raise DataError(
                f"the Bernoulli likelihood needs data in [0, 1], got values in [{lo:g}, {hi:g}]; "
                "rescale the data or use model.likelihood=gaussian"
            )


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(Likelihood):
    """Independent Normal per element: the decoder gives the mean; the scale is learned per feature
    (``gaussian_scale=None``) or fixed (``gaussian_scale=s``)."""

    def __init__(self, data_shape: tuple[int, ...], config: ModelConfig) -> None:
        super().__init__(data_shape, config)
        if config.gaussian_scale is None:
            self.log_scale = nn.Parameter(torch.zeros(self.data_shape))
        else:
            if config.gaussian_scale <= 0:
                raise ConfigError(
                    f"model.gaussian_scale must be positive, got {config.gaussian_scale}; "
                    "use null to learn it"
                )
            self.register_buffer("log_scale", torch.full(self.data_shape, math.log(config.gaussian_scale)))

    def forward(self, params: torch.Tensor) -> Distribution:
        mean = params[:, 0]  # (B, *shape)
        scale = self.log_scale.exp().expand_as(mean)
        return Independent(Normal(mean, scale, validate_args=False), len(self.data_shape))
