"""The built-in datasets: scikit-learn's 8 x 8 ``digits`` and the IDX files of ``mnist`` / ``fashion-mnist``.

- ``digits``: scikit-learn's 8 x 8 digits (no download). Shape (1, 8, 8), values 0..16 divided by 16. The test
  split is fixed: the **last 297** of the 1,797 examples; the first 1,500 are split into train/val.
- ``mnist`` / ``fashion-mnist``: the four standard IDX files (gzipped or raw) in ``<data_dir>/<name>/`` or directly
  in ``<data_dir>``, the data folder being ``--data-dir``, else ``$VAEKIT_DATA``, else ``~/.cache/vaekit/data``.
  Shape (1, 28, 28), uint8 divided by 255. :func:`download` fetches them (checksums verified) when a network
  exists; offline it says where to put the files.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from vaekit.data.arrays import RawData
from vaekit.errors import ConfigError, DataError

logger = logging.getLogger(__name__)
_ANNOUNCED: set[tuple[str, Path]] = set()

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist")
DIGITS_TEST_SIZE = 297

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_IDX = (*IDX_FILES["train"], *IDX_FILES["test"])
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
# (algorithm, hex digest) of the published .gz files; MNIST from SHA256SUMS, Fashion-MNIST's official MD5s.
CHECKSUMS: dict[str, dict[str, tuple[str, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "sha256", "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971"),
        "train-labels-idx1-ubyte.gz": (
            "sha256", "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203"),
        "t10k-images-idx3-ubyte.gz": (
            "sha256", "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be"),
        "t10k-labels-idx1-ubyte.gz": (
            "sha256", "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": ("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte.gz": ("md5", "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte.gz": ("md5", "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte.gz": ("md5", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in ``.gz``) into a native-endian numpy array.

    Raises
    ------
    DataError
        On a bad magic number, an unknown dtype code, or a truncated / oversized file; the message names
        the file.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {str(path)!r} ({exc}); download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{str(path)!r} is not an IDX file (magic {data[:4].hex()}); download it again")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {str(path)!r} is truncated inside its header; download it again")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {str(path)!r} is {what} ({len(data)} bytes, expected {expected} for shape {dims}); "
            "download it again"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def resolve_data_dir(data_dir: str | None) -> Path:
    """The data folder: ``data_dir``, else ``$VAEKIT_DATA``, else ``~/.cache/vaekit/data``."""
    chosen = data_dir or os.environ.get("VAEKIT_DATA") or "~/.cache/vaekit/data"
    return Path(chosen).expanduser()


def find_idx(name: str, data_dir: str | None, bases: tuple[str, ...]) -> list[Path]:
    """Paths of the IDX files ``bases`` (gzipped or raw) of dataset ``name``, in ``<data folder>/<name>/`` or
    directly in the data folder; DataError naming both folders and the ways to fix it when one is missing."""
    root = resolve_data_dir(data_dir)
    for folder in (root / name, root):
        found = []
        for base in bases:
            path = next((folder / f for f in (base + ".gz", base) if (folder / f).is_file()), None)
            found.append(path)
        if all(found):
            if (name, folder) not in _ANNOUNCED:  # once per process, however many splits are read
                _check_not_another(name, found[0])  # type: ignore[arg-type]
                _ANNOUNCED.add((name, folder))
                logger.info("reading %s from %s", name, folder)
            return found  # type: ignore[return-value]
    raise DataError(
        f"{name} files not found: expected {', '.join(b + '(.gz)' for b in bases)} in {str(root / name)!r} "
        f"(or {str(root)!r}); pass --data-dir (data.data_dir) pointing to the folder that holds them, set "
        f"$VAEKIT_DATA, run `vaekit data download {name}`, or copy them there"
    )


def _check_not_another(name: str, path: Path) -> None:
    """DataError when ``path``, read as dataset ``name``, is the published file of another built-in dataset (MNIST
    and Fashion-MNIST share file names, and a data folder may hold either directly)."""
    for other, sums in CHECKSUMS.items():
        expected = sums.get(path.name)
        if other == name or expected is None:
            continue
        algorithm, digest = expected
        if hashlib.new(algorithm, path.read_bytes()).hexdigest() == digest:
            raise DataError(
                f"{str(path)!r} is {other}'s file, not {name}'s (the two share file names); point --data-dir "
                f"(data.data_dir) at a folder holding {name}'s files, e.g. in a {name}/ subfolder"
            )


def _read_idx_split(name: str, data_dir: str | None, split: str) -> RawData:
    images_path, labels_path = find_idx(name, data_dir, IDX_FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{str(images_path)!r} {images.shape} and {str(labels_path)!r} {labels.shape} do not form an "
            "image set with one label per image; download them again"
        )
    return RawData(images, labels.astype(np.int64), (1, *images.shape[1:]), "unit", 255.0, name)


def _read_digits(data_dir: str | None, split: str) -> RawData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.images.astype(np.uint8), digits.target.astype(np.int64)  # (1797, 8, 8), 0..16
    cut = len(x) - DIGITS_TEST_SIZE
    rows = slice(0, cut) if split == "train" else slice(cut, None)
    return RawData(x[rows], y[rows], (1, 8, 8), "unit", 16.0, "digits")


def read_builtin(name: str, data_dir: str | None, split: str) -> RawData:
    """Split ``train`` or ``test`` of the built-in dataset ``name`` (``digits``, ``mnist``, ``fashion-mnist``).

    Raises
    ------
    DataError
        IDX files missing (the message names the folders searched and ``--data-dir``) or corrupted.
    """
    if split not in IDX_FILES:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if name == "digits":
        return _read_digits(data_dir, split)
    if name not in DATASETS:
        raise ConfigError(f"unknown built-in dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _read_idx_split(name, data_dir, split)


def check_builtin_files(name: str, data_dir: str | None) -> None:
    """Raise one DataError naming every missing file of ``name`` (nothing to check for ``digits``)."""
    if name != "digits":
        find_idx(name, data_dir, ALL_IDX)


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(name: str, data_dir: str | None = None, *, timeout: float = 30.0) -> Path:
    """Download the IDX files of a built-in dataset into ``resolve_data_dir(data_dir) / name``.

    Files already present with the right checksum are kept. Each file is written to a temporary file,
    checked (SHA-256 for MNIST, the official MD5 for Fashion-MNIST) and then renamed into place.

    Parameters
    ----------
    name
        ``mnist`` or ``fashion-mnist`` (``digits`` ships with scikit-learn).
    data_dir
        Data folder; default ``$VAEKIT_DATA``, else ``~/.cache/vaekit/data``.
    timeout
        Seconds to wait for each connection.

    Returns
    -------
    Path
        The folder holding the four ``.gz`` files.

    Raises
    ------
    ConfigError
        For a name that cannot be downloaded.
    DataError
        When no mirror can be reached or a file fails its checksum; the message says which files to put where.
    """
    if name not in MIRRORS:
        raise ConfigError(
            f"cannot download {name!r}; choose one of: {', '.join(MIRRORS)} (digits ships with scikit-learn)"
        )
    folder = resolve_data_dir(data_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    for filename, (algorithm, expected) in CHECKSUMS[name].items():
        target = folder / filename
        if target.is_file() and _digest(target, algorithm) == expected:
            logger.info("%s already present", target)
            continue
        errors = []
        for mirror in MIRRORS[name]:
            url = mirror + filename
            handle, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                    while block := response.read(1 << 20):
                        out.write(block)
                actual = _digest(tmp, algorithm)
                if actual != expected:
                    raise ValueError(f"{algorithm} {actual} != expected {expected}")
                os.replace(tmp, target)
                logger.info("downloaded %s", url)
                break
            except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
                errors.append(f"{url}: {exc}")
            finally:
                tmp.unlink(missing_ok=True)
        else:
            files = ", ".join(CHECKSUMS[name])
            raise DataError(
                f"could not download {filename} ({'; '.join(errors)}); copy {files} into {str(folder)!r} "
                f"by hand (or pass --data-dir to a folder that holds them)"
            )
    return folder
