"""scikit-learn estimators: a VAE anomaly detector and a VAE transformer that drop into pipelines.

::

    X (n_samples, n_features) ──validate──> from_arrays ──> vaekit.train (temporary run dir) ──> model_
                                                                                                  │
    AnomalyDetector:  score_samples = -(anomaly score)   decision_function = score_samples - offset_
                      predict = +1 (inlier) / -1 (outlier), like IsolationForest
    VAETransformer:   transform = posterior means (n, latent_dim); inverse_transform = decoded means (n, D)

Both follow scikit-learn's conventions: constructor arguments are stored unchanged and checked in ``fit``;
fitted attributes end with ``_``; ``X`` may be an array or a table (a pandas DataFrame stores
``feature_names_in_``); ``random_state`` makes ``fit`` reproducible. Rows may hold images flattened:
``data_shape=(1, 28, 28)`` reshapes them (and allows ``architecture="conv"``).

The data are prepared as :func:`vaekit.data.from_arrays` prepares arrays: values all in [0, 1] are modelled
as they are (``likelihood="auto"`` picks a Bernoulli decoder), anything else is standardized with the
training rows' mean and standard deviation (``likelihood="auto"`` picks a Gaussian decoder with learned
scales). ``validation_fraction`` of the rows is held out to pick the best epoch and to stop early.

How long training runs. ``VAETransformer`` defaults to ``epochs="auto"``: a budget of ``max_steps`` (10,000)
optimizer steps, so small data gets many passes and large data few, ended early once the validation ELBO has
not improved for ``patience`` epochs (``"auto"``: a twentieth of the planned epochs, at least 10). A fixed number
of passes underfits small data: 30 epochs of the 1,080 training rows of digits are 270 steps, and a linear probe
on their codes scored 79.6% test accuracy against PCA-8's 88.4%; the budget (stopped early) gives 91.0% (MNIST,
9,000 rows: 82.9% and 84.4%, PCA-8 75.0%). Its KL weight ``beta`` defaults to 0.5: codes for another model keep
more of each row under a weaker KL term, which shows on short tables (means of 3 seeds; ADBench magic, 10
features: 76.7% at beta 1, 78.9% at 0.5, PCA-8 78.3%; SpamBase 89.9% and 89.6%, PCA-8 88.8%; Cardiotocography
85.2% and 87.8%, PCA-8 91.3%, where no setting tried beats PCA-8; digits 91.2% and 91.0%).
``AnomalyDetector`` trains on a smaller budget (``max_steps`` 4,500, ``epochs="auto"``, every pass at least 100
steps: small tables are repeated within a pass so validation and early stopping come every ~100 steps), scales
tables robustly (``scaling="robust"``: median and interquartile range, so a few huge values do not squash the
others), has 16 latent dimensions and scores with ``k=10`` importance samples plus the distances to the nearest
training code (``neighbors=1``) and to the nearest scaled training row (``input_neighbors=1``). Chosen on seed 0 of
benchmarks/adbench.py's 33 sets (mean AUROC against KNN's 89.34 there): 8 latents and the likelihood alone 89.06;
adding the nearest code 89.74; 16 latents and the nearest code 90.13 (32 latents 89.84; 6,000 steps 89.86, 16
latents and 6,000 steps 90.15 at a third more time); the distance alone 84.91. Mean distances to 5 or 10 neighbours
did worse than to the nearest one (seeds 0-1, 8 latents: 89.57 and 89.44 against 89.70). The third term, the
distance to the nearest training row in the scaled input space (``input_neighbors=1``), was added on all five seeds
of the 33 sets (the same fits scored both ways, KNN 89.18): 89.93 without it (average rank 2.73 against KNN's 2.67
among seven detectors), 90.12 with it (2.61, KNN 2.76); the mean distance to 5 rows instead 89.99. With the three
terms, 4,500 steps instead of 3,000 (then the budget) scored 90.26 against 90.14 (ranks 2.55 and 2.61), at 14% more
time, and became the budget. Rows that are vectors with every value in [0, 1] are real values there (a min-max
scaled table), not pixel intensities. These are the defaults ``benchmarks/adbench.py`` measures; earlier, on small
tables, longer training taught the model the anomalies too (ADBench cardio, 827 training rows: AUROC 0.945 with 30
epochs, 0.893 with the 10,000-step budget), which is why its budget is smaller.
benchmarks/estimators_vs_pca.py measures all of these.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import numbers
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, OutlierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from vaekit.apps.neighbors import (
    DETECTOR_KEY,
    ENCODE_BATCH,
    SavedDetector,
    code_distances,
    distinct_points,
    finite_scores,
    neighbor_index,
    posterior_means,
    robust_units,
    row_index,
    saved_feature_names_fit,
    term_count,
    z_score_sum,
)
from vaekit.config import Config, DataConfig, ModelConfig, ObjectiveConfig, TrainConfig
from vaekit.data import DataBundle, ExampleSet, from_arrays
from vaekit.data.arrays import array_source
from vaekit.data.preprocessing import SCALINGS
from vaekit.data.sources import split
from vaekit.errors import ConfigError, DataError, ModelFileError
from vaekit.files import atomic_dir, check_replaceable
from vaekit.models import LatentVariableModel
from vaekit.models.serialization import CONFIG_NAME, write_model
from vaekit.training import train

logger = logging.getLogger(__name__)

AUTO_LIKELIHOOD = {"binary": "bernoulli", "unit": "bernoulli", "real": "gaussian"}
# The default training length (see the estimators' ``epochs``, ``max_steps`` and ``patience`` and the module
# docstring), chosen with benchmarks/estimators_vs_pca.py on digits, MNIST and three ADBench tables
MAX_STEPS = 10_000
PATIENCE_FRACTION, MIN_PATIENCE = 20, 10  # patience="auto": a twentieth of the planned epochs, at least 10
MIN_PASS_STEPS = 100  # AnomalyDetector: smaller data is repeated within a pass, see _fit_model
DETECTOR_MAX_STEPS, DETECTOR_K = 4500, 10  # AnomalyDetector's defaults: benchmarks/adbench.py, module docstring
DETECTOR_NEIGHBORS = 1  # AnomalyDetector: latent neighbours in the score (0: none); module docstring
DETECTOR_INPUT_NEIGHBORS = 1  # AnomalyDetector: neighbours among the scaled training rows (0: none); module docstring
# AnomalyDetector: neighbours are searched among the codes (and rows) of at most this many training rows (a seeded
# sample of larger sets). Every ADBench training set fits; credit-card fraud's 144,505 rows scored at 2,161 rows/s
# when all were searched, the search taking most of the time (16-dimensional codes, a k-d tree)
NEIGHBOR_ROWS = 25_000
TRANSFORMER_KEY = "transformer"  # a saved VAETransformer's settings in its metadata.json


def _text_columns(X: Any, limit: int = 5) -> list[str]:
    """The first ``limit`` columns of ``X`` holding strings that are not numbers: a DataFrame's column names
    (quoted), otherwise column indices; empty when there are none or X is not two-dimensional."""
    if hasattr(X, "dtypes") and hasattr(X, "columns"):  # a pandas DataFrame
        import pandas as pd

        found = [repr(str(c)) for c in X.columns
                 if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))]
        return found[:limit]
    try:
        array = np.asarray(X, dtype=object)
    except Exception:  # ragged input: not a table at all
        return []
    if array.ndim != 2:
        return []
    found = []
    for j in range(array.shape[1]):
        column = array[:, j]
        if not any(isinstance(v, (str, bytes)) for v in column):
            continue  # complex numbers or odd objects: sklearn's own message names them
        try:
            column.astype(np.float64)
        except (TypeError, ValueError):
            found.append(str(j))
            if len(found) == limit:
                break
    return found


class _VAEEstimator(BaseEstimator):
    """Fitting and data handling shared by the public estimators (which declare the constructor arguments)."""

    latent_dim: int
    hidden_dims: tuple[int, ...]
    architecture: str
    channels: tuple[int, ...]
    data_shape: tuple[int, ...] | None
    likelihood: str
    beta: float
    epochs: int | str
    max_steps: int
    patience: int | str
    batch_size: int
    lr: float
    validation_fraction: float
    scaling: str
    random_state: int | np.random.RandomState | None
    device: str
    model_: LatentVariableModel
    _min_pass_steps: ClassVar[int] = 1  # optimizer steps a pass over the training rows takes at least

    def _check_X(self, X: Any, *, reset: bool) -> np.ndarray:
        """X as a finite float array (n_samples, n_features); sets ``n_features_in_`` when ``reset``."""
        try:
            X = validate_data(
                self, X, reset=reset, dtype=[np.float64, np.float32], ensure_all_finite=False,
                ensure_min_samples=2 if reset else 1,
            )
        except ValueError as exc:
            text = _text_columns(X)
            if text:
                raise DataError(
                    f"X has text in column{'s' if len(text) > 1 else ''} {', '.join(text)}; the estimators take "
                    "numbers: one-hot encode them first (sklearn.preprocessing.OneHotEncoder in a "
                    "ColumnTransformer), or give the table as a file to `vaekit train` / `vaekit score`, which "
                    "encode string columns themselves"
                ) from None
            raise DataError(" ".join(str(exc).split())) from None
        bad = ~np.isfinite(X)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(
                f"X holds {int(bad.sum())} NaN or infinite values (first in row {row}); impute them first, for "
                "example with sklearn.impute.SimpleImputer in a Pipeline"
            )
        return X

    def _example_shape(self, n_features: int) -> tuple[int, ...]:
        if self.data_shape is None:
            return (n_features,)
        shape = tuple(int(d) for d in self.data_shape)
        if math.prod(shape) != n_features:
            raise DataError(
                f"data_shape={shape} holds {math.prod(shape)} values but X has {n_features} features; give "
                "data_shape whose product is the number of features (or data_shape=None)"
            )
        return shape

    def _fit_model(self, X: np.ndarray) -> None:
        """Train ``model_`` on the rows of validated ``X`` in a temporary run directory (nothing is left behind)."""
        self._check_training_length()
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        shape = self._example_shape(X.shape[1])
        data_config = DataConfig(source="array", val_fraction=self.validation_fraction, seed=seed,
                                 scaling=self.scaling)  # type: ignore[arg-type]
        bundle = self._prepare(X.reshape(len(X), *shape), data_config)
        repeats = max(1, math.ceil(self._min_pass_steps * int(self.batch_size) / len(bundle.train)))
        if self.epochs == "auto" and self._min_pass_steps > 1 and repeats > 1 and isinstance(bundle.train, ExampleSet):
            # a step budget over small data: a pass shows every row `repeats` times, so validation and the run
            # directory's commits come every ~100 steps (AnomalyDetector), not after every few steps
            bundle.train = bundle.train.subset(np.tile(np.arange(len(bundle.train)), repeats))
        epochs = self._planned_epochs(len(bundle.train))
        patience = self.patience
        if patience == "auto":
            patience = max(MIN_PATIENCE, math.ceil(epochs / PATIENCE_FRACTION))
        likelihood = self.likelihood
        if likelihood == "auto":
            likelihood = AUTO_LIKELIHOOD[bundle.preprocessing.kind]
        config = Config(
            model=ModelConfig(
                architecture=self.architecture,
                likelihood=likelihood,
                latent_dim=self.latent_dim,
                hidden_dims=tuple(self.hidden_dims),
                channels=tuple(self.channels),
            ),
            data=data_config,
            objective=ObjectiveConfig(beta=self.beta),
            train=TrainConfig(
                epochs=epochs, batch_size=self.batch_size, lr=self.lr, patience=int(patience), seed=seed,
                device=self.device, num_images=4,  # type: ignore[arg-type]
            ),
        )
        with tempfile.TemporaryDirectory(prefix="vaekit-estimator-") as tmp:
            result = train(config, Path(tmp) / "run", data=bundle)
        # float64 for inference: a row's outputs then do not depend on the batch it is computed in
        self.model_ = result.model.double().eval()
        self.history_ = result.metrics
        self.n_iter_ = len(result.metrics)
        logger.info(
            "fitted %s: %d epochs (%d steps; %s), best val ELBO %.3f nats", type(self).__name__, self.n_iter_,
            result.metrics[-1]["step"] if result.metrics else 0,
            "stopped early" if result.stopped_early else "all planned epochs",
            max((m["val_elbo"] for m in result.metrics), default=math.nan),
        )

    # -- saved estimators: a model directory (vaekit.models.save_model) whose metadata.json holds the estimator
    def _feature_names(self) -> list[str] | None:
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else [str(name) for name in names]

    def _params(self) -> dict[str, Any]:
        """The constructor arguments as JSON holds them (a ``RandomState`` as ``random_state`` is not kept)."""
        return {name: _json_ready(value) for name, value in self.get_params().items()
                if name != "random_state" or value is None or _is_int(value, 0)}

    def _network(self) -> LatentVariableModel:
        """The network to save: ``model_`` in float32, as trained (``model_`` is a float64 copy of it, so nothing is
        lost), with the feature names as its columns, so that tables given to the CLI are read by column name."""
        network = copy.deepcopy(self.model_).float()
        names = self._feature_names()
        if names is not None and network.preprocessing is not None:
            network.preprocessing = dataclasses.replace(network.preprocessing, columns=tuple(names))
        return network

    @classmethod
    def _read_saved(cls, path: str | Path, key: str) -> tuple[Path, LatentVariableModel, dict[str, Any]]:
        """(model directory, network, the estimator's settings under ``key`` in its metadata); ModelFileError when
        the directory holds no model or a model saved otherwise."""
        from vaekit.models import load
        from vaekit.models.serialization import find_model_dir

        model_dir = find_model_dir(path)
        model = load(model_dir)
        settings = model.metadata.get(key)
        if not isinstance(settings, dict):
            raise ModelFileError(
                f"{str(model_dir)!r} holds a model but no {cls.__name__} (metadata.json has no {key!r}); load it "
                f"with vaekit.load, or save a fitted estimator with {cls.__name__}.save"
            )
        return model_dir, model, settings

    @classmethod
    def _restored(cls, model: LatentVariableModel, settings: dict[str, Any], n_features: int,
                  feature_names: list[str] | None) -> Any:
        """An estimator of the saved ``settings["params"]`` (unknown ones dropped) with ``model`` as ``model_``."""
        known = cls().get_params()
        params = settings.get("params", {})
        if not isinstance(params, dict):
            raise ModelFileError(f"the saved {cls.__name__}'s params are invalid; save it again")
        estimator = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in known})
        device = "cuda" if estimator.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        estimator.model_ = model.double().to(device).eval()
        estimator.n_features_in_ = n_features
        if feature_names is not None:
            estimator.feature_names_in_ = np.asarray(feature_names, dtype=object)
        estimator.history_ = list(model.metadata.get("history", []))
        estimator.n_iter_ = len(estimator.history_)
        return estimator

    def _prepare(self, X: np.ndarray, data_config: DataConfig) -> DataBundle:
        """Train / validation splits of ``X`` (n, *shape) and the fitted preprocessing."""
        return from_arrays(X, config=data_config)

    def _check_training_length(self) -> None:
        """ConfigError unless ``epochs`` is ``"auto"`` or an integer >= 1, ``batch_size`` and ``max_steps``
        integers >= 1, ``patience`` is ``"auto"`` or an integer >= 0 and ``scaling`` a known one."""
        if self.scaling not in SCALINGS:
            raise ConfigError(f"scaling={self.scaling!r}: choose one of {', '.join(SCALINGS)}")
        if not (self.epochs == "auto" or _is_int(self.epochs, 1)):
            raise ConfigError(
                f"epochs={self.epochs!r}: give 'auto' (about max_steps optimizer steps) or a number of passes >= 1"
            )
        if not _is_int(self.batch_size, 1):
            raise ConfigError(f"batch_size={self.batch_size!r}: give a number of examples per update >= 1")
        if not _is_int(self.max_steps, 1):
            raise ConfigError(f"max_steps={self.max_steps!r}: give a number of optimizer steps >= 1")
        if not (self.patience == "auto" or _is_int(self.patience, 0)):
            raise ConfigError(
                f"patience={self.patience!r}: give 'auto' or a number of epochs >= 0 (0 turns early stopping off)"
            )

    def _planned_epochs(self, n_train: int) -> int:
        """Passes over the ``n_train`` training rows: ``epochs``, or with ``epochs="auto"`` the fewest whole passes
        that take ``max_steps`` optimizer steps (many passes over small data, few over large data)."""
        if self.epochs != "auto":
            return int(self.epochs)
        steps_per_epoch = math.ceil(n_train / int(self.batch_size))
        return max(1, math.ceil(int(self.max_steps) / steps_per_epoch))

    def _codes(self, X: np.ndarray) -> np.ndarray:
        """Posterior means of the rows of validated ``X``: (n, latent_dim) float64, encoded
        ``ENCODE_BATCH`` rows at a time."""
        return posterior_means(self.model_, self._model_input(X))

    def _model_input(self, X: np.ndarray) -> torch.Tensor:
        """Rows of ``X`` prepared like the training rows: (n, *data_shape) float64 on the model's device."""
        model = self.model_
        x = model.preprocessing.apply(X.reshape(len(X), *model.data_shape))
        return torch.from_numpy(x).to(model.device, torch.float64)


class AnomalyDetector(OutlierMixin, _VAEEstimator):
    """Unsupervised outlier detection with a VAE: examples the model finds unlikely are outliers.

    The score of an example has three terms: its VAE anomaly score (:func:`vaekit.apps.scoring.anomaly_scores`, by
    default the importance-weighted NLL in nats, Burda et al. 2015, arXiv:1509.00519); the distance from its code
    (posterior mean) to the nearest code of a training row (``neighbors``); and the distance from the row itself,
    scaled as the network sees it, to the nearest training row (``input_neighbors``). The likelihood sees what the
    model learned of the whole distribution; the code distance sees rows that fall between the training rows' codes,
    where a smooth density still gives them a good likelihood (many small clusters, as in ADBench's ALOI); the row
    distance sees what the encoder maps close to normal codes although the row is far from every training row
    (what a k-nearest-neighbour detector sees). Each term is counted in units of its spread over the training rows,
    and the score is their sum, negated so that, as in scikit-learn, ``score_samples`` is higher for more normal
    examples. ``neighbors=0, input_neighbors=0`` keeps the likelihood score alone (nats).

    :meth:`save` writes a fitted detector as a model directory (no pickle) that :meth:`load` reads back and that
    ``vaekit score`` scores as the detector does (:mod:`vaekit.apps.neighbors`).

    Parameters
    ----------
    latent_dim
        Latent dimensions L (default 16).
    hidden_dims
        Widths of the hidden layers (``mlp``) or of the dense layers after the convolutions (``conv``).
    architecture
        ``mlp`` or ``conv`` (``conv`` needs ``data_shape=(C, H, W)``).
    channels
        ``conv`` only: channels of the strided convolutions.
    data_shape
        Shape one row is reshaped to, e.g. ``(1, 28, 28)``; ``None`` keeps rows as vectors.
    likelihood
        ``auto`` (Bernoulli for data in [0, 1], else Gaussian with learned scales on standardized data),
        ``bernoulli`` or ``gaussian``.
    beta
        KL weight of the training objective (1: the ELBO).
    epochs
        ``"auto"`` (default): as many passes as take ``max_steps`` optimizer steps (many over small data, few over
        large data; a pass is at least 100 steps, small data repeated within it), or a number of passes.
    max_steps
        With ``epochs="auto"``: the budget of optimizer steps, rounded up to whole passes; default 4,500 (a
        smaller budget than the transformer's: see the module docstring).
    scaling
        Tables: ``robust`` (default: median and interquartile range), ``standard`` (mean and standard deviation)
        or ``asinh`` (robust, then asinh, for heavy tails); see :mod:`vaekit.data.scaling`.
    patience
        Early stopping: training ends after this many epochs without a better validation ELBO. ``"auto"``
        (default): a twentieth of the planned epochs, at least 10. 0 turns it off (then exactly ``epochs`` passes).
    batch_size, lr
        Examples per update, Adam learning rate.
    validation_fraction
        Fraction of the rows held out to pick the best epoch (and to stop early), in (0, 1).
    method
        Score: ``iwae`` (importance-weighted NLL), ``elbo`` (-ELBO) or ``recon`` (squared error).
    k
        Posterior samples of the ``iwae`` / ``elbo`` scores (default 10).
    relative
        ``iwae`` / ``elbo``: score relative to the saturated model (for a Bernoulli decoder on grayscale data
        this removes the rows' own entropy; see :mod:`vaekit.apps.scoring`).
    neighbors
        Latent neighbours added to the score (default 1): the mean distance from a row's code (its posterior
        mean) to the codes of its ``neighbors`` nearest training rows, leaving out the row itself (a row whose
        code is a training code is taken to be that training row; a duplicate of it is a neighbour at distance
        0). The score is then the sum of robust z-scores, the likelihood score's and each distance's, each
        centred and scaled by the median and the interquartile range of its values on the training rows. 0: no
        latent term.
    input_neighbors
        Neighbours among the training rows themselves (default 1): the mean distance from a row, scaled as the
        network sees it (``scaling``), to its ``input_neighbors`` nearest training rows, the row itself left out as
        for codes; a third z-score in the sum. 0: no such term (with ``neighbors=0`` too: the likelihood score
        alone, in nats). A saved detector with this term holds the (scaled) training rows it searches.
    contamination
        Expected fraction of outliers in the training data, in (0, 0.5]: ``offset_`` is the score of that
        quantile of the training rows, so ``predict`` flags about that fraction of them.
    random_state
        Seed (int), ``RandomState`` or ``None`` for training; fixing it makes ``fit`` reproducible.
    device
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.

    Attributes
    ----------
    model_ : vaekit.models.LatentVariableModel
        The fitted model (best validation epoch), in float64 so a row's score does not depend on its batch.
    offset_ : float
        ``decision_function = score_samples - offset_``; negative means outlier.
    codes_ : ndarray of shape (n_distinct, latent_dim)
        With ``neighbors`` > 0: the distinct posterior means of the training rows (the neighbours searched; of
        at most 25,000 rows, a sample seeded by ``random_state`` when there are more).
    code_counts_ : ndarray of shape (n_distinct,)
        With ``neighbors`` > 0: how many training rows have each code (duplicated rows share one).
    rows_, row_counts_ : ndarray of shape (n_rows, n_features), (n_rows,)
        With ``input_neighbors`` > 0: the distinct training rows searched, scaled (of the same rows as ``codes_``),
        and how many training rows each stands for.
    score_center_, score_scale_ : ndarray of shape (n_terms,)
        With a neighbour term: median and interquartile range over the training rows of the likelihood score and
        of each distance in use (code, then row): the terms' units in the score.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a table with string column names.
    n_iter_ : int
        Epochs trained (fewer than planned when early stopping ended the run).
    history_ : list of dict
        Per-epoch training metrics (nats per example; ``step``: optimizer steps so far).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 4))
    >>> detector = AnomalyDetector(latent_dim=2, hidden_dims=(16,), epochs=2, random_state=0).fit(X)
    >>> detector.predict(X[:3]).shape
    (3,)
    """

    _min_pass_steps = MIN_PASS_STEPS

    def __init__(
        self,
        *,
        latent_dim: int = 16,
        hidden_dims: tuple[int, ...] = (256, 128),
        architecture: str = "mlp",
        channels: tuple[int, ...] = (32, 64),
        data_shape: tuple[int, ...] | None = None,
        likelihood: str = "auto",
        beta: float = 1.0,
        epochs: int | str = "auto",
        max_steps: int = DETECTOR_MAX_STEPS,
        patience: int | str = "auto",
        batch_size: int = 128,
        lr: float = 1e-3,
        validation_fraction: float = 0.1,
        scaling: str = "robust",
        method: str = "iwae",
        k: int = DETECTOR_K,
        relative: bool = False,
        neighbors: int = DETECTOR_NEIGHBORS,
        input_neighbors: int = DETECTOR_INPUT_NEIGHBORS,
        contamination: float = 0.1,
        random_state: int | np.random.RandomState | None = None,
        device: str = "auto",
    ) -> None:
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.architecture = architecture
        self.channels = channels
        self.data_shape = data_shape
        self.likelihood = likelihood
        self.beta = beta
        self.epochs = epochs
        self.max_steps = max_steps
        self.patience = patience
        self.batch_size = batch_size
        self.lr = lr
        self.validation_fraction = validation_fraction
        self.scaling = scaling
        self.method = method
        self.k = k
        self.relative = relative
        self.neighbors = neighbors
        self.input_neighbors = input_neighbors
        self.contamination = contamination
        self.random_state = random_state
        self.device = device

    def _prepare(self, X: np.ndarray, data_config: DataConfig) -> DataBundle:
        """As for every estimator, except that rows that are vectors (``data_shape=None``) with every value in
        [0, 1] but not all 0/1 are real values, scaled like any table, not intensities: tables are often
        min-max scaled (ADBench's thyroid sets are), and a Bernoulli decoder on them scored AUROC 0.52 where the
        Gaussian one scores 0.97. Images (``data_shape`` given) in [0, 1] keep the Bernoulli decoder."""
        if self.data_shape is not None:
            return from_arrays(X, config=data_config)
        raw = array_source(np.asarray(X), None, "array")
        if raw.kind in ("unit", "binary"):
            raw.kind, raw.scale = "real", 1.0
        return split(raw, None, data_config)

    def fit(self, X: Any, y: Any = None) -> AnomalyDetector:
        """Train the VAE on the rows of ``X`` (all taken as mostly normal) and set ``offset_``.

        Parameters
        ----------
        X
            (n_samples, n_features) array or table.
        y
            Ignored; present for API consistency.

        Returns
        -------
        AnomalyDetector
            ``self``.
        """
        from vaekit.apps.scoring import SCORES, check_rate

        SCORES.get(self.method)  # fail before training on an unknown score
        if self.relative and self.method == "recon":
            raise ConfigError("relative=True applies to the likelihood scores (iwae, elbo), not to method='recon'")
        check_rate(self.contamination, "contamination", 0.5, include_upper=True)
        if not _is_int(self.k, 1):
            raise ConfigError(f"k={self.k!r}: give a whole number of importance samples >= 1")
        for name in ("neighbors", "input_neighbors"):
            if not _is_int(getattr(self, name), 0):
                raise ConfigError(
                    f"{name}={getattr(self, name)!r}: give a number of neighbours >= 1, or 0 to leave that term out "
                    "(both 0: the likelihood score alone)"
                )
        X = self._check_X(X, reset=True)
        self._fit_model(X)
        training = self._fit_neighbors(X) if self._n_terms() > 1 else self._score_samples(X)
        self.offset_ = float(np.percentile(training, 100.0 * self.contamination))
        return self

    def _n_terms(self) -> int:
        """Terms of the score: the likelihood, and each neighbour term in use."""
        return term_count(self.neighbors, self.input_neighbors)

    def _fit_neighbors(self, X: np.ndarray) -> np.ndarray:
        """The neighbour terms: the distinct training codes and scaled rows searched, and the centre and scale of
        every term on ``X``; returns ``score_samples`` of the rows of ``X`` (each term is computed once)."""
        most = max(self.neighbors, self.input_neighbors)
        if len(X) <= most:
            raise ConfigError(
                f"neighbors={self.neighbors} and input_neighbors={self.input_neighbors} need more than {most} "
                f"training rows, and X has {len(X)}; give fewer (0: no neighbour term) or more rows"
            )
        sample: slice | np.ndarray = slice(None)
        if len(X) > NEIGHBOR_ROWS:  # a seeded sample of the training rows: search time grows with their number
            sample = np.sort(check_random_state(self.random_state).choice(len(X), NEIGHBOR_ROWS, replace=False))
        terms = [self._likelihood_scores(X)]
        if self.neighbors:
            training_codes = self._codes(X)
            self.codes_, self.code_counts_ = distinct_points(training_codes[sample])
            self.neighbors_index_ = neighbor_index(self.codes_)
            terms.append(self._latent_distances(training_codes))
        if self.input_neighbors:
            training_rows = self._rows(X)
            self.rows_, self.row_counts_ = distinct_points(training_rows[sample])
            self.rows_index_ = row_index(self.rows_)
            terms.append(self._row_distances(training_rows))
        training = np.stack(terms)
        self.score_center_, self.score_scale_ = robust_units(training)
        return self._combined(training)

    def _latent_distances(self, codes: np.ndarray) -> np.ndarray:
        """Mean distance from each row's code (``codes``: (n, latent_dim), from :meth:`_codes`) to the codes of its
        ``neighbors`` nearest training rows, its own row left out (:func:`vaekit.apps.neighbors.code_distances`)."""
        return code_distances(codes, self.codes_, self.code_counts_, self.neighbors_index_, self.neighbors)

    def _rows(self, X: np.ndarray) -> np.ndarray:
        """Rows of validated ``X`` as the network sees them (scaled by its preprocessing), flattened: (n, D)."""
        return self._model_input(X).reshape(len(X), -1).cpu().numpy()

    def _row_distances(self, rows: np.ndarray) -> np.ndarray:
        """Mean distance from each scaled row (``rows``: (n, D), from :meth:`_rows`) to its ``input_neighbors``
        nearest training rows, its own row left out, as for codes."""
        return code_distances(rows, self.rows_, self.row_counts_, self.rows_index_, self.input_neighbors)

    def _likelihood_scores(self, X: np.ndarray) -> np.ndarray:
        """The model's anomaly score of each row of validated ``X`` (nats for ``iwae`` / ``elbo``)."""
        from vaekit.apps.scoring import anomaly_scores

        scores = anomaly_scores(self.model_, self._model_input(X), self.method, k=self.k, relative=self.relative)
        return finite_scores(scores)  # a row so far out that the network overflows scores the largest float

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        """Minus the anomaly score, computed as ``vaekit score`` computes a saved detector's (one function)."""
        from vaekit.apps.scoring import detector_scores

        return -detector_scores(self.model_, self._saved(), self._model_input(X))

    def _saved(self) -> SavedDetector:
        """This detector beyond its network, as :meth:`save` writes it and ``vaekit score`` scores it (sharing this
        estimator's arrays and neighbour indices; ``offset`` is set by :meth:`save`, after ``fit`` has set it)."""
        saved = SavedDetector(
            method=self.method, k=int(self.k), relative=bool(self.relative), neighbors=int(self.neighbors),
            offset=0.0, n_features=int(self.n_features_in_), feature_names=self._feature_names(),
            input_neighbors=int(self.input_neighbors),
        )
        for saved_name, own in _saved_arrays(saved):
            setattr(saved, saved_name, getattr(self, own))
        return saved

    def _combined(self, terms: np.ndarray) -> np.ndarray:
        """``score_samples`` from the (T, n) likelihood scores and distances: minus their z-scores' sum."""
        return -z_score_sum(terms, self.score_center_, self.score_scale_)

    def score_samples(self, X: Any) -> np.ndarray:
        """Normality of each row: the negated anomaly score (with ``neighbors=0, input_neighbors=0``: nats per
        example for ``iwae`` / ``elbo``; otherwise the sum of the terms' robust z-scores, see ``neighbors``).

        Deterministic: the k posterior draws are shared by every row (see :mod:`vaekit.apps.scoring`).

        Returns
        -------
        np.ndarray
            (n_samples,) float64, higher = more normal.
        """
        check_is_fitted(self)
        return self._score_samples(self._check_X(X, reset=False))

    def score_terms(self, X: Any) -> np.ndarray:
        """What each term of the score makes of each row, to see why a row is flagged: the terms' robust z-scores
        (higher = more anomalous), one column per name in :attr:`term_names_` (``likelihood``, ``code distance``,
        ``row distance``: those in use), summing to ``-score_samples(X)``; with ``neighbors=0,
        input_neighbors=0`` the one column is the likelihood score itself (nats for ``iwae`` / ``elbo``).

        Returns
        -------
        np.ndarray
            (n_samples, n_terms) float64.
        """
        from vaekit.apps.scoring import detector_terms

        check_is_fitted(self)
        return detector_terms(self.model_, self._saved(), self._model_input(self._check_X(X, reset=False)))

    @property
    def term_names_(self) -> list[str]:
        """The columns of :meth:`score_terms`: ``likelihood``, then ``code distance`` and ``row distance`` when in
        use."""
        check_is_fitted(self)
        return self._saved().term_names

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers, positive for inliers. (n_samples,)."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """+1 for inliers and -1 for outliers (``decision_function(X) < 0``). (n_samples,) int."""
        decision = self.decision_function(X)
        return np.where(decision < 0, -1, 1)

    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to the directory ``path`` (replaced atomically if it exists): a model
        directory that :meth:`load` reads back and that ``vaekit score`` scores as this detector does (the files:
        :mod:`vaekit.apps.neighbors`). Nothing is pickled. Returns the directory."""
        check_is_fitted(self)
        saved = self._saved()
        saved.offset = float(self.offset_)
        check_replaceable(path, CONFIG_NAME, "a saved model")
        with atomic_dir(path) as tmp:
            write_model(self._network(), tmp, {DETECTOR_KEY: {**saved.settings(), "params": self._params()},
                                               "history": self.history_})
            saved.write(tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> AnomalyDetector:
        """A fitted detector read from the directory that :meth:`save` wrote (or a run directory holding it).

        Raises
        ------
        ModelFileError
            No model there, a model that is not a saved detector, or files missing, corrupted or inconsistent.
        """
        model_dir, model, _ = cls._read_saved(path, DETECTOR_KEY)
        saved = SavedDetector.read(model_dir, model.metadata)
        if saved is None or saved.n_features != model.num_dims or (
            saved.neighbors and saved.codes.shape[1] != model.latent_dim
        ) or (saved.input_neighbors and saved.rows.shape[1] != model.num_dims):
            raise ModelFileError(f"the detector saved in {str(model_dir)!r} does not fit its model; save it again")
        detector = cls._restored(model, model.metadata[DETECTOR_KEY], saved.n_features, saved.feature_names)
        detector.offset_ = saved.offset
        detector.input_neighbors = saved.input_neighbors  # absent from the parameters of detectors saved before it
        saved.prepare()  # the neighbour indices, built as vaekit score builds them
        for saved_name, own in _saved_arrays(saved):
            setattr(detector, own, getattr(saved, saved_name))
        return detector


def _saved_arrays(saved: SavedDetector) -> list[tuple[str, str]]:
    """(SavedDetector field, AnomalyDetector attribute) of each array and index of the terms ``saved`` uses: what
    ``_saved`` hands over and ``load`` takes back."""
    pairs = [("codes", "codes_"), ("counts", "code_counts_"), ("_index", "neighbors_index_")] * bool(saved.neighbors)
    pairs += [("rows", "rows_"), ("row_counts", "row_counts_"), ("_row_index", "rows_index_")] * bool(
        saved.input_neighbors)
    return pairs + [("center", "score_center_"), ("scale", "score_scale_")] * (saved.n_terms > 1)


class VAETransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _VAEEstimator):
    """A VAE as a scikit-learn transformer: ``transform`` gives the posterior means, ``inverse_transform``
    decodes latent codes back to feature space (Kingma and Welling 2013, arXiv:1312.6114).

    Parameters
    ----------
    latent_dim
        Output dimensions (latent dimensions L).
    epochs
        ``"auto"`` (default): as many passes over the training rows as take ``max_steps`` optimizer steps, so
        small data gets many epochs and large data few (1,080 training rows, 9 steps a pass: 1,112 epochs;
        100,000 rows: 13); or a number of passes.
    max_steps
        With ``epochs="auto"``: the budget of optimizer steps, rounded up to whole passes; default 10,000.
    patience
        Early stopping: training ends after this many epochs without a better validation ELBO. ``"auto"``
        (default): a twentieth of the planned epochs, at least 10. 0 turns it off (then exactly ``epochs`` passes).
    beta
        KL weight of the training objective; default 0.5, not the ELBO's 1: codes for a downstream model keep
        more of each row at a weaker KL term (a linear probe on 8 codes, 3 seeds: ADBench magic 78.9% at 0.5,
        76.7% at 1, PCA-8 78.3%; see the module docstring). Early stopping still watches the validation ELBO.
    hidden_dims, architecture, channels, data_shape, likelihood, batch_size, lr, validation_fraction,
    random_state, device
        As in :class:`AnomalyDetector`.

    Attributes
    ----------
    model_ : vaekit.models.LatentVariableModel
        The fitted model (best validation epoch), in float64 so a row's code does not depend on its batch.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a table with string column names.
    n_iter_ : int
        Epochs trained (fewer than planned when early stopping ended the run).
    history_ : list of dict
        Per-epoch training metrics (nats per example; ``step``: optimizer steps so far).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 6))
    >>> VAETransformer(latent_dim=2, hidden_dims=(16,), epochs=2, random_state=0).fit_transform(X).shape
    (200, 2)
    """

    def __init__(
        self,
        *,
        latent_dim: int = 8,
        hidden_dims: tuple[int, ...] = (256, 128),
        architecture: str = "mlp",
        channels: tuple[int, ...] = (32, 64),
        data_shape: tuple[int, ...] | None = None,
        likelihood: str = "auto",
        beta: float = 0.5,
        epochs: int | str = "auto",
        max_steps: int = MAX_STEPS,
        patience: int | str = "auto",
        batch_size: int = 128,
        lr: float = 1e-3,
        validation_fraction: float = 0.1,
        scaling: str = "standard",
        random_state: int | np.random.RandomState | None = None,
        device: str = "auto",
    ) -> None:
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.architecture = architecture
        self.channels = channels
        self.data_shape = data_shape
        self.likelihood = likelihood
        self.beta = beta
        self.epochs = epochs
        self.max_steps = max_steps
        self.patience = patience
        self.batch_size = batch_size
        self.lr = lr
        self.validation_fraction = validation_fraction
        self.scaling = scaling
        self.random_state = random_state
        self.device = device

    def fit(self, X: Any, y: Any = None) -> VAETransformer:
        """Train the VAE on the rows of ``X``; ``y`` is ignored. Returns ``self``."""
        self._fit_model(self._check_X(X, reset=True))
        return self

    @torch.no_grad()
    def transform(self, X: Any) -> np.ndarray:
        """Posterior means E[z | x] of the rows of ``X``.

        Returns
        -------
        np.ndarray
            (n_samples, latent_dim), float32 for float32 input, else float64.
        """
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        self.model_.eval()
        return self._codes(X).astype(X.dtype)

    @torch.no_grad()
    def inverse_transform(self, X: Any) -> np.ndarray:
        """Decoded means of latent codes, back in the units of the original features.

        Parameters
        ----------
        X
            (n_samples, latent_dim) codes, e.g. from :meth:`transform`.

        Returns
        -------
        np.ndarray
            (n_samples, n_features_in_): the mean of p(x|z), un-standardized.
        """
        check_is_fitted(self)
        model = self.model_
        try:
            z = _as_codes(X, model.latent_dim)
        except ValueError as exc:
            raise DataError(" ".join(str(exc).split())) from None
        model.eval()
        x_hat = [
            model.decode(torch.from_numpy(z[i : i + ENCODE_BATCH]).to(model.device, torch.float64)).mean.cpu()
            for i in range(0, len(z), ENCODE_BATCH)
        ]
        flat = torch.cat(x_hat).reshape(len(z), -1).double().numpy()  # (n, D) in model-input units
        prep = model.preprocessing
        if prep.std is not None and prep.mean is not None:
            if prep.scaling == "asinh":  # the inverse of asinh((v - centre) / spread)
                flat = np.sinh(flat)
            flat = flat * np.asarray(prep.std) + np.asarray(prep.mean)
        return (flat * prep.scale).astype(z.dtype)

    def save(self, path: str | Path) -> Path:
        """Write the fitted transformer to the directory ``path`` (replaced atomically if it exists): a model
        directory (``vaekit embed`` reads it as any model) that :meth:`load` reads back. Nothing is pickled."""
        check_is_fitted(self)
        settings = {"params": self._params(), "n_features": int(self.n_features_in_),
                    "feature_names": self._feature_names()}
        check_replaceable(path, CONFIG_NAME, "a saved model")
        with atomic_dir(path) as tmp:
            write_model(self._network(), tmp, {TRANSFORMER_KEY: settings, "history": self.history_})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> VAETransformer:
        """A fitted transformer read from the directory that :meth:`save` wrote. ModelFileError when there is none
        there, or its settings do not fit its model."""
        model_dir, model, settings = cls._read_saved(path, TRANSFORMER_KEY)
        n_features, names = settings.get("n_features"), settings.get("feature_names")
        if not (n_features == model.num_dims and saved_feature_names_fit(names, model.num_dims)):
            raise ModelFileError(f"the transformer saved in {str(model_dir)!r} does not fit its model; save it again")
        return cls._restored(model, settings, model.num_dims, names)

    @property
    def _n_features_out(self) -> int:
        return int(self.latent_dim)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _json_ready(value: Any) -> Any:
    """A constructor argument as JSON holds it: tuples as lists, numpy numbers as Python ones."""
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _is_int(value: Any, lower: int) -> bool:
    """Whether ``value`` is an integer (not a bool) >= ``lower``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= lower


def _as_codes(X: Any, latent_dim: int) -> np.ndarray:
    """Latent codes as a finite float array (n, latent_dim); DataError naming the problem otherwise."""
    from sklearn.utils import check_array

    z = check_array(X, dtype=[np.float64, np.float32])
    if z.shape[1] != latent_dim:
        raise DataError(
            f"codes have {z.shape[1]} dimensions but the model has latent_dim={latent_dim}; pass codes from "
            "transform()"
        )
    return z
