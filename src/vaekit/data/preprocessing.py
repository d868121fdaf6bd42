"""How raw values become model input: :class:`Preprocessing`, fitted on the train split and saved with the model.

::

    raw (N, *raw_shape) ──/ scale──> [- mean, / std]──reshape──> float32 (N, *shape) ──[binarize: u < x]──>

Static binarization draws one fixed Bernoulli sample per value with :func:`uniform_hash`, a counter-based hash
of (seed, row of the source array, value position): it does not depend on batching, subsets or the order in which
examples are read, and never needs a binarized copy of a memory-mapped array.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from vaekit.data.arrays import FLOAT32_MAX
from vaekit.errors import DataError
from vaekit.registry import Registry

KINDS: tuple[str, ...] = ("binary", "unit", "real")
SCALINGS: tuple[str, ...] = ("standard", "robust", "asinh")  # how real features are scaled: vaekit.data.scaling


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
    image_size
        Image folders: ``(H, W)`` every image is resized to.
    channels
        Image folders: 1 (grayscale) or 3 (RGB).
    source
        What it was built from (for the model card), e.g. ``"digits"`` or the path.
    label_column
        Tables: the column labels were read from (used again by :func:`vaekit.data.load_examples`), or ``None``.
    data_dir
        Built-in datasets: the folder the IDX files were read from, used again when the model's own data is read
        (``vaekit evaluate RUN``) and no other folder is given.
    scaling
        Real features: ``standard`` (``(v - mean) / std``), ``robust`` (``mean`` and ``std`` hold the median and
        the interquartile range / 1.349) or ``asinh`` (robust, then ``asinh``); see :mod:`vaekit.data.scaling`.
    categories
        Tables: for each string (categorical) column of :attr:`columns`, ``(column, categories)``: the column is
        one-hot encoded over these values, in this order (:mod:`vaekit.data.tables`), an unseen value as all
        zeros; ``None`` when every column is numeric.
    label_classes
        Tables with text labels: the label values in the order they are numbered 0, 1, ... (sorted), so every file
        read for the model numbers its labels alike (a value not among them is -1); ``None`` for integer labels.
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
    data_dir: str | None = None
    scaling: str = "standard"
    categories: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    label_classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise DataError(f"preprocessing scaling {self.scaling!r} is not one of {', '.join(SCALINGS)}")
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
        raw = np.asarray(raw)
        if raw.dtype.kind == "f" and raw.dtype.itemsize > 4:
            huge = np.isfinite(raw) & (np.abs(raw) > FLOAT32_MAX)
            if huge.any():
                first = np.argwhere(huge)[0]
                raise DataError(
                    f"{int(huge.sum())} values lie beyond float32's range (+-3.4e38; first {raw[tuple(first)]:g}, "
                    f"example {first[0]}), which the model computes in; rescale those features or drop the examples"
                )
        x = raw.astype(np.float32).reshape(len(raw), -1)  # (N, D)
        if self.scale != 1.0:
            x = x / np.float32(self.scale)
        if self._mean_std is not None:
            mean, std = self._mean_std
            x = (x - mean) / std
            if self.scaling == "asinh":
                x = np.arcsinh(x)
        return np.ascontiguousarray(x.reshape(len(raw), *self.shape))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); ``scaling``, ``categories`` and ``label_classes`` only when not
        their defaults, so files of models that use none of them stay readable by older vaekit versions."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for name, default in (("scaling", "standard"), ("categories", None), ("label_classes", None)):
            if d.get(name, default) == default:
                d.pop(name, None)
        return d

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
        tuples = ("shape", "mean", "std", "columns", "image_size", "label_classes")
        kwargs: dict[str, Any] = {k: tuple(v) if k in tuples and v is not None else v for k, v in d.items()}
        if kwargs.get("categories") is not None:
            kwargs["categories"] = tuple((str(c), tuple(map(str, values))) for c, values in kwargs["categories"])
        return cls(**kwargs)


# -- records of other kinds of data ------------------------------------------------------------------------------
PREPROCESSINGS: Registry[type[Preprocessing]] = Registry("preprocessing kind")
"""Stored preprocessing records by their ``kind``: the array kinds (``binary``, ``unit``, ``real``) are
:class:`Preprocessing`; another kind of data (audio, text, interactions) registers its own record class under its
own kind name, with ``from_dict`` / ``to_dict`` and the attributes the verbs read (``shape``, ``apply``, ``source``,
``kind``). :func:`preprocessing_from_dict` rebuilds whichever a model file holds."""
for _kind in KINDS:
    PREPROCESSINGS.register(_kind)(Preprocessing)


def preprocessing_from_dict(d: dict[str, Any]) -> Preprocessing:
    """Rebuild a stored preprocessing record with the class registered for its ``kind`` (:data:`PREPROCESSINGS`).

    Raises
    ------
    DataError
        A record without a ``kind``, or of a kind this vaekit does not know (saved by a newer one).
    """
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind is None:
        raise DataError("stored preprocessing lacks 'shape' or 'kind'; the model file is incomplete")
    if kind not in PREPROCESSINGS:
        raise DataError(
            f"preprocessing kind {kind!r} is not one of {', '.join(PREPROCESSINGS.names())}; the model was saved by "
            "a newer vaekit, upgrade it"
        )
    return PREPROCESSINGS.get(kind).from_dict(d)


def uniform_hash(seed: int, rows: np.ndarray, size: int) -> np.ndarray:
    """Uniform [0, 1) numbers (B, size), a pure function of (seed, row, position): splitmix64 of a counter."""

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
