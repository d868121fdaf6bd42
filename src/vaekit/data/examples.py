"""Example sets: N examples read through a :class:`Preprocessing` on demand, and the splits training gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaekit.data.preprocessing import Preprocessing, uniform_hash

if TYPE_CHECKING:
    from vaekit.data.shards import ShardedExamples


class ExampleSet:
    """N examples, possibly backed by a memory-mapped array that is never loaded whole.

    Parameters
    ----------
    raw
        ``(M, *raw_shape)`` raw values (an ``np.memmap`` for ``.npy`` files).
    preprocessing
        How raw values become model input.
    labels
        ``(M,)`` integer labels of the rows of ``raw``, or ``None``.
    rows
        Which rows of ``raw`` belong to this set (``None``: all of them).
    binarize_seed
        When not ``None``, each value is replaced by a fixed Bernoulli draw seeded by it (static binarizing).

    Attributes
    ----------
    raw
        The backing array; indexing reads only the rows asked for.
    labels
        ``(N,)`` int64 labels of this set, or ``None``.
    """

    def __init__(
        self,
        raw: np.ndarray,
        preprocessing: Preprocessing,
        labels: np.ndarray | None = None,
        rows: np.ndarray | None = None,
        binarize_seed: int | None = None,
    ) -> None:
        self.raw = raw
        self.preprocessing = preprocessing
        self.rows = np.arange(len(raw), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        self._all_labels = labels
        self.labels = None if labels is None else labels[self.rows]
        self.binarize_seed = binarize_seed

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"ExampleSet(n={len(self)}, shape={self.shape}, kind={self.preprocessing.kind!r})"

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-example model-input shape."""
        return self.preprocessing.shape

    def batch(self, indices: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Preprocessed examples ``indices`` (positions in this set) as float32 ``(B, *shape)``."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        x = self.preprocessing.apply(self.raw[rows])  # (B, *shape)
        if self.binarize_seed is not None:
            u = uniform_hash(self.binarize_seed, rows, int(np.prod(self.shape))).reshape(x.shape)
            x = (u < x).astype(np.float32)
        return torch.from_numpy(x)

    def tensor(self) -> torch.Tensor:
        """All examples as one float32 tensor ``(N, *shape)``; only for data that fits in memory."""
        return self.batch(np.arange(len(self)))

    def subset(self, indices: np.ndarray | torch.Tensor | list[int]) -> ExampleSet:
        """The examples at ``indices`` (positions in this set), with their labels."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        return ExampleSet(self.raw, self.preprocessing, self._all_labels, rows, self.binarize_seed)


@dataclass
class DataBundle:
    """What training gets: the splits and the preprocessing to save with the model."""

    train: ExampleSet | ShardedExamples  # ShardedExamples: a directory of shards, streamed (vaekit.data.shards)
    val: ExampleSet | ShardedExamples
    test: ExampleSet | None
    preprocessing: Preprocessing
