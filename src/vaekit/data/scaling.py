"""How real-valued features are scaled before the model sees them: fitted on the training split, stored with the model.

=============  ===============================================================================================
``scaling``    model input of a raw value v of feature j (c_j, s_j fitted on the training rows)
=============  ===============================================================================================
``standard``   (v - mean_j) / std_j                                                   (the default)
``robust``     (v - median_j) / s_j, s_j = IQR_j / 1.349 (the standard deviation of normal data, estimated
               from the quartiles): a few huge values do not squash every other value towards 0
``asinh``      asinh((v - median_j) / s_j): robust, then the inverse hyperbolic sine, linear near 0 and
               logarithmic in the tails (sign kept), so heavy-tailed columns (amounts, counts, durations) become
               well-behaved while the order of the values, and how far out an extreme value lies, are kept
=============  ===============================================================================================

For ``robust`` and ``asinh`` the spread is also raised where needed so that no training value lies more than
:data:`MAX_REACH` (500) spreads from the median: a feature that is almost always one value but sometimes far from
it (ADBench's ALOI has columns at over 20,000 interquartile spreads) would otherwise feed the encoder numbers so
large that its variance overflows. Among ADBench's 33 classical sets, only a few columns reach that far (ALOI's and
one of shuttle's); every other column keeps its quartiles.

Unlike a quantile (rank) transform, ``asinh`` needs no table of quantiles per feature and keeps extrapolating
beyond the training range: a value ten times further out than any training value still scores as further out,
which an anomaly detector needs. A feature whose interquartile range is 0 (mostly one value, e.g. a rare flag)
falls back to its standard deviation; a constant feature keeps a spread of 1 (centred, not divided by zero).

The medians and quartiles are computed from at most :data:`MAX_QUANTILE_ROWS` training rows, evenly spaced (all of
them when there are fewer), so a memory-mapped array larger than memory is never read whole.
"""

from __future__ import annotations

import numpy as np

from vaekit.data.arrays import CHUNK_BYTES, fit_standardization
from vaekit.data.preprocessing import SCALINGS
from vaekit.errors import ConfigError

MAX_QUANTILE_ROWS = 1 << 18  # 262,144 rows: quartiles of a larger training split come from an even subsample
IQR_TO_STD = 1.3489795  # interquartile range of the standard normal distribution
MAX_REACH = 500.0  # robust / asinh: no training value further than this many spreads from the median


def fit_scaling(
    x: np.ndarray, rows: np.ndarray, scale: float, method: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature centre and spread of ``x[rows] / scale`` for ``method`` (see the module docstring).

    Parameters
    ----------
    x
        ``(N, *shape)`` raw values (possibly memory-mapped).
    rows
        ``(n,)`` sorted indices of the training rows.
    scale
        The raw values' divisor.
    method
        ``standard``, ``robust`` or ``asinh``.

    Returns
    -------
    tuple
        ``(centre, spread)``, each ``D`` floats (D = features per example); stored as the preprocessing's
        ``mean`` and ``std``.

    Raises
    ------
    ConfigError
        An unknown ``method``.
    """
    check_scaling(method)
    mean, std = fit_standardization(x, rows, scale)  # warns about constant features and huge values
    if method == "standard":
        return mean, std
    features = int(np.prod(x.shape[1:]))
    sample = np.asarray(x[rows[:: sample_step(len(rows))]], dtype=np.float64).reshape(-1, features) / scale
    low, high = _extremes(x, rows, scale)
    return robust_from_sample(sample, np.asarray(std), low, high)


def check_scaling(method: str) -> None:
    """Raise :class:`~vaekit.errors.ConfigError` unless ``method`` is a ``data.scaling`` this module knows."""
    if method not in SCALINGS:
        raise ConfigError(f"data.scaling={method!r} is not one of {', '.join(SCALINGS)}")


def sample_step(rows: int) -> int:
    """Every how many training rows one goes into the quantile sample: at most :data:`MAX_QUANTILE_ROWS` rows."""
    return max(1, -(-rows // MAX_QUANTILE_ROWS))


def robust_from_sample(
    sample: np.ndarray, std: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``robust`` / ``asinh`` centre and spread from an even sample of the training rows.

    Parameters
    ----------
    sample
        ``(n, D)`` float64 values of every :func:`sample_step`-th training row, divided by their scale.
    std
        ``(D,)`` the features' standard deviations over all training rows (1 for constant features): the spread
        where the interquartile range is 0.
    low, high
        ``(D,)`` the features' smallest and largest training values (all rows): the reach limit.

    Returns
    -------
    tuple
        ``(median, spread)``, each ``D`` floats.
    """
    q25, median, q75 = np.percentile(sample, [25.0, 50.0, 75.0], axis=0)
    spread = (q75 - q25) / IQR_TO_STD
    spread = np.where(spread > 1e-8 * np.maximum(1.0, np.abs(median)), spread, std)  # (D,)
    reach = np.maximum(high - median, median - low)  # the farthest training value from the median
    spread = np.maximum(spread, reach / MAX_REACH)
    return tuple(median.tolist()), tuple(spread.tolist())


def _extremes(x: np.ndarray, rows: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the smallest and largest training value, read in ~64 MB chunks. Two ``(D,)`` arrays."""
    features = int(np.prod(x.shape[1:]))
    low, high = np.full(features, np.inf), np.full(features, -np.inf)
    step = max(1, CHUNK_BYTES // max(1, features * 8))
    for start in range(0, len(rows), step):
        chunk = np.asarray(x[rows[start : start + step]], dtype=np.float64).reshape(-1, features) / scale
        low, high = np.minimum(low, chunk.min(axis=0)), np.maximum(high, chunk.max(axis=0))
    return low, high
