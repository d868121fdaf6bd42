"""Model families, registered by name (``model.family``), and :func:`build_model`.

=================  ===================================================================================
``vae``            one stochastic layer, diagonal Gaussian posterior (:mod:`vaekit.models.vae`); MLP or
                   convolutional networks, optionally conditional on a label
``hierarchical``   a top-down ("ladder") VAE with several stochastic layers
                   (:mod:`vaekit.models.hierarchical`)
=================  ===================================================================================

``model.family=auto`` (the default) picks ``hierarchical`` when ``model.latent_layers`` is set, else ``vae``.
A saved model records its family in ``config.json``; models saved before families existed have none and get
the ``auto`` choice, which is what they were. A new family subclasses
:class:`vaekit.models.contract.LatentVariableModel`, registers itself here and lists its
``contract_examples``; nothing else has to change for it to train, evaluate, sample and serve.
"""

from __future__ import annotations

from typing import Any

import torch

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.memory import check_fits
from vaekit.models.contract import LatentVariableModel
from vaekit.models.likelihoods import LIKELIHOODS
from vaekit.models.priors import PRIORS
from vaekit.nn import ACTIVATIONS, ARCHITECTURES
from vaekit.registry import Registry

FAMILIES: Registry[type[LatentVariableModel]] = Registry("model family", "model.family")


def family_name(config: ModelConfig) -> str:
    """The family a config builds: ``config.family``, or for ``auto`` ``hierarchical`` when ``latent_layers`` is
    set, else ``vae``."""
    if config.family != "auto":
        return config.family
    return "hierarchical" if config.latent_layers else "vae"


def check_names(config: ModelConfig) -> None:
    """Raise :class:`vaekit.errors.ConfigError` (naming the key and listing the valid names) for a family,
    architecture, likelihood, activation or prior name that nothing registered."""
    family = FAMILIES.get(family_name(config))
    if config.latent_dim == 0 and not family.allows_no_latent:
        raise ConfigError(
            f"model.latent_dim=0 (no latent variable) builds only the language-model baseline of the text family; "
            f"the {family.family!r} family needs model.latent_dim >= 1"
        )
    for registry, value in ((ARCHITECTURES, config.architecture), (LIKELIHOODS, config.likelihood),
                            (ACTIVATIONS, config.activation), (PRIORS, config.prior)):
        registry.get(value)


def config_for_data(config: ModelConfig, preprocessing: Any) -> ModelConfig:
    """The config the family builds for data prepared by ``preprocessing``
    (:meth:`vaekit.models.contract.LatentVariableModel.for_data`: settings taken from the data, or DataError for
    data the family does not model)."""
    return FAMILIES.get(family_name(config)).for_data(config, preprocessing)


def count_parameters(config: ModelConfig, data_shape: tuple[int, ...]) -> int:
    """The number of weights (parameters and buffers) the model would have, counted without allocating them (the
    model is built on torch's ``meta`` device)."""
    check_names(config)
    with torch.device("meta"):
        model = FAMILIES.get(family_name(config))(config, tuple(int(d) for d in data_shape))  # type: ignore[call-arg]
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


def build_model(config: ModelConfig, data_shape: tuple[int, ...]) -> LatentVariableModel:
    """The model a config describes, for examples of shape ``data_shape``.

    Raises
    ------
    ConfigError
        An unknown name, settings the family cannot build (the message names the key), or a model whose weights
        would not fit in memory (the message gives both sizes).
    """
    shape = tuple(int(d) for d in data_shape)
    if any(d < 1 for d in shape):
        raise ConfigError(f"the data shape {shape} holds no values; examples need at least one value each")
    weights = count_parameters(config, shape)
    check_fits(4 * weights, f"the model's {weights:,} float32 weights ({shape} data, model.hidden_dims="
               f"{list(config.hidden_dims)}, model.latent_dim={config.latent_dim})",
               "make the model smaller (model.hidden_dims, model.channels, model.latent_dim)")
    return FAMILIES.get(family_name(config))(config, shape)  # type: ignore[call-arg]
