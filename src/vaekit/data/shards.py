"""Sharded datasets: a directory of ``.npy`` shards, or of Parquet files, streamed shard by shard.

For data larger than memory. :data:`vaekit.data.datasets.SOURCES` hands ``data.source=DIR`` to :func:`load_sharded`
when DIR holds ``*.npy`` or ``*.parquet`` files directly inside it (a folder of images has none).

::

    DIR/*.npy      (N_i, *raw_shape) each: one dtype and one per-example shape in every file (the ``.npy``
                   rules of vaekit.data: uint8 / 255, channels last transposed, ...); no labels
    DIR/*.parquet  the same numeric columns in every file; data.label_column (integer class ids) for labels

    load:   read the headers ──> scan every shard once, 4 MB at a time (kind and scale, NaN check) ──> hold out
            round(val_fraction * N_i) rows of every shard for validation, chosen by (data.seed, shard) ──> for
            real values, one more pass over the train rows: data.scaling's centre and spread (standard: mean and
            std; robust / asinh: quartiles of an even sample of at most 262,144 rows, as in-memory data)

    epoch e, rank r of R processes, loader worker w of W (data.num_workers, 0 counts as 1):
            shard order: a permutation drawn from (data.seed, e), the same in every process
            the train rows of the shards in that order, end to end; drop the last n % R
            ──> rank r: the r-th contiguous block of n // R rows ──> worker w: the w-th piece of the block
            ──> read <= 4 MB of raw rows at a time ──> shuffle buffer ──> batches ──> preprocessing

Each train example is read by exactly one (rank, worker) per epoch. The ``n % R`` rows dropped (at most R - 1,
the end of the epoch's last shard) keep every rank at the same number of steps, which DistributedDataParallel
needs; in-memory data drops ``n % R`` examples of its permutation the same way. With one process nothing is
dropped.

The shuffle buffer (``data.shuffle_buffer`` rows, one per worker, seeded by (data.seed, e, r, w)): rows are
appended as read; once it holds a full buffer it is permuted and all but half a buffer leaves as batches, the
half that stays mixing with the rows read next. Examples therefore mix across about a buffer's worth of
neighbouring shard reads, and across shards through the shuffled shard order: the usual trade of streaming
loaders (WebDataset, tf.data), not a full permutation. Shuffling depends only on (seed, epoch, rank, worker),
so a run resumed at an epoch boundary replays the same epochs.

Memory: a process holds the shuffle buffer, one read (4 MB, or one Parquet row group) and one batch, whatever
the dataset's size. Files are read with plain reads, not memory maps, so no file pages stay in the process.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vaekit.config import DataConfig
from vaekit.data.arrays import array_shape, scan_values
from vaekit.data.audio import AUDIO_SUFFIXES
from vaekit.data.examples import DataBundle, ExampleSet
from vaekit.data.preprocessing import Preprocessing, uniform_hash
from vaekit.data.readers import IMAGE_SUFFIXES, numpy_file_errors
from vaekit.data.scaling import check_scaling, robust_from_sample, sample_step
from vaekit.data.sources import SOURCES
from vaekit.errors import DataError
from vaekit.extras import import_optional

MEDIA_SUFFIXES = (*AUDIO_SUFFIXES, *IMAGE_SUFFIXES)  # a folder mostly of these is not a folder of shards

logger = logging.getLogger(__name__)

SUFFIXES = (".npy", ".parquet")
READ_BYTES = 4 << 20  # raw bytes read (and scanned) at a time
_KIND_ORDER = ("binary", "unit", "real")

Batch = tuple[torch.Tensor, "torch.Tensor | None"]
_Rows = tuple[np.ndarray, "np.ndarray | None"]  # raw rows (k, ...) and their labels (k,) or None


def shard_files(path: str | Path) -> list[Path]:
    """The shards of a directory: its ``*.npy`` files, else its ``*.parquet`` files, sorted by name.

    Returns ``[]`` for a path that is not a directory or holds neither (a folder of images, say).

    Raises
    ------
    DataError
        For a directory that mixes ``.npy`` and ``.parquet`` files.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        return []
    found = {suffix: sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == suffix)
             for suffix in SUFFIXES}
    if all(found.values()):
        raise DataError(f"{str(path)!r} mixes .npy and .parquet shards; keep one kind of shard per directory")
    return found[".npy"] or found[".parquet"]


# -- readers: rows [start, stop) of one file, in the model's element order --------------------------------
class _NpyShard:
    """One ``.npy`` file read with plain file reads (never memory-mapped, never unpickled)."""

    def __init__(self, path: Path) -> None:
        with numpy_file_errors(path, "numpy.save"):
            with path.open("rb") as handle:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                self.offset = handle.tell()
        where = str(path)
        if len(shape) < 2:
            raise DataError(f"{where} has shape {shape}; expected (N, ...) with one example per row")
        if dtype.kind not in "biuf":
            raise DataError(f"{where} has dtype {dtype}; expected numbers (uint8, int or float)")
        if fortran:
            raise DataError(f"{where} is stored in Fortran order; save numpy.ascontiguousarray(x) instead")
        self.path, self.dtype, self.raw_shape = path, np.dtype(dtype), tuple(int(s) for s in shape)
        self.model_shape, self.channels_last = array_shape(self.raw_shape[1:], where)
        self.row_items = math.prod(self.raw_shape[1:])
        expected = self.offset + len(self) * self.row_items * self.dtype.itemsize
        if path.stat().st_size < expected:
            raise DataError(f"shard {where} is truncated ({path.stat().st_size} of {expected} bytes); write it again")
        self.features: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return self.raw_shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.raw_shape

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw rows ``[start, stop)`` as ``(rows, *raw_shape)`` (channels first) and no labels."""
        count = (stop - start) * self.row_items
        x = np.fromfile(self.path, self.dtype, count, offset=self.offset + start * self.row_items * self.dtype.itemsize)
        x = x.reshape(stop - start, *self.raw_shape[1:])
        return (x.transpose(0, 3, 1, 2) if self.channels_last else x), None

    def __getitem__(self, rows: slice) -> np.ndarray:  # the slices vaekit.data.arrays.scan_values reads
        start, stop, _ = rows.indices(len(self))
        return self.read(start, stop)[0]


class _ParquetShard:
    """One Parquet file: numeric feature columns read one row group at a time (the last one cached)."""

    def __init__(self, path: Path, features: tuple[str, ...] | None, label_column: str | None) -> None:
        pq = _pyarrow_parquet()
        try:
            meta = pq.ParquetFile(path).metadata
            schema = pq.read_schema(path)
        except Exception as exc:  # pyarrow raises its own error types (ArrowInvalid, OSError, ...)
            raise DataError(f"cannot read shard {str(path)!r} as Parquet ({exc}); write it again") from None
        import pyarrow as pa

        names = list(schema.names)
        where = str(path)
        if label_column is not None:
            if label_column not in names:
                raise DataError(f"label column {label_column!r} not in {where!r}; columns: {', '.join(names)}")
            if not pa.types.is_integer(schema.field(label_column).type):
                raise DataError(
                    f"label column {label_column!r} of {where!r} is {schema.field(label_column).type}; sharded "
                    "Parquet data needs integer class ids there (encode the labels as 0..K-1)"
                )
        if features is None:
            features = tuple(n for n in names if n != label_column)
            for name in features:
                kind = schema.field(name).type
                if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
                    raise DataError(
                        f"column {name!r} of {where!r} is not numeric ({kind}); encode it as numbers, drop it, "
                        "or name it as data.label_column"
                    )
        missing = [c for c in features if c not in names]
        if missing:
            raise DataError(f"shard {where!r} lacks columns {missing} that the other shards have; give every "
                            "shard the same columns")
        if not features:
            raise DataError(f"{where!r} has no feature columns; add numeric columns besides the label column")
        self.path, self.features, self.label_column = path, tuple(features), label_column
        self.dtype = np.dtype(np.float32)
        self.model_shape = (len(self.features),)
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])  # row group g: [bounds[g], bounds[g+1])
        self._cached: tuple[int, np.ndarray, np.ndarray | None] | None = None

    def __len__(self) -> int:
        return int(self.bounds[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), len(self.features))

    @property
    def raw_shape(self) -> tuple[int, ...]:
        return self.shape

    def _group(self, g: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self._cached is None or self._cached[0] != g:
            columns = [*self.features, *([self.label_column] if self.label_column else [])]
            try:
                table = _pyarrow_parquet().ParquetFile(self.path).read_row_group(g, columns=columns)
                x = np.stack([np.asarray(table.column(c).to_numpy(zero_copy_only=False), np.float32)
                              for c in self.features], axis=1)  # (rows, D)
            except (OSError, ValueError, TypeError) as exc:  # a damaged page; a later shard's text column
                reason = " ".join(str(exc).split())[:160]
                raise DataError(f"cannot read row group {g} of shard {str(self.path)!r}: {reason}; replace the shard, "
                                "or make its columns numbers like the first shard's") from None
            labels = None
            if self.label_column:
                labels = np.asarray(table.column(self.label_column).to_numpy(zero_copy_only=False))
                if labels.dtype.kind not in "iu":
                    raise DataError(f"label column {self.label_column!r} of {str(self.path)!r} has missing "
                                    "values; give every row a class id")
                labels = labels.astype(np.int64)
            self._cached = (g, x, labels)
        return self._cached[1], self._cached[2]

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows ``[start, stop)`` as float32 ``(rows, D)`` and their int64 labels (or ``None``)."""
        xs, ys = [], []
        first = int(np.searchsorted(self.bounds, start, side="right")) - 1
        for g in range(first, len(self.bounds) - 1):
            lo, hi = int(self.bounds[g]), int(self.bounds[g + 1])
            if lo >= stop:
                break
            x, y = self._group(g)
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            xs.append(x[a:b])
            ys.append(None if y is None else y[a:b])
        x = np.concatenate(xs) if xs else np.zeros((0, len(self.features)), np.float32)
        labels = None if self.label_column is None else np.concatenate([y for y in ys if y is not None])
        return x, labels

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(len(self))
        return self.read(start, stop)[0]


def _pyarrow_parquet() -> Any:
    return import_optional("pyarrow.parquet", "tables", "reading Parquet shards", DataError)


_Shard = _NpyShard | _ParquetShard


# -- the split: which rows of each shard belong to train or validation ---------------------------------------
def _val_rows(seed: int, shard: int, n: int, n_val: int) -> np.ndarray:
    """Sorted local rows of shard number ``shard`` held out for validation: a permutation seeded by both."""
    return np.sort(np.random.default_rng([seed, shard]).permutation(n)[:n_val])


@dataclass(frozen=True)
class _Plan:
    """Where each shard's rows go: ``val_counts[s]`` rows of shard ``s`` held out, the rest train."""

    seed: int
    lengths: tuple[int, ...]
    val_counts: tuple[int, ...]

    def kept(self, shard: int, validation: bool) -> np.ndarray:
        """Sorted local rows of ``shard`` in the train (or validation) split."""
        val = _val_rows(self.seed, shard, self.lengths[shard], self.val_counts[shard])
        if validation:
            return val
        mask = np.ones(self.lengths[shard], bool)
        mask[val] = False
        return np.flatnonzero(mask)

    def count(self, shard: int, validation: bool) -> int:
        return self.val_counts[shard] if validation else self.lengths[shard] - self.val_counts[shard]


def _pieces(shards: list[_Shard], plan: _Plan, validation: bool) -> Iterator[tuple[int, np.ndarray, _Rows]]:
    """Every kept row of the split in file order: (shard, kept local rows, raw rows ``(k, ...)``), <= 4 MB each."""
    for s, shard in enumerate(shards):
        rows = plan.kept(s, validation)
        yield from _read_rows(shard, s, rows)


def _read_rows(shard: _Shard, s: int, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray, _Rows]]:
    """Rows ``rows`` (sorted) of ``shard``: contiguous reads of at most READ_BYTES, gaps between rows skipped."""
    row_bytes = max(1, math.prod(shard.model_shape) * shard.dtype.itemsize)
    step = max(1, READ_BYTES // row_bytes)
    i = 0
    while i < len(rows):
        lo = int(rows[i])
        j = int(np.searchsorted(rows, lo + step))  # the rows inside this read
        chunk = rows[i:j]
        yield s, chunk, _select(shard.read(lo, int(chunk[-1]) + 1), chunk - lo)  # the read is not kept
        i = j


def _select(read: _Rows, index: np.ndarray) -> _Rows:
    x, y = read
    return x[index], None if y is None else y[index]


# -- the stream ------------------------------------------------------------------------------------------
class ShardedExamples:
    """One split (train or validation) of a sharded dataset: known size, read only as a stream of batches.

    Made by :func:`load_sharded`; the training loop calls :meth:`batches` once per epoch.

    Attributes
    ----------
    preprocessing
        How raw rows become model input (fitted on the train split, saved with the model).
    has_labels
        Whether batches come with labels (Parquet shards with ``data.label_column``).
    """

    def __init__(
        self,
        shards: list[_Shard],
        plan: _Plan,
        preprocessing: Preprocessing,
        *,
        validation: bool,
        binarize_seed: int | None,
        has_labels: bool,
    ) -> None:
        self.shards, self.plan, self.preprocessing = shards, plan, preprocessing
        self.validation, self.binarize_seed, self.has_labels = validation, binarize_seed, has_labels
        self.offsets = np.concatenate([[0], np.cumsum([len(s) for s in shards], dtype=np.int64)])  # global row ids
        self.counts = [plan.count(s, validation) for s in range(len(shards))]
        self.labels = None  # never held in memory; see has_labels

    def __len__(self) -> int:
        return sum(self.counts)

    def __repr__(self) -> str:
        split = "validation" if self.validation else "train"
        return f"ShardedExamples({split}, n={len(self)}, shards={len(self.shards)}, shape={self.shape})"

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-example model-input shape."""
        return self.preprocessing.shape

    def _block(self, rank: int, world_size: int, drop_remainder: bool) -> tuple[int, int]:
        n = len(self)
        used = n - n % world_size if drop_remainder else n
        return used * rank // world_size, used * (rank + 1) // world_size

    def num_batches(self, batch_size: int, world_size: int = 1, num_workers: int = 0) -> int:
        """Batches rank 0 yields per epoch (the same on every rank for the train split, which drops ``n % R``)."""
        lo, hi = self._block(0, world_size, not self.validation)
        workers = max(1, num_workers)
        return sum(math.ceil(((hi - lo) * (w + 1) // workers - (hi - lo) * w // workers) / batch_size)
                   for w in range(workers))

    def batches(
        self,
        batch_size: int,
        *,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        shuffle_buffer: int = 16384,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> Iterator[Batch]:
        """This rank's batches of one epoch: ``(x, y)`` with x float32 ``(B, *shape)`` and y int64 ``(B,)``
        labels or ``None``. For one epoch; :meth:`loader` reads epoch after epoch with the same workers.

        Parameters
        ----------
        batch_size
            Examples per batch (per rank); each worker's last batch may be smaller.
        epoch
            Selects the shard order and the buffer shuffles (with ``seed``).
        rank, world_size
            This process's share: the train split drops ``n % world_size`` rows so all ranks get as many;
            the validation split gives ranks ``n // world_size`` or one more and drops nothing.
        shuffle
            Shuffle the shard order and through the buffer; ``False`` reads in file order.
        shuffle_buffer
            Rows per worker's shuffle buffer.
        num_workers
            DataLoader worker processes (0: read in this process).
        seed
            Seed of the shard order and buffers.
        pin_memory
            Pin batches for fast copies to a GPU.
        """
        loader = self.loader(batch_size, rank=rank, world_size=world_size, shuffle=shuffle,
                             shuffle_buffer=shuffle_buffer, num_workers=num_workers, seed=seed, pin_memory=pin_memory,
                             keep_workers=False)
        return loader(epoch)

    def loader(
        self,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        shuffle_buffer: int = 16384,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        keep_workers: bool = True,
    ) -> EpochLoader:
        """A reader of this rank's batches, epoch after epoch (``loader(epoch)``); arguments as :meth:`batches`.

        With ``keep_workers`` the DataLoader workers are started at the first epoch and kept for the next ones.
        """
        stream = _Stream(self, batch_size, rank, world_size, shuffle, max(1, shuffle_buffer), seed)
        return EpochLoader(stream, num_workers, pin_memory, keep_workers)

    def _to_batch(self, raw: np.ndarray, ids: np.ndarray, labels: np.ndarray | None) -> Batch:
        x = self.preprocessing.apply(raw)  # (B, *shape)
        if self.binarize_seed is not None:
            u = uniform_hash(self.binarize_seed, ids, int(np.prod(self.shape))).reshape(x.shape)
            x = (u < x).astype(np.float32)
        return torch.from_numpy(x), None if labels is None else torch.from_numpy(labels)


class EpochLoader:
    """One rank's reader of a split, epoch after epoch: ``loader(epoch)`` iterates that epoch's batches.

    The DataLoader workers (``num_workers`` > 0) are forked once, at the first epoch, and kept: the epoch reaches
    them through a shared-memory counter. Forking a process that runs other threads can leave the child
    deadlocked on CPython before 3.12 when a thread starts or ends at that instant (python/cpython#112275); a
    loader that forked anew every epoch, right after the previous one's threads wound down, hung that way.
    """

    def __init__(self, stream: _Stream, num_workers: int, pin_memory: bool, keep_workers: bool = True) -> None:
        self.stream = stream
        # Its own generator: a DataLoader otherwise draws its workers' base seed from the global torch RNG, which
        # would shift the training noise with every epoch's loader (and break exact resume).
        generator = torch.Generator().manual_seed(stream.seed)
        self.loader = DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                                 persistent_workers=keep_workers and num_workers > 0, generator=generator)

    def __call__(self, epoch: int) -> Iterator[Batch]:
        self.stream.epoch.fill_(epoch)  # read by the workers when the iteration (re)starts
        return iter(self.loader)


class _Stream(IterableDataset):  # type: ignore[type-arg]
    """The batches of one (rank, worker): see the module docstring."""

    def __init__(
        self, examples: ShardedExamples, batch_size: int, rank: int, world_size: int, shuffle: bool,
        shuffle_buffer: int, seed: int,
    ) -> None:
        super().__init__()
        self.examples, self.batch_size = examples, batch_size
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.capacity, self.seed = shuffle_buffer, seed
        self.epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # set by EpochLoader, shared with workers

    def _segments(self, epoch: int, worker: int, workers: int) -> Iterator[tuple[int, int, int]]:
        """(shard, first, stop) positions within the shard's kept rows, for this worker, in epoch order."""
        ex = self.examples
        lo, hi = ex._block(self.rank, self.world_size, drop_remainder=not ex.validation)
        start, stop = lo + (hi - lo) * worker // workers, lo + (hi - lo) * (worker + 1) // workers
        order = (np.random.default_rng([self.seed, epoch]).permutation(len(ex.shards)) if self.shuffle
                 else np.arange(len(ex.shards)))
        position = 0
        for s in order.tolist():
            count = ex.counts[s]
            a, b = max(start, position), min(stop, position + count)
            if a < b:
                yield s, a - position, b - position
            position += count
            if position >= stop:
                break

    def _reads(
        self, epoch: int, worker: int, workers: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        ex = self.examples
        for s, first, stop in self._segments(epoch, worker, workers):
            rows = ex.plan.kept(s, ex.validation)[first:stop]
            for _, chunk, (x, y) in _read_rows(ex.shards[s], s, rows):
                yield x, chunk + ex.offsets[s], (y if ex.has_labels else None)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch = int(self.epoch)
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker])
        b = self.batch_size
        held: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        count = 0
        for piece in self._reads(epoch, worker, workers):
            held.append(piece)
            count += len(piece[1])
            keep = self.capacity // 2 if self.shuffle else 0
            if (self.shuffle and count < self.capacity) or count - keep < b:
                continue
            x, ids, y = _concat(held)
            order = rng.permutation(count) if self.shuffle else np.arange(count)
            out = (count - keep) // b * b
            for i in range(0, out, b):
                yield self.examples._to_batch(*_take((x, ids, y), order[i : i + b]))
            held, count = [_take((x, ids, y), order[out:])], count - out
        if count:
            x, ids, y = _concat(held)
            order = rng.permutation(count) if self.shuffle else np.arange(count)
            for i in range(0, count, b):
                yield self.examples._to_batch(*_take((x, ids, y), order[i : i + b]))


def _concat(
    held: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if len(held) == 1:
        return held[0]
    labels = [p[2] for p in held if p[2] is not None]
    y = np.concatenate(labels) if labels else None
    return np.concatenate([p[0] for p in held]), np.concatenate([p[1] for p in held]), y


def _take(
    piece: tuple[np.ndarray, np.ndarray, np.ndarray | None], index: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x, ids, y = piece
    return x[index], ids[index], None if y is None else y[index]


# -- loading ---------------------------------------------------------------------------------------------
def load_sharded(cfg: DataConfig) -> DataBundle:
    """Open a directory of shards for streaming: check every shard, hold out validation rows, fit preprocessing.

    Parameters
    ----------
    cfg
        The data config; ``cfg.source`` is the directory. Every shard is read once here, 4 MB at a time.

    Returns
    -------
    DataBundle
        :class:`ShardedExamples` train and validation splits (no test split) and the :class:`Preprocessing`
        (``source`` is the directory).

    Raises
    ------
    DataError
        Unreadable shards, shards that disagree on dtype, shape or columns, NaN or infinite values, no examples,
        too few for the split, or binarization of real values.
    """
    path = Path(cfg.source).expanduser()
    files = shard_files(path)
    if not files:
        raise DataError(f"{str(path)!r} holds no .npy or .parquet shards; point data.source at a directory of them")
    parquet = files[0].suffix.lower() == ".parquet"
    shards: list[_Shard] = []
    for file in files:
        shard: _Shard = (_ParquetShard(file, shards[0].features if shards else None, cfg.label_column) if parquet
                         else _NpyShard(file))
        if shards and not parquet and (shard.dtype, shard.raw_shape[1:]) != (shards[0].dtype, shards[0].raw_shape[1:]):
            first = shards[0]
            raise DataError(
                f"shard {str(file)!r} holds {shard.dtype} examples of shape {shard.raw_shape[1:]} but "
                f"{str(first.path)!r} holds {first.dtype} of shape {first.raw_shape[1:]}; write every shard alike"
            )
        shards.append(shard)
    if cfg.label_column is not None and not parquet:
        raise DataError(f"data.label_column is set but {str(path)!r} holds .npy shards, which have no columns; "
                        "use Parquet shards for labels or leave data.label_column unset")

    # NaN check and kind, 4 MB at a time; _scan reads only len(), .shape, .dtype and row slices
    kinds = [scan_values(shard, str(shard.path), chunk_bytes=READ_BYTES) for shard in shards]  # type: ignore[arg-type]
    kind = "real" if parquet else max((k for k, _ in kinds), key=_KIND_ORDER.index)
    scale = 255.0 if shards[0].dtype == np.uint8 and kind != "binary" else 1.0
    lengths = tuple(len(s) for s in shards)
    n = sum(lengths)
    if n == 0:
        raise DataError(f"data source {cfg.source!r} holds 0 examples; add data")
    val_counts = _held_out(lengths, cfg.val_fraction)
    if n - sum(val_counts) < 1:
        raise DataError(f"{n} examples leave none for training after holding out {sum(val_counts)} for validation; "
                        "lower data.val_fraction or add data")
    if cfg.binarize != "none" and kind not in ("unit", "binary"):
        raise DataError(
            f"data.binarize={cfg.binarize!r} needs values in [0, 1] but {cfg.source!r} holds real values; "
            "set data.binarize=none (and a gaussian likelihood) or rescale the data to [0, 1]"
        )
    plan = _Plan(cfg.seed, lengths, tuple(val_counts))
    mean = std = None
    if kind == "real" and cfg.standardize:
        mean, std = _train_scaling(shards, plan, scale, cfg.scaling)
    first = shards[0]
    preprocessing = Preprocessing(
        shape=first.model_shape, kind=kind, scale=scale, mean=mean, std=std,
        scaling=cfg.scaling if mean is not None else "standard",
        columns=first.features, source=str(path), label_column=cfg.label_column if parquet else None,
    )
    seed = cfg.seed if cfg.binarize == "static" else None
    has_labels = cfg.label_column is not None
    splits = [ShardedExamples(shards, plan, preprocessing, validation=v, binarize_seed=seed, has_labels=has_labels)
              for v in (False, True)]
    logger.info("data %s: %d shards, %d train, %d val (streamed), shape %s, kind %s", path, len(shards),
                len(splits[0]), len(splits[1]), preprocessing.shape, kind)
    return DataBundle(train=splits[0], val=splits[1], test=None, preprocessing=preprocessing)


def _held_out(lengths: tuple[int, ...], fraction: float) -> list[int]:
    """Validation rows of each shard: ``max(1, round(N * fraction))`` in all (N the rows of every shard, as for data
    in memory), shared in proportion to the shards' lengths (largest remainders get the rounding; ties: the first
    shard), so many small shards do not round their share away one by one."""
    if fraction <= 0:
        return [0] * len(lengths)
    total = min(sum(lengths), max(1, round(sum(lengths) * fraction)))
    exact = [length * fraction for length in lengths]
    counts = [min(int(e), length) for e, length in zip(exact, lengths, strict=True)]
    by_remainder = sorted(range(len(lengths)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in itertools.cycle(by_remainder):
        if sum(counts) >= total:
            break
        if counts[i] < lengths[i]:
            counts[i] += 1
    return counts


def _train_scaling(shards: list[_Shard], plan: _Plan, scale: float,
                   method: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature centre and spread of the train rows divided by ``scale`` for ``data.scaling`` ``method`` (see
    :mod:`vaekit.data.scaling`), in one pass over the shards: float64 sums for the mean and std, the extremes and,
    for ``robust`` / ``asinh``, an even sample of at most MAX_QUANTILE_ROWS rows for the quartiles."""
    check_scaling(method)
    features = math.prod(shards[0].model_shape)
    total, total_sq, count = np.zeros(features), np.zeros(features), 0
    low, high = np.full(features, np.inf), np.full(features, -np.inf)
    step = sample_step(sum(plan.count(s, False) for s in range(len(shards))))
    sample: list[np.ndarray] = []
    shift: np.ndarray | None = None  # sums of x - (the first row): no cancellation for a column far from 0
    for _, _, (x, _) in _pieces(shards, plan, validation=False):
        values = np.asarray(x, np.float64).reshape(len(x), features) / scale
        if shift is None and len(values):
            shift = values[0].copy()
        centred = values - (shift if shift is not None else 0.0)
        total += centred.sum(0)
        total_sq += (centred**2).sum(0)
        low, high = np.minimum(low, values.min(0)), np.maximum(high, values.max(0))
        if method != "standard":
            sample.append(values[(-count) % step :: step])  # training rows count, count + 1, ...: every step-th
        count += len(values)
    offset = total / count
    mean = offset + (shift if shift is not None else 0.0)
    std = np.sqrt(np.maximum(total_sq / count - offset**2, 0.0))
    std[std < 1e-8] = 1.0  # constant features: centred, not divided by zero (as vaekit.data does)
    if method == "standard":
        return tuple(mean.tolist()), tuple(std.tolist())
    return robust_from_sample(np.concatenate(sample), std, low, high)


class _ShardSource:
    priority = 10

    def matches(self, source: str) -> bool:
        """A folder of shards, unless it holds as many clips or images as shards (a stray array among them)."""
        shards = shard_files(source) if source else []
        if not shards:
            return False
        media = sum(p.suffix.lower() in MEDIA_SUFFIXES for p in Path(source).expanduser().iterdir())
        return len(shards) > media

    def load(self, cfg: DataConfig) -> DataBundle:
        return load_sharded(cfg)

    def examples(self, source: str, preprocessing: Preprocessing, data_dir: str | None, split: str) -> ExampleSet:  # type: ignore[empty-body]
        raise DataError(
            f"{source!r} is a directory of shards, which only training streams; pass one shard file "
            "(for example DIR/part-000.npy) as the data"
        )


SOURCES.register("shards")(_ShardSource())
