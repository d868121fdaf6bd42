"""The feature extractor of the sample-quality metrics: a small classifier vaekit trains on a dataset.

FID, KID and precision/recall compare two sets of examples in the feature space of a fixed network. The
usual network, Inception-v3 trained on ImageNet, knows nothing about 8 x 8 digits or tabular rows, so vaekit
trains a small classifier on the labelled training split of the model's own dataset and uses its penultimate
layer (``FEATURE_DIM`` = 128 units, after the ReLU) as the feature space, as is customary for MNIST-scale
data. Figures computed in different feature spaces are not comparable, so every metric is reported with the
extractor's :attr:`Classifier.name`, which holds the architecture, the version, the dataset and a key of the
preprocessing.

Architectures (registered in :data:`EXTRACTORS`; images of at least 4 x 4 get ``conv``, anything else
``mlp``)::

    conv: x (B, C, H, W) -> conv3x3(16) ReLU -> maxpool 2 -> conv3x3(32) ReLU -> maxpool 2
                         -> flatten (32 * H/4 * W/4) -> linear(128) ReLU -> / feature_scale = features (B, 128)
                         -> dropout 0.25 -> linear(K) = logits
    mlp:  x (B, *shape)  -> flatten -> linear(256) ReLU -> linear(128) ReLU -> / feature_scale = features
                         -> dropout 0.25 -> linear(K) = logits

``feature_scale`` is one number fixed after training: the root mean square of the training set's features,
so features have mean square 1 per unit. FID then does not depend on how large the network happened to make
its activations, and KID's cubic kernel ``(x . y / F + 1)^3`` stays in the range it was designed for (with
raw activations its values reached 1e4 and the estimate's variance swamped the signal).

Training: the labelled training split (built-in datasets) or a fixed, seeded 90% of a path's examples, read
through the VAE's stored preprocessing (never binarized: the extractor sees the same input space as the
VAE's decoded means); Adam, learning rate 1e-3, batch 128, cross-entropy, ``steps`` = 2,000 updates (about 4
epochs of MNIST, 170 of the 1,500 training digits), seed 0. The accuracy on the test split (or the held-out
10%) is measured once and stored. Measured on this machine (one CPU thread): 98.76% on the MNIST test set
after 2,000 updates (76 s); 94.6% on the 297 test digits of ``digits`` (17 s; their writers are not in the
training split), 91% after 300 updates (4 s).

Cache: ``$VAEKIT_CACHE/classifiers/<dataset>-<key>/`` (default ``~/.cache/vaekit/classifiers``), holding
``classifier.safetensors`` (weights) and ``classifier.json`` (architecture, sizes, training settings, test
accuracy, version). ``key`` is a SHA-256 prefix of the extractor version, the dataset (a built-in's name, or
the contents of a path's files: :func:`data_fingerprint`), the preprocessing and the training settings, so a
changed recipe never reuses a stale extractor and a copy of the same data reuses the cached one. Nothing is
pickled; a corrupted cache entry is retrained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vaekit.errors import ConfigError, DataError, ModelFileError
from vaekit.files import atomic_dir
from vaekit.registry import Registry

if TYPE_CHECKING:
    from vaekit.data import ExampleSet, Preprocessing

logger = logging.getLogger(__name__)

CLASSIFIER_VERSION = 1  # bump when the architecture or the training recipe changes: it is part of the cache key
FEATURE_DIM = 128
WEIGHTS_NAME = "classifier.safetensors"
INFO_NAME = "classifier.json"
HOLDOUT_FRACTION = 0.1  # path sources have no test split: this seeded fraction is held out instead
BATCH = 1000  # examples per forward pass when extracting features


@dataclass(frozen=True)
class ClassifierSettings:
    """How the extractor is trained (every field is part of the cache key).

    Parameters
    ----------
    steps
        Adam updates.
    batch_size
        Examples per update.
    lr
        Adam learning rate.
    seed
        Seed of the initialisation, the shuffling, dropout and the hold-out split of path sources.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0


# -- architectures ------------------------------------------------------------------------------------------
EXTRACTORS: Registry[Callable[[tuple[int, ...], int], nn.Module]] = Registry("feature extractor")


@EXTRACTORS.register("conv")
def conv_features(shape: tuple[int, ...], feature_dim: int) -> nn.Module:
    """Images ``(C, H, W)``, H and W at least 4 -> features ``(B, feature_dim)``."""
    channels, height, width = shape
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (height // 4) * (width // 4), feature_dim),
        nn.ReLU(),
    )


@EXTRACTORS.register("mlp")
def mlp_features(shape: tuple[int, ...], feature_dim: int) -> nn.Module:
    """Any shape (flattened) -> features ``(B, feature_dim)``."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(shape), 256), nn.ReLU(), nn.Linear(256, feature_dim), nn.ReLU()
    )


def default_architecture(shape: tuple[int, ...]) -> str:
    """``conv`` for images ``(C, H, W)`` with H, W >= 4 (two 2x poolings fit), else ``mlp``."""
    return "conv" if len(shape) == 3 and min(shape[1:]) >= 4 else "mlp"


class Classifier(nn.Module):
    """A feature body and a linear head: ``features(x)`` (B, F) for the metrics, ``forward(x)`` logits (B, K).

    Parameters
    ----------
    architecture
        A name registered in :data:`EXTRACTORS`.
    data_shape
        Shape of one example (model input space).
    num_classes
        Number of classes K.
    feature_dim
        Width F of the feature layer.

    Attributes
    ----------
    info
        What :file:`classifier.json` holds: version, key, dataset, training settings, test accuracy.
    """

    feature_scale: torch.Tensor

    def __init__(
        self, architecture: str, data_shape: tuple[int, ...], num_classes: int, feature_dim: int = FEATURE_DIM
    ) -> None:
        super().__init__()
        self.architecture = architecture
        self.data_shape = tuple(int(d) for d in data_shape)
        self.num_classes = num_classes
        self.body = EXTRACTORS.get(architecture)(self.data_shape, feature_dim)
        self.dropout = nn.Dropout(0.25)
        self.head = nn.Linear(feature_dim, num_classes)
        # Fixed after training: features are divided by it so training features have mean square 1 per unit.
        self.register_buffer("feature_scale", torch.ones(()))
        self.info: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of ``x`` ``(B, *data_shape)``."""
        return self.head(self.dropout(self.body(x)))

    @property
    def name(self) -> str:
        """What to print beside a metric: ``vaekit-<arch>-v<version>/<dataset>@<key prefix>``."""
        return self.info.get("name", f"vaekit-{self.architecture}-v{CLASSIFIER_VERSION}/untrained")

    @property
    def test_accuracy(self) -> float:
        """Accuracy on the test split (or held-out examples) measured after training; NaN if unknown."""
        return float(self.info.get("test_accuracy", math.nan))

    def describe(self) -> str:
        """The name and the test accuracy, e.g. ``vaekit-conv-v1/mnist@1a2b3c4d (99.21% test accuracy)``."""
        return f"{self.name} ({self.test_accuracy:.2%} test accuracy)"

    @torch.no_grad()
    def features(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Penultimate-layer features of ``x`` ``(N, *data_shape)``, in batches, as float64 ``(N, F)``."""
        return self._map(x, lambda b: self.body(b) / self.feature_scale)

    @torch.no_grad()
    def predict(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Predicted classes int64 ``(N,)``."""
        return self._map(x, lambda b: self(b).argmax(dim=1)).astype(np.int64)

    def _map(self, x: torch.Tensor | np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        self.eval()
        x = torch.as_tensor(np.asarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x)
        if tuple(x.shape[1:]) != self.data_shape:
            raise DataError(
                f"examples of shape {tuple(x.shape[1:])} do not fit the feature extractor {self.name}, trained "
                f"on shape {self.data_shape}; use the extractor of the model's own dataset"
            )
        device = next(self.parameters()).device
        outs = [fn(x[i : i + BATCH].to(device, torch.float32)).cpu() for i in range(0, len(x), BATCH)]
        return torch.cat(outs).double().numpy() if outs else np.zeros((0,))


# -- training -------------------------------------------------------------------------------------------------
def fit_classifier(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    settings: ClassifierSettings = ClassifierSettings(),
    architecture: str | None = None,
) -> Classifier:
    """Train a classifier on in-memory data and measure its test accuracy (stored in ``info``).

    Parameters
    ----------
    x_train, x_test
        ``(N, *shape)`` float32 examples in the model input space.
    y_train, y_test
        ``(N,)`` integer labels in 0..K-1.
    settings
        Steps, batch size, learning rate and seed.
    architecture
        A name in :data:`EXTRACTORS`; default :func:`default_architecture` of the data shape.

    Returns
    -------
    Classifier
        In evaluation mode, on the CPU.

    Raises
    ------
    DataError
        For fewer than two classes or mismatched lengths.
    """
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DataError("examples and labels must have the same length; pass one label per example")
    num_classes = int(y_train.max()) + 1 if len(y_train) else 0
    if num_classes < 2 or int(y_train.min()) < 0:
        raise DataError(
            f"a feature extractor needs labels in 0..K-1 with K >= 2 classes, got {num_classes}; use labelled data"
        )
    if settings.steps < 1 or settings.batch_size < 1 or not settings.lr > 0:
        raise ConfigError(f"classifier settings must be positive, got {settings}")
    shape = tuple(int(d) for d in x_train.shape[1:])
    architecture = architecture or default_architecture(shape)
    start = time.perf_counter()
    # A private RNG stream: training the extractor must not change the caller's global seed state.
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(settings.seed)
        classifier = Classifier(architecture, shape, num_classes)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=settings.lr)
        generator = torch.Generator().manual_seed(settings.seed)
        y_train = y_train.long()
        classifier.train()
        step, epoch = 0, 0
        while step < settings.steps:
            perm = torch.randperm(len(x_train), generator=generator)
            for begin in range(0, len(perm), settings.batch_size):
                idx = perm[begin : begin + settings.batch_size]
                loss = nn.functional.cross_entropy(classifier(x_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if step >= settings.steps:
                    break
            epoch += 1
            logger.info("feature extractor: epoch %d, step %d/%d, loss %.4f", epoch, step, settings.steps, loss.item())
    classifier.eval()
    with torch.no_grad():
        raw = torch.from_numpy(classifier.features(x_train[:10_000]))  # (N, F), scale still 1
        classifier.feature_scale.fill_(float(raw.pow(2).mean().sqrt().clamp_min(1e-12)))
    accuracy = float((classifier.predict(x_test) == y_test.long().numpy()).mean()) if len(x_test) else math.nan
    classifier.info = {
        "version": CLASSIFIER_VERSION,
        "architecture": architecture,
        "data_shape": list(shape),
        "num_classes": num_classes,
        "feature_dim": FEATURE_DIM,
        "settings": asdict(settings),
        "train_examples": len(x_train),
        "test_examples": len(x_test),
        "test_accuracy": accuracy,
        "train_time_s": round(time.perf_counter() - start, 2),
    }
    return classifier


# -- cache ----------------------------------------------------------------------------------------------------
def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where extractors are cached: ``cache_dir``, else ``$VAEKIT_CACHE/classifiers``, else
    ``~/.cache/vaekit/classifiers``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    base = os.environ.get("VAEKIT_CACHE") or "~/.cache/vaekit"
    return Path(base).expanduser() / "classifiers"


FINGERPRINT_BYTES = 1 << 28  # data up to 256 MiB is identified by its contents, larger data by names, sizes, mtimes


def _source_id(source: str) -> dict[str, Any]:
    """What identifies the data of ``source`` in the cache key: a built-in dataset's name, or a fingerprint of the
    file or folder (see :func:`data_fingerprint`), so a copy of the same data reuses the extractor."""
    from vaekit.data import DATASETS

    if source in DATASETS:
        return {"dataset": source}
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise DataError(f"data source {source!r} does not exist; pass a built-in dataset or an existing path")
    return {"data": data_fingerprint(path)}


def data_fingerprint(path: Path, limit: int = FINGERPRINT_BYTES) -> str:
    """SHA-256 of a file, or of a folder's files (their paths relative to it, sizes and contents, in order).

    Where the place or the copy does not matter, the contents do: a folder copied or re-created elsewhere gets
    the same fingerprint, and one file changed gets another. Data over ``limit`` bytes in all is identified by
    the files' paths, sizes and modification times instead (reading gigabytes to name the data would cost more
    than training a classifier on it).
    """
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    try:
        listing = [(p.relative_to(path).as_posix() if path.is_dir() else "", p.stat()) for p in files]
    except OSError as exc:
        raise DataError(f"cannot read {str(path)!r} ({exc.strerror}); check the path and its permissions") from None
    digest = hashlib.sha256()
    by_contents = sum(stat.st_size for _, stat in listing) <= limit
    for (name, stat), file in zip(listing, files, strict=True):
        digest.update(json.dumps([name, stat.st_size] + ([] if by_contents else [stat.st_mtime_ns])).encode())
        if by_contents:
            try:
                with file.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            except OSError as exc:
                raise DataError(f"cannot read {str(file)!r} ({exc.strerror}); check its permissions") from None
    return digest.hexdigest()


def classifier_key(source: str, preprocessing: Preprocessing, settings: ClassifierSettings) -> str:
    """SHA-256 prefix (16 hex digits) of the version, the dataset, the preprocessing and the settings."""
    recipe = {k: v for k, v in preprocessing.to_dict().items() if k != "source"}  # where it was read from at
    payload = {  # training time does not change the data; _source_id names the data itself
        "version": CLASSIFIER_VERSION,
        "feature_dim": FEATURE_DIM,
        "source": _source_id(source),
        "preprocessing": recipe,
        "settings": asdict(settings),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _slug(source: str) -> str:
    name = Path(source).name or "data"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:40]


def save_classifier(classifier: Classifier, path: str | Path) -> Path:
    """Write ``classifier.safetensors`` and ``classifier.json`` into the directory ``path`` atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / INFO_NAME).write_text(json.dumps(classifier.info, indent=2) + "\n")
    return Path(path)


def load_classifier(path: str | Path) -> Classifier:
    """Rebuild a classifier written by :func:`save_classifier` (nothing is unpickled).

    Raises
    ------
    ModelFileError
        If a file is missing or corrupted, or was written by another extractor version.
    """
    path = Path(path)
    try:
        info = json.loads((path / INFO_NAME).read_text())
        if info.get("version") != CLASSIFIER_VERSION:
            raise ModelFileError(
                f"feature extractor in {str(path)!r} has version {info.get('version')!r}, not "
                f"{CLASSIFIER_VERSION}; delete it to retrain"
            )
        classifier = Classifier(
            info["architecture"], tuple(info["data_shape"]), int(info["num_classes"]), int(info["feature_dim"])
        )
        classifier.load_state_dict(load_file(str(path / WEIGHTS_NAME)), strict=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError, ConfigError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(
            f"feature extractor in {str(path)!r} is missing or corrupted ({type(exc).__name__}); delete it to retrain"
        ) from None
    classifier.info = info
    return classifier.eval()


def _labelled(examples: ExampleSet, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    if examples.labels is None:
        raise DataError(
            f"{source!r} has no labels, and the sample-quality metrics need a classifier trained on labelled data; "
            "use a labelled dataset (digits, mnist, a table with data.label_column, class subfolders)"
        )
    return examples.tensor(), torch.as_tensor(examples.labels, dtype=torch.long)


def get_classifier(
    source: str,
    preprocessing: Preprocessing,
    *,
    data_dir: str | None = None,
    cache_dir: str | Path | None = None,
    settings: ClassifierSettings = ClassifierSettings(),
    retrain: bool = False,
) -> Classifier:
    """The feature extractor of a dataset: loaded from the cache, or trained on it and cached.

    Parameters
    ----------
    source
        A built-in dataset (trained on its train split, tested on its test split) or a labelled path
        (trained on a seeded 90%, tested on the other 10%).
    preprocessing
        The VAE's stored preprocessing; the extractor sees data exactly as the VAE does.
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    cache_dir
        Cache folder; default ``$VAEKIT_CACHE/classifiers``, else ``~/.cache/vaekit/classifiers``.
    settings
        Training settings (part of the cache key).
    retrain
        Train again even if a cached extractor exists.

    Returns
    -------
    Classifier
        In evaluation mode, on the CPU, with ``info`` (name, key, test accuracy, ...).

    Raises
    ------
    DataError
        If the data has no labels.
    """
    from vaekit.data import has_test_split, load_examples

    key = classifier_key(source, preprocessing, settings)
    folder = cache_root(cache_dir) / f"{_slug(source)}-{key}"
    if folder.is_dir() and not retrain:
        try:
            classifier = load_classifier(folder)
            logger.info("feature extractor %s from %s", classifier.describe(), folder)
            return classifier
        except ModelFileError as exc:
            logger.warning("%s; retraining it", exc)
    if has_test_split(source, preprocessing):  # built-in datasets, audio folders with a test rule
        x_train, y_train = _labelled(load_examples(source, preprocessing, data_dir=data_dir, split="train"), source)
        x_test, y_test = _labelled(load_examples(source, preprocessing, data_dir=data_dir, split="test"), source)
    else:
        x_all, y_all = _labelled(load_examples(source, preprocessing, data_dir=data_dir), source)
        order = np.random.default_rng(settings.seed).permutation(len(x_all))
        cut = len(x_all) - max(1, round(HOLDOUT_FRACTION * len(x_all)))
        train_rows, test_rows = torch.from_numpy(order[:cut]), torch.from_numpy(order[cut:])
        x_train, y_train, x_test, y_test = x_all[train_rows], y_all[train_rows], x_all[test_rows], y_all[test_rows]
    logger.info("training the feature extractor on %d examples of %s (cached in %s)", len(x_train), source, folder)
    classifier = fit_classifier(x_train, y_train, x_test, y_test, settings=settings)
    name = f"vaekit-{classifier.architecture}-v{CLASSIFIER_VERSION}/{_slug(source)}@{key[:8]}"
    classifier.info.update({"name": name, "key": key, "source": source, "preprocessing": preprocessing.to_dict()})
    save_classifier(classifier, folder)
    logger.info("feature extractor %s, trained in %.0f s", classifier.describe(), classifier.info["train_time_s"])
    return classifier
