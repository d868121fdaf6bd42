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
    if method not in SCALINGS:
        raise ConfigError(f"data.scaling={method!r} is not one of {', '.join(SCALINGS)}")
    mean, std = fit_standardization(x, rows, scale)  # warns about constant features and huge values
    if method == "standard":
        return mean, std
    features = int(np.prod(x.shape[1:]))
    step = max(1, -(-len(rows) // MAX_QUANTILE_ROWS))
    sample = np.asarray(x[rows[::step]], dtype=np.float64).reshape(-1, features) / scale  # (<= 262,144, D)
    q25, median, q75 = np.percentile(sample, [25.0, 50.0, 75.0], axis=0)
    spread = (q75 - q25) / IQR_TO_STD
    fallback = np.asarray(std)
    spread = np.where(spread > 1e-8 * np.maximum(1.0, np.abs(median)), spread, fallback)  # (D,)
    spread = np.maximum(spread, _reach(x, rows, scale, median) / MAX_REACH)
    return tuple(median.tolist()), tuple(spread.tolist())


def _reach(x: np.ndarray, rows: np.ndarray, scale: float, centre: np.ndarray) -> np.ndarray:
    """Per feature, the largest distance of a training value from ``centre``, read in ~64 MB chunks. (D,)."""
    features = int(np.prod(x.shape[1:]))
    reach = np.zeros(features)
    step = max(1, CHUNK_BYTES // max(1, features * 8))
    for start in range(0, len(rows), step):
        chunk = np.asarray(x[rows[start : start + step]], dtype=np.float64).reshape(-1, features) / scale
        reach = np.maximum(reach, np.abs(chunk - centre).max(axis=0))
    return reach
