"""Datasets for training and for trained models: sources registered by name, splits, and example sets.

::

    source ──DataSource──> raw array (N, *raw_shape) + labels ──split──> train / val (/ test)
                                                                │
                         Preprocessing (fitted on train, saved with the model)
                                                                │
    ExampleSet.batch(indices) ──> raw[indices] ──apply──> float32 (B, *shape) ──[static binarize]──>

A data source (:data:`SOURCES`) turns ``data.source`` into a :class:`DataBundle` for training and reads examples
for an existing model (``vaekit evaluate --data ...``). Registered: ``builtin`` (``digits``, ``mnist``,
``fashion-mnist``: :mod:`vaekit.data.builtin`), ``file`` (files and folders through
:data:`vaekit.data.readers.READERS`) and, from :mod:`vaekit.data.shards`, ``shards`` (a directory of ``.npy`` /
``.parquet`` shards, streamed).
A new kind of data registers a source with a lower ``priority`` than ``file``, which takes any path.
``data.format`` names the source to use instead of choosing by the path. A model whose stored preprocessing record
is of a kind that names a registered source (``interactions``) reads its data through that source.

Reading data for an existing model never refits anything and never rescales silently: a model whose input is in
[0, 1] (binary or 8-bit-like data) takes any file whose values map into [0, 1] by the file's own kind (0/1 values
as they are, uint8 divided by 255, floats in [0, 1] as they are), and the mapping is logged when it differs from
the training data's; values outside [0, 1], or another scale for a model of real values, are refused.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vaekit.config import DataConfig
from vaekit.data import builtin
from vaekit.data.arrays import FEW_EXAMPLES, RawData, array_source, as_labels
from vaekit.data.examples import DataBundle, ExampleSet
from vaekit.data.preprocessing import KINDS, Preprocessing
from vaekit.data.readers import ReadOptions, missing_source, read_path, supported
from vaekit.data.scaling import fit_scaling
from vaekit.errors import ConfigError, DataError
from vaekit.registry import Registry

logger = logging.getLogger(__name__)

DATASETS = builtin.DATASETS


# -- data sources -----------------------------------------------------------------------------------------------
class DataSource(Protocol):
    """Where data comes from: ``matches(source)`` says whether ``data.source`` is this kind, ``load`` prepares it
    for training, ``examples`` reads it for an existing model through the model's preprocessing."""

    priority: int  # sources are tried in increasing priority

    def matches(self, source: str) -> bool:
        """Whether this source reads ``source`` (a dataset name or a path)."""
        ...

    def load(self, cfg: DataConfig) -> DataBundle:
        """Train / val (/ test) splits and the fitted preprocessing."""
        ...

    def examples(self, source: str, preprocessing: Preprocessing, data_dir: str | None, split: str) -> ExampleSet:
        """Examples of ``source`` (split ``split`` where it has splits) with the model's ``preprocessing``."""
        ...


SOURCES: Registry[DataSource] = Registry("data source")


def source_for(source: str) -> DataSource:
    """The registered data source that reads ``source`` (the file source takes any path)."""
    for name in sorted(SOURCES, key=lambda n: SOURCES.get(n).priority):
        candidate = SOURCES.get(name)
        if candidate.matches(source):
            return candidate
    raise DataError(f"no data source reads {source!r}")  # unreachable while the file source is registered


class _BuiltinSource:
    priority = 0

    def matches(self, source: str) -> bool:
        return source in DATASETS

    def load(self, cfg: DataConfig) -> DataBundle:
        builtin.check_builtin_files(cfg.source, cfg.data_dir)  # one message names every missing file
        train = builtin.read_builtin(cfg.source, cfg.data_dir, "train")
        return split(train, builtin.read_builtin(cfg.source, cfg.data_dir, "test"), cfg)

    def examples(self, source: str, preprocessing: Preprocessing, data_dir: str | None, split: str) -> ExampleSet:
        return _for_model(builtin.read_builtin(source, data_dir, split), source, preprocessing)


class _FileSource:
    priority = 100

    def matches(self, source: str) -> bool:
        return True

    @staticmethod
    def _check_exists(source: str) -> None:
        if not Path(source).expanduser().exists():
            raise DataError(missing_source(
                source, f"not a built-in dataset ({', '.join(DATASETS)}) and no such file or folder (relative paths "
                f"are read from {str(Path.cwd())!r}); supported: {supported()}, text (a .txt file or a folder of "
                "train/valid/test .txt files), audio (a folder of .wav/.flac/.ogg clips)"
            ))

    def load(self, cfg: DataConfig) -> DataBundle:
        self._check_exists(cfg.source)
        options = ReadOptions(image_size=cfg.image_size, grayscale=cfg.grayscale, label_column=cfg.label_column)
        return split(read_path(cfg.source, options), None, cfg)

    def examples(self, source: str, preprocessing: Preprocessing, data_dir: str | None, split: str) -> ExampleSet:
        check_array_model(source, preprocessing)
        self._check_exists(source)
        grayscale = None if preprocessing.channels is None else preprocessing.channels == 1
        options = ReadOptions(image_size=preprocessing.image_size, grayscale=grayscale,
                              columns=preprocessing.columns, label_column=preprocessing.label_column,
                              categories=preprocessing.categories, label_classes=preprocessing.label_classes)
        return _for_model(read_path(source, options), source, preprocessing)


SOURCES.register("builtin")(_BuiltinSource())
SOURCES.register("file")(_FileSource())


# -- public entry points ----------------------------------------------------------------------------------------
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
    DataError
        Missing, unreadable, empty or non-finite data, too few examples for the split, or binarization of
        data outside [0, 1].
    """
    if cfg.format != "auto":  # the source named by data.format, whatever the path looks like
        if cfg.format not in SOURCES:
            valid = ", ".join(SOURCES.names())
            raise ConfigError(f"unknown data.format {cfg.format!r}; choose auto or one of: {valid}")
        return SOURCES.get(cfg.format).load(cfg)
    if not cfg.source.strip():  # "" would read the working directory as a folder of data
        raise ConfigError("data.source is empty; pass the data with --data NAME_OR_PATH (presets such as tabular and "
                          "fsdd train on your files)")
    return source_for(cfg.source).load(cfg)


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
    x = np.asarray(x)
    labels = None if y is None else as_labels(y, len(x), "the labels")
    return split(array_source(x, labels, "array"), None, cfg)


def split(raw: RawData, test: RawData | None, cfg: DataConfig) -> DataBundle:
    """Split ``raw`` into train/val, fit the preprocessing on train and wrap every split (see :func:`load_data`)."""
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
    if len(train_rows) < FEW_EXAMPLES:
        logger.warning("%s has %d training examples (%d held out for validation): too few for a VAE to learn much; "
                       "the numbers it reports will mean little", raw.source, len(train_rows), n_val)

    mean = std = None
    if raw.kind == "real" and cfg.standardize:
        mean, std = fit_scaling(raw.x, train_rows, raw.scale, cfg.scaling)
    if cfg.binarize != "none" and raw.kind not in ("unit", "binary"):
        raise DataError(
            f"data.binarize={cfg.binarize!r} needs values in [0, 1] but {raw.source!r} holds real values; "
            "set data.binarize=none (and a gaussian likelihood) or rescale the data to [0, 1]"
        )
    preprocessing = Preprocessing(
        shape=raw.shape, kind=raw.kind, scale=raw.scale, mean=mean, std=std, columns=raw.columns,
        image_size=raw.image_size, channels=raw.channels, source=raw.source, label_column=raw.label_column,
        data_dir=cfg.data_dir if raw.source in DATASETS else None,
        scaling=cfg.scaling if mean is not None else "standard", categories=raw.categories,
        label_classes=raw.label_classes,
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
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``; default the folder the model was trained from
        (when it still exists), else ``$VAEKIT_DATA``, else ``~/.cache/vaekit/data``.
    split
        ``train`` or ``test``; built-in datasets only.

    Raises
    ------
    DataError
        Unreadable data, a per-example shape that differs from the model's, or values that do not map into the
        model's input range (see the module docstring).
    """
    if split not in builtin.IDX_FILES:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if data_dir is None and preprocessing.data_dir and source == preprocessing.source:
        recorded = builtin.resolve_data_dir(preprocessing.data_dir)
        data_dir = str(recorded) if recorded.is_dir() else None
    kind = getattr(preprocessing, "kind", "")
    if kind in SOURCES:  # a record of its own kind of data (interactions): read through the source of that kind
        return SOURCES.get(kind).examples(source, preprocessing, data_dir, split)
    return source_for(source).examples(source, preprocessing, data_dir, split)


def has_test_split(source: str, preprocessing: Preprocessing) -> bool:
    """Whether ``source``, read for a model with ``preprocessing``, has its own ``train`` and ``test`` splits
    (:func:`load_examples` ``split``): the built-in datasets, and sources whose optional
    ``has_test_split(source, preprocessing)`` method says so (an audio folder with a test rule)."""
    if source in DATASETS:
        return True
    check = getattr(source_for(source), "has_test_split", None)
    return bool(check(source, preprocessing)) if check is not None else False


def check_array_model(source: str, preprocessing: Preprocessing) -> None:
    """DataError unless the model reads arrays: a record of another kind of data (text, ...) is not read as arrays."""
    if preprocessing.kind not in KINDS:
        raise DataError(
            f"{source!r} is read as arrays (built-in images, .npy, tables, image folders), but the model was trained "
            f"on {preprocessing.kind} data ({preprocessing.source or 'unknown source'}); give it data like that"
        )


def _for_model(raw: RawData, source: str, preprocessing: Preprocessing) -> ExampleSet:
    """``raw`` as an ExampleSet through the model's preprocessing, its raw scale mapped (see the module docstring)."""
    check_array_model(source, preprocessing)
    if raw.shape != tuple(preprocessing.shape):
        raise DataError(
            f"{source!r} has examples of shape {raw.shape} but the model expects "
            f"{tuple(preprocessing.shape)}; the model was trained on other data "
            f"({preprocessing.source or 'unknown source'})"
        )
    if len(raw.x) == 0:
        raise DataError(f"data source {source!r} holds 0 examples; add data")
    if raw.scale == preprocessing.scale and (raw.kind == "real") == (preprocessing.kind == "real"):
        return ExampleSet(raw.x, preprocessing, raw.labels)
    if preprocessing.kind == "real" or preprocessing.mean is not None:
        raise DataError(
            f"{source!r} holds raw values on a scale of {raw.scale:g} but the model divides by "
            f"{preprocessing.scale:g}; the model was trained on other data ({preprocessing.source}), "
            "store the values the way the training data was stored"
        )
    if raw.kind == "real":
        raise DataError(
            f"{source!r} holds values outside [0, 1] but the model was trained on data in [0, 1] "
            f"({preprocessing.source}); rescale the values to [0, 1] (or store 8-bit pixels as uint8)"
        )
    meaning = {"binary": "0/1 values, used as they are", "unit": f"values divided by {raw.scale:g}"}[raw.kind]
    logger.info("%s: %s (the model's training data was divided by %g)", source, meaning, preprocessing.scale)
    return ExampleSet(raw.x, dataclasses.replace(preprocessing, scale=raw.scale), raw.labels)
