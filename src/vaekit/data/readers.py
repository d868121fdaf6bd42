"""Readers of data files and folders, registered by name and chosen by what the path is.

=========  ==========================================  ===================================================
reader     path                                        what it gives
=========  ==========================================  ===================================================
``npy``    ``*.npy``                                   memory-mapped (never loaded whole); shapes as in
                                                       :func:`vaekit.data.arrays.array_shape`
``npz``    ``*.npz``                                   features under ``x``, ``X``, ``data`` or the only array;
                                                       labels under ``y``, ``Y`` or ``labels``
``table``  ``*.csv``, ``*.csv.gz``, ``*.parquet``      numeric columns, string columns one-hot encoded
                                                       (:mod:`vaekit.data.tables`; extra ``tables``),
                                                       optional ``data.label_column``, ``real`` values
``images`` a folder of PNG/JPEG images (recursive)     resized (bilinear), grayscale or RGB, uint8 / 255;
                                                       when every image sits in a subfolder, the sorted
                                                       subfolder names are the class labels
=========  ==========================================  ===================================================

A new file type registers a :class:`Reader` in :data:`READERS`; :func:`read_path` picks the one whose
``matches`` accepts the path.
"""

from __future__ import annotations

import dataclasses
import logging
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from vaekit.data.arrays import RawData, array_source, as_labels, fit_label_classes
from vaekit.data.tables import TABLE_SUFFIXES, is_table, read_table
from vaekit.errors import ConfigError, DataError, VaeKitError
from vaekit.registry import Registry

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ReadOptions:
    """What a reader may need besides the path: image size and colour (image folders), the feature columns and
    the label column (tables). ``None`` means: decide from the data (or, for an existing model, from its record)."""

    image_size: tuple[int, ...] | None = None
    grayscale: bool | None = None
    columns: tuple[str, ...] | None = None
    label_column: str | None = None
    categories: tuple[tuple[str, tuple[str, ...]], ...] | None = None  # tables: the model's string columns
    label_classes: tuple[str, ...] | None = None  # tables: the model's text labels, in the order they are numbered


class Reader(Protocol):
    """A file type: ``matches(path)`` says whether it reads the path, ``read(path, options)`` reads it."""

    @property
    def description(self) -> str:
        """What it reads, for error messages (".npy", "a folder of images", ...)."""
        ...

    def matches(self, path: Path) -> bool:
        """Whether this reader handles ``path`` (an existing file or folder)."""
        ...

    def read(self, path: Path, options: ReadOptions) -> RawData:
        """The data of ``path``; DataError naming the file and the fix when it cannot be read."""
        ...


READERS: Registry[Reader] = Registry("data reader")


@dataclass(frozen=True)
class _SuffixReader:
    """A reader of files with given suffixes (or of folders, with ``folder=True``)."""

    description: str
    suffixes: tuple[str, ...]
    function: object
    folder: bool = False

    def matches(self, path: Path) -> bool:
        if self.folder:
            return path.is_dir()
        return path.is_file() and path.suffix.lower() in self.suffixes

    def read(self, path: Path, options: ReadOptions) -> RawData:
        return self.function(path, options)  # type: ignore[operator, no-any-return]


@dataclass(frozen=True)
class _TableReader(_SuffixReader):
    """Tables: matched by the whole suffix (``.csv.gz`` too)."""

    def matches(self, path: Path) -> bool:
        return path.is_file() and is_table(path)


# What numpy raises on a damaged or forged .npy/.npz file. It reads an .npy header by tokenizing and evaluating
# it as a Python literal, so garbage there raises ValueError, SyntaxError, tokenize.TokenError, TypeError or
# OverflowError (a huge dimension); an absurd shape, MemoryError; an .npz is a zip archive (BadZipFile, zlib.error,
# RuntimeError: an encrypted member, or NotImplementedError, an unknown compression, which derives from it).
NUMPY_FILE_ERRORS: tuple[type[Exception], ...] = (
    OSError, EOFError, ValueError, TypeError, SyntaxError, OverflowError, MemoryError, RuntimeError,
    tokenize.TokenError, zipfile.BadZipFile, zlib.error,
)
_REASON_CHARS = 160  # numpy quotes the whole header (up to 10,000 characters) in some of its messages


@contextmanager
def numpy_file_errors(path: Path, writer: str) -> Iterator[None]:
    """Turn what numpy raises while reading ``path`` into one :class:`DataError` line that names the file, the
    reason (shortened) and the fix: write the file with ``writer`` (``numpy.save``, ``numpy.savez``).

    vaekit's own errors raised inside pass through unchanged.
    """
    try:
        yield
    except VaeKitError:
        raise
    except NUMPY_FILE_ERRORS as exc:
        detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        reason = " ".join(f"{type(exc).__name__}: {detail}".split())
        if len(reason) > _REASON_CHARS:
            reason = reason[: _REASON_CHARS - 3] + "..."
        raise DataError(
            f"cannot read {str(path)!r} ({reason}); it is damaged or not an {path.suffix} file: write it with "
            f"{writer}"
        ) from None


def _read_npy(path: Path, options: ReadOptions) -> RawData:
    with numpy_file_errors(path, "numpy.save"):
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    return array_source(x, None, str(path))


def _read_npz(path: Path, options: ReadOptions) -> RawData:
    with numpy_file_errors(path, "numpy.savez"), np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    x_key = next((k for k in ("x", "X", "data") if k in arrays), None)
    if x_key is None and len(arrays) == 1:
        x_key = next(iter(arrays))
    if x_key is None:
        raise DataError(
            f"{str(path)!r} holds arrays {sorted(arrays)}; store the features under 'x' (labels under 'y')"
        )
    x = arrays[x_key]
    y_key = next((k for k in ("y", "Y", "labels") if k in arrays and k != x_key), None)
    if y_key is None:
        return array_source(x, None, str(path))
    classes = options.label_classes or fit_label_classes(arrays[y_key])  # the model's, or fitted when training
    labels = as_labels(arrays[y_key], len(x), f"{path}[{y_key!r}]", classes)
    return dataclasses.replace(array_source(x, labels, str(path)), label_classes=classes)


def _read_table(path: Path, options: ReadOptions) -> RawData:
    return read_table(path, options.columns, options.label_column, options.categories, options.label_classes)


def _read_images(path: Path, options: ReadOptions) -> RawData:
    image_size, grayscale = options.image_size, options.grayscale
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no PNG/JPEG images in folder {str(path)!r}; add images or point to a data file")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ConfigError(f"data.image_size must be positive [height, width], got {list(image_size)}")
    images: list[np.ndarray] = []
    mode: str | None = None
    size: tuple[int, int] = (0, 0)
    for file in files:
        try:
            with Image.open(file) as opened:
                if opened.mode.startswith(("I", "F")):  # 16- or 32-bit: Pillow's convert would clip at 255
                    raise DataError(
                        f"image {str(file)!r} has {opened.mode} pixels (16/32-bit), which would be clipped to 8 bits; "
                        "convert the images to 8-bit (e.g. scale to 0..255), or save the pixels as an .npy array"
                    )
                if mode is None:
                    if grayscale is None:
                        mode = "L" if opened.mode in ("1", "L", "LA") else "RGB"
                    else:
                        mode = "L" if grayscale else "RGB"
                    size = (image_size[0], image_size[1]) if image_size else (opened.height, opened.width)
                image = opened.convert(mode)
                if (image.height, image.width) != size:
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except DataError:
            raise
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"cannot read image {str(file)!r} ({exc}); remove or replace the file") from None
        images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))  # (C, H, W)
    x = np.stack(images)  # (N, C, H, W)
    parents = [f.relative_to(path).parts for f in files]
    labels = None
    classes = None
    if all(len(p) > 1 for p in parents):  # the model's classes when reading for it: a folder lacking one is no shift
        classes = options.label_classes or tuple(sorted({p[0] for p in parents}))
        labels = as_labels(np.array([p[0] for p in parents]), len(parents), str(path), classes)
        logger.info("image classes from subfolders of %s: %s", path, dict(enumerate(classes)))
    elif any(len(p) > 1 for p in parents):
        logger.warning("%s mixes images in subfolders and at the top level; no labels are used", path)
    h, w = int(x.shape[2]), int(x.shape[3])
    return RawData(x, labels, tuple(x.shape[1:]), "unit", 255.0, str(path), image_size=(h, w),
                   channels=int(x.shape[1]), label_classes=classes)


READERS.register("npy")(_SuffixReader(".npy", (".npy",), _read_npy))
READERS.register("npz")(_SuffixReader(".npz", (".npz",), _read_npz))
READERS.register("table")(_TableReader(".csv, .parquet, .csv.gz", TABLE_SUFFIXES, _read_table))
READERS.register("images")(_SuffixReader("a folder of .png/.jpg/.jpeg images", (), _read_images, folder=True))


def supported() -> str:
    """What the registered readers take, for error messages."""
    return ", ".join(READERS.get(name).description for name in READERS)


IN_MEMORY = "array"  # the source recorded for data given as arrays (estimators, vaekit.data.from_arrays)


def missing_source(source: str, why: str) -> str:
    """The message for a data source that is not there; for a model trained on arrays in memory, which recorded
    no file, it says to pass the data instead."""
    if source == IN_MEMORY:
        return ("this model was trained on arrays in memory (a vaekit.estimators estimator, or "
                "vaekit.data.from_arrays) and has no data of its own: pass the data to use (--data FILE)")
    return f"data source {source!r} not found: {why}"


def read_path(source: str, options: ReadOptions | None = None) -> RawData:
    """Read a data file or folder with the reader that matches it.

    Raises
    ------
    DataError
        The path does not exist, no reader takes it, or the reader cannot read it.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(missing_source(source, f"not a built-in dataset and no such file or folder; supported: "
                                               f"{supported()}"))
    for name in READERS:
        reader = READERS.get(name)
        if reader.matches(path):
            return reader.read(path, options or ReadOptions())
    suffix = path.suffix.lower() or "no extension"
    raise DataError(f"unsupported data file {str(path)!r} ({suffix}); use {supported()}")
