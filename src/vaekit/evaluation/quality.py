"""Sample quality: FID, KID, precision and recall in a classifier's feature space, and conditional accuracy.

::

    test split of the data ──> first half A (reference), second half B   (halves="random": a seeded shuffle first)
    model ──sample──> N decoded means ────────┐
                                               ├─ extractor.features ─> (N, F) float64
    A, B ──────────────────────────────────────┘
        FID(samples, A), KID(samples, A), precision/recall(A, samples)    next to    the same for (B, A)

The feature extractor is the small classifier of :mod:`vaekit.evaluation.classifier`, trained on the model's dataset;
each figure is only comparable with figures of the same extractor, so reports carry its name. The real-data
line (B against A, the two halves of the test split, as the issue defines it) shows what real data scores
with as many examples as B holds: FID and KID are biased upwards at small sample sizes, so compare a model's
figures with it at ``n = len(B)``. It is not a strict floor where the halves differ in kind: MNIST's first
5,000 test images come from NIST's SD-3 writers and the last 5,000 from SD-1 (FID 3.35 between them, 0.27
between two random halves, in BENCHMARKS.md). Where the test split is in an order that makes its halves differ
(a folder of clips read in name order, ``0_*`` to ``9_*``: digits 0-4 against 5-9), pass ``halves="random"``
(``vaekit evaluate --halves random``): the halves are then a shuffle of the split drawn from ``seed``.

- **FID** (Heusel et al. 2017, arXiv:1706.08500): ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``
  of Gaussians fitted to the two feature sets, in float64. The trace of the matrix square root is computed by
  an eigen-decomposition of a **symmetric** product: ``Tr((S_a S_b)^{1/2}) = Tr((S_a^{1/2} S_b
  S_a^{1/2})^{1/2}) = sum_i sqrt(lambda_i)``, with ``S_a^{1/2}`` from ``numpy.linalg.eigh`` of ``S_a`` and
  ``lambda_i`` the eigenvalues of the symmetric positive semi-definite ``S_a^{1/2} S_b S_a^{1/2}``
  (eigenvalues below ``F * eps * lambda_max``, rounding noise of exact zeros, are set to 0). Unlike
  ``scipy.linalg.sqrtm`` of the non-symmetric ``S_a S_b`` this never returns complex parts and needs no
  ``eps`` added to singular covariances (fewer examples than features); the two agree to 1e-9 on full-rank
  covariances (tested).
- **KID** (Binkowski et al. 2018, arXiv:1801.01401): the unbiased estimate of the squared MMD with the cubic
  polynomial kernel ``k(x, y) = (x . y / F + 1)^3``, averaged over ``subsets`` random subsets of
  ``subset_size`` examples of each set (mean and standard deviation over subsets); unbiased, so it can be
  slightly negative when the sets match.
- **Precision and recall** (Kynkaenniemi et al. 2019, arXiv:1904.06991): the k-NN estimate of each set's
  manifold, the union of balls around every example with radius its distance to its k-th nearest neighbour
  (k = 3) within the set; precision = fraction of samples inside the real manifold, recall = fraction of
  real examples inside the samples' manifold.
- **Class-conditional accuracy** (conditional models): samples drawn with labels 0, 1, ..., K-1 in turn; the
  fraction the extractor classifies as the label asked for, overall and per class.

Samples are decoded means (``mean`` of p(x|z)), the images usually shown for VAEs; for a conditional model
the samples of FID/KID/precision/recall take labels drawn from the reference half's label frequencies, so
they come from the model's marginal p(x) = sum_y p(y) p(x|y).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.errors import ConfigError, DataError
from vaekit.evaluation.classifier import get_classifier
from vaekit.models import LatentVariableModel, as_model
from vaekit.models.inputs import check_samples_fit, decode_labels, examples_for

if TYPE_CHECKING:
    from vaekit.evaluation.classifier import Classifier

logger = logging.getLogger(__name__)

SAMPLE_BATCH = 1000  # samples decoded per call; fixed so results do not depend on memory settings
PR_NEIGHBOURS = 3
HALVES = ("ordered", "random")  # how the test split is cut into the reference A and the real B
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


# -- the metrics, on feature arrays -----------------------------------------------------------------------------
def _as_features(features: np.ndarray | torch.Tensor, name: str, min_rows: int = 2) -> np.ndarray:
    array = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    array = array.astype(np.float64, copy=False)
    if array.ndim != 2 or len(array) < min_rows:
        raise DataError(f"{name} must be a (N, F) array with N >= {min_rows}, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{name} holds NaN or infinite values; the samples or the extractor diverged")
    return array


def _psd_eigenvalues(values: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix with rounding noise (below ``F * eps * max``) set to exactly 0.

    Singular covariances (fewer examples than features) have eigenvalues that should be 0 but come out as
    +-1e-17; their square roots (~3e-9 each) would otherwise add up to a visible error in the trace.
    """
    tolerance = len(values) * np.finfo(np.float64).eps * max(float(np.abs(values).max(initial=0.0)), 1e-300)
    return np.where(values > tolerance, values, 0.0)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by ``eigh``."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(_psd_eigenvalues(values))) @ vectors.T


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu_a, cov_a) and N(mu_b, cov_b), float64.

    Parameters
    ----------
    mu_a, mu_b
        Means ``(F,)``.
    cov_a, cov_b
        Covariances ``(F, F)``, symmetric positive semi-definite.

    Returns
    -------
    float
        ``|mu_a - mu_b|^2 + Tr(cov_a) + Tr(cov_b) - 2 Tr((cov_a cov_b)^{1/2})``, at least 0, in squared feature
        units; ``Tr((cov_a cov_b)^{1/2})`` is the sum of the square roots of the eigenvalues of the symmetric
        ``cov_a^{1/2} cov_b cov_a^{1/2}`` (see the module docstring).
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (len(mu_a), len(mu_a)):
        raise DataError(
            f"Gaussians of different sizes: means {mu_a.shape}, {mu_b.shape}, covariances {cov_a.shape}, "
            f"{cov_b.shape}; compare features of one extractor"
        )
    root_a = _symmetric_sqrt(cov_a)
    product = root_a @ cov_b @ root_a  # symmetric PSD, same non-zero spectrum as cov_a cov_b
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt = float(np.sqrt(_psd_eigenvalues(eigenvalues)).sum())
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    return max(distance, 0.0)  # rounding can leave -1e-12 for identical Gaussians


def fid(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``(N_a, F)`` and ``(N_b, F)``.

    Means and unbiased (N - 1) covariances in float64, then :func:`frechet_distance`
    (Heusel et al. 2017, arXiv:1706.08500).
    """
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature sets of width {a.shape[1]} and {b.shape[1]}; compare features of one extractor")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD between ``x`` (m, F) and ``y`` (n, F) with the cubic polynomial kernel.

    ``sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1)) - 2 sum_{i,j} k(x_i, y_j) / (m n)``.
    """
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kid(
    features_a: np.ndarray | torch.Tensor,
    features_b: np.ndarray | torch.Tensor,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance in the given feature space (Binkowski et al. 2018, arXiv:1801.01401).

    Parameters
    ----------
    features_a, features_b
        ``(N_a, F)`` and ``(N_b, F)``.
    subsets
        Number of random subset pairs.
    subset_size
        Examples per subset, capped at the size of the smaller set.
    seed
        Seed of the subset draws.

    Returns
    -------
    tuple of float
        Mean and standard deviation over subsets of the unbiased squared MMD (cubic polynomial kernel).
    """
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if subsets < 1:
        raise ConfigError(f"subsets must be at least 1, got {subsets}")
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ConfigError(f"subset_size must be at least 2, got {subset_size}")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(x), len(y))``, clipped at 0 (the expansion can round below)."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.clip(d, 0.0, None)


def _row_blocks(n: int, width: int) -> list[tuple[int, int]]:
    """(start, stop) row blocks so that a block of rows times ``width`` columns holds about 2**22 float64
    values (32 MB): distance matrices of 10,000 x 10,000 examples never sit in memory whole."""
    step = max(1, (1 << 22) // max(width, 1))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def knn_radii(x: np.ndarray, k: int = PR_NEIGHBOURS) -> np.ndarray:
    """Squared distance of each row of ``x`` (N, F) to its k-th nearest other row. ``(N,)``."""
    if not 1 <= k < len(x):
        raise ConfigError(f"k must be in 1..{len(x) - 1} for {len(x)} examples, got {k}")
    radii = np.empty(len(x))
    for start, stop in _row_blocks(len(x), len(x)):
        # Position k of each sorted row: position 0 is the example itself (distance 0).
        radii[start:stop] = np.partition(_squared_distances(x[start:stop], x), k, axis=1)[:, k]
    return radii


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Fraction of ``points`` inside at least one ball (``centres``, squared ``radii``)."""
    inside = np.zeros(len(points), dtype=bool)
    for start, stop in _row_blocks(len(points), len(centres)):
        inside[start:stop] = (_squared_distances(points[start:stop], centres) <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(
    real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, *, k: int = PR_NEIGHBOURS
) -> tuple[float, float]:
    """Generative precision and recall by k-NN manifold estimates (Kynkaenniemi et al. 2019, arXiv:1904.06991).

    Parameters
    ----------
    real, fake
        Features ``(N_r, F)`` of real examples and ``(N_f, F)`` of samples (best with N_r = N_f).
    k
        Neighbour whose distance sets each ball's radius (3 in the paper).

    Returns
    -------
    tuple of float
        ``(precision, recall)`` in [0, 1]: the fraction of samples inside the real manifold, and of real
        examples inside the samples' manifold.
    """
    r = _as_features(real, "real", min_rows=k + 1)
    f = _as_features(fake, "fake", min_rows=k + 1)
    if r.shape[1] != f.shape[1]:
        raise DataError(f"feature sets of width {r.shape[1]} and {f.shape[1]}; compare features of one extractor")
    return _coverage(f, r, knn_radii(r, k)), _coverage(r, f, knn_radii(f, k))


def class_accuracy(
    classifier: Classifier, x: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> tuple[float, list[float]]:
    """Fraction of ``x`` (N, *shape) the classifier assigns to ``labels`` (N,), overall and per class.

    Returns
    -------
    tuple
        (overall accuracy, ``[accuracy of class 0, ..., class max(labels)]``; NaN for a class not asked for).
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    correct = classifier.predict(x) == y
    per_class = [float(correct[y == c].mean()) if (y == c).any() else math.nan for c in range(int(y.max()) + 1)]
    return float(correct.mean()), per_class


# -- the report ---------------------------------------------------------------------------------------------------
@dataclass
class QualityReport:
    """Sample-quality figures of a model, all in the feature space of ``extractor``.

    ``fid``, ``kid_*``, ``precision``, ``recall``: ``num_samples`` samples against the reference half A
    (``num_reference`` examples) of the real data's test split; ``real_*``: the second half B (as many
    examples) against A, what real data scores with that many examples. ``conditional_accuracy`` and
    ``per_class_accuracy``: conditional models only. KID is a squared MMD (printed x 1000).
    """

    extractor: str
    extractor_test_accuracy: float
    data: str
    num_samples: int
    num_reference: int
    temperature: float
    seed: int
    fid: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    real_fid: float
    real_kid_mean: float
    real_kid_std: float
    real_precision: float
    real_recall: float
    k: int = PR_NEIGHBOURS
    conditional_accuracy: float | None = None
    per_class_accuracy: list[float] | None = field(default=None)
    seconds: float = 0.0
    halves: str = "ordered"
    latents: str = "prior"  # where the samples' z came from: the prior, or the model's fitted latent density

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(name, value) rows for a table; every value names the extractor it was measured with."""
        return quality_rows(self.to_dict())

    def format_table(self) -> str:
        """A human-readable table."""
        rows = self.rows()
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def quality_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Table rows of a :meth:`QualityReport.to_dict` (used by :meth:`vaekit.evaluate.EvalReport.format_table`)."""
    where = f"[{report['extractor']}]"
    samples, half = report["num_samples"], report["num_reference"]
    rows = [
        (
            "feature extractor",
            f"{report['extractor']} ({report['extractor_test_accuracy']:.2%} test accuracy)",
        ),
        (
            f"FID ({samples} samples{', fitted latents' if report.get('latents') == 'fitted' else ''})",
            f"{report['fid']:.3f}   real halves ({half} each, {report.get('halves', 'ordered')}): "
            f"{report['real_fid']:.3f}   {where}",
        ),
        (
            "KID x 1000",
            f"{1000 * report['kid_mean']:.3f} +- {1000 * report['kid_std']:.3f}   "
            f"real: {1000 * report['real_kid_mean']:.3f} +- {1000 * report['real_kid_std']:.3f}   {where}",
        ),
        (
            f"precision / recall (k={report['k']})",
            f"{report['precision']:.3f} / {report['recall']:.3f}   "
            f"real: {report['real_precision']:.3f} / {report['real_recall']:.3f}   {where}",
        ),
    ]
    if report.get("conditional_accuracy") is not None:
        per_class = " ".join(f"{v:.2f}" for v in report["per_class_accuracy"])
        rows.append(("class-conditional accuracy", f"{report['conditional_accuracy']:.2%}   {where}"))
        rows.append(("  per class", per_class))
    return rows


def _draw(
    model: LatentVariableModel, n: int, temperature: float, seed: int, labels: np.ndarray | None, latents: str
) -> np.ndarray:
    """``n`` decoded means of latent draws, ``SAMPLE_BATCH`` at a time (batch ``i`` seeded with ``seed + i``, as
    ``vaekit.sample(model, count, seed=seed + i, latents=latents)`` draws them)."""
    parts = []
    for i, start in enumerate(range(0, n, SAMPLE_BATCH)):
        count = min(SAMPLE_BATCH, n - start)
        y = decode_labels(model, None if labels is None else labels[start : start + count], count)
        generator = torch.Generator(device=model.device).manual_seed(seed + i)
        z = model.sample_latents(count, temperature, generator, y, latents)  # (count, L)
        parts.append(model.decode(z, y).mean.float().cpu().numpy())
    return np.concatenate(parts)


def check_quality_request(model: LatentVariableModel, n: int, k: int = PR_NEIGHBOURS, halves: str = "ordered") -> None:
    """What :func:`sample_quality` refuses before any work: ``n <= k``, an unknown ``halves``, more samples than
    memory holds (``vaekit evaluate`` checks these before its NLL pass)."""
    if n <= k:
        raise ConfigError(f"n must exceed k={k} (the precision/recall neighbour), got {n}; use --samples 5000")
    if halves not in HALVES:
        raise ConfigError(f"halves={halves!r} is not one of {', '.join(HALVES)}")
    check_samples_fit(model, n, "ask for fewer samples (--samples)")


@torch.no_grad()
def sample_quality(
    model: LatentVariableModel | str | Path,
    n: int = 5000,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    k: int = PR_NEIGHBOURS,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    classifier: Classifier | None = None,
    cache_dir: str | Path | None = None,
    halves: str = "ordered",
    latents: str = "auto",
) -> QualityReport:
    """FID, KID, precision/recall of ``n`` samples (and class-conditional accuracy of a conditional model).

    Parameters
    ----------
    model
        A model, or the path of a model or run directory.
    n
        Number of samples, at least ``k + 1``; ``n`` = half the test split makes ``fid`` and ``real_fid``
        directly comparable (5,000 for MNIST).
    data
        A built-in dataset or a labelled path: the real data (a built-in dataset's test split; a path whole,
        which usually overlaps the model's training data) and what the extractor is trained on; default the
        model's own source.
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    temperature
        Prior temperature of the samples.
    seed
        Seed of the samples and of the KID subsets.
    k
        Neighbour of the precision/recall radii.
    kid_subsets, kid_subset_size
        KID subsets and their size.
    classifier
        A feature extractor to use instead of the cached one of ``data`` (see :mod:`vaekit.evaluation.classifier`).
    cache_dir
        Cache folder of extractors.
    halves
        ``ordered``: the test split's first half is the reference A, its second half B; ``random``: the split
        shuffled (seeded by ``seed``) first, for data whose order makes the halves differ in kind.
    latents
        Where the samples' z comes from, as in :func:`vaekit.sample`: ``auto`` (the fitted latent density when the
        model has one, else the prior), ``prior`` or ``fitted``.

    Returns
    -------
    QualityReport

    Raises
    ------
    ConfigError
        For ``n <= k`` or a model without a stored preprocessing.
    DataError
        If the data has no labels or fewer than ``2 (k + 1)`` test examples.
    """
    model = as_model(model)
    check_quality_request(model, n, k, halves)
    model.eval()
    start = time.perf_counter()
    examples = examples_for(model, data, data_dir)  # the test split, never binarized
    source = data or model.preprocessing.source
    half = len(examples) // 2
    if half <= k:
        raise DataError(f"{source!r} holds {len(examples)} test examples; quality metrics need at least {2 * (k + 1)}")
    if classifier is None:
        classifier = get_classifier(source, model.preprocessing, data_dir=data_dir, cache_dir=cache_dir)
    classifier = classifier.to(model.device)
    x_real = examples.tensor()
    order = (np.random.default_rng(seed + 7).permutation(len(x_real)) if halves == "random"
             else np.arange(len(x_real)))
    a, b = torch.as_tensor(order[:half]), torch.as_tensor(order[half : 2 * half])  # A = first half, B = second
    features_a, features_b = classifier.features(x_real[a]), classifier.features(x_real[b])
    labels = None
    if model.num_classes:
        if examples.labels is None:
            raise DataError(f"{source!r} has no labels to draw a conditional model's samples with; pass labelled data")
        reference_labels = np.asarray(examples.labels)[order[:half]]
        labels = np.random.default_rng(seed).choice(reference_labels, n)  # the reference's label frequencies
    features_s = classifier.features(_draw(model, n, temperature, seed, labels, latents))
    conditional, per_class = None, None
    if model.num_classes:
        asked = np.arange(n) % model.num_classes  # every class in turn
        x_conditional = _draw(model, n, temperature, seed + 1_000_003, asked, latents)
        conditional, per_class = class_accuracy(classifier, x_conditional, asked)
    report = QualityReport(
        extractor=classifier.name, extractor_test_accuracy=classifier.test_accuracy, data=source, num_samples=n,
        num_reference=half, temperature=temperature, seed=seed, k=k, conditional_accuracy=conditional,
        per_class_accuracy=per_class, halves=halves, latents=model.latents_used(latents),
        **_metrics(features_s, features_a, features_b, k, kid_subsets, kid_subset_size, seed),
        seconds=time.perf_counter() - start,
    )
    logger.info("sample quality: FID %.3f (real halves %.3f) with %s", report.fid, report.real_fid, report.extractor)
    return report


def _metrics(
    samples: np.ndarray, reference: np.ndarray, other: np.ndarray, k: int, subsets: int, subset_size: int, seed: int
) -> dict[str, float]:
    """FID, KID and precision/recall of the samples against the reference half, and of the other half for scale."""
    kid_args = {"subsets": subsets, "subset_size": subset_size, "seed": seed}
    kid_s, kid_r = kid(samples, reference, **kid_args), kid(other, reference, **kid_args)
    precision, recall = precision_recall(reference, samples, k=k)
    real_precision, real_recall = precision_recall(reference, other, k=k)
    return {
        "fid": fid(samples, reference), "kid_mean": kid_s[0], "kid_std": kid_s[1], "precision": precision,
        "recall": recall, "real_fid": fid(other, reference), "real_kid_mean": kid_r[0], "real_kid_std": kid_r[1],
        "real_precision": real_precision, "real_recall": real_recall,
    }
