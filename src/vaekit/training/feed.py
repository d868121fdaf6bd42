"""How the training loop reads a split: batches on the device, shuffled per epoch, split over processes.

Data reaches the loop one of three ways: one tensor on the device when it fits (``IN_MEMORY_BYTES``), batches
read from a (memory-mapped) :class:`vaekit.data.ExampleSet`, or the stream of a directory of shards
(:mod:`vaekit.data.shards`). Under N processes each rank takes :func:`vaekit.training.distributed.shard` of every
epoch's permutation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from vaekit.config import Config
from vaekit.data import ExampleSet
from vaekit.data.shards import ShardedExamples
from vaekit.errors import DataError
from vaekit.training import distributed
from vaekit.training.distributed import Context

# Keep the training data on the device as one tensor when it is smaller than this; stream from the
# (possibly memory-mapped) array otherwise.
IN_MEMORY_BYTES = 2 * 1024**3

Batch = tuple[torch.Tensor, "torch.Tensor | None"]  # x (B, *shape) on the device, labels (B,) or None


class Feed:
    """One split as the loop reads it: this rank's batches on the device, with labels for a conditional model.

    In memory (a tensor on the device, or a memory-mapped :class:`ExampleSet`) an epoch's order is a
    permutation from the shared ``shuffle`` generator and this rank takes :func:`distributed.shard` of it;
    validation takes every N-th example. A :class:`ShardedExamples` split streams (see :mod:`vaekit.shards`)
    through one loader whose workers start here, before the loop starts threads of its own, and last the run.
    Dynamic binarization draws one fixed sample of the validation split, so its ELBOs compare across epochs.
    A set with ``read_by_batch = True`` (sparse interaction rows) is never held as one dense tensor.
    An example set with a ``batch_order(order, batch_size, generator)`` method chooses the batches of the order
    itself (text: length-bucketed, :meth:`vaekit.data.text.TextExamples.batch_order`), shuffling them with the same
    seeded generator (``None`` for validation), so resume stays exact.
    """

    def __init__(
        self, config: Config, ctx: Context, examples: ExampleSet | ShardedExamples, conditional: bool,
        batch_size: int, validation: bool = False, first_epoch: int = 0,
    ) -> None:
        self.config, self.ctx, self.examples, self.validation = config, ctx, examples, validation
        self.batch_size = batch_size
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.fixed_draw = validation and config.data.binarize == "dynamic"
        if isinstance(examples, ShardedExamples):
            if conditional and not examples.has_labels:
                split_labels(examples, config, ctx.device)  # raises the missing-labels error
            self.labelled = conditional
            self.loader = examples.loader(
                batch_size, rank=ctx.rank, world_size=ctx.world_size, shuffle=not validation,
                shuffle_buffer=config.data.shuffle_buffer, num_workers=config.data.num_workers,
                seed=config.train.seed + 1, pin_memory=ctx.device.type == "cuda",
            )
            self.started: tuple[int, Iterator[Batch]] | None = (first_epoch, self.loader(first_epoch))
            return
        self.labelled = False
        if getattr(examples, "read_by_batch", False):  # sparse rows (interactions): densified a batch at a time
            self.x = None
        else:
            self.x = examples.tensor().to(ctx.device) if validation else on_device_if_small(examples, ctx.device)
        self.y = split_labels(examples, config, ctx.device)
        if self.fixed_draw and self.x is not None:
            self.x = torch.bernoulli(self.x, generator=self._val_generator(rank=0))
            self.fixed_draw = False

    def _val_generator(self, rank: int) -> torch.Generator:
        seed = distributed.rank_seed(self.config.train.seed + 3, rank)
        return torch.Generator(device=self.ctx.device).manual_seed(seed)

    def num_batches(self) -> int:
        """Training batches per epoch of this rank (the same on every rank)."""
        if isinstance(self.examples, ShardedExamples):
            return self.examples.num_batches(self.batch_size, self.ctx.world_size, self.config.data.num_workers)
        return math.ceil(len(self.examples) // self.ctx.world_size / self.batch_size)

    def all_batches(self, shuffle_gen: torch.Generator) -> Iterator[Batch]:
        """Every example in the order of epoch 0's shuffle, not only this rank's share (for work rank 0 does alone,
        such as fitting the latent density); with one process, :meth:`batches` of epoch 0. A stream of shards
        gives this rank's share."""
        if self.ctx.world_size == 1 or isinstance(self.examples, ShardedExamples):
            yield from self.batches(0, shuffle_gen)
            return
        order = torch.randperm(len(self.examples), generator=shuffle_gen)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.x[idx.to(self.x.device)] if self.x is not None else self.examples.batch(idx).to(self.ctx.device)
            yield x, (None if self.y is None else self.y[idx.to(self.y.device)])

    def batches(self, epoch: int = 0, shuffle_gen: torch.Generator | None = None) -> Iterator[Batch]:
        """This rank's batches: of epoch ``epoch`` in a fresh order (training), or in order (validation)."""
        ctx, examples, b = self.ctx, self.examples, self.batch_size
        if isinstance(examples, ShardedExamples):
            started, self.started = self.started, None
            batches = started[1] if started is not None and started[0] == epoch else self.loader(epoch)
            generator = self._val_generator(ctx.rank) if self.fixed_draw else None
            for x, y in batches:
                x = x.to(ctx.device, non_blocking=True)
                if generator is not None:
                    x = torch.bernoulli(x, generator=generator)
                yield x, (y.to(ctx.device, non_blocking=True) if self.labelled and y is not None else None)
            return
        if self.validation:
            order = torch.arange(ctx.rank, len(examples), ctx.world_size)
        else:
            assert shuffle_gen is not None  # internal: training always passes the shared generator
            order = distributed.shard(torch.randperm(len(examples), generator=shuffle_gen), ctx.rank, ctx.world_size)
        chunks = [order[start : start + b] for start in range(0, len(order), b)]
        batch_order = getattr(examples, "batch_order", None)  # a set that orders its own batches (text: by length)
        if batch_order is not None:
            chunks = batch_order(order, b, None if self.validation else shuffle_gen)
        for idx in chunks:
            x = self.x[idx.to(self.x.device)] if self.x is not None else examples.batch(idx).to(ctx.device)
            yield x, (None if self.y is None else self.y[idx.to(self.y.device)])

    def first(self, n: int) -> Batch:
        """The first ``n`` examples this rank validates on (for the reconstruction figure)."""
        if self.x is not None:
            return self.x[:n], None if self.y is None else self.y[:n]
        x, y = next(iter(self.batches()))
        return x[:n], None if y is None else y[:n]


def split_labels(examples: ExampleSet | ShardedExamples, config: Config, device: torch.device) -> torch.Tensor | None:
    """The labels of a split as a long tensor for a conditional model; ``None`` for an unconditional one."""
    num_classes = config.model.num_classes
    if not num_classes:
        return None
    if examples.labels is None:
        raise DataError(
            f"model.num_classes={num_classes} makes the model conditional, but {config.data.source!r} has no "
            "labels; use labelled data (digits, mnist, a table with data.label_column, audio files named by "
            "data.labels_from, ...) or model.num_classes=0"
        )
    labels = torch.as_tensor(examples.labels, dtype=torch.long)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"labels of {config.data.source!r} span {int(labels.min())}..{int(labels.max())}, outside "
            f"0..{num_classes - 1}; set model.num_classes to the number of classes"
        )
    return labels.to(device)


def on_device_if_small(examples: ExampleSet, device: torch.device) -> torch.Tensor | None:
    """The whole split as one tensor on ``device`` if it is small enough, else ``None`` (stream batches)."""
    nbytes = len(examples) * math.prod(examples.shape) * 4
    if nbytes > IN_MEMORY_BYTES:
        return None
    return examples.tensor().to(device)
