"""What the encoder sees of an example: an optional per-example L2 normalisation and input dropout.

::

    x (B, *shape) ──[x / ||x||_2]──[dropout p, training only]──> encoder input (B, *shape)

Mult-VAE and Mult-DAE (Liang et al. 2018, "Variational Autoencoders for Collaborative Filtering",
arXiv:1802.05814) encode a user's interaction vector normalised to unit length, with half of it dropped during
training: users with many and with few interactions look alike to the encoder, and it learns to complete partial
histories, which is what a recommender is asked to do. Only the encoder's input changes; the likelihood scores
the example itself. The component has no weights, so a model without it has the same ``state_dict`` as before.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class InputTransform(nn.Module):
    """L2 normalisation of each example (over all its values) and dropout, before the encoder.

    Parameters
    ----------
    norm
        ``l2`` divides each example by its Euclidean norm (an all-zero example stays zero); ``none`` leaves it.
    dropout
        Probability of zeroing each value during training (the rest are scaled by ``1 / (1 - dropout)``, as
        :class:`torch.nn.Dropout` does); 0 disables it. In ``eval()`` mode nothing is dropped.
    """

    def __init__(self, norm: str = "none", dropout: float = 0.0) -> None:
        super().__init__()
        if norm not in ("none", "l2"):
            raise ValueError(f"norm must be 'none' or 'l2', got {norm!r}")  # ModelConfig checks user input
        self.norm = norm
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    @property
    def is_identity(self) -> bool:
        """Whether the transform leaves every input unchanged."""
        return self.norm == "none" and self.dropout is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *shape) -> (B, *shape)."""
        if self.norm == "l2":
            flat = F.normalize(x.reshape(x.shape[0], -1), p=2.0, dim=1)  # (B, D); zero rows stay zero
            x = flat.reshape(x.shape)
        if self.dropout is not None:
            x = self.dropout(x)
        return x

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, dropout={0.0 if self.dropout is None else self.dropout.p}"
