"""Conditioning on a class label: a component that any family can use (``model.num_classes = K > 0``).

A conditional VAE (Sohn et al. 2015) takes labels ``y`` (N,) in both ``encode(x, y)`` and ``decode(z, y)``: the
one-hot label is appended to z before the decoder, and a learned per-class offset shifts the encoder's output.
Unconditional models have no conditioning and ignore ``y``.
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit.errors import DataError


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
        """The per-class offset (B, F) added to the encoder's output."""
        return self.encoder_offset(y)

    def decoder_input(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z (N, L) with the one-hot label appended: (N, L + K)."""
        one_hot = nn.functional.one_hot(y, self.num_classes).to(z.dtype)  # (N, K)
        return torch.cat([z, one_hot], dim=-1)
