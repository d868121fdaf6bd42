"""The ``.vkz`` container of ``vaekit compress``: a header, then independently coded chunks, each checksummed.

::

    offset  size  field
    0       8     magic  89 56 4B 5A 0D 0A 1A 0A  ("\\x89VKZ\\r\\n\\x1a\\n": catches text-mode and 7-bit damage)
    8       2     format version, uint16 little-endian (this vaekit writes 2, reads 1 and 2)
    10      4     header length H, uint32 LE
    14      H     header: UTF-8 JSON object (see :class:`Header`)
    14+H    4     CRC-32 of bytes 0 .. 14+H
    then, for each of the header's ``num_chunks`` chunks:
            4     payload length P, uint32 LE
            P     payload: uint32 LE fields  count, initial, prefix, schedule length S, data CRC-32,
                  then S batch sizes, then the ANS words
            4     CRC-32 of (chunk index, P, payload)
    and nothing after the last chunk.

The header names the model (SHA-256 fingerprint of its config and weights), the data (dtype, shape, example
count, SHA-256 of the array) and the coding parameters. Each chunk carries the CRC-32 of its original bytes
too, so a wrong decode is caught chunk by chunk and the whole is checked at the end.

What the SHA-256 covers (:func:`sha256_prefix`) depends on the format version:

- format 2 (this vaekit writes it): a canonical description of the array, ``vkz-array dtype=<dtype.str>
  shape=<d0,d1,...>`` and a newline, then the array's bytes in C order. The dtype (byte order included) and the
  shape are bound to the bytes, so a header whose dtype or shape was changed, with every CRC recomputed, fails
  the final check instead of giving the same bytes back as another array.
- format 1 (vaekit 0.1.0): the array's bytes in C order only. Such files are still read, and decode to the
  bytes they were written from; but their hash cannot tell a header with another dtype or shape over the
  same bytes from the original one (the CRCs still catch accidental damage of the header).

The CRCs catch damage; the SHA-256 is the only check that a forger (a buggy writer, an attacker) who recomputes
every CRC cannot meet without the original data. A header longer than :data:`MAX_HEADER_BYTES` (a real one is
about 450 bytes) or whose JSON nests deeper than :data:`MAX_HEADER_DEPTH` levels (a real one: 2) is refused
before it is parsed. Every length is checked against what is left of the file before anything is allocated, so
a damaged file is rejected with :class:`CompressedFileError` and never makes the reader crash, hang or allocate
wildly.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import numpy as np

from vaekit.codec.bitsback import CodingConfig, EncodedChunk
from vaekit.errors import DataError

MAGIC = b"\x89VKZ\r\n\x1a\n"
FORMAT_VERSION = 2  # written; every version from 1 up is read
MAX_HEADER_BYTES = 1 << 16
MAX_HEADER_DEPTH = 8  # JSON nesting of arrays and objects; a real header nests 2 deep (shape, coding)
MAX_INITIAL_WORDS = 1 << 20
MAX_CHUNK_SYMBOLS = 1 << 30  # values per chunk: bounds what a decoder allocates, whatever a file claims
_U32 = struct.Struct("<I")
_PREAMBLE = struct.Struct("<8sHI")  # magic, version, header length
_CHUNK_FIELDS = struct.Struct("<5I")  # count, initial, prefix, schedule length, data crc
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class CompressedFileError(DataError):
    """A ``.vkz`` file is not one, is damaged, is from a newer vaekit, or belongs to another model."""


@dataclass(frozen=True)
class Header:
    """What a ``.vkz`` file says about its contents.

    Attributes
    ----------
    model_fingerprint
        SHA-256 (hex) of the model's config and weights (:func:`vaekit.bitsback.model_fingerprint`).
    likelihood
        The model's likelihood (decides the symbols).
    dtype
        numpy dtype string of the original array, byte order included (``|u1``, ``<f4``, ...).
    shape
        Shape of the original array, examples first.
    channels_last
        Whether examples were (H, W, C) and transposed to the model's (C, H, W) for coding.
    chunk_size
        Examples per chunk (the last may hold fewer).
    num_chunks
        Number of chunks.
    sha256
        SHA-256 (hex) of :func:`sha256_prefix` (format 2 on: the canonical dtype and shape) and then the original
        array's bytes in C order.
    coding
        The :class:`CodingConfig` as a dict.
    vaekit_version
        The vaekit that wrote the file (informational).
    version
        The container format version: the preamble's, not part of the JSON.
    """

    model_fingerprint: str
    likelihood: str
    dtype: str
    shape: tuple[int, ...]
    channels_last: bool
    chunk_size: int
    num_chunks: int
    sha256: str
    coding: dict[str, int]
    vaekit_version: str = ""
    version: int = FORMAT_VERSION

    @property
    def count(self) -> int:
        """Number of examples."""
        return self.shape[0]

    def to_bytes(self) -> bytes:
        data = {**asdict(self), "shape": list(self.shape)}
        del data["version"]
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, version: int = FORMAT_VERSION) -> Header:
        """Parse and check a header read from a file in container format ``version``."""
        depth = _nesting_depth(raw)
        if depth > MAX_HEADER_DEPTH:
            raise CompressedFileError(
                f"the file's header nests {depth} levels deep (a vaekit header nests at most {MAX_HEADER_DEPTH}); "
                "the compressed file is corrupted"
            )
        try:  # ValueError: besides bad JSON and UTF-8, an integer of more digits than Python converts
            data = json.loads(raw.decode())
        except ValueError:
            raise CompressedFileError("the file's header is not valid JSON; the compressed file is corrupted") from None
        types = {
            "model_fingerprint": str, "likelihood": str, "dtype": str, "shape": list, "channels_last": bool,
            "chunk_size": int, "num_chunks": int, "sha256": str, "coding": dict, "vaekit_version": str,
        }
        if not isinstance(data, dict) or set(data) != set(types):
            raise CompressedFileError("the file's header has unexpected fields; the compressed file is corrupted")
        for key, kind in types.items():
            if type(data[key]) is not kind:
                raise CompressedFileError(f"the file's header field {key!r} is malformed; the file is corrupted")
        for key in ("model_fingerprint", "sha256"):
            if not _SHA256_HEX.fullmatch(data[key]):
                raise CompressedFileError(
                    f"the file's header field {key!r} is not 64 lowercase hex digits; the file is corrupted"
                )
        shape = data["shape"]
        if not shape or not all(type(d) is int and d >= 0 for d in shape):
            raise CompressedFileError("the file's header has an invalid shape; the compressed file is corrupted")
        try:
            dtype = np.dtype(data["dtype"])
        except (TypeError, ValueError):  # ValueError: impossible sizes, strings that are not UTF-8
            raise CompressedFileError(f"the file's header names an unknown dtype {data['dtype']!r}") from None
        if dtype.kind not in "biuf" or dtype.str != data["dtype"]:
            raise CompressedFileError(f"the file's header names an unsupported dtype {data['dtype']!r}")
        expected_chunks = -(-shape[0] // data["chunk_size"]) if data["chunk_size"] > 0 else -1
        if (
            data["chunk_size"] < 1 or data["num_chunks"] != expected_chunks
            or data["chunk_size"] * math.prod(shape[1:]) > MAX_CHUNK_SYMBOLS
        ):
            raise CompressedFileError("the file's header has an invalid chunk layout; the compressed file is corrupted")
        CodingConfig.from_dict(data["coding"])
        return cls(**{**data, "shape": tuple(shape)}, version=version)


def _nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in JSON text, strings skipped: a linear scan, no parsing, no recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == ord("\\"):
                escaped = True
            elif byte == ord('"'):
                in_string = False
        elif byte == ord('"'):
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def sha256_prefix(dtype: str, shape: tuple[int, ...], version: int = FORMAT_VERSION) -> bytes:
    """What a header's ``sha256`` covers before the array's bytes (C order), in container format ``version``.

    Format 2 on: the canonical description ``vkz-array dtype=<dtype.str> shape=<d0,d1,...>`` and a newline, so
    the hash binds the dtype (byte order included) and the shape to the bytes. Format 1: nothing.
    """
    if version < 2:
        return b""
    return f"vkz-array dtype={np.dtype(dtype).str} shape={','.join(str(int(d)) for d in shape)}\n".encode()


def write_header(stream: BinaryIO, header: Header) -> int:
    """Write the magic, version, header and its CRC; return the bytes written.

    Always in format :data:`FORMAT_VERSION`: the header's ``sha256`` must cover :func:`sha256_prefix` of it.
    """
    body = header.to_bytes()
    head = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(body)) + body
    stream.write(head + _U32.pack(zlib.crc32(head)))
    return len(head) + 4


def _read_exact(stream: BinaryIO, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise CompressedFileError(f"the compressed file is truncated (it ends inside {what}); copy it again")
    return data


def read_header(stream: BinaryIO, file_size: int) -> Header:
    """Read and check the header.

    Raises
    ------
    CompressedFileError
        Wrong magic, a newer format version, a truncated or damaged header.
    """
    preamble = stream.read(_PREAMBLE.size)
    if len(preamble) < len(MAGIC) or preamble[: len(MAGIC)] != MAGIC:
        raise CompressedFileError(
            f"not a vaekit compressed file (magic {preamble[:len(MAGIC)].hex() or 'missing'}, expected "
            f"{MAGIC.hex()}); pass a file written by `vaekit compress`"
        )
    if len(preamble) < _PREAMBLE.size:
        raise CompressedFileError("the compressed file is truncated (it ends inside the header); copy it again")
    _, version, length = _PREAMBLE.unpack(preamble)
    if version > FORMAT_VERSION:
        raise CompressedFileError(
            f"the file is in compressed format {version}; this vaekit reads formats 1 to {FORMAT_VERSION}: "
            "upgrade vaekit"
        )
    if version < 1:
        raise CompressedFileError(f"the file declares format version {version}, which never existed; it is corrupted")
    if length > MAX_HEADER_BYTES:
        raise CompressedFileError(
            f"the file's header is {length} bytes long, more than the {MAX_HEADER_BYTES} a vaekit header may have; "
            "the compressed file is corrupted"
        )
    if length > file_size:
        raise CompressedFileError(f"the file's header length {length} is impossible; the compressed file is corrupted")
    body = _read_exact(stream, length, "the header")
    (crc,) = _U32.unpack(_read_exact(stream, 4, "the header checksum"))
    if zlib.crc32(preamble + body) != crc:
        raise CompressedFileError("the file's header fails its checksum; the compressed file is corrupted")
    return Header.from_bytes(body, version)


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as read from a file: the coded chunk and the CRC-32 of its original bytes."""

    chunk: EncodedChunk
    count: int
    data_crc: int


def write_chunk(stream: BinaryIO, index: int, chunk: EncodedChunk, count: int, data_crc: int) -> int:
    """Write one chunk; return the bytes written."""
    fields = _CHUNK_FIELDS.pack(count, chunk.initial, chunk.prefix, len(chunk.schedule), data_crc)
    payload = fields + np.asarray(chunk.schedule, dtype="<u4").tobytes() + chunk.words.astype("<u4").tobytes()
    length = _U32.pack(len(payload))
    crc = zlib.crc32(_U32.pack(index) + length + payload)
    stream.write(length + payload + _U32.pack(crc))
    return len(payload) + 8


def read_chunk(stream: BinaryIO, index: int, remaining: int, header: Header) -> StoredChunk:
    """Read and check chunk ``index`` (``remaining``: bytes left in the file)."""
    where = f"chunk {index + 1} of {header.num_chunks}"
    length_bytes = _read_exact(stream, 4, where)
    (length,) = _U32.unpack(length_bytes)
    if length + 8 > remaining or length < _CHUNK_FIELDS.size + 4 or (length - _CHUNK_FIELDS.size) % 4:
        if length + 8 > remaining:
            raise CompressedFileError(
                f"the compressed file is truncated or damaged ({where} claims {length} bytes, {remaining - 8} are "
                "left); copy it again"
            )
        raise CompressedFileError(f"{where} has an impossible length {length}; the compressed file is corrupted")
    payload = _read_exact(stream, length, where)
    (crc,) = _U32.unpack(_read_exact(stream, 4, where))
    if zlib.crc32(_U32.pack(index) + length_bytes + payload) != crc:
        raise CompressedFileError(f"{where} fails its checksum; the compressed file is damaged there")
    count, initial, prefix, steps, data_crc = _CHUNK_FIELDS.unpack_from(payload)
    words = np.frombuffer(payload, dtype="<u4", offset=_CHUNK_FIELDS.size).astype(np.uint32)
    schedule = words[:steps].astype(np.int64)
    expected = min(header.chunk_size, header.count - index * header.chunk_size)
    batch = int(header.coding["batch_size"])
    if (
        count != expected or steps > len(words) - 1 or int(schedule.sum()) != count
        or (len(schedule) and (schedule.min() < 1 or schedule.max() > batch)) or prefix > initial
        or initial > MAX_INITIAL_WORDS
    ):
        raise CompressedFileError(f"{where} has an inconsistent layout; the compressed file is corrupted")
    chunk = EncodedChunk(words[steps:], int(initial), int(prefix), tuple(int(s) for s in schedule))
    return StoredChunk(chunk, int(count), int(data_crc))


def header_dict(header: Header) -> dict[str, Any]:
    """The header as a JSON-ready dict (for reports)."""
    return {**asdict(header), "shape": list(header.shape)}
