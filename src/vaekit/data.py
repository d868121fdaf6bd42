"""Data: read a source, split it, and turn raw values into model input.

::

    source ──reader──> raw array (N, *raw_shape) + labels ──split──> train / val (/ test)
                                                                │
                         Preprocessing (fitted on train, saved with the model)
                                                                │
    ExampleSet.batch(indices) ──> raw[indices] ──apply──> float32 (B, *shape) ──[static binarize]──>

Sources
-------
- ``digits``: scikit-learn's 8 x 8 digits (no download). Shape (1, 8, 8), values 0..16 divided by 16. The
  test split is fixed: the **last 297** of the 1,797 examples; the first 1,500 are split into train/val.
- ``mnist`` / ``fashion-mnist``: the four standard IDX files (gzipped or raw) in ``<data_dir>/<name>/`` or
  directly in ``<data_dir>``. Shape (1, 28, 28), uint8 divided by 255. ``download`` fetches them.
- ``.npy``: memory-mapped, never loaded whole. Per-example shapes: ``(D,)`` vectors; ``(H, W)`` becomes
  ``(1, H, W)``; ``(C, H, W)`` with C in {1, 3, 4} is kept; ``(H, W, C)`` with C in {1, 3} (channels last,
  checked after the channels-first rule) is transposed to ``(C, H, W)``. uint8 is divided by 255 (or kept as
  0/1 when it only holds 0 and 1); other dtypes are read as floats: ``binary`` when all values are 0 or 1,
  ``unit`` when in [0, 1], else ``real`` (standardized on train when ``standardize``). Only uint8 counts as
  8-bit pixels: other integer arrays are ``binary`` or ``real``.
- ``.npz``: features under ``x``, ``X``, ``data`` or the only array; labels under ``y``, ``Y`` or ``labels``.
- ``.csv`` / ``.parquet`` (pandas, extra ``vaekit[tables]``): numeric feature columns, optional label column,
  ``real`` values standardized per column on the train split.
- a folder of PNG/JPEG images (recursive, sorted by path): resized (bilinear), grayscale or RGB, uint8
  divided by 255. When every image sits in a subfolder, the sorted subfolder names are the class labels.
- a directory holding ``.npy`` (or ``.parquet``) files directly inside it: shards of one dataset, streamed shard
  by shard for data larger than memory; see :mod:`vaekit.shards`.

Static binarization draws one fixed Bernoulli sample per value. The draw is a counter-based hash of
(seed, row of the source array, value position), so it does not depend on batching, subsets or the order in
which examples are read, and never needs a binarized copy of a memory-mapped array.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.config import DataConfig
from vaekit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from vaekit.shards import ShardedExamples

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist")
KINDS: tuple[str, ...] = ("binary", "unit", "real")
SUPPORTED = ".npy, .npz, .csv, .parquet or a folder of .png/.jpg/.jpeg images"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DIGITS_TEST_SIZE = 297
_CHUNK_BYTES = 64 << 20

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_IDX = (*IDX_FILES["train"], *IDX_FILES["test"])
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
# (algorithm, hex digest) of the published .gz files; MNIST from SHA256SUMS, Fashion-MNIST's official MD5s.
CHECKSUMS: dict[str, dict[str, tuple[str, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "sha256", "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971"),
        "train-labels-idx1-ubyte.gz": (
            "sha256", "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203"),
        "t10k-images-idx3-ubyte.gz": (
            "sha256", "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be"),
        "t10k-labels-idx1-ubyte.gz": (
            "sha256", "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": ("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte.gz": ("md5", "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte.gz": ("md5", "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte.gz": ("md5", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ---------------------------------------------------------------------------------------------------------
# Preprocessing: raw values -> model input


@dataclass(frozen=True)
class Preprocessing:
    """JSON-serializable description of how raw data becomes model input; saved with every model.

    Parameters
    ----------
    shape
        Per-example shape of the model input, e.g. ``(1, 28, 28)`` for images or ``(13,)`` for vectors.
    kind
        ``binary`` (values in {0, 1}), ``unit`` (in [0, 1]) or ``real``. Describes the data before any
        binarization (the binarize setting lives in the data config).
    scale
        Raw values are divided by this (255 for uint8 images, 16 for ``digits``).
    mean, std
        Per-feature standardization (features = flattened example) fitted on the train split, or ``None``.
    columns
        Tables: feature column names, in order.
    label_column
        Tables: the column labels were read from (used again by :func:`load_examples`), or ``None``.
    image_size
        Image folders: ``(H, W)`` every image is resized to.
    channels
        Image folders: 1 (grayscale) or 3 (RGB).
    source
        What it was built from (for the model card), e.g. ``"digits"`` or the path.
    """

    shape: tuple[int, ...]
    kind: str
    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    columns: tuple[str, ...] | None = None
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    source: str = ""
    label_column: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"preprocessing kind {self.kind!r} is not one of {', '.join(KINDS)}")
        features = int(np.prod(self.shape))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != features:
                raise DataError(
                    f"preprocessing {name} has {len(value)} values but shape {self.shape} has {features} "
                    "features; the stored preprocessing is corrupted"
                )

    @functools.cached_property
    def _mean_std(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.mean is None or self.std is None:
            return None
        return np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Turn raw examples into model input.

        Parameters
        ----------
        raw
            ``(N, *raw_shape)`` raw values, where ``raw_shape`` holds as many values as :attr:`shape`.

        Returns
        -------
        np.ndarray
            float32 ``(N, *shape)``: divided by :attr:`scale`, standardized, reshaped.
        """
        x = np.asarray(raw, dtype=np.float32).reshape(len(raw), -1)  # (N, D)
        if self.scale != 1.0:
            x = x / np.float32(self.scale)
        if self._mean_std is not None:
            mean, std = self._mean_std
            x = (x - mean) / std
        return np.ascontiguousarray(x.reshape(len(raw), *self.shape))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys raise :class:`DataError`."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DataError(
                f"unknown preprocessing key {unknown[0]!r}; the model was saved by a newer vaekit, upgrade it"
            )
        if "shape" not in d or "kind" not in d:
            raise DataError("stored preprocessing lacks 'shape' or 'kind'; the model file is incomplete")
        tuples = ("shape", "mean", "std", "columns", "image_size")
        kwargs: dict[str, Any] = {k: tuple(v) if k in tuples and v is not None else v for k, v in d.items()}
        return cls(**kwargs)


def _uniform_hash(seed: int, rows: np.ndarray, size: int) -> np.ndarray:
    """Uniform [0, 1) numbers, a pure function of (seed, row, position): splitmix64 of a counter."""

    def mix(z: np.ndarray) -> np.ndarray:
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    with np.errstate(over="ignore"):
        key = mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        counter = rows.astype(np.uint64)[:, None] * np.uint64(size) + np.arange(size, dtype=np.uint64)
        z = mix(counter ^ key)  # (B, size)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


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
            u = _uniform_hash(self.binarize_seed, rows, int(np.prod(self.shape))).reshape(x.shape)
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

    train: ExampleSet | ShardedExamples  # ShardedExamples: a directory of shards, streamed (vaekit.shards)
    val: ExampleSet | ShardedExamples
    test: ExampleSet | None
    preprocessing: Preprocessing


# ---------------------------------------------------------------------------------------------------------
# Readers: each returns a _Raw whose per-example shape already has the model's element order


@dataclass
class _Raw:
    x: np.ndarray  # (N, *raw_shape), raw_shape reshapeable to shape
    labels: np.ndarray | None
    shape: tuple[int, ...]
    kind: str
    scale: float
    source: str
    columns: tuple[str, ...] | None = None
    label_column: str | None = None
    image_size: tuple[int, int] | None = None
    channels: int | None = None


def _as_labels(y: Any, n: int, where: str) -> np.ndarray:
    """Labels as int64: integers as they are, anything else numbered by its sorted unique values."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"labels in {where} have shape {y.shape} for {n} examples; give one per example")
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    classes, inverse = np.unique(y.astype(str), return_inverse=True)
    logger.info("labels in %s numbered by sorted value: %s", where, dict(enumerate(classes.tolist())))
    return inverse.astype(np.int64)


def _scan(x: np.ndarray, where: str, chunk_bytes: int = _CHUNK_BYTES) -> tuple[str, float]:
    """Kind and scale of a raw array, read in ~64 MB chunks; non-finite values raise DataError."""
    if x.dtype == np.bool_:
        return "binary", 1.0
    row_bytes = max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize)
    step = max(1, chunk_bytes // row_bytes)
    lo, hi, binary, bad, first = np.inf, -np.inf, True, 0, -1
    for start in range(0, len(x), step):
        chunk = np.asarray(x[start : start + step])
        if chunk.dtype.kind == "f":
            finite = np.isfinite(chunk)
            if not finite.all():
                bad += int((~finite).sum())
                if first < 0:
                    first = start + int(np.argwhere(~finite)[0][0])
                continue
        if chunk.size:
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
            binary = binary and bool(np.all((chunk == 0) | (chunk == 1)))
    if bad:
        raise DataError(
            f"{where} holds {bad} NaN or infinite values (first in example {first}); clean or impute them"
        )
    if binary:
        return "binary", 1.0
    if x.dtype == np.uint8:
        return "unit", 255.0
    return ("unit" if lo >= 0 and hi <= 1 else "real"), 1.0


def _array_shape(shape: tuple[int, ...], where: str) -> tuple[tuple[int, ...], bool]:
    """Model shape of an array's per-example shape, and whether it is channels-last (needs a transpose)."""
    if len(shape) == 1:
        return shape, False
    if len(shape) == 2:
        return (1, *shape), False
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        return shape, False
    if len(shape) == 3 and shape[2] in (1, 3):
        return (shape[2], shape[0], shape[1]), True
    raise DataError(
        f"{where} has per-example shape {shape}; expected (D,), (H, W), (C, H, W) with C in 1/3/4 "
        "or (H, W, C) with C in 1/3"
    )


def _array_source(x: np.ndarray, labels: np.ndarray | None, where: str) -> _Raw:
    if x.ndim < 2:
        raise DataError(f"{where} has shape {x.shape}; expected (N, ...) with one example per row")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {x.dtype}; expected numbers (uint8, int or float)")
    shape, channels_last = _array_shape(tuple(int(s) for s in x.shape[1:]), where)
    if channels_last:
        x = x.transpose(0, 3, 1, 2)  # a view: a memmap stays a memmap
    kind, scale = _scan(x, where)
    return _Raw(x, labels, shape, kind, scale, where)


def _read_npy(path: Path) -> _Raw:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {str(path)!r} as .npy ({exc}); save it with numpy.save") from None
    return _array_source(x, None, str(path))


def _read_npz(path: Path) -> _Raw:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {str(path)!r} as .npz ({exc}); save it with numpy.savez") from None
    x_key = next((k for k in ("x", "X", "data") if k in arrays), None)
    if x_key is None and len(arrays) == 1:
        x_key = next(iter(arrays))
    if x_key is None:
        raise DataError(
            f"{str(path)!r} holds arrays {sorted(arrays)}; store the features under 'x' (labels under 'y')"
        )
    x = arrays[x_key]
    y_key = next((k for k in ("y", "Y", "labels") if k in arrays and k != x_key), None)
    labels = None if y_key is None else _as_labels(arrays[y_key], len(x), f"{path}[{y_key!r}]")
    return _array_source(x, labels, str(path))


def _read_table(path: Path, columns: tuple[str, ...] | None, label_column: str | None) -> _Raw:
    try:
        import pandas as pd
    except ImportError:
        raise DataError("reading tables needs pandas: pip install 'vaekit[tables]'") from None
    try:
        if path.suffix.lower() == ".csv":
            table = pd.read_csv(path)
        else:
            table = pd.read_parquet(path)
    except ImportError:
        raise DataError("reading Parquet files needs pyarrow: pip install 'vaekit[tables]'") from None
    except Exception as exc:  # pandas raises many parser-specific types
        raise DataError(f"cannot read table {str(path)!r}: {exc}") from None
    names = [str(c) for c in table.columns]
    table.columns = names
    if label_column is not None and label_column not in names:
        raise DataError(f"label column {label_column!r} not in {str(path)!r}; columns: {', '.join(names)}")
    if columns is None:
        features = [c for c in names if c != label_column]
    else:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(
                f"{str(path)!r} lacks columns {missing} that the model was trained on; give a table with them"
            )
        features = list(columns)
    if not features:
        raise DataError(f"{str(path)!r} has no feature columns; add numeric columns besides the label column")
    for c in features:
        if not pd.api.types.is_numeric_dtype(table[c]):
            raise DataError(
                f"column {c!r} of {str(path)!r} is not numeric ({table[c].dtype}); encode it as numbers, "
                "drop it, or name it as data.label_column"
            )
    x = table[features].to_numpy(dtype=np.float32)  # (N, D)
    labels = None if label_column is None else _as_labels(table[label_column].to_numpy(), len(x), str(path))
    _scan(x, str(path))
    return _Raw(x, labels, (len(features),), "real", 1.0, str(path), tuple(features), label_column)


def _read_images(path: Path, image_size: tuple[int, ...] | None, grayscale: bool | None) -> _Raw:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no PNG/JPEG images in folder {str(path)!r}; add images or point to a data file")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ConfigError(f"data.image_size must be positive [height, width], got {list(image_size)}")
    images: list[np.ndarray] = []
    mode: str | None = None
    size: tuple[int, int] = (0, 0)
    for file in files:
        try:
            with Image.open(file) as opened:
                if mode is None:
                    if grayscale is None:
                        mode = "L" if opened.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
                    else:
                        mode = "L" if grayscale else "RGB"
                    size = (image_size[0], image_size[1]) if image_size else (opened.height, opened.width)
                image = opened.convert(mode)
                if (image.height, image.width) != size:
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"cannot read image {str(file)!r} ({exc}); remove or replace the file") from None
        images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))  # (C, H, W)
    x = np.stack(images)  # (N, C, H, W)
    parents = [f.relative_to(path).parts for f in files]
    labels = None
    if all(len(p) > 1 for p in parents):
        classes = sorted({p[0] for p in parents})
        labels = np.array([classes.index(p[0]) for p in parents], dtype=np.int64)
        logger.info("image classes from subfolders of %s: %s", path, dict(enumerate(classes)))
    elif any(len(p) > 1 for p in parents):
        logger.warning("%s mixes images in subfolders and at the top level; no labels are used", path)
    h, w = int(x.shape[2]), int(x.shape[3])
    return _Raw(x, labels, tuple(x.shape[1:]), "unit", 255.0, str(path), image_size=(h, w),
                channels=int(x.shape[1]))


# --- IDX (MNIST-style) files


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in ``.gz``) into a native-endian numpy array.

    Raises
    ------
    DataError
        On a bad magic number, an unknown dtype code, or a truncated / oversized file; the message names
        the file.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {str(path)!r} ({exc}); download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{str(path)!r} is not an IDX file (magic {data[:4].hex()}); download it again")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {str(path)!r} is truncated inside its header; download it again")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {str(path)!r} is {what} ({len(data)} bytes, expected {expected} for shape {dims}); "
            "download it again"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def resolve_data_dir(data_dir: str | None) -> Path:
    """The data folder: ``data_dir``, else ``$VAEKIT_DATA``, else ``~/.cache/vaekit/data``."""
    chosen = data_dir or os.environ.get("VAEKIT_DATA") or "~/.cache/vaekit/data"
    return Path(chosen).expanduser()


def _find_idx(name: str, data_dir: str | None, bases: tuple[str, ...]) -> list[Path]:
    root = resolve_data_dir(data_dir)
    for folder in (root / name, root):
        found = []
        for base in bases:
            path = next((folder / f for f in (base + ".gz", base) if (folder / f).is_file()), None)
            found.append(path)
        if all(found):
            logger.info("reading %s from %s", name, folder)
            return found  # type: ignore[return-value]
    raise DataError(
        f"{name} files not found: expected {', '.join(b + '(.gz)' for b in bases)} in {str(root / name)!r} "
        f"(or {str(root)!r}); run `vaekit data download {name}` or copy them there"
    )


def _read_idx_split(name: str, data_dir: str | None, split: str) -> _Raw:
    images_path, labels_path = _find_idx(name, data_dir, IDX_FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{str(images_path)!r} {images.shape} and {str(labels_path)!r} {labels.shape} do not form an "
            "image set with one label per image; download them again"
        )
    return _Raw(images, labels.astype(np.int64), (1, *images.shape[1:]), "unit", 255.0, name)


def _read_builtin(name: str, data_dir: str | None, split: str) -> _Raw:
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = digits.images.astype(np.uint8), digits.target.astype(np.int64)  # (1797, 8, 8), 0..16
        cut = len(x) - DIGITS_TEST_SIZE
        rows = slice(0, cut) if split == "train" else slice(cut, None)
        return _Raw(x[rows], y[rows], (1, 8, 8), "unit", 16.0, "digits")
    return _read_idx_split(name, data_dir, split)


def _read_path(
    source: str,
    *,
    image_size: tuple[int, ...] | None = None,
    grayscale: bool | None = None,
    columns: tuple[str, ...] | None = None,
    label_column: str | None = None,
) -> _Raw:
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data source {source!r} not found: not a built-in dataset ({', '.join(DATASETS)}) "
            f"and no such file or folder; supported files: {SUPPORTED}"
        )
    if path.is_dir():
        from vaekit.shards import shard_files

        if shard_files(path):
            raise DataError(
                f"{source!r} is a directory of shards, which only training streams; pass one shard file "
                "(for example DIR/part-000.npy) as the data"
            )
        return _read_images(path, image_size, grayscale)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path)
    if suffix == ".npz":
        return _read_npz(path)
    if suffix in (".csv", ".parquet"):
        return _read_table(path, columns, label_column)
    raise DataError(f"unsupported data file {str(path)!r} ({suffix or 'no extension'}); use {SUPPORTED}")


# ---------------------------------------------------------------------------------------------------------
# Public entry points


def _fit_standardization(x: np.ndarray, rows: np.ndarray, scale: float) -> tuple[tuple[float, ...], ...]:
    """Per-feature mean and std of ``x[rows] / scale``, accumulated in float64 over ~64 MB chunks."""
    features = int(np.prod(x.shape[1:]))
    total, total_sq = np.zeros(features), np.zeros(features)
    step = max(1, _CHUNK_BYTES // max(1, features * 8))
    for start in range(0, len(rows), step):
        chunk = np.asarray(x[rows[start : start + step]], dtype=np.float64).reshape(-1, features) / scale
        total += chunk.sum(0)
        total_sq += (chunk**2).sum(0)
    mean = total / len(rows)
    std = np.sqrt(np.maximum(total_sq / len(rows) - mean**2, 0.0))
    std[std < 1e-8] = 1.0  # constant features: leave them centred, not divided by zero
    return tuple(mean.tolist()), tuple(std.tolist())


def load_data(cfg: DataConfig) -> DataBundle:
    """Load a data source for training: read, split, fit preprocessing on train, optionally binarize.

    Parameters
    ----------
    cfg
        The data config. ``cfg.val_fraction`` of the training examples (a permutation seeded by ``cfg.seed``)
        become the validation split, at least one when the fraction is positive. Standardization (real data,
        ``cfg.standardize``) is fitted on the train split only. ``binarize='static'`` replaces every value of
        train, val and test with one fixed Bernoulli draw seeded by ``cfg.seed``; ``'dynamic'`` is left to
        the training loop. Both need data in [0, 1].

    Returns
    -------
    DataBundle
        Train and val splits, the test split of built-in datasets (``None`` for files), and the
        :class:`Preprocessing` to save with the model.

    Raises
    ------
    ConfigError
        ``val_fraction`` outside [0, 1) or an unknown ``binarize`` value.
    DataError
        Missing, unreadable, empty or non-finite data, too few examples for the split, or binarization of
        data outside [0, 1].
    """
    _check_split_config(cfg)
    from vaekit import shards  # a directory of .npy / .parquet shards is streamed, never loaded whole

    if cfg.source not in DATASETS and shards.shard_files(cfg.source):
        return shards.load_sharded(cfg)
    test: _Raw | None = None
    if cfg.source in DATASETS:
        if cfg.source != "digits":  # check all four files first, so one message names every missing file
            _find_idx(cfg.source, cfg.data_dir, _ALL_IDX)
        raw = _read_builtin(cfg.source, cfg.data_dir, "train")
        test = _read_builtin(cfg.source, cfg.data_dir, "test")
    else:
        raw = _read_path(cfg.source, image_size=cfg.image_size, grayscale=cfg.grayscale,
                         label_column=cfg.label_column)
    return _split(raw, test, cfg)


def from_arrays(x: Any, y: Any = None, *, config: DataConfig | None = None) -> DataBundle:
    """Wrap in-memory arrays as training data, prepared exactly as :func:`load_data` prepares a ``.npy`` file.

    Parameters
    ----------
    x
        ``(N, *shape)`` numbers: ``(N, D)`` vectors or images as in the ``.npy`` rules of the module docstring
        (uint8 divided by 255; floats read as ``binary``, ``unit`` or ``real``).
    y
        ``(N,)`` labels, or ``None``.
    config
        Validation fraction, seed, standardization and binarization (``config.source`` is ignored);
        default ``DataConfig()``.

    Returns
    -------
    DataBundle
        Train and val splits (no test split) and the :class:`Preprocessing` to save with the model; its
        ``source`` is ``"array"``.

    Raises
    ------
    ConfigError, DataError
        As :func:`load_data`: a bad split setting, non-numeric, NaN or infinite values, or too few examples.
    """
    cfg = config or DataConfig()
    _check_split_config(cfg)
    x = np.asarray(x)
    labels = None if y is None else _as_labels(y, len(x), "the labels")
    return _split(_array_source(x, labels, "array"), None, cfg)


def _check_split_config(cfg: DataConfig) -> None:
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.val_fraction}; 0.1 is typical")
    if cfg.binarize not in ("none", "static", "dynamic"):
        raise ConfigError(f"data.binarize must be one of 'none', 'static', 'dynamic', got {cfg.binarize!r}")


def _split(raw: _Raw, test: _Raw | None, cfg: DataConfig) -> DataBundle:
    """Split ``raw`` into train/val, fit the preprocessing on train and wrap every split (see load_data)."""
    n = len(raw.x)
    if n == 0:
        raise DataError(f"data source {raw.source!r} holds 0 examples; add data")
    n_val = max(1, round(n * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
    if n - n_val < 1:
        raise DataError(
            f"{n} examples leave none for training after holding out {n_val} for validation; "
            "lower data.val_fraction or add data"
        )
    order = np.random.default_rng(cfg.seed).permutation(n)
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])  # sorted: sequential memmap reads

    mean = std = None
    if raw.kind == "real" and cfg.standardize:
        mean, std = _fit_standardization(raw.x, train_rows, raw.scale)
    if cfg.binarize != "none" and raw.kind not in ("unit", "binary"):
        raise DataError(
            f"data.binarize={cfg.binarize!r} needs values in [0, 1] but {raw.source!r} holds real values; "
            "set data.binarize=none (and a gaussian likelihood) or rescale the data to [0, 1]"
        )
    preprocessing = Preprocessing(
        shape=raw.shape, kind=raw.kind, scale=raw.scale, mean=mean, std=std, columns=raw.columns,
        image_size=raw.image_size, channels=raw.channels, source=raw.source, label_column=raw.label_column,
    )
    seed = cfg.seed if cfg.binarize == "static" else None
    bundle = DataBundle(
        train=ExampleSet(raw.x, preprocessing, raw.labels, train_rows, seed),
        val=ExampleSet(raw.x, preprocessing, raw.labels, val_rows, seed),
        test=None if test is None else ExampleSet(test.x, preprocessing, test.labels, None, seed),
        preprocessing=preprocessing,
    )
    logger.info(
        "data %s: %d train, %d val, %s test, shape %s, kind %s", raw.source, len(bundle.train),
        len(bundle.val), "no" if test is None else len(test.x), raw.shape, raw.kind,
    )
    return bundle


def load_examples(
    source: str, preprocessing: Preprocessing, *, data_dir: str | None = None, split: str = "test"
) -> ExampleSet:
    """Read data for an existing model and apply the model's stored preprocessing (nothing is refitted).

    Parameters
    ----------
    source
        A built-in dataset name (its ``split``) or a path (all of it).
    preprocessing
        The model's :class:`Preprocessing`; image folders are resized to its ``image_size`` and
        ``channels``, tables read its ``columns``.
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    split
        ``train`` or ``test``; built-in datasets only.

    Raises
    ------
    DataError
        Unreadable data, or a per-example shape (or raw scale) that differs from the model's.
    """
    if split not in IDX_FILES:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if source in DATASETS:
        raw = _read_builtin(source, data_dir, split)
    else:
        grayscale = None if preprocessing.channels is None else preprocessing.channels == 1
        raw = _read_path(source, image_size=preprocessing.image_size, grayscale=grayscale,
                         columns=preprocessing.columns, label_column=preprocessing.label_column)
    if raw.shape != tuple(preprocessing.shape):
        raise DataError(
            f"{source!r} has examples of shape {raw.shape} but the model expects "
            f"{tuple(preprocessing.shape)}; the model was trained on other data "
            f"({preprocessing.source or 'unknown source'})"
        )
    if raw.kind != "binary" and raw.scale != preprocessing.scale:
        raise DataError(
            f"{source!r} holds raw values on a scale of {raw.scale:g} but the model divides by "
            f"{preprocessing.scale:g}; the model was trained on other data ({preprocessing.source}), "
            "store the values the way the training data was stored"
        )
    if len(raw.x) == 0:
        raise DataError(f"data source {source!r} holds 0 examples; add data")
    return ExampleSet(raw.x, preprocessing, raw.labels)


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(name: str, data_dir: str | None = None, *, timeout: float = 30.0) -> Path:
    """Download the IDX files of a built-in dataset into ``resolve_data_dir(data_dir) / name``.

    Files already present with the right checksum are kept. Each file is written to a temporary file,
    checked (SHA-256 for MNIST, the official MD5 for Fashion-MNIST) and then renamed into place.

    Parameters
    ----------
    name
        ``mnist`` or ``fashion-mnist`` (``digits`` ships with scikit-learn).
    data_dir
        Data folder; default ``$VAEKIT_DATA``, else ``~/.cache/vaekit/data``.
    timeout
        Seconds to wait for each connection.

    Returns
    -------
    Path
        The folder holding the four ``.gz`` files.

    Raises
    ------
    ConfigError
        For a name that cannot be downloaded.
    DataError
        When no mirror can be reached or a file fails its checksum; the message says which files to put where.
    """
    if name not in MIRRORS:
        raise ConfigError(
            f"cannot download {name!r}; choose one of: {', '.join(MIRRORS)} (digits ships with scikit-learn)"
        )
    folder = resolve_data_dir(data_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    for filename, (algorithm, expected) in CHECKSUMS[name].items():
        target = folder / filename
        if target.is_file() and _digest(target, algorithm) == expected:
            logger.info("%s already present", target)
            continue
        errors = []
        for mirror in MIRRORS[name]:
            url = mirror + filename
            handle, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                    while block := response.read(1 << 20):
                        out.write(block)
                actual = _digest(tmp, algorithm)
                if actual != expected:
                    raise ValueError(f"{algorithm} {actual} != expected {expected}")
                os.replace(tmp, target)
                logger.info("downloaded %s", url)
                break
            except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
                errors.append(f"{url}: {exc}")
            finally:
                tmp.unlink(missing_ok=True)
        else:
            files = ", ".join(CHECKSUMS[name])
            raise DataError(
                f"could not download {filename} ({'; '.join(errors)}); copy {files} into {str(folder)!r} "
                f"by hand (or pass --data-dir to a folder that holds them)"
            )
    return folder
