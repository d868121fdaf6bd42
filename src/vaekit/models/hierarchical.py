"""A hierarchical, top-down ("ladder") VAE that keeps the one model contract.

Several stochastic layers z_1 (nearest x) .. z_S (top). A bottom-up pass over x is shared with a top-down pass
that is both the generative model and the posterior (Sønderby et al. 2016, arXiv:1602.02282; Kingma et al. 2016,
arXiv:1606.04934; NVAE, arXiv:2007.03898)::

    bottom-up   x ──stem──> a_0 ──up_1──> a_1 ──up_2──> ... ──up_S──> a_S
                                           │                           │
    top-down    h_top ─> prior_S(h): p(z_S) ─┬─ q(z_S | x) <── a_S      │ (the posterior of each layer reads h and a_l)
                          z_S = mu_p + s_p * e_S                       │
                h <- down_S(h + proj_S(z_S)) ─> prior_{S-1}(h) ... ─> h <- down_1(h + proj_1(z_1)) ──head──> p(x|z)

The contract's latent is the *prior noise* e = (e_S, ..., e_1), flattened and concatenated top layer first:
z_l = mu_p(z_>l) + s_p(z_>l) * e_l, so

- ``prior()`` is exactly N(0, I) over ``latent_dim = sum of the layer sizes``;
- ``decode(e)`` runs the top-down pass on e and returns p(x|z);
- ``encode(x)`` returns :class:`TopDownPosterior`, q(e|x) = prod_l q(e_l | e_>l, x), each factor a diagonal
  Gaussian N(m_l, s_l^2) in the prior's own coordinates (NVAE's relative parameterisation). Its KL to N(0, I)
  equals KL(q(z_l | z_>l, x) || p(z_l | z_>l)), since both are moved by the same affine map.

So ELBO, IWAE bounds, sampling (with temperature scaling every layer's noise), anomaly scores and the evaluator
use the model unchanged, and bits-back coding codes one layer after another in e (:mod:`vaekit.codec.bitsback`).
Per-layer KL terms come from :meth:`TopDownPosterior.kl_per_dim` (given the sampled upper layers).

Networks are residual blocks, for vectors (``architecture=mlp``: width ``hidden_dims[0]``) or images
(``architecture=conv``: strided convolutions ``channels`` down to a grid, 3x3 residual blocks there, transposed
convolutions back to the exact image size); ``residual_blocks`` per layer and direction, optional weight
normalisation (Salimans and Kingma 2016, arXiv:1602.07868), from :mod:`vaekit.nn.residual`.

The top-down pass that draws e from q(e|x) also computes the generative stream for that e. The posterior keeps it
with the draw, and :meth:`HierarchicalVAE.decode_draw` (the contract's "p(x|z) for a draw of this posterior")
returns it instead of running the pass again; ``decode(e)`` always runs the pass, so it depends on e alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models.contract import ContractExample, LatentVariableModel
from vaekit.models.families import FAMILIES
from vaekit.models.likelihoods import LIKELIHOODS, Likelihood
from vaekit.models.posteriors import LayerwisePosterior, Posterior, is_standard_normal
from vaekit.models.priors import PRIORS
from vaekit.nn.networks import ACTIVATIONS, conv_sizes
from vaekit.nn.residual import Maker, apply_weight_norm, conv1, conv3, conv_stem_and_head, linear, residual_stack

LOG_SCALE_BOUND = 7.0  # log standard deviations are soft-clamped to (-7, 7): exp(-7) ~ 1e-3 of the prior's scale


def _soft_clamp(log_scale: torch.Tensor) -> torch.Tensor:
    return LOG_SCALE_BOUND * torch.tanh(log_scale / LOG_SCALE_BOUND)


def _normal_log_prob(e: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log N(e; mean, exp(log_scale)^2) per element."""
    return -0.5 * ((e - mean) * torch.exp(-log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)


def _kl_to_standard(mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, s^2) || N(0, 1)) per element: -1/2 (1 + log s^2 - mean^2 - s^2)."""
    return 0.5 * (mean**2 + torch.exp(2 * log_scale) - 1.0) - log_scale


@dataclass(frozen=True)
class _Layout:
    """Shapes: the stream's feature shape and each stochastic layer's shape (top layer first)."""

    features: tuple[int, ...]  # (H,) or (C, h, w)
    latents: tuple[tuple[int, ...], ...]  # per layer, top first: (n,) or (c, h, w)

    @property
    def sizes(self) -> list[int]:
        return [math.prod(shape) for shape in self.latents]


@FAMILIES.register("hierarchical")
class HierarchicalVAE(LatentVariableModel):
    """Top-down hierarchical VAE with the model contract (see the module docstring).

    Parameters
    ----------
    config
        ``latent_layers`` (sizes of the stochastic layers, bottom first: units for ``mlp``, channels on the
        latent grid for ``conv``), ``hidden_dims[0]`` (``mlp`` width) or ``channels`` (``conv``),
        ``residual_blocks``, ``weight_norm``, ``activation``, ``likelihood``.
    data_shape
        Shape of one example.
    """

    family = "hierarchical"

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        if not config.latent_layers:
            raise ConfigError("model.latent_layers must list the stochastic layer sizes of a hierarchical VAE, got []")
        if config.num_classes:
            raise ConfigError("a hierarchical VAE (model.latent_layers) cannot be conditional; set model.num_classes=0")
        if config.latent_density:
            raise ConfigError("model.latent_density is for the vae family; set it to 0 for a hierarchical VAE")
        if config.prior != "standard_normal":
            raise ConfigError(
                "a hierarchical VAE's latent is its prior noise, N(0, I); leave model.prior=standard_normal"
            )
        if config.input_norm != "none" or config.input_dropout:
            raise ConfigError(
                "model.input_norm and model.input_dropout are settings of the one-layer 'vae' family (Mult-VAE); "
                "leave them at none and 0 for a hierarchical VAE"
            )
        self.config = dataclasses.replace(config, family=self.family)  # the config names the family it built
        self.data_shape = tuple(int(d) for d in data_shape)
        self.likelihood: Likelihood = LIKELIHOODS.get(config.likelihood)(self.data_shape, config)
        self.conditioning = None
        make, head_in, head_out, width = self._stem_and_head(config)
        n_layers = len(config.latent_layers)
        scale = 1.0 / math.sqrt(2 * n_layers * config.residual_blocks)
        blocks, act = config.residual_blocks, config.activation
        sizes_top_first = [shape[0] for shape in self.layout.latents]
        self.up = nn.ModuleList(residual_stack(make, width, act, blocks, scale) for _ in range(n_layers))  # bottom 1st
        self.down = nn.ModuleList(residual_stack(make, width, act, blocks, scale) for _ in range(n_layers))  # top 1st
        self.prior_heads = nn.ModuleList(head_in(width, 2 * n) for n in sizes_top_first)
        self.posterior_heads = nn.ModuleList(head_in(2 * width, 2 * n) for n in sizes_top_first)
        self.projections = nn.ModuleList(head_out(n, width) for n in sizes_top_first)
        for head in [*self.prior_heads, *self.posterior_heads]:  # start at the prior / the standard normal
            with torch.no_grad():
                head.weight.mul_(0.1)  # type: ignore[operator]
                head.bias.zero_()  # type: ignore[operator]
        self.h_top = nn.Parameter(torch.zeros(1, *self.layout.features))
        self.latent_prior = PRIORS.get(config.prior)(sum(self.layout.sizes))
        if config.weight_norm:
            apply_weight_norm(self)

    def _stem_and_head(self, config: ModelConfig) -> tuple[Maker, Maker, Maker, int]:
        """Build the stem (x -> features) and head (stream -> likelihood parameters) and set the layout; return
        the layer makers of the residual blocks, the prior/posterior heads and the projections, and the width."""
        params = self.likelihood.param_channels
        if config.architecture == "mlp":
            if not config.hidden_dims:
                raise ConfigError("a hierarchical mlp needs model.hidden_dims=[WIDTH]")
            width = config.hidden_dims[0]
            self.layout = _Layout((width,), tuple((n,) for n in reversed(config.latent_layers)))
            self.stem: nn.Module = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(self.data_shape), width))
            self.head: nn.Module = nn.Sequential(
                ACTIVATIONS.get(config.activation)(),
                nn.Linear(width, params * math.prod(self.data_shape)),
                nn.Unflatten(1, (params, *self.data_shape)),
            )
            return linear, linear, linear, width
        if config.architecture == "conv":
            sizes = conv_sizes(self.data_shape, len(config.channels))
            width = config.channels[-1]
            grid = sizes[-1]
            self.layout = _Layout((width, *grid), tuple((c, *grid) for c in reversed(config.latent_layers)))
            self.stem, self.head = conv_stem_and_head(self.data_shape, sizes, config, params)
            return conv3, conv3, conv1, width
        raise ConfigError(
            f"a hierarchical VAE supports model.architecture 'mlp' or 'conv', got {config.architecture!r}"
        )

    # -- the contract ----------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> TopDownPosterior:
        """q(e|x) = prod_l q(e_l | e_>l, x): batch shape (B,), event shape (latent_dim,)."""
        a = self.stem(x)
        features = []
        for block in self.up:
            a = block(a)
            features.append(a)
        return TopDownPosterior(self, features[::-1])  # top layer first

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z) for prior noise z (N, latent_dim), top layer first: the top-down pass on z, then the head."""
        return self.likelihood(self.head(self.top_down(e=z).h))

    def decode_draw(self, qz_x: Posterior, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z) for a draw ``z`` (*S, B, L) of ``qz_x``: the stream of the pass that drew it when ``qz_x`` holds
        it (the very tensor it returned, unchanged since), else :meth:`decode` of ``z``."""
        if isinstance(qz_x, TopDownPosterior):
            stream = qz_x.stream_of(z)
            if stream is not None:
                return self.likelihood(self.head(stream))
        return self.decode(z.reshape(-1, z.shape[-1]), y)

    @property
    def latent_dim(self) -> int:  # type: ignore[override]
        return sum(self.layout.sizes)

    @property
    def layer_sizes(self) -> list[int]:
        """Latent dimensions of each stochastic layer, top layer first (the order of z)."""
        return self.layout.sizes

    @classmethod
    def contract_examples(cls) -> list[ContractExample]:
        """Two stochastic layers over MLP residual blocks (vectors) and over convolutions (8 x 8 images)."""

        def unit(shape: tuple[int, ...]) -> Callable[[int, torch.Generator], tuple[torch.Tensor, None]]:
            return lambda n, generator: (torch.rand(n, *shape, generator=generator), None)

        mlp = ModelConfig(latent_layers=(4, 2), hidden_dims=(16,))
        conv = ModelConfig(architecture="conv", latent_layers=(3, 2), channels=(4, 8))
        return [
            ContractExample("hierarchical-mlp", mlp, (6,), unit((6,))),
            ContractExample("hierarchical-conv", conv, (1, 8, 8), unit((1, 8, 8))),
        ]

    # -- the top-down pass -----------------------------------------------------------------------------------
    def top_down(
        self,
        features: list[torch.Tensor] | None = None,
        e: torch.Tensor | None = None,
        mode: str = "sample",
        n: int | None = None,
    ) -> TopDownPass:
        """Run the generative stream, layer by layer from the top.

        Parameters
        ----------
        features
            Bottom-up features per layer (top first), each (N, *features); ``None`` for the prior only.
        e
            (N, latent_dim) given prior noise; ``None`` draws it: from q(e|x) (``mode="sample"``), at each
            layer's posterior mean (``mode="mean"``), or from N(0, I) without features.
        n
            Batch size when neither ``features`` nor ``e`` gives it.
        """
        if e is not None:
            batch = e.shape[0]
        elif features is not None:
            batch = features[0].shape[0]
        else:
            batch = n or 1
        h = self.h_top.expand(batch, *self.layout.features)
        given = None if e is None else e.split(self.layout.sizes, dim=1)
        draws, log_q, kl, means, log_scales = [], [], [], [], []
        for i, shape in enumerate(self.layout.latents):
            mu_p, log_s_p = self.prior_heads[i](h).chunk(2, dim=1)
            log_s_p = _soft_clamp(log_s_p)
            e_i = None if given is None else given[i].reshape(batch, *shape)
            if features is not None:
                m, log_s = self.posterior_heads[i](torch.cat([h, features[i]], dim=1)).chunk(2, dim=1)
                log_s = _soft_clamp(log_s)
                if e_i is None:
                    e_i = m if mode == "mean" else m + torch.exp(log_s) * torch.randn_like(m)
                log_q.append(_normal_log_prob(e_i, m, log_s).flatten(1).sum(1))
                kl.append(_kl_to_standard(m, log_s).flatten(1))
                means.append(m.flatten(1))
                log_scales.append(log_s.flatten(1))
            elif e_i is None:
                e_i = torch.randn(batch, *shape, device=h.device, dtype=h.dtype)
            draws.append(e_i.flatten(1))
            z_i = mu_p + torch.exp(log_s_p) * e_i
            h = self.down[i](h + self.projections[i](z_i))
        has_q = features is not None
        return TopDownPass(
            e=torch.cat(draws, dim=1),
            h=h,
            log_q=torch.stack(log_q).sum(0) if has_q else None,
            kl_per_dim=torch.cat(kl, dim=1) if has_q else None,
            mean=torch.cat(means, dim=1) if has_q else None,
            log_scale=torch.cat(log_scales, dim=1) if has_q else None,
        )



@dataclass
class TopDownPass:
    """What one top-down pass computed, for N examples: e (N, latent_dim), h the final stream, and with a
    posterior: log q(e|x) (N,), analytic KL per dimension (N, latent_dim) given the upper layers, the
    posterior means and log scales (N, latent_dim) of each layer along the pass."""

    e: torch.Tensor
    h: torch.Tensor
    log_q: torch.Tensor | None
    kl_per_dim: torch.Tensor | None
    mean: torch.Tensor | None
    log_scale: torch.Tensor | None


class TopDownPosterior(Posterior):
    """q(e|x) = prod_l N(e_l; m_l(e_>l, x), s_l^2) of a :class:`HierarchicalVAE`; batch (B,), event (latent_dim,).

    ``rsample`` is reparameterised (each layer's m and s depend on the layers drawn above it). ``mean`` and
    ``stddev`` follow the pass that takes each layer's posterior mean given the means above it.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, model: HierarchicalVAE, features: list[torch.Tensor]) -> None:
        self.model, self.features = model, features
        self._sampled: tuple[torch.Tensor, int, TopDownPass] | None = None  # (drawn e, its version, its pass)
        self._mean_pass: TopDownPass | None = None
        super().__init__(torch.Size([features[0].shape[0]]), torch.Size([model.latent_dim]), validate_args=False)

    def _repeat(self, n: int) -> list[torch.Tensor]:
        return [f.unsqueeze(0).expand(n, *f.shape).reshape(n * f.shape[0], *f.shape[1:]) for f in self.features]

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        sample_shape = tuple(sample_shape)
        n = math.prod(sample_shape)
        batch = self.batch_shape[0]
        result = self.model.top_down(self._repeat(n) if n != 1 else self.features, mode="sample")
        e = result.e.reshape(*sample_shape, batch, -1)
        self._sampled = (e, e._version, result)
        return e

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def _pass_for(self, e: torch.Tensor) -> TopDownPass:
        if self._sampled is not None and self._sampled[0] is e and e._version == self._sampled[1]:
            return self._sampled[2]
        lead = e.shape[:-1]
        n = math.prod(lead) // self.batch_shape[0]
        return self.model.top_down(self._repeat(n) if n != 1 else self.features, e=e.reshape(-1, e.shape[-1]))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log q(e|x) in nats, shape ``value.shape[:-1]``."""
        log_q = self._pass_for(value).log_q
        assert log_q is not None
        return log_q.reshape(value.shape[:-1])

    def stream_of(self, e: torch.Tensor) -> torch.Tensor | None:
        """The generative stream h (prod(S) B, ...) of the pass that drew ``e`` by :meth:`rsample`, if ``e`` is
        that very tensor and nothing wrote to it since; else ``None``."""
        if self._sampled is not None and self._sampled[0] is e and e._version == self._sampled[1]:
            return self._sampled[2].h
        return None

    def kl_per_dim(self, pz: Distribution, z: torch.Tensor | None = None) -> torch.Tensor | None:
        """KL(q(e_l | e_>l, x) || N(0, I)) per dimension, given the upper layers of the draw ``z``: (..., L).

        Summed over dimensions it is an unbiased estimate of KL(q(e|x) || p(e)) with the noise of the upper
        layers only (exact for one layer); summed per layer it gives the per-layer KL terms. ``None`` without a
        draw, or for a prior other than N(0, I) (the hierarchical model's own prior)."""
        if z is None or not is_standard_normal(pz):
            return None
        kl = self._pass_for(z).kl_per_dim
        assert kl is not None
        return kl.reshape(z.shape)

    def reparameterize(self, eps: torch.Tensor) -> torch.Tensor:
        """e = the posterior draw made with standard normal noise ``eps`` (..., B, latent_dim)."""
        lead = eps.shape[:-2]
        n = math.prod(lead)
        flat = eps.reshape(n * self.batch_shape[0], -1)
        features = self._repeat(n) if n != 1 else self.features
        # walk the layers with the given noise: e_l = m_l + s_l * eps_l, each m_l, s_l given the e above
        model, e = self.model, torch.zeros_like(flat)
        offsets = [0, *itertools.accumulate(model.layer_sizes)]
        for i in range(len(model.layer_sizes)):
            result = model.top_down(features, e=e)
            assert result.mean is not None and result.log_scale is not None
            part = slice(offsets[i], offsets[i + 1])
            e = e.clone()
            e[:, part] = result.mean[:, part] + torch.exp(result.log_scale[:, part]) * flat[:, part]
        return e.reshape(eps.shape)

    def _mean_path(self) -> TopDownPass:
        if self._mean_pass is None:
            self._mean_pass = self.model.top_down(self.features, mode="mean")
        return self._mean_pass

    @property
    def mean(self) -> torch.Tensor:
        return self._mean_path().e

    @property
    def stddev(self) -> torch.Tensor:
        log_scale = self._mean_path().log_scale
        assert log_scale is not None
        return torch.exp(log_scale)

    @property
    def variance(self) -> torch.Tensor:
        return self.stddev**2

    def layers(self) -> LayerwisePosterior:
        """Layer-by-layer access for coders that fix each layer before the next (bits-back coding): layer i's
        (mean, scale), each (B, n_i), given the values (B, sum of the sizes above) fixed for the layers above."""
        model, sizes, batch = self.model, self.model.layer_sizes, self.batch_shape[0]

        def conditional(i: int, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            start = sum(sizes[:i])
            e = torch.zeros(batch, model.latent_dim, dtype=upper.dtype, device=upper.device)
            e[:, :start] = upper
            result = model.top_down(self.features, e=e)  # layer i's q depends only on the layers above
            assert result.mean is not None and result.log_scale is not None
            part = slice(start, start + sizes[i])
            return result.mean[:, part], torch.exp(result.log_scale[:, part])

        return LayerwisePosterior(sizes, conditional)
