"""Array primitives shared by every reader: value kind and scale, per-example shape, labels, standardization.

A reader returns :class:`RawData`: the raw array (possibly memory-mapped, never loaded whole), its labels, the
model's per-example shape and what kind of values it holds::

    binary  every value is 0 or 1 (any dtype)                  scale 1
    unit    uint8 pixels (divided by 255), or floats in [0, 1]  scale 255 or 1
    real    anything else (standardized on the train split)    scale 1

Only uint8 counts as 8-bit pixels: other integer arrays are ``binary`` or ``real``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from vaekit.errors import DataError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 << 20  # arrays are scanned and standardized this many bytes at a time
LARGE_VALUE = 1e12  # warn above this magnitude (float32 keeps about 7 digits)
FEW_EXAMPLES = 50  # warn when the training split is smaller
FLOAT32_MAX = float(np.finfo(np.float32).max)  # larger finite values would become infinite in the model


@dataclass
class RawData:
    """What a reader gives: raw values (N, *raw_shape) whose per-example element order is the model's, their
    labels, the model input shape, the value kind and the divisor of the raw values."""

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
    categories: tuple[tuple[str, tuple[str, ...]], ...] | None = None  # tables: one-hot encoded string columns
    label_classes: tuple[str, ...] | None = None  # text labels: the values their numbers stand for (as_labels)


def fit_label_classes(y: Any) -> tuple[str, ...] | None:
    """The classes labels ``y`` are numbered by: ``None`` for integer labels (used as they are), otherwise their
    sorted distinct values as text, which a model stores so that every file read for it numbers them alike."""
    y = np.asarray(y)
    if y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        return None
    return tuple(np.unique(y.astype(str)).tolist())


def as_labels(y: Any, n: int, where: str, classes: tuple[str, ...] | None = None) -> np.ndarray:
    """Labels as int64: integers as they are, anything else numbered by ``classes`` (the model's, from
    `fit_label_classes` of its training labels; by default those of ``y`` itself). A value that is not one of
    ``classes`` becomes -1, with a warning (a conditional model refuses it)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"labels in {where} have shape {y.shape} for {n} examples; give one per example")
    own = fit_label_classes(y)
    if classes is None:
        if own is None:
            return y.astype(np.int64)
        classes = own
        logger.info("labels in %s numbered by sorted value: %s", where, dict(enumerate(classes)))
    if not classes:
        return np.full(n, -1, dtype=np.int64)
    values, known = y.astype(str), np.asarray(classes)
    position = np.minimum(np.searchsorted(known, values), len(known) - 1)
    found = known[position] == values
    if not found.all():
        unseen = sorted(set(values[~found].tolist()))
        logger.warning("%d labels in %s are not among the %d classes of the training labels (%s); they are -1 (not "
                       "a class): %s", int((~found).sum()), where, len(known), ", ".join(classes[:10]),
                       ", ".join(unseen[:5]))
    return np.where(found, position, -1).astype(np.int64)


def scan_values(x: np.ndarray, where: str, chunk_bytes: int = CHUNK_BYTES) -> tuple[str, float]:
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
    if max(-lo, hi) > FLOAT32_MAX:
        raise DataError(
            f"{where} holds values beyond float32's range (+-3.4e38; from {lo:g} to {hi:g}), which the model computes "
            "in; rescale them (e.g. their logarithm) or drop those examples"
        )
    if binary:
        return "binary", 1.0
    if x.dtype == np.uint8:
        return "unit", 255.0
    return ("unit" if lo >= 0 and hi <= 1 else "real"), 1.0


def array_shape(shape: tuple[int, ...], where: str) -> tuple[tuple[int, ...], bool]:
    """Model shape of an array's per-example shape, and whether it is channels-last (needs a transpose).

    ``(D,)`` stays; ``(H, W)`` becomes ``(1, H, W)``; ``(C, H, W)`` with C in {1, 3, 4} stays; ``(H, W, C)`` with C
    in {1, 3} (checked after the channels-first rule) becomes ``(C, H, W)``; anything else is a DataError."""
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


def array_source(x: np.ndarray, labels: np.ndarray | None, where: str) -> RawData:
    """An in-memory or memory-mapped array (N, ...) as :class:`RawData`: shape rules, channels-last transposed (a
    view), kind and scale scanned; DataError for non-numeric, NaN or infinite values."""
    if x.ndim < 2:
        raise DataError(f"{where} has shape {x.shape}; expected (N, ...) with one example per row")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {x.dtype}; expected numbers (uint8, int or float)")
    shape, channels_last = array_shape(tuple(int(s) for s in x.shape[1:]), where)
    if channels_last:
        x = x.transpose(0, 3, 1, 2)  # a view: a memmap stays a memmap
    kind, scale = scan_values(x, where)
    return RawData(x, labels, shape, kind, scale, where)


def fit_standardization(x: np.ndarray, rows: np.ndarray, scale: float) -> tuple[tuple[float, ...], ...]:
    """Per-feature mean and std of ``x[rows] / scale``, accumulated in float64 over ~64 MB chunks; constant
    features get std 1 (centred, not divided by zero)."""
    features = int(np.prod(x.shape[1:]))
    total, total_sq = np.zeros(features), np.zeros(features)
    step = max(1, CHUNK_BYTES // max(1, features * 8))
    # sums of x - (the first row): a constant feature then sums to exactly 0, where E[x^2] - E[x]^2 left a rounding
    # residue (a "standard deviation" of 1e-8 |x| that blew values in other rows up by 1e8)
    shift = np.asarray(x[rows[:1]], dtype=np.float64).reshape(-1, features)[0] / scale if len(rows) else 0.0
    for start in range(0, len(rows), step):
        chunk = np.asarray(x[rows[start : start + step]], dtype=np.float64).reshape(-1, features) / scale - shift
        total += chunk.sum(0)
        total_sq += (chunk**2).sum(0)
    mean = total / len(rows)
    std = np.sqrt(np.maximum(total_sq / len(rows) - mean**2, 0.0))
    mean = mean + shift
    constant = std < 1e-8
    std[constant] = 1.0  # constant features: leave them centred, not divided by zero
    if constant.any():
        which = np.flatnonzero(constant)
        listed = ", ".join(map(str, which[:10].tolist())) + (" ..." if len(which) > 10 else "")
        logger.warning("%d of %d features are constant on the training split (%s): they carry no information; "
                       "they are kept, centred at 0", len(which), features, listed)
    largest = float(np.abs(mean).max(initial=0.0) + std.max(initial=0.0))
    if largest > LARGE_VALUE:
        logger.warning("the data holds values around %.3g: standardized they train, but float32 arithmetic on such "
                       "values loses precision; check for a unit error or an outlier", largest)
    return tuple(mean.tolist()), tuple(std.tolist())
