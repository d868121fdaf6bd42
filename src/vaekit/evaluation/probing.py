"""``probe``: how much label information the latent codes hold, next to PCA with as many dimensions.

::

    fit split  ──encode──> posterior means (n_fit, L)   ──> logistic regression, k-NN   (fitted here)
               ──PCA-L (fitted on the fit split)──> (n_fit, L)  ──> logistic regression, k-NN
    test split ──the same maps──> accuracy of each probe on each feature set

- Codes are the posterior means mu(x) = E[z|x] of the model's input (no binarization draw).
- PCA keeps L components of the same model inputs, flattened (the baseline a VAE has to beat).
- Linear probe: multinomial logistic regression (L2, C = 1, lbfgs) on features standardized with the fit
  split's mean and standard deviation.
- k-NN: majority vote of the ``k_neighbors`` nearest fit examples in Euclidean distance on the features as
  they are (so PCA's k-NN measures distances in the data space).

Splits: a built-in dataset (``digits``, ``mnist``, ``fashion-mnist``) uses its own train and test splits; any
other labelled data is split at random (stratified by label, seeded), ``test_fraction`` of it for testing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vaekit.errors import ConfigError, DataError
from vaekit.models import LatentVariableModel, with_latents
from vaekit.models.inputs import posterior_means

logger = logging.getLogger(__name__)


@dataclass
class ProbeReport:
    """Test accuracies (fractions in [0, 1]) of the two probes on latent codes and on PCA features."""

    source: str
    split: str
    num_fit: int
    num_test: int
    dims: int
    k_neighbors: int
    latent_logistic: float
    latent_knn: float
    pca_logistic: float
    pca_knn: float
    pca_explained_variance: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    def format_table(self) -> str:
        """A human-readable table, one row per feature set."""
        knn = f"{self.k_neighbors}-NN"
        rows = [
            ("features", "dims", "logistic regression", knn),
            ("vaekit latents (posterior means)", str(self.dims), f"{self.latent_logistic:.2%}",
             f"{self.latent_knn:.2%}"),
            (f"PCA ({self.pca_explained_variance:.0%} of variance)", str(self.dims), f"{self.pca_logistic:.2%}",
             f"{self.pca_knn:.2%}"),
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"test accuracy on {self.num_test} examples; probes fitted on {self.num_fit} ({self.split})")
        return "\n".join(lines)


def _splits(
    model: LatentVariableModel, source: str, data_dir: str | None, test_fraction: float, seed: int
) -> tuple[Any, Any, str]:
    """(fit examples, test examples, description of the split)."""
    from vaekit.data import DATASETS, load_examples

    if source in DATASETS:  # its own test split: test_fraction unused
        fit = load_examples(source, model.preprocessing, data_dir=data_dir, split="train")
        test = load_examples(source, model.preprocessing, data_dir=data_dir, split="test")
        return fit, test, f"the train and test splits of {source}"
    from sklearn.model_selection import train_test_split

    examples = load_examples(source, model.preprocessing, data_dir=data_dir)
    if examples.labels is None:
        raise DataError(f"{source!r} has no labels; probe needs labelled data (an .npz with y, a label column, ...)")
    _, counts = np.unique(examples.labels, return_counts=True)
    stratify = examples.labels if counts.min() >= 2 else None
    try:
        fit_rows, test_rows = train_test_split(
            np.arange(len(examples)), test_size=test_fraction, random_state=seed, stratify=stratify
        )
    except ValueError as exc:  # too few examples for the split
        raise DataError(f"cannot split {len(examples)} examples of {source!r} for probing ({exc})") from None
    kind = "stratified random" if stratify is not None else "random"
    how = f"a {kind} {1 - test_fraction:.0%}/{test_fraction:.0%} split of {source} (seed {seed})"
    return examples.subset(np.sort(fit_rows)), examples.subset(np.sort(test_rows)), how


def _inputs_and_codes(
    model: LatentVariableModel, examples: Any, batch_size: int, progress: bool, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened model inputs (n, D) and posterior means (n, L), both float64."""
    inputs, codes = [], []
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc=f"encode {what}", disable=not progress, leave=False, unit="batch"):
        x = examples.batch(np.arange(start, min(start + batch_size, len(examples))))
        inputs.append(x.reshape(len(x), -1).numpy())
        codes.append(posterior_means(model, x).cpu())
    return np.concatenate(inputs).astype(np.float64), torch.cat(codes).double().numpy()


def _accuracies(
    fit: np.ndarray, y_fit: np.ndarray, test: np.ndarray, y_test: np.ndarray, k: int
) -> tuple[float, float]:
    """Test accuracy of the linear probe and of the k-NN probe fitted on (fit, y_fit)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(fit, y_fit)
    knn = KNeighborsClassifier(n_neighbors=k).fit(fit, y_fit)
    return float(linear.score(test, y_test)), float(knn.score(test, y_test))


@torch.no_grad()
def probe(
    model: LatentVariableModel | str | Path,
    data: str | None = None,
    *,
    data_dir: str | None = None,
    k_neighbors: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 512,
    progress: bool = False,
) -> ProbeReport:
    """Linear-probe and k-NN test accuracy of the latent codes, next to PCA with the same number of dimensions.

    Parameters
    ----------
    model
        An unconditional model, or the path of a model or run directory.
    data
        Labelled data: a built-in dataset (its train/test splits) or a path; default the model's own source.
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    k_neighbors
        Neighbours of the k-NN probe.
    test_fraction
        Share of a non-built-in dataset held out for testing (stratified, seeded by ``seed``).
    seed
        Seed of that split and of the randomized PCA.
    batch_size
        Examples encoded at once.
    progress
        Show a progress bar while encoding.

    Returns
    -------
    ProbeReport

    Raises
    ------
    ConfigError
        A conditional model (its codes are given the label), ``k_neighbors`` below 1 or a bad ``test_fraction``.
    DataError
        Unlabelled data, data that does not fit the model, or too few examples for the split and the probes.
    """
    from sklearn.decomposition import PCA

    if k_neighbors < 1:
        raise ConfigError(f"k_neighbors must be at least 1, got {k_neighbors}")
    if not 0.0 < test_fraction < 1.0:  # refused even where a built-in split makes it unused
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}; 0.2 is typical")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    model = with_latents(model, "probe")
    if model.num_classes:
        raise ConfigError(
            "probe measures the label information in the codes, but this conditional model encodes x given its "
            "label; probe an unconditional model (model.num_classes=0)"
        )
    if model.preprocessing is None:
        raise ConfigError("the model has no stored preprocessing, so its data cannot be read; use a trained model")
    source = data or model.preprocessing.source
    if not source:
        raise ConfigError("the model does not record its data source; pass data (--data NAME_OR_PATH)")
    model.eval()
    fit_set, test_set, split = _splits(model, source, data_dir, test_fraction, seed)
    if fit_set.labels is None or test_set.labels is None:
        raise DataError(f"{source!r} has no labels; probe needs labelled data (an .npz with y, a label column, ...)")
    if len(fit_set) <= k_neighbors or len(np.unique(fit_set.labels)) < 2:
        raise DataError(
            f"{len(fit_set)} fit examples of {len(np.unique(fit_set.labels))} classes are too few for the probes; "
            f"give more than k_neighbors={k_neighbors} examples of at least 2 classes"
        )
    x_fit, z_fit = _inputs_and_codes(model, fit_set, batch_size, progress, "the fit split")
    x_test, z_test = _inputs_and_codes(model, test_set, batch_size, progress, "the test split")
    dims = model.latent_dim
    if dims > min(x_fit.shape):
        raise DataError(
            f"PCA cannot keep {dims} components of {x_fit.shape[0]} examples of {x_fit.shape[1]} features; "
            "give more examples"
        )
    pca = PCA(n_components=dims, svd_solver="randomized", random_state=seed).fit(x_fit)
    latent_logistic, latent_knn = _accuracies(z_fit, fit_set.labels, z_test, test_set.labels, k_neighbors)
    pca_logistic, pca_knn = _accuracies(
        pca.transform(x_fit), fit_set.labels, pca.transform(x_test), test_set.labels, k_neighbors
    )
    report = ProbeReport(
        source=source,
        split=split,
        num_fit=len(fit_set),
        num_test=len(test_set),
        dims=dims,
        k_neighbors=k_neighbors,
        latent_logistic=latent_logistic,
        latent_knn=latent_knn,
        pca_logistic=pca_logistic,
        pca_knn=pca_knn,
        pca_explained_variance=float(pca.explained_variance_ratio_.sum()),
    )
    logger.info("probe of %s: latent %.4f / %.4f, PCA %.4f / %.4f", source, latent_logistic, latent_knn,
                pca_logistic, pca_knn)
    return report
