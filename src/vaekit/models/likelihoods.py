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
from torch.distributions import Bernoulli, Distribution, Independent, Laplace, Normal
from torch.nn import functional as F

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError, DataError
from vaekit.registry import Registry

LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood", "model.likelihood")


class Likelihood(nn.Module):
    """Base class: a decoder-parameterised distribution over one example of shape ``data_shape``."""

    param_channels: int = 1
    scaled: bool = False  # has a scale that model.likelihood_scale=decoder can have the decoder predict

    def __init__(self, data_shape: tuple[int, ...], config: ModelConfig) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        if config.likelihood_scale != "feature" and not self.scaled:
            raise ConfigError(
                f"model.likelihood_scale={config.likelihood_scale} needs a likelihood with a scale (gaussian, "
                f"laplace), not {config.likelihood}; leave it at feature"
            )

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
    (``gaussian_scale=None``), fixed (``gaussian_scale=s``) or predicted by the decoder per element
    (``likelihood_scale=decoder``). Learned and predicted log-scales are floored at -7 (as the Laplace's): a
    feature that never varies in training (a constant table column) would otherwise drive its scale towards 0
    and the density, the loss and the scores without bound."""

    scaled = True

    def __init__(self, data_shape: tuple[int, ...], config: ModelConfig) -> None:
        super().__init__(data_shape, config)
        if config.likelihood_scale == "decoder":
            if config.gaussian_scale is not None:
                raise ConfigError(
                    "model.gaussian_scale fixes the scale but model.likelihood_scale=decoder predicts it; set "
                    "gaussian_scale=null or likelihood_scale=feature"
                )
            self.param_channels = 2  # mean and log-scale per element
        elif config.gaussian_scale is None:
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
        if self.param_channels == 2:
            scale = params[:, 1].clamp(min=MIN_LOG_SCALE).exp()
        elif isinstance(self.log_scale, nn.Parameter):  # learned per feature
            scale = self.log_scale.clamp(min=MIN_LOG_SCALE).exp().expand_as(mean)
        else:
            scale = self.log_scale.exp().expand_as(mean)
        return Independent(Normal(mean, scale, validate_args=False), len(self.data_shape))


@LIKELIHOODS.register("laplace")
class LaplaceLikelihood(Likelihood):
    """Independent Laplace per element: the decoder gives the location (also the mean); the scale b is learned
    per feature, like the Gaussian's, or predicted by the decoder per element (``likelihood_scale=decoder``)
    (``log p = -|x - mu| / b - log 2b``).

    Heavier-tailed than a Gaussian and its loss is an absolute error, so a few badly predicted values (the onset of
    a sound, a loud harmonic in a log-mel spectrogram) cost linearly rather than quadratically. Scales are kept
    above ``e^-7`` (as the discretized logistic's) so a feature that never varies cannot draw unbounded density.
    """

    scaled = True

    def __init__(self, data_shape: tuple[int, ...], config: ModelConfig) -> None:
        super().__init__(data_shape, config)
        if config.likelihood_scale == "decoder":
            self.param_channels = 2  # location and log-scale per element
        else:
            self.log_scale = nn.Parameter(torch.zeros(self.data_shape))

    def forward(self, params: torch.Tensor) -> Distribution:
        loc = params[:, 0]  # (B, *shape)
        log_scale = params[:, 1] if self.param_channels == 2 else self.log_scale.expand_as(loc)
        scale = log_scale.clamp(min=MIN_LOG_SCALE).exp()
        return Independent(Laplace(loc, scale, validate_args=False), len(self.data_shape))


# -- counts over categories: interactions of a user with items ----------------------------------------------------
class MultinomialCounts(Distribution):
    """p(x | N): the D values of an example as counts of D categories (items a user interacted with), given their
    total N = sum_i x_i, with category probabilities pi = softmax(logits) (Liang et al. 2018, arXiv:1802.05814)::

        log p(x | N) = log N! - sum_i log x_i! + sum_i x_i log pi_i          (nats per example)

    For 0/1 interactions the middle term is 0 and the first a constant of the example, so training follows
    Mult-VAE's ``sum_i x_i log pi_i``; keeping the constants makes the ELBO a true bound on log p(x | N).

    Parameters
    ----------
    logits
        (B, *shape) unnormalised log-probabilities; normalised over all the values of an example.

    ``mean`` is pi (B, *shape), the mean of one draw (N = 1): the chance that a user's next interaction is each
    item, which is what a recommender ranks by. ``sample()`` draws one interaction per example (one-hot).
    """

    arg_constraints: dict = {}  # noqa: RUF012 (torch's API)
    has_rsample = False

    def __init__(self, logits: torch.Tensor) -> None:
        self._logits = logits
        super().__init__(logits.shape[:1], logits.shape[1:], validate_args=False)

    @property
    def logits(self) -> torch.Tensor:
        """The decoder's logits (B, *shape)."""
        return self._logits

    @property
    def log_probs(self) -> torch.Tensor:
        """log pi (B, *shape), normalised over each example's values."""
        return torch.log_softmax(self._logits.flatten(1), dim=1).reshape(self._logits.shape)

    @property
    def probs(self) -> torch.Tensor:
        """pi (B, *shape): each example's values sum to 1."""
        return torch.softmax(self._logits.flatten(1), dim=1).reshape(self._logits.shape)

    @property
    def mean(self) -> torch.Tensor:
        """pi (B, *shape), the mean of one draw (see the class docstring)."""
        return self.probs

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        counts = x.reshape(x.shape[0], -1)  # (B, D)
        log_pi = torch.log_softmax(self._logits.flatten(1), dim=1)  # (B, D)
        total = counts.sum(1)  # (B,) N
        coefficient = torch.lgamma(total + 1) - torch.lgamma(counts + 1).sum(1)  # log N! / prod x_i!
        return coefficient + (counts * log_pi).sum(1)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        if tuple(sample_shape):
            raise ValueError("MultinomialCounts.sample draws one sample per batch element")
        with torch.no_grad():
            flat = self.probs.flatten(1)  # (B, D)
            pick = torch.multinomial(flat, 1)  # (B, 1)
            return torch.zeros_like(flat).scatter_(1, pick, 1.0).reshape(self._logits.shape)


@LIKELIHOODS.register("multinomial")
class MultinomialLikelihood(Likelihood):
    """Counts over the values of an example (a user's interactions with items): a multinomial whose probabilities
    are a softmax over all values, the likelihood of Mult-VAE (Liang et al. 2018, arXiv:1802.05814). The data are
    non-negative integer counts (0/1 for implicit feedback); see :class:`MultinomialCounts`."""

    def forward(self, params: torch.Tensor) -> Distribution:
        return MultinomialCounts(params[:, 0])  # (B, *shape)

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        bad = (x < 0) | (x != torch.round(x))
        if bool(bad.any()):
            raise DataError(
                f"the multinomial likelihood models counts (non-negative integers, such as 0/1 interactions), got "
                f"the value {float(x[bad][0]):g}; give interaction data or use model.likelihood=bernoulli/gaussian"
            )


# -- 8-bit data: discretized (mixture of) logistics --------------------------------------------------------
LEVELS = 256  # 8-bit data: level k in 0..255 is the model input x = k / 255
MIN_LOG_SCALE = -7.0  # as PixelCNN++: scales below e^-7 (a quarter of a bin) only destabilise training


def logistic_interval_log_mass(
    lo: torch.Tensor, hi: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """log P(lo <= k <= hi) for a logistic(mean, scale) discretized to the levels k / 255 of 8-bit data.

    Level k owns the interval [(k - 0.5) / 255, (k + 0.5) / 255], except that level 0 reaches down to -inf
    and level 255 up to +inf, so the 256 masses sum to 1 (Salimans et al. 2017, arXiv:1701.05517). The mass is
    computed without cancellation as ``sigmoid(t_hi) * sigmoid(-t_lo) * (1 - exp(t_lo - t_hi))``, with
    t = (edge - mean) / scale; every branch stays finite, so gradients never turn into NaN.

    Parameters
    ----------
    lo, hi
        Integer levels (as floats or ints) in 0..255, ``lo <= hi``; broadcast against ``means``.
    means, log_scales
        Parameters of the logistic, in the units of x (levels / 255).

    Returns
    -------
    torch.Tensor
        Log-masses in nats, in the dtype of ``means``, broadcast shape.
    """
    half_bin = 0.5 / (LEVELS - 1)
    inv_scale = torch.exp(-log_scales)
    t_lo = (lo / (LEVELS - 1) - half_bin - means) * inv_scale
    t_hi = (hi / (LEVELS - 1) + half_bin - means) * inv_scale
    lo_open, hi_open = lo <= 0, hi >= LEVELS - 1
    zero = torch.zeros((), dtype=means.dtype, device=means.device)
    upper = torch.where(hi_open, zero, F.logsigmoid(t_hi))
    lower = torch.where(lo_open, zero, F.logsigmoid(-t_lo))
    gap = torch.where(lo_open | hi_open, zero, torch.log(-torch.expm1(t_lo - t_hi)))
    return upper + lower + gap


class DiscretizedLogisticMixture(Distribution):
    """p(x) over the 256 levels x = k / 255 of 8-bit data, independently per element: a mixture of M logistics
    discretized to the levels (M = 1: one discretized logistic), Salimans et al. 2017, arXiv:1701.05517.

    Parameters
    ----------
    logit_weights, means, log_scales
        (B, M, *shape) mixture logits and each component's mean and log-scale (x units; log-scales clamped at
        -7).

    ``log_prob(x)`` takes x (B, *shape) holding values k / 255 and sums the per-element log-masses (nats per
    example); ``mean`` is the exact mean of the discrete distribution.
    """

    arg_constraints: dict = {}  # noqa: RUF012 (torch's API)
    has_rsample = False

    def __init__(self, logit_weights: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> None:
        self.logit_weights, self.means = logit_weights, means
        self.log_scales = log_scales.clamp(min=MIN_LOG_SCALE)
        super().__init__(means.shape[:1], means.shape[2:], validate_args=False)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.round(x * (LEVELS - 1)).clamp(0, LEVELS - 1).unsqueeze(1)  # (B, 1, *shape)
        log_mass = logistic_interval_log_mass(k, k, self.means, self.log_scales)  # (B, M, *shape)
        if log_mass.shape[1] == 1:  # one component: no mixture weights to apply
            return log_mass.flatten(1).sum(1)
        log_p = torch.logsumexp(torch.log_softmax(self.logit_weights, dim=1) + log_mass, dim=1)  # (B, *shape)
        return log_p.flatten(1).sum(1)

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = (1/255) sum_{j=1..255} P(k >= j), exact, (B, *shape)."""
        weights = torch.softmax(self.logit_weights, dim=1)
        edges = (torch.arange(1, LEVELS, dtype=self.means.dtype, device=self.means.device) - 0.5) / (LEVELS - 1)
        total = torch.zeros_like(self.means[:, 0])
        for m in range(self.means.shape[1]):  # one component at a time keeps memory at (B, *shape, 255)
            t = (edges - self.means[:, m].unsqueeze(-1)) * torch.exp(-self.log_scales[:, m]).unsqueeze(-1)
            total = total + weights[:, m] * torch.sigmoid(-t).sum(-1)
        return total / (LEVELS - 1)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        if tuple(sample_shape):
            raise ValueError("DiscretizedLogisticMixture.sample draws one sample per batch element")
        with torch.no_grad():
            weights = torch.softmax(self.logit_weights, dim=1).movedim(1, -1)  # (B, *shape, M)
            pick = torch.multinomial(weights.reshape(-1, weights.shape[-1]), 1).reshape(weights.shape[:-1])
            mean = self.means.gather(1, pick.unsqueeze(1)).squeeze(1)
            log_scale = self.log_scales.gather(1, pick.unsqueeze(1)).squeeze(1)
            u = torch.rand_like(mean).clamp(1e-6, 1 - 1e-6)
            x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
            return torch.round(x * (LEVELS - 1)).clamp(0, LEVELS - 1) / (LEVELS - 1)


@LIKELIHOODS.register("discretized_logistic")
class DiscretizedLogisticLikelihood(Likelihood):
    """8-bit data (uint8 images read as k / 255): a discretized logistic per element, or a mixture of
    ``model.mixture_components`` of them (Salimans et al. 2017, arXiv:1701.05517).

    A proper discrete likelihood: ``-log_prob`` is a code length, so bits/dim are comparable with lossless
    compressors and ``vaekit compress`` reaches them. The decoder gives 2 parameters per element (mean,
    log-scale) for one component, 3 M (mixture logits, means, log-scales) for M > 1.
    """

    def __init__(self, data_shape: tuple[int, ...], config: ModelConfig) -> None:
        super().__init__(data_shape, config)
        if config.mixture_components < 1:
            raise ConfigError(
                f"model.mixture_components must be at least 1, got {config.mixture_components}; 1 is one logistic"
            )
        self.components = config.mixture_components
        self.param_channels = 2 if self.components == 1 else 3 * self.components

    def forward(self, params: torch.Tensor) -> Distribution:
        m = self.components
        if m == 1:
            means, log_scales = params[:, 0:1], params[:, 1:2]  # (B, 1, *shape)
            return DiscretizedLogisticMixture(torch.zeros_like(means), means, log_scales)
        return DiscretizedLogisticMixture(params[:, :m], params[:, m : 2 * m], params[:, 2 * m :])

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        levels = x * (LEVELS - 1)
        off_grid = (x < 0) | (x > 1) | ((levels - torch.round(levels)).abs() > 1e-3)
        if bool(off_grid.any()):
            bad = float(x[off_grid][0])
            raise DataError(
                f"the discretized_logistic likelihood models 8-bit data (values k/255, as read from uint8 arrays "
                f"or images), got the value {bad:g}; store the data as uint8 or use model.likelihood=gaussian"
            )
