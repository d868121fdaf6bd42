"""The model contract: what every model family provides, and what everything else may use.

::

    encode(x, y) -> q(z|x)   a Posterior: batch shape (B,), event shape (L,)
    decode(z, y) -> p(x|z)   a distribution over one example: batch shape (N,), event shape data_shape
    prior()      -> p(z)     event shape (L,)

Objectives, evaluation, sampling, anomaly scores, bits-back coding, export and serving use nothing else, so a
family written against this contract works with all of them. Beyond the three methods:

- :class:`vaekit.models.posteriors.Posterior` is the optional part of q(z|x), made explicit instead of probed:
  ``kl_per_dim`` (analytic KL to p(z) per latent dimension given a draw, or ``None`` where there is no closed
  form: then a Monte Carlo estimate is used), ``reparameterize`` (the draw made from given standard-normal noise,
  for common random numbers) and ``layers`` (one stochastic layer at a time, for coders that fix each layer before
  the next).
- :attr:`LatentVariableModel.layer_sizes`: latent dimensions per stochastic layer in z's order (one layer of
  ``latent_dim`` for a flat model), for per-layer KL and layer-wise bits-back.
- :meth:`LatentVariableModel.decode_draw`: p(x|z) for a draw ``z`` of a given posterior. It equals ``decode``;
  a family whose posterior already ran the generative network to draw z (the hierarchical VAE's top-down pass)
  returns that result instead of running it again. The reuse is keyed on the posterior object the caller holds,
  so ``decode`` itself is a pure function of z: no state passes from ``encode`` to ``decode``.
- ``sample_latents(n, temperature, generator)``: seeded draws of ``prior()`` through the prior module.

A family is registered in :data:`vaekit.models.families.FAMILIES` by name and saved models record it
(``"family"`` in ``config.json``); :meth:`LatentVariableModel.contract_examples` gives the configurations the
contract tests build, so a new family is tested by registering.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError, DataError
from vaekit.models.bounds import Terms, elbo, iwae_bound
from vaekit.models.latent_density import FittedLatents, check_latents
from vaekit.models.likelihoods import Likelihood
from vaekit.models.posteriors import Posterior
from vaekit.models.priors import Prior


@dataclass(frozen=True)
class ContractExample:
    """A configuration the contract tests build for a family: its name, the model config, the data shape, and a
    function ``batch(n, generator) -> (x, y)`` giving valid inputs (``y`` labels or ``None``)."""

    name: str
    config: ModelConfig
    data_shape: tuple[int, ...]
    batch: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]]


class LatentVariableModel(nn.Module):
    """Base class of every model family: the contract (``encode``, ``decode``, ``prior``) and the conveniences
    built on it (sampling, reconstruction, ELBO, importance-weighted log-likelihood, input checks).

    Attributes
    ----------
    family
        The registered family name, written into ``config.json``.
    config
        The model config (saved beside the weights).
    data_shape
        Shape of one example, e.g. ``(1, 28, 28)`` or ``(13,)``.
    likelihood
        p(x|z) given decoder outputs.
    latent_prior
        The prior module: ``prior()`` is its distribution, ``sample_latents`` its seeded draws.
    conditioning
        The label conditioning of a conditional model, else ``None``.
    preprocessing
        How raw data becomes model input (set by training and by :func:`vaekit.load`); ``None`` for a bare model.
    metadata
        Version, data description and training summary read from the model directory (empty for a new model).
    """

    family: ClassVar[str] = ""
    allows_no_latent: ClassVar[bool] = False  # whether the family builds with model.latent_dim = 0 (no latent)
    config: ModelConfig
    data_shape: tuple[int, ...]
    likelihood: Likelihood
    latent_prior: Prior
    conditioning: Any
    latent_density: FittedLatents | None  # a density fitted to the training codes, for sampling

    def __init__(self) -> None:
        super().__init__()
        self.preprocessing: Any = None
        self.metadata: dict[str, Any] = {}
        self.latent_density = None  # families that support model.latent_density set a FittedLatents

    # -- the contract ------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Posterior:
        """q(z|x): batch shape (B,), event shape (L,). ``y`` (B,): labels of a conditional model."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z) for z (N, L): batch shape (N,), event shape ``data_shape``. ``y`` (N,): labels."""
        raise NotImplementedError

    def prior(self) -> Distribution:
        """p(z): event shape (L,)."""
        return self.latent_prior()

    # -- optional parts with defaults ----------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """Latent dimensions L."""
        return self.config.latent_dim

    @property
    def layer_sizes(self) -> list[int]:
        """Latent dimensions of each stochastic layer, in z's order (one layer for a flat model)."""
        return [self.latent_dim]

    def decode_draw(self, qz_x: Posterior, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z) for a draw ``z`` (*S, B, L) of ``qz_x``: batch shape (prod(S) B,), sample-major; the same as
        ``decode(z.reshape(-1, L), y)`` (``y`` already repeated to match)."""
        return self.decode(z.reshape(-1, z.shape[-1]), y)

    def modality(self) -> str:
        """What the examples are, for the writers of the verbs (:data:`vaekit.apps.writers.WRITERS`): the
        ``modality`` a preprocessing record declares (``audio``, ...), else ``image`` for C x H x W data with 1 or 3
        channels that is not real-valued (standardized), else ``vector``."""
        declared = getattr(self.preprocessing, "modality", None)
        if isinstance(declared, str):
            return declared
        kind = getattr(self.preprocessing, "kind", None) or ("real" if self.config.likelihood == "gaussian" else "unit")
        image = len(self.data_shape) == 3 and self.data_shape[0] in (1, 3)
        return "image" if image and kind != "real" else "vector"

    @classmethod
    def for_data(cls, config: ModelConfig, preprocessing: Any) -> ModelConfig:
        """The config to build for data prepared by ``preprocessing`` (training calls this before building): the
        settings a family takes from its data (the text family: the vocabulary size), or :class:`DataError` for
        data the family cannot model. The default takes none, and refuses data whose record names the families
        that model it (``preprocessing.families``, e.g. text) when this family is not among them."""
        families = getattr(preprocessing, "families", None)
        if families and cls.family not in families:
            raise DataError(
                f"{getattr(preprocessing, 'source', '') or 'the data'} is {getattr(preprocessing, 'kind', '?')} data, "
                f"which the {cls.family!r} family does not model; train it with model.family="
                f"{' or '.join(families)} (e.g. a preset made for it)"
            )
        return config

    @classmethod
    def contract_examples(cls) -> list[ContractExample]:
        """Configurations the contract tests build for this family."""
        return []

    # -- conveniences built on the contract ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Terms:
        """The ELBO terms of a batch (:func:`vaekit.models.bounds.elbo`)."""
        return elbo(self, x, y=y)

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

    def sample_latents(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
        y: torch.Tensor | None = None, latents: str = "prior",
    ) -> torch.Tensor:
        """(n, L) seeded draws at ``temperature``: of ``prior()`` (``latents="prior"``), of the density fitted to
        the training codes (``"fitted"``, :mod:`vaekit.models.latent_density`; ``y`` (n,): the classes of a
        conditional model), or of the fitted one when the model has it (``"auto"``)."""
        if self.latents_used(latents) == "prior":
            return self.latent_prior.draw(n, temperature, generator)
        assert self.latent_density is not None  # latents_used says "fitted" only when there is one
        return self.latent_density.draw(n, temperature, generator, y)

    def latents_used(self, latents: str) -> str:
        """Where ``sample_latents(..., latents=latents)`` takes z from: ``"fitted"`` or ``"prior"`` (``"auto"``
        resolved); a ConfigError for an unknown name, or for ``"fitted"`` without a fitted density."""
        fitted = self.latent_density is not None and self.latent_density.is_fitted
        if check_latents(latents) == "fitted" and not fitted:
            raise ConfigError(
                "this model has no fitted latent density; sample from the prior (latents='prior', --latents prior), "
                "or train with model.latent_density set to the Gaussians per class to fit"
            )
        return "fitted" if latents != "prior" and fitted else "prior"

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        mean: bool = True,
        y: torch.Tensor | int | None = None,
        latents: str = "prior",
    ) -> torch.Tensor:
        """Draw ``n`` examples: z from the prior at ``temperature`` (or from the fitted latent density, see
        :meth:`sample_latents`), then the mean of p(x|z) (or a draw if ``mean=False``). ``y``: for a conditional
        model, one label for all (int) or (n,) labels. (n, *data_shape)."""
        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        if not 0 < temperature < math.inf:
            raise ConfigError(f"temperature must be a positive finite number, got {temperature}")
        if y is not None and self.conditioning is None:
            raise ConfigError("this model is not conditional; sample without a label (or train with model.num_classes)")
        if isinstance(y, numbers.Integral) and not isinstance(y, bool):
            y = torch.full((n,), int(y), dtype=torch.long)
        elif y is not None and not isinstance(y, torch.Tensor):  # a list or array of classes
            y = torch.as_tensor(y, dtype=torch.long)
        z = self.sample_latents(n, temperature, generator, y, latents)  # (n, L)
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
        return elbo(self, x, y=y).elbo

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, k: int = 1000, chunk_size: int = 100, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Importance-weighted estimate of log p(x) (log p(x|y) if conditional) with ``k`` samples, in nats. (B,)."""
        return iwae_bound(self, x, k, chunk_size, y=y)
