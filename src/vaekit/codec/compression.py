"""``compress`` and ``decompress``: lossless compression of a dataset with a trained VAE (bits-back ANS).

::

    INPUT ──read──> array (N, *shape), any dtype ──check──> symbols (N, D) ──chunks of C examples──┐
      sha256 of dtype, shape and the original bytes ──> header                                     ▼
                                         BitsBackModel.prepare() ──> encode_chunk (BB-ANS) ──> .vkz chunk + CRC

    .vkz ──header: magic, version, model fingerprint──> decode_chunk ──> symbols ──> original bytes
                  CRC per chunk, SHA-256 of dtype, shape and bytes ──> OUTPUT (.npy or IDX), atomically

The net code length of an example is its negative ELBO (Townsend, Bird and Barber 2019, arXiv:1901.04866),
so every compress run reports the actual bits/dim next to the model's negative ELBO in bits/dim on the same
examples (one posterior sample per example, seeded). The gap is the coder's overhead: the initial bits each
chunk's first pop reads (about ``latent_dim * latent_bits`` bits per chunk), the quantization of the tables to
``*_precision`` bits and of z to bucket centres, the last ANS word of each chunk, and the container (header
and framing, about 40 bytes per chunk plus the JSON header).

The output of ``decompress`` is the original array: same dtype (byte order included), same shape, same
bytes; the header's SHA-256 covers all three (:func:`vaekit.codec.container.sha256_prefix`; in files of format
1, written by vaekit 0.1.0, the bytes only). A folder of images is compressed as the uint8 array vaekit reads
from it, (N, C, H, W) after resizing to the model's image size; decompress gives that array back.

Every failure is a :class:`vaekit.errors.VaeKitError` with one line that names the problem; no output file
is left behind (it is written to a temporary file and renamed only when everything checked out).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from tqdm.auto import tqdm

from vaekit._version import __version__
from vaekit.codec.bitsback import (
    BitsBackModel,
    CodingConfig,
    SymbolCoding,
    decode_chunk,
    encode_chunk,
    single_threaded,
)
from vaekit.codec.container import (
    MAX_CHUNK_SYMBOLS,
    CompressedFileError,
    Header,
    read_chunk,
    read_header,
    sha256_prefix,
    write_chunk,
    write_header,
)
from vaekit.data import DATASETS, read_idx
from vaekit.data.arrays import array_shape
from vaekit.data.builtin import read_builtin
from vaekit.data.readers import READERS, ReadOptions, numpy_file_errors
from vaekit.errors import ConfigError, DataError, OutputError
from vaekit.files import atomic_open
from vaekit.models import LatentVariableModel, as_model
from vaekit.models.bounds import bits_per_dim, elbo

logger = logging.getLogger(__name__)

CHUNK_VALUES = 1 << 23  # default chunk: this many data values (10,700 MNIST images); bounds memory on both sides
SUPPORTED_INPUTS = (
    "an .npy or .npz array, an IDX file (*-ubyte or *-ubyte.gz), a folder of PNG/JPEG images, or a built-in "
    "dataset name (mnist, fashion-mnist, digits: the test split)"
)
_IDX_SUFFIXES = ("-ubyte", "-ubyte.gz", ".idx", ".idx.gz")


# -- reports -----------------------------------------------------------------------------------------------------
@dataclass
class CompressReport:
    """What :func:`compress` did; sizes in bytes, rates in bits per data dimension.

    Attributes
    ----------
    bits_per_dim
        Actual rate: 8 * compressed_bytes / (count * num_dims), the whole file included.
    elbo_bits_per_dim
        The model's negative ELBO on the same examples, in bits/dim (one seeded posterior sample each).
    overhead
        ``bits_per_dim / elbo_bits_per_dim - 1``: the coder's overhead relative to the ELBO.
    initial_bits
        Bits of the chunks' initial words that the first pops consumed (part of the overhead).
    container_bytes
        Bytes of the file that are not coded data: header, chunk framing and checksums.
    compressed
        The compressed bytes when no output path was given, else ``None``.
    """

    source: str
    out: str | None
    count: int
    example_shape: list[int]
    dtype: str
    num_dims: int
    original_bytes: int
    compressed_bytes: int
    bits_per_dim: float
    elbo_bits_per_dim: float
    overhead: float
    initial_bits: int
    container_bytes: int
    chunks: int
    seconds: float
    examples_per_s: float
    coding: dict[str, int]
    model_fingerprint: str
    compressed: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field but the compressed bytes."""
        return {k: v for k, v in asdict(self).items() if k != "compressed"}

    def format_table(self) -> str:
        """A human-readable summary."""
        rows = [
            ("data", f"{self.source}: {self.count} examples of {self.example_shape} {self.dtype} "
                     f"(D = {self.num_dims})"),
            ("size", f"{self.original_bytes:,} -> {self.compressed_bytes:,} bytes "
                     f"({self.original_bytes / max(self.compressed_bytes, 1):.2f}x)"),
            ("bits/dim (actual)", f"{self.bits_per_dim:.4f}"),
            ("bits/dim (-ELBO)", f"{self.elbo_bits_per_dim:.4f}"),
            ("overhead", f"{100 * self.overhead:+.2f}% (initial bits {self.initial_bits}, container "
                         f"{self.container_bytes} bytes, {self.chunks} chunk(s))"),
            ("time", f"{self.seconds:.2f} s ({self.examples_per_s:,.0f} examples/s)"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


@dataclass
class DecompressReport:
    """What :func:`decompress` did.

    Attributes
    ----------
    array
        The decompressed array when no output path was given, else ``None``.
    """

    out: str | None
    count: int
    shape: list[int]
    dtype: str
    seconds: float
    examples_per_s: float
    array: np.ndarray | None = field(default=None, repr=False)


# -- input ------------------------------------------------------------------------------------------------------
def _read_npz(path: Path) -> np.ndarray:
    with numpy_file_errors(path, "numpy.savez"), np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        key = next((k for k in ("x", "X", "data") if k in names), names[0] if len(names) == 1 else None)
        if key is None:
            raise DataError(f"{str(path)!r} holds arrays {sorted(names)}; store the data under 'x'")
        return archive[key]


def read_array(
    data: str | Path | np.ndarray, model: LatentVariableModel | None = None, data_dir: str | None = None
) -> tuple[np.ndarray, str]:
    """The array to compress, exactly as stored (dtype and layout untouched), and a description of it.

    Parameters
    ----------
    data
        An array; a path to an ``.npy`` (memory-mapped) or ``.npz`` file, an IDX file, or a folder of images;
        or a built-in dataset name (its test split).
    model
        For image folders: the model whose image size and channels the images are read at.
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    """
    if isinstance(data, np.ndarray):
        return data, "array"
    if not isinstance(data, (str, Path)):  # a tensor or list: str() of it is no path
        raise DataError(f"data must be a numpy array, a dataset name or a path, got {type(data).__name__}; pass "
                        "x.numpy() for a tensor")
    source = str(data)
    if source in DATASETS:
        return read_builtin(source, data_dir, "test").x, f"{source} (test split)"
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"input {source!r} not found; pass {SUPPORTED_INPUTS}")
    if path.is_dir():
        preprocessing = None if model is None else model.preprocessing
        size = None if preprocessing is None else preprocessing.image_size
        channels = None if preprocessing is None else preprocessing.channels
        grayscale = None if channels is None else channels == 1
        return READERS.get("images").read(path, ReadOptions(image_size=size, grayscale=grayscale)).x, source
    name = path.name.lower()
    if name.endswith(_IDX_SUFFIXES):
        return read_idx(path), source
    if name.endswith(".npy"):
        with numpy_file_errors(path, "numpy.save"):
            return np.load(path, mmap_mode="r", allow_pickle=False), source
    if name.endswith(".npz"):
        return _read_npz(path), source
    raise DataError(f"cannot compress {source!r}; pass {SUPPORTED_INPUTS}")


def _example_layout(example: tuple[int, ...]) -> tuple[tuple[int, ...], bool]:
    """The model shape of one stored example and whether it is channels-last, by vaekit's array rules."""
    try:
        return array_shape(example, "data")
    except DataError:
        return example, False


def _check_array(array: np.ndarray, model: LatentVariableModel, coding: SymbolCoding, source: str) -> bool:
    """Check dtype and shape against the model; return whether examples are channels-last images."""
    if array.ndim < 2 or len(array) == 0:
        raise DataError(f"{source} has shape {array.shape}; expected (N, ...) with at least one example")
    if array.dtype.kind not in "biuf" or (coding.integer_only and array.dtype.kind == "f"):
        wanted = "integers (uint8)" if coding.integer_only else "0/1 values (bool, integers or floats)"
        raise DataError(
            f"{source} has dtype {array.dtype}, which does not match the model: its {model.config.likelihood} "
            f"likelihood codes {coding.describe}; pass the data as {wanted}"
        )
    example = tuple(int(d) for d in array.shape[1:])
    shape, channels_last = _example_layout(example)
    if shape != model.data_shape:
        raise DataError(
            f"{source} has examples of shape {example} but the model codes {model.data_shape}; compress data "
            "like the data the model was trained on"
        )
    return channels_last


def _model_order(raw: np.ndarray, channels_last: bool) -> np.ndarray:
    x = raw.transpose(0, 3, 1, 2) if channels_last else raw
    return np.ascontiguousarray(x).reshape(len(x), -1)  # (n, D)


def _from_symbols(
    symbols: np.ndarray, dtype: np.dtype, model_shape: tuple[int, ...], channels_last: bool
) -> bytes:
    """Original bytes (C order) of (n, D) symbols."""
    array = symbols.astype(dtype).reshape(len(symbols), *model_shape)
    if channels_last:
        array = array.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(array).tobytes()


def _to_symbols(
    raw: np.ndarray, channels_last: bool, coding: SymbolCoding, model_shape: tuple[int, ...], first: int
) -> np.ndarray:
    """(n, D) int64 symbols of raw examples; DataError naming the first value outside the support."""
    x = _model_order(raw, channels_last)
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    with np.errstate(invalid="ignore"):
        valid = (x >= 0) & (x < coding.levels)
        if x.dtype.kind == "f":
            valid &= x == np.floor(x)
    if not valid.all():
        row, col = np.argwhere(~valid)[0]
        raise DataError(
            f"example {first + int(row)} holds the value {x[row, col].item()!r}, outside the support of the model's "
            f"likelihood ({coding.describe}); "
            + ("binarize the data first" if coding.levels == 2 else "store the data as 8-bit integers")
        )
    symbols = x.astype(np.int64)
    if x.dtype.kind == "f" and _from_symbols(symbols, raw.dtype, model_shape, channels_last) != np.ascontiguousarray(
        raw
    ).tobytes():
        raise DataError(f"examples {first}..{first + len(raw) - 1} hold -0.0, which cannot be restored bit for bit; "
                        "replace it by 0.0")
    return symbols


# -- output ------------------------------------------------------------------------------------------------------
@contextmanager
def _atomic_stream(out: Path | None) -> Iterator[BinaryIO]:
    """A stream to ``out`` through a temporary file renamed on success (deleted on failure); in memory if None."""
    if out is None:
        yield io.BytesIO()
        return
    if out.is_dir():
        raise OutputError(f"output {str(out)!r} is a directory; pass a file name")
    with atomic_open(out) as handle:
        yield handle


PROGRESS_DELAY_S = 0.5  # a bar appears only on inputs that take longer than this


def _progress(total: int, desc: str, enabled: bool) -> Any:
    return tqdm(total=total, desc=desc, unit="ex", disable=not enabled, delay=PROGRESS_DELAY_S, leave=False)


# -- the verbs -----------------------------------------------------------------------------------------------------
@torch.no_grad()
def compress(
    model: LatentVariableModel | str | Path,
    data: str | Path | np.ndarray,
    out: str | Path | None = None,
    *,
    config: CodingConfig | None = None,
    chunk_size: int | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> CompressReport:
    """Compress a dataset losslessly with a trained VAE (bits-back ANS, Townsend et al. 2019, arXiv:1901.04866).

    Parameters
    ----------
    model
        A model, or the path of a model or run directory. Its likelihood must code discrete data
        (``bernoulli`` for 0/1 data, ``discretized_logistic`` for 8-bit data).
    data
        What to compress (see :func:`read_array`): examples must have the model's data shape, and values in the
        likelihood's support.
    out
        The ``.vkz`` file to write (atomically); ``None`` returns the bytes in the report.
    config
        Coding precisions and batch size (:class:`vaekit.bitsback.CodingConfig`); stored in the file.
    chunk_size
        Examples per independently coded chunk; default as many as hold 2^23 values (10,700 MNIST images).
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    seed
        Seed of the posterior samples of the reported negative ELBO (the coding itself draws nothing).
    progress
        Show a progress bar (on inputs that take more than half a second).

    Returns
    -------
    CompressReport

    Raises
    ------
    ConfigError
        A model that cannot code data (continuous likelihood, conditional) or bad coding parameters.
    DataError
        Data that cannot be read, whose shape or dtype does not fit the model, or with values outside the
        likelihood's support.
    OutputError
        An output path that cannot be written.
    """
    start = time.perf_counter()
    model = as_model(model)
    coder = BitsBackModel(model, config).prepare()
    array, source = read_array(data, model, data_dir)
    channels_last = _check_array(array, model, coder.coding, source)
    n = len(array)
    example_bytes = array.dtype.itemsize * math.prod(array.shape[1:])
    if chunk_size is not None and not 1 <= chunk_size * model.num_dims <= MAX_CHUNK_SYMBOLS:
        raise ConfigError(
            f"chunk_size must be at least 1 and hold at most {MAX_CHUNK_SYMBOLS} values, got {chunk_size}"
        )
    size = chunk_size or max(1, CHUNK_VALUES // model.num_dims)
    bounds = [(b, min(b + size, n)) for b in range(0, n, size)]

    shape = tuple(int(d) for d in array.shape)
    digest = hashlib.sha256(sha256_prefix(array.dtype.str, shape))
    for begin, end in bounds:  # pass 1: every value checked, and the checksum, before any coding
        raw = np.ascontiguousarray(array[begin:end])
        _to_symbols(raw, channels_last, coder.coding, model.data_shape, begin)
        digest.update(raw.tobytes())
    header = Header(
        model_fingerprint=coder.fingerprint, likelihood=model.config.likelihood, dtype=array.dtype.str,
        shape=shape, channels_last=channels_last, chunk_size=size,
        num_chunks=len(bounds), sha256=digest.hexdigest(), coding=coder.config.to_dict(),
        vaekit_version=__version__,
    )
    target = Path(out) if out is not None else None
    if target is not None and isinstance(data, (str, Path)) and Path(data).exists() and target.exists() and (
            target.resolve() == Path(data).resolve()):
        raise OutputError(f"the output {str(target)!r} is the input file; write the .vkz elsewhere (-o FILE.vkz)")
    neg_elbo_nats, initial_bits, word_bytes = 0.0, 0, 0
    with _atomic_stream(target) as stream, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        written = write_header(stream, header)
        with _progress(n, "compress", progress) as bar:
            for index, (begin, end) in enumerate(bounds):
                raw = np.ascontiguousarray(array[begin:end])
                symbols = _to_symbols(raw, channels_last, coder.coding, model.data_shape, begin)
                chunk = encode_chunk(coder, symbols, on_batch=bar.update)
                written += write_chunk(stream, index, chunk, len(symbols), zlib.crc32(raw.tobytes()))
                initial_bits += chunk.initial_bits
                word_bytes += 4 * len(chunk.words)
                neg_elbo_nats += _negative_elbo(coder, symbols)
        compressed = stream.getvalue() if isinstance(stream, io.BytesIO) else None
    seconds = time.perf_counter() - start
    dims = n * model.num_dims
    actual = 8.0 * written / dims
    elbo_bpd = float(bits_per_dim(neg_elbo_nats / n, model.num_dims))
    report = CompressReport(
        source=source, out=None if target is None else str(target), count=n,
        example_shape=list(array.shape[1:]), dtype=array.dtype.str, num_dims=model.num_dims,
        original_bytes=n * example_bytes, compressed_bytes=written, bits_per_dim=actual,
        elbo_bits_per_dim=elbo_bpd, overhead=actual / elbo_bpd - 1 if elbo_bpd > 0 else math.inf,
        initial_bits=initial_bits, container_bytes=written - word_bytes, chunks=len(bounds), seconds=seconds,
        examples_per_s=n / seconds,
        coding=coder.config.to_dict(), model_fingerprint=coder.fingerprint, compressed=compressed,
    )
    logger.info("compressed %d examples to %d bytes: %.4f bits/dim (-ELBO %.4f)", n, written, actual, elbo_bpd)
    return report


def _negative_elbo(coder: BitsBackModel, symbols: np.ndarray) -> float:
    """Sum over examples of the negative ELBO in nats (one posterior sample each, analytic KL)."""
    total = 0.0
    with single_threaded():  # as the coder: switching thread counts back and forth costs more than it gains
        for begin in range(0, len(symbols), coder.config.batch_size):
            x = coder.to_input(symbols[begin : begin + coder.config.batch_size])
            total -= float(elbo(coder.model, x).elbo.double().sum())
    return total


@contextmanager
def _open_compressed(file: str | Path | bytes) -> Iterator[tuple[BinaryIO, int]]:
    if isinstance(file, (bytes, bytearray)):
        yield io.BytesIO(file), len(file)
        return
    path = Path(file)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read compressed file {str(path)!r}: {exc.strerror}; check the path") from None
    with handle:
        yield handle, path.stat().st_size


def _write_array_header(stream: BinaryIO, out: Path | None, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if out is None:
        return
    if out.name.lower().endswith(("-ubyte", ".idx")):
        if dtype != np.uint8:
            raise OutputError(f"IDX output holds uint8 data, but the file holds {dtype}; write a .npy instead")
        stream.write(bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape))
        return
    if out.suffix.lower() != ".npy":
        raise OutputError(f"output {str(out)!r} must end in .npy (or -ubyte for an IDX file); pass -o NAME.npy")
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(stream, header)


@torch.no_grad()
def decompress(
    model: LatentVariableModel | str | Path,
    file: str | Path | bytes,
    out: str | Path | None = None,
    *,
    progress: bool = False,
) -> DecompressReport:
    """Decompress a ``.vkz`` file written by :func:`compress` with the same model; the result is bit-identical.

    Parameters
    ----------
    model
        The model that compressed the file (checked by fingerprint), or its path.
    file
        Path of the ``.vkz`` file, or its bytes.
    out
        ``.npy`` file to write (or ``*-ubyte`` for an IDX file of uint8 data), written atomically only after
        every checksum passed; ``None`` returns the array in the report.
    progress
        Show a progress bar (on inputs that take more than half a second).

    Returns
    -------
    DecompressReport

    Raises
    ------
    CompressedFileError
        Not a vaekit file, a newer format, a truncated or damaged file (a checksum names the chunk), or a file
        compressed with another model.
    OutputError
        An output path that cannot be written.
    """
    start = time.perf_counter()
    model = as_model(model)
    target = Path(out) if out is not None else None
    if target is not None and isinstance(file, (str, Path)) and target.exists() and (
            target.resolve() == Path(file).resolve()):
        raise OutputError(f"the output {str(target)!r} is the .vkz being read; write the array elsewhere (-o FILE)")
    with _open_compressed(file) as (stream, file_size):
        header = read_header(stream, file_size)
        config = CodingConfig.from_dict(header.coding)
        if header.likelihood != model.config.likelihood:
            raise CompressedFileError(
                f"the file was compressed by a model with the {header.likelihood!r} likelihood, but this model's is "
                f"{model.config.likelihood!r}; decompress with the model that compressed it"
            )
        coder = BitsBackModel(model, config).prepare()
        if coder.fingerprint != header.model_fingerprint:
            raise CompressedFileError(
                f"the file was compressed with another model (fingerprint {header.model_fingerprint[:12]}, this "
                f"model is {coder.fingerprint[:12]}); decompress with the model that compressed it"
            )
        dtype = np.dtype(header.dtype)
        if _example_layout(header.shape[1:]) != (model.data_shape, header.channels_last):
            raise CompressedFileError("the file's data shape does not fit its model; the compressed file is corrupted")
        digest = hashlib.sha256(sha256_prefix(header.dtype, header.shape, header.version))
        parts: list[bytes] = []
        with _atomic_stream(target) as sink, _progress(header.count, "decompress", progress) as bar:
            _write_array_header(sink, target, dtype, header.shape)
            for index in range(header.num_chunks):
                stored = read_chunk(stream, index, file_size - stream.tell(), header)
                symbols = decode_chunk(coder, stored.chunk, on_batch=bar.update)
                raw = _from_symbols(symbols, dtype, model.data_shape, header.channels_last)
                if zlib.crc32(raw) != stored.data_crc:
                    raise CompressedFileError(
                        f"chunk {index + 1} decodes to data that fails its checksum: the file is damaged, or the model "
                        "computes differently here than where the file was compressed"
                    )
                digest.update(raw)
                if target is None:
                    parts.append(raw)
                else:
                    sink.write(raw)
            if stream.read(1):
                raise CompressedFileError("the file has bytes after its last chunk; the compressed file is damaged")
            if digest.hexdigest() != header.sha256:
                raise CompressedFileError(
                    "the decompressed array fails the file's SHA-256; the compressed file is damaged or was edited"
                )
    seconds = time.perf_counter() - start
    array = None
    if target is None:
        array = np.frombuffer(b"".join(parts), dtype=dtype).reshape(header.shape).copy()
    logger.info("decompressed %d examples in %.2f s", header.count, seconds)
    return DecompressReport(
        out=None if target is None else str(target), count=header.count, shape=list(header.shape),
        dtype=header.dtype, seconds=seconds, examples_per_s=header.count / seconds, array=array,
    )
