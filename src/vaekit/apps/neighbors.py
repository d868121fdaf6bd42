"""A fitted :class:`~vaekit.apps.estimators.AnomalyDetector` beyond its network: the neighbour terms of its score,
and the detector in its model directory, which ``AnomalyDetector.load`` and ``vaekit score`` read.

The detector scores a row by up to three terms, each a robust z-score over the training rows (centred on their
median, scaled by their interquartile range): the model's likelihood score (``method``, ``k``, ``relative``); the
distance from the row's code (posterior mean) to the codes of its ``neighbors`` nearest training rows; and the
distance from the row itself, as the network sees it (scaled by the model's preprocessing), to its
``input_neighbors`` nearest training rows. Their sum is the anomaly score (higher = more anomalous;
``score_samples`` is minus it). With ``neighbors=0`` and ``input_neighbors=0`` the score is the likelihood score
alone, in nats. On disk::

    detector/                 a model directory (vaekit.models.save_model), scored by `vaekit score` as the detector
    ├── config.json           the network, as for any model
    ├── model.safetensors     its weights (float32, as trained: the estimator scores with a float64 copy)
    ├── metadata.json         ... and "detector": method, k, relative, neighbors, input_neighbors, offset,
    │                         n_features, feature names
    └── detector.safetensors  with a neighbour term: center and scale (T,) float64 (the T terms' median and
                              spread); with neighbors > 0 codes (n, L) float64 and counts (n,) int64 (training rows
                              per code); with input_neighbors > 0 rows (m, D) float64 (the distinct scaled training
                              rows searched) and row_counts (m,) int64

Nothing is pickled: the neighbour indices are rebuilt from the arrays when the detector is read. The rows are the
training data itself (scaled, at most 25,000 of them): a saved detector with ``input_neighbors`` > 0 holds them.
Detectors saved before ``input_neighbors`` existed read as ``input_neighbors=0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.errors import ModelFileError
from vaekit.files import save_tensors
from vaekit.models import LatentVariableModel

DETECTOR_NAME = "detector.safetensors"
DETECTOR_KEY = "detector"  # its settings in the model's metadata.json
SAME_CODE = 1e-9  # codes closer than this are one code: a row's code moves by ~1e-16 with the batch it is encoded in
ENCODE_BATCH = 1024
DISTANCE_CELLS = 1 << 22  # code_distances works on at most this many (row, neighbour, dimension) cells at a time
# neighbor_index: a k-d tree up to this many dimensions, brute force (BLAS distances) above. For codes (posterior
# means, which lie near a low-dimensional surface) the tree wins at 16 dimensions (module docstring of
# neighbor_index); for scaled rows of credit-card transactions (25,000 searched, 20,000 queries, one thread) it
# won at 8 columns (0.64 s against 1.10) and lost from 12 on (1.84 / 1.20 s; 16: 3.45 / 1.27; 29: 10.9 / 1.6)
CODE_KD_TREE_DIMS, ROW_KD_TREE_DIMS = 32, 10
_TERM_ARRAYS = {"center": (np.float64, 1), "scale": (np.float64, 1)}
_CODE_ARRAYS = {"codes": (np.float64, 2), "counts": (np.int64, 1)}
_ROW_ARRAYS = {"rows": (np.float64, 2), "row_counts": (np.int64, 1)}


def posterior_means(model: LatentVariableModel, x: torch.Tensor) -> np.ndarray:
    """Codes of prepared examples ``x`` (n, *data_shape), in the model's precision: (n, latent_dim) float64,
    encoded ``ENCODE_BATCH`` rows at a time."""
    with torch.no_grad():
        means = [model.encode(x[i : i + ENCODE_BATCH].to(model.device)).mean.cpu()
                 for i in range(0, len(x), ENCODE_BATCH)]
    return torch.cat(means).double().numpy() if means else np.zeros((0, model.latent_dim))


def neighbor_index(points: np.ndarray, kd_tree_dims: int = CODE_KD_TREE_DIMS) -> Any:
    """A search index over distinct training points: a k-d tree up to ``kd_tree_dims`` dimensions (on 16-dimensional
    codes, ADBench ALOI's 24,013 training and 25,521 test rows, it searched 3x faster than brute force, and 9x on six
    times as many), brute force above, where a k-d tree prunes little. Scaled rows: :func:`row_index`."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(algorithm="kd_tree" if points.shape[1] <= kd_tree_dims else "brute").fit(points)


def row_index(rows: np.ndarray) -> Any:
    """:func:`neighbor_index` over scaled training rows, whose k-d tree pays only up to ``ROW_KD_TREE_DIMS``."""
    return neighbor_index(rows, ROW_KD_TREE_DIMS)


def distinct_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``points`` (n, d) in the order they first appear, and how many rows each stands for;
    points closer than ``SAME_CODE`` in every coordinate are one."""
    _, first, counts = np.unique(np.round(points / SAME_CODE), axis=0, return_index=True, return_counts=True)
    order = np.argsort(first)
    return points[first[order]], counts[order]


def code_distances(codes: np.ndarray, reference: np.ndarray, counts: np.ndarray, index: Any,
                   neighbors: int) -> np.ndarray:
    """Mean distance from each row's code (``codes``: (n, L)) to the codes of its ``neighbors`` nearest training
    rows among ``reference`` (the distinct training codes, ``counts`` rows behind each; ``index`` from
    :func:`neighbor_index`), its own row left out: a row whose code is a training code (closer than ``SAME_CODE``) is
    taken to be that row, so one copy of that code is not its neighbour and any other copy is (at distance 0).
    Training rows are thus scored leave-one-out, and a new row exactly like a training row scores as that row does.
    Works on any points (codes or scaled rows), ``DISTANCE_CELLS`` at a time."""
    m = min(neighbors + 1, len(reference))
    chunk = max(1, DISTANCE_CELLS // (m * max(1, codes.shape[1])))
    if len(codes) > chunk:
        return np.concatenate([code_distances(codes[i : i + chunk], reference, counts, index, neighbors)
                               for i in range(0, len(codes), chunk)])
    _, nearest = index.kneighbors(codes, n_neighbors=m)
    # exact distances, whatever the search: a brute-force one's |a|^2 - 2ab + |b|^2 put a code ~1e-7 from itself
    distances = np.linalg.norm(codes[:, None, :] - reference[nearest], axis=-1)
    order = np.argsort(distances, axis=1, kind="stable")
    distances, nearest = np.take_along_axis(distances, order, axis=1), np.take_along_axis(nearest, order, axis=1)
    rows = counts[nearest].astype(np.int64)  # (n, m): rows behind each of the m nearest codes
    rows[:, 0] -= distances[:, 0] <= SAME_CODE  # the row's own copy
    # the j-th nearest row (j = 1..neighbors) lies at the first code whose running count reaches j
    reach = np.cumsum(rows, axis=1)
    position = (reach[:, None, :] < np.arange(1, neighbors + 1)[None, :, None]).sum(axis=2)
    return np.take_along_axis(distances, position, axis=1).mean(axis=1)


def finite_scores(scores: torch.Tensor) -> np.ndarray:
    """Likelihood scores as float64; a row so far out that the network overflows (inf or NaN) is as anomalous as a
    score can say (the largest float)."""
    return np.nan_to_num(scores.double().numpy(), nan=np.inf).clip(max=np.finfo(np.float64).max)


def z_scores(terms: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The robust z-scores (T, n) of the (T, n) terms (likelihood scores, then distances)."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowed likelihood score stays the largest
        return (terms - center[:, None]) / scale[:, None]


def z_score_sum(terms: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The anomaly score from the (T, n) terms (likelihood scores, then distances): their robust z-scores' sum."""
    with np.errstate(invalid="ignore"):
        scores = z_scores(terms, center, scale).sum(axis=0)
    return np.nan_to_num(scores, nan=np.inf)


def robust_units(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (median) and scale (interquartile range) of each of the (T, n) terms over the training rows; a term
    whose training values mostly tie (duplicated rows) is scaled by its standard deviation instead (1 if that is 0
    or not finite)."""
    low, center, high = np.percentile(terms, [25, 50, 75], axis=1)
    spread = np.where(np.isfinite(terms).all(axis=1), terms.std(axis=1), 0.0)
    return center, np.where(high > low, high - low, np.where(spread > 0, spread, 1.0))


def term_count(neighbors: int, input_neighbors: int) -> int:
    """Terms of a detector's score: the likelihood, and each neighbour term in use (code, row)."""
    return 1 + bool(neighbors) + bool(input_neighbors)


@dataclass
class SavedDetector:
    """What scores rows as a fitted AnomalyDetector does, apart from the network (see the module docstring)."""

    method: str
    k: int
    relative: bool
    neighbors: int
    offset: float
    n_features: int
    feature_names: list[str] | None = None
    input_neighbors: int = 0
    codes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # the arrays: empty without their term
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    row_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    center: np.ndarray = field(default_factory=lambda: np.zeros(2))
    scale: np.ndarray = field(default_factory=lambda: np.ones(2))
    _index: Any = field(default=None, repr=False)
    _row_index: Any = field(default=None, repr=False)

    @property
    def n_terms(self) -> int:
        """Terms of the score (:func:`term_count`)."""
        return term_count(self.neighbors, self.input_neighbors)

    def _arrays(self) -> dict[str, tuple[type, int]]:
        """The arrays this detector's terms need, with their dtype and number of dimensions."""
        arrays = dict(_TERM_ARRAYS) if self.n_terms > 1 else {}
        return {**arrays, **(_CODE_ARRAYS if self.neighbors else {}), **(_ROW_ARRAYS if self.input_neighbors else {})}

    def settings(self) -> dict[str, Any]:
        """The JSON-ready settings stored under ``"detector"`` in the model's metadata."""
        return {"method": self.method, "k": self.k, "relative": self.relative, "neighbors": self.neighbors,
                "input_neighbors": self.input_neighbors, "offset": self.offset, "n_features": self.n_features,
                "feature_names": self.feature_names}

    def write(self, directory: Path) -> None:
        """Write ``detector.safetensors`` (with a neighbour term) into ``directory``, beside the model's own files."""
        if self.n_terms > 1:
            save_tensors({name: torch.from_numpy(np.ascontiguousarray(getattr(self, name), dtype))
                          for name, (dtype, _) in self._arrays().items()}, directory / DETECTOR_NAME)

    @classmethod
    def read(cls, model_dir: Path, metadata: dict[str, Any]) -> SavedDetector | None:
        """The detector saved in ``model_dir`` (whose ``metadata.json`` is ``metadata``), or ``None`` for a plain
        model. ModelFileError when its settings or its arrays are missing, corrupted or do not fit together."""
        settings = metadata.get(DETECTOR_KEY)
        if settings is None:
            return None
        where = f"the detector saved in {str(model_dir)!r}"
        try:
            detector = cls(**{name: settings[name] for name in ("method", "k", "relative", "neighbors", "offset",
                                                                "n_features", "feature_names")},
                           input_neighbors=settings.get("input_neighbors", 0))  # absent: saved before it existed
            names: object = detector.feature_names
            valid = (isinstance(detector.method, str) and _count(detector.k, 1) and _count(detector.neighbors, 0)
                     and _count(detector.input_neighbors, 0)
                     and isinstance(detector.relative, bool) and _count(detector.n_features, 1)
                     and isinstance(detector.offset, (int, float)) and not isinstance(detector.offset, bool)
                     and saved_feature_names_fit(names, detector.n_features))
        except (KeyError, TypeError):
            valid = False
        if not valid:
            raise ModelFileError(f"{where} has invalid settings in metadata.json; save the detector again")
        if detector.n_terms > 1:
            detector._read_arrays(model_dir / DETECTOR_NAME, where)
        return detector

    def _read_arrays(self, path: Path, where: str) -> None:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(path))
        except FileNotFoundError:
            raise ModelFileError(f"{where} misses {DETECTOR_NAME}; save the detector again") from None
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(f"{where}: {DETECTOR_NAME} is truncated or corrupted ({exc}); save it again") from None
        expected = self._arrays()
        shapes_ok = set(arrays) == set(expected) and all(
            arrays[name].ndim == ndim and arrays[name].dtype == dtype for name, (dtype, ndim) in expected.items()
        ) and arrays["center"].shape == arrays["scale"].shape == (self.n_terms,)
        if shapes_ok and self.neighbors:
            shapes_ok = len(arrays["codes"]) == len(arrays["counts"]) > 0
        if shapes_ok and self.input_neighbors:
            shapes_ok = len(arrays["rows"]) == len(arrays["row_counts"]) > 0
        if not shapes_ok:
            raise ModelFileError(f"{where}: {DETECTOR_NAME} does not hold the arrays it should; save it again")
        for name in expected:
            setattr(self, name, arrays[name])

    def prepare(self) -> SavedDetector:
        """Build the neighbour indices now (otherwise on the first call of :meth:`anomaly_scores`)."""
        if self.neighbors and self._index is None:
            self._index = neighbor_index(self.codes)
        if self.input_neighbors and self._row_index is None:
            self._row_index = row_index(self.rows)
        return self

    @property
    def term_names(self) -> list[str]:
        """What each term of the score is, in order: ``likelihood``, then ``code distance`` and ``row distance``
        when in use."""
        return ["likelihood"] + ["code distance"] * bool(self.neighbors) + ["row distance"] * bool(self.input_neighbors)

    def anomaly_scores(self, likelihood: np.ndarray, codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The detector's score (higher = more anomalous) of rows with likelihood scores ``likelihood`` (n,) (from
        :func:`finite_scores`), codes ``codes`` (n, L) and prepared (scaled) values ``rows`` (n, D): the z-score sum
        of the terms in use, or the likelihood alone (no neighbour term)."""
        if self.n_terms == 1:
            return likelihood
        return z_score_sum(self.terms(likelihood, codes, rows), self.center, self.scale)

    def terms(self, likelihood: np.ndarray, codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The (T, n) terms of the score before their z-scores (arguments as :meth:`anomaly_scores`): the likelihood
        scores, then the distances to the nearest training codes and rows, those in use."""
        for name, given, saved in (("codes", codes, self.codes), ("rows", rows, self.rows)):
            if saved.size and given.shape[1] != saved.shape[1]:
                raise ModelFileError(
                    f"the detector's {name} have {saved.shape[1]} dimensions and the model's {given.shape[1]}; the "
                    "directory mixes two detectors: save it again"
                )
        self.prepare()
        terms = [likelihood]
        if self.neighbors:
            terms.append(code_distances(codes, self.codes, self.counts, self._index, self.neighbors))
        if self.input_neighbors:
            terms.append(code_distances(rows, self.rows, self.row_counts, self._row_index, self.input_neighbors))
        return np.stack(terms)


def _count(value: object, lower: int) -> bool:
    """An int (not a bool) >= ``lower``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= lower


def saved_feature_names_fit(names: object, n_features: int) -> bool:
    """Whether saved feature names are absent (``None``) or a list of ``n_features`` strings, as estimators save."""
    return names is None or (isinstance(names, list) and len(names) == n_features
                             and all(isinstance(name, str) for name in names))
