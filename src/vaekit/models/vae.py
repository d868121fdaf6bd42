"""The one-layer VAE: a family of the model contract (:mod:`vaekit.models.contract`).

::

    x (B, *shape) ──encoder──> (mu, log sigma^2) (B, L) ──> q(z|x) = N(mu, diag sigma^2)      encode(x)
                                                               │ z = mu + sigma * eps
    p(z) = N(0, I)                                      prior()  ▼
    z (N, L) ──decoder──> params (N, P, *shape) ──likelihood──> p(x|z)                         decode(z)

The encoder and decoder networks come from the architecture registry (:data:`vaekit.nn.ARCHITECTURES`: ``mlp``,
``conv``), p(x|z) from the likelihood registry and p(z) from the prior registry, all named in the config. A
conditional model (``num_classes = K > 0``) takes labels ``y`` (N,) in both ``encode(x, y)`` and
``decode(z, y)`` through one component, :class:`vaekit.models.conditioning.LabelConditioning`. The encoder may see
the example L2-normalised and, in training, with input dropout (:class:`vaekit.nn.inputs.InputTransform`,
``model.input_norm``, ``model.input_dropout``): with the ``multinomial`` likelihood that is Mult-VAE, and with
``objective.beta=0`` Mult-DAE (Liang et al. 2018, arXiv:1802.05814).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from vaekit.config import ModelConfig
from vaekit.models.conditioning import LabelConditioning
from vaekit.models.contract import ContractExample, LatentVariableModel
from vaekit.models.families import FAMILIES, check_names
from vaekit.models.latent_density import FittedLatents
from vaekit.models.likelihoods import LIKELIHOODS, Likelihood
from vaekit.models.posteriors import DiagonalGaussian
from vaekit.models.priors import PRIORS
from vaekit.nn import ARCHITECTURES
from vaekit.nn.inputs import InputTransform

LOG_VAR_MIN, LOG_VAR_MAX = -30.0, 20.0  # bounds of the encoder's log-variance (PyOD's VAE clips to the same)


@FAMILIES.register("vae")
class VAE(LatentVariableModel):
    """Variational autoencoder with a diagonal Gaussian posterior (Kingma and Welling 2013, arXiv:1312.6114).

    Parameters
    ----------
    config
        Architecture, likelihood and sizes.
    data_shape
        Shape of one example, e.g. ``(1, 28, 28)`` or ``(13,)``.

    See :class:`vaekit.models.contract.LatentVariableModel` for the attributes and the methods built on the
    contract (``sample``, ``reconstruct``, ``elbo``, ``log_likelihood``).
    """

    family = "vae"

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        check_names(config)  # names and model.latent_dim >= 1, however the model is built
        self.config = dataclasses.replace(config, family=self.family)  # the config names the family it built
        self.data_shape = tuple(int(d) for d in data_shape)
        architecture = ARCHITECTURES.get(config.architecture)
        self.likelihood: Likelihood = LIKELIHOODS.get(config.likelihood)(self.data_shape, config)
        self.conditioning = LabelConditioning(config.num_classes, 2 * config.latent_dim) if config.num_classes else None
        self.input_transform = InputTransform(config.input_norm, config.input_dropout)  # no weights
        self.encoder = architecture.build_encoder(self.data_shape, 2 * config.latent_dim, config)
        self.decoder = architecture.build_decoder(
            config.latent_dim + config.num_classes, self.data_shape, self.likelihood.param_channels, config
        )
        self.latent_prior = PRIORS.get(config.prior)(config.latent_dim)
        if config.latent_density:
            self.latent_density = FittedLatents(config.latent_dim, config.latent_density, config.num_classes)

    # -- the contract ------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DiagonalGaussian:
        """q(z|x) = N(mu, diag sigma^2): batch shape (B,), event shape (L,). ``y`` (B,): labels, conditional only."""
        h = self.encoder(self.input_transform(x))  # (B, 2L)
        if self.conditioning is not None:
            h = h + self.conditioning.encoder_shift(self.conditioning.check(y, x.shape[0]))
        mu, log_var = h.chunk(2, dim=-1)  # (B, L) each
        log_var = log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)  # an input far outside the training data (an anomaly)
        return DiagonalGaussian(mu, torch.exp(0.5 * log_var))  # must not overflow sigma to inf (or 0)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.distributions.Distribution:
        """p(x|z) for z of shape (N, L): batch shape (N,), event shape ``data_shape``. ``y`` (N,): labels."""
        if self.conditioning is not None:
            z = self.conditioning.decoder_input(z, self.conditioning.check(y, z.shape[0]))
        return self.likelihood(self.decoder(z))

    @classmethod
    def contract_examples(cls) -> list[ContractExample]:
        """An MLP on vectors, a convolutional model on 8 x 8 images and a conditional MLP, each with its data."""

        def unit(shape: tuple[int, ...], classes: int = 0) -> Any:
            def batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
                x = torch.rand(n, *shape, generator=generator)
                y = torch.randint(classes, (n,), generator=generator) if classes else None
                return x, y
            return batch

        small = {"latent_dim": 3, "hidden_dims": (16,), "channels": (4, 8)}

        def counts(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
            return torch.bernoulli(torch.full((n, 12), 0.3), generator=generator), None  # 0/1 interactions

        # Mult-VAE without its input dropout: dropout makes encode() random in training mode, which the contract's
        # Monte Carlo checks do not allow for; the dropout is tested with the interaction data.
        mult = {"likelihood": "multinomial", "input_norm": "l2", "activation": "tanh"}
        return [
            ContractExample("mlp", ModelConfig(**small), (6,), unit((6,))),  # type: ignore[arg-type]
            ContractExample("multinomial", ModelConfig(**mult, **small), (12,), counts),  # type: ignore[arg-type]
            ContractExample("conv", ModelConfig(architecture="conv", **small), (1, 8, 8), unit((1, 8, 8))),  # type: ignore[arg-type]
            ContractExample("conditional", ModelConfig(num_classes=3, **small), (1, 8, 8),  # type: ignore[arg-type]
                            unit((1, 8, 8), classes=3)),
            ContractExample("gaussian", ModelConfig(likelihood="gaussian", **small), (5,),  # type: ignore[arg-type]
                            lambda n, g: (torch.randn(n, 5, generator=g), None)),
        ]
