"""Residual building blocks for deep stacks: blocks h + f(h) of linear or 3x3 convolution layers, the strided
convolutional stem and transposed-convolution head around them, and weight normalisation.

Used by the hierarchical VAE (:mod:`vaekit.models.hierarchical`); any family may use them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vaekit.config import ModelConfig
from vaekit.nn.networks import ACTIVATIONS

Maker = Callable[[int, int], nn.Module]
"""``make(n_in, n_out)``: a layer mapping n_in features (or channels) to n_out."""


class ResidualBlock(nn.Module):
    """Residual block: h + f(h), f = layer(act(layer(act(h)))); the last layer starts small (``scale``)."""

    def __init__(self, make: Maker, width: int, activation: str, scale: float) -> None:
        super().__init__()
        act = ACTIVATIONS.get(activation)
        self.first, self.second = make(width, width), make(width, width)
        with torch.no_grad():
            self.second.weight.mul_(scale)  # type: ignore[operator]
            self.second.bias.zero_()  # type: ignore[operator]
        self.act1, self.act2 = act(), act()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.second(self.act2(self.first(self.act1(h))))


def residual_stack(make: Maker, width: int, activation: str, blocks: int, scale: float) -> nn.Sequential:
    """``blocks`` residual blocks of ``width`` features in a row."""
    return nn.Sequential(*(ResidualBlock(make, width, activation, scale) for _ in range(blocks)))


def linear(n_in: int, n_out: int) -> nn.Module:
    """A linear layer (a :data:`Maker`)."""
    return nn.Linear(n_in, n_out)


def conv3(n_in: int, n_out: int) -> nn.Module:
    """A 3x3 convolution keeping H and W (a :data:`Maker`)."""
    return nn.Conv2d(n_in, n_out, 3, padding=1)


def conv1(n_in: int, n_out: int) -> nn.Module:
    """A 1x1 convolution (a :data:`Maker`)."""
    return nn.Conv2d(n_in, n_out, 1)


def conv_stem_and_head(
    data_shape: tuple[int, ...], sizes: list[tuple[int, int]], config: ModelConfig, params: int
) -> tuple[nn.Module, nn.Module]:
    """A stem of strided convolutions (``config.channels``) from an image C x H x W down to the grid
    ``sizes[-1]``, and a head of transposed convolutions back to ``params`` outputs per data element at the exact
    image size: x (B, C, H, W) -> (B, channels[-1], h, w); (B, channels[-1], h, w) -> (B, params, C, H, W)."""
    act = ACTIVATIONS.get(config.activation)
    stem: list[nn.Module] = []
    c_in = data_shape[0]
    for i, c_out in enumerate(config.channels):
        stem.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
        if i < len(config.channels) - 1:
            stem.append(act())
        c_in = c_out
    head: list[nn.Module] = []
    outs = [*reversed(config.channels[:-1]), params * data_shape[0]]
    for i, c_out in enumerate(outs):
        target, current = sizes[-2 - i], sizes[-1 - i]
        padding = (target[0] - 2 * current[0], target[1] - 2 * current[1])
        head += [act(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, output_padding=padding)]
        c_in = c_out
    head.append(nn.Unflatten(1, (params, data_shape[0])))
    return nn.Sequential(*stem), nn.Sequential(*head)


def apply_weight_norm(model: nn.Module) -> None:
    """Weight normalisation on every linear and convolution layer (w = g v / ||v||)."""
    from torch.nn.utils.parametrizations import weight_norm

    for module in list(model.modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            weight_norm(module, dim=1 if isinstance(module, nn.ConvTranspose2d) else 0)
