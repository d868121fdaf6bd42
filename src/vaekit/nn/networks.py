"""Encoder and decoder networks, registered by architecture name.

An architecture builds two plain ``nn.Module`` s::

    encoder: x (B, *data_shape)  -> h (B, out_features)          (the model splits h into mean, log-variance)
    decoder: z (B, latent_dim)   -> params (B, P, *data_shape)   (P likelihood parameters per data element)

``mlp`` flattens any input; ``conv`` takes images C x H x W of any size: strided convolutions (kernel 4,
stride 2, padding 1) halve H and W at each layer, and transposed convolutions with a per-layer output
padding restore the exact sizes on the way up, so 8 x 8, 28 x 28 or 32 x 24 images all work.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.registry import Registry

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation", "model.activation")
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("elu")(nn.ELU)
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("silu")(nn.SiLU)
ACTIVATIONS.register("tanh")(nn.Tanh)
ACTIVATIONS.register("leaky_relu")(nn.LeakyReLU)


class Architecture(Protocol):
    """What an architecture provides: an encoder and a decoder for a data shape."""

    def build_encoder(self, data_shape: tuple[int, ...], out_features: int, config: ModelConfig) -> nn.Module:
        """x (B, *data_shape) -> (B, out_features)."""
        ...

    def build_decoder(
        self, latent_dim: int, data_shape: tuple[int, ...], param_channels: int, config: ModelConfig
    ) -> nn.Module:
        """z (B, latent_dim) -> (B, param_channels, *data_shape)."""
        ...


ARCHITECTURES: Registry[Architecture] = Registry("architecture", "model.architecture")


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    act = ACTIVATIONS.get(activation)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class _Unflatten(nn.Module):
    """(B, prod(shape)) -> (B, *shape)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.reshape(h.shape[0], *self.shape)


class MLPArchitecture:
    """Fully connected encoder/decoder; the decoder mirrors ``hidden_dims``."""

    def build_encoder(self, data_shape: tuple[int, ...], out_features: int, config: ModelConfig) -> nn.Module:
        sizes = [math.prod(data_shape), *config.hidden_dims, out_features]
        return nn.Sequential(nn.Flatten(), mlp(sizes, config.activation))

    def build_decoder(
        self, latent_dim: int, data_shape: tuple[int, ...], param_channels: int, config: ModelConfig
    ) -> nn.Module:
        sizes = [latent_dim, *reversed(config.hidden_dims), param_channels * math.prod(data_shape)]
        return nn.Sequential(mlp(sizes, config.activation), _Unflatten((param_channels, *data_shape)))


def conv_sizes(data_shape: tuple[int, ...], n_layers: int) -> list[tuple[int, int]]:
    """(H, W) of an image C x H x W and after each of ``n_layers`` strided convolutions (kernel 4, stride 2,
    padding 1: halving, rounding down); ConfigError for other shapes or images too small for that many layers."""
    if len(data_shape) != 3:
        raise ConfigError(
            f"architecture 'conv' needs images of shape C x H x W, got data shape {data_shape}; "
            "use model.architecture=mlp for vectors"
        )
    sizes = [(data_shape[1], data_shape[2])]
    for _ in range(n_layers):
        h, w = sizes[-1]
        if h < 2 or w < 2:
            raise ConfigError(
                f"images of {data_shape[1]} x {data_shape[2]} are too small for {n_layers} strided conv "
                "layers; give model.channels fewer entries"
            )
        sizes.append((h // 2, w // 2))  # kernel 4, stride 2, padding 1 halves (rounding down)
    return sizes


class ConvArchitecture:
    """Strided convolutions down, transposed convolutions up, with ``hidden_dims`` dense layers between."""

    def build_encoder(self, data_shape: tuple[int, ...], out_features: int, config: ModelConfig) -> nn.Module:
        sizes = conv_sizes(data_shape, len(config.channels))
        act = ACTIVATIONS.get(config.activation)
        layers: list[nn.Module] = []
        c_in = data_shape[0]
        for c_out in config.channels:
            layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), act()]
            c_in = c_out
        flat = c_in * sizes[-1][0] * sizes[-1][1]
        layers += [nn.Flatten()]
        if config.hidden_dims:
            layers += [mlp([flat, *config.hidden_dims], config.activation), act()]
            flat = config.hidden_dims[-1]
        layers.append(nn.Linear(flat, out_features))
        return nn.Sequential(*layers)

    def build_decoder(
        self, latent_dim: int, data_shape: tuple[int, ...], param_channels: int, config: ModelConfig
    ) -> nn.Module:
        sizes = conv_sizes(data_shape, len(config.channels))
        act = ACTIVATIONS.get(config.activation)
        channels = list(config.channels)
        h, w = sizes[-1]
        flat = channels[-1] * h * w
        layers: list[nn.Module] = [mlp([latent_dim, *reversed(config.hidden_dims), flat], config.activation)]
        layers += [act(), _Unflatten((channels[-1], h, w))]
        outs = [*reversed(channels[:-1]), param_channels * data_shape[0]]
        c_in = channels[-1]
        for i, c_out in enumerate(outs):
            target = sizes[-2 - i]
            current = sizes[-1 - i]
            # ConvTranspose2d(k=4, s=2, p=1) maps n -> 2n + output_padding; pick it to hit the encoder's size.
            padding = (target[0] - 2 * current[0], target[1] - 2 * current[1])
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, output_padding=padding))
            if i < len(outs) - 1:
                layers.append(act())
            c_in = c_out
        layers.append(_Unflatten((param_channels, *data_shape)))
        return nn.Sequential(*layers)


ARCHITECTURES.register("mlp")(MLPArchitecture())
ARCHITECTURES.register("conv")(ConvArchitecture())
