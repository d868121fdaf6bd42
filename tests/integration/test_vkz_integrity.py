"""The ``.vkz`` checks against a forger: header fields and bytes edited, and then every checksum that does not
depend on the original data recomputed (header length and CRC-32, chunk lengths and CRC-32s), as a buggy writer
or an attacker would. Every such file is refused with a vaekit error or decodes to exactly the original array:
same dtype (byte order included), same shape, same bytes. Nothing crashes, and nothing else comes back."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from vaekit.cli.main import main
from vaekit.codec.bitsback import CodingConfig
from vaekit.codec.compression import compress, decompress
from vaekit.codec.container import FORMAT_VERSION, MAGIC, MAX_HEADER_BYTES, CompressedFileError
from vaekit.config import ModelConfig
from vaekit.errors import VaeKitError
from vaekit.models.serialization import save_model
from vaekit.models.vae import VAE

CODING = CodingConfig(latent_bits=12, batch_size=8, threads=1)  # one thread: no pool to wait on
_U32 = struct.Struct("<I")


def _model(likelihood: str) -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(likelihood=likelihood, latent_dim=3, hidden_dims=(16,)), (1, 8, 8)).eval()


@pytest.fixture(scope="module")
def cases() -> dict[str, tuple[VAE, np.ndarray, bytes]]:
    """Per likelihood: the model, the original array and its ``.vkz`` (3 chunks of 8 examples)."""
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[-24:] * 15).astype(np.uint8)[:, None]  # (24, 1, 8, 8), 0..240
    out = {}
    for likelihood, x in (("discretized_logistic", pixels), ("bernoulli", (pixels > 100).astype(np.uint8))):
        model = _model(likelihood)
        report = compress(model, x, config=CODING, chunk_size=8)
        assert report.compressed is not None
        out[likelihood] = (model, x, report.compressed)
    return out


# -- a forger's tools: take a file apart, put it together with the checksums recomputed --------------------------------
def _split(data: bytes) -> tuple[int, bytes, list[bytes]]:
    """Version, header bytes and chunk payloads of a well-formed file."""
    version, length = struct.unpack_from("<HI", data, len(MAGIC))
    header = data[14 : 14 + length]
    position, payloads = 14 + length + 4, []
    while position < len(data):
        (size,) = _U32.unpack_from(data, position)
        payloads.append(data[position + 4 : position + 4 + size])
        position += size + 8
    return version, header, payloads


def _frame(version: int, header: bytes, payloads: list[bytes], length: int | None = None) -> bytes:
    """A file from its parts, with the header length, the header CRC and every chunk's length and CRC recomputed."""
    head = MAGIC + struct.pack("<HI", version, len(header) if length is None else length) + header
    out = [head, _U32.pack(zlib.crc32(head))]
    for index, payload in enumerate(payloads):
        size = _U32.pack(len(payload))
        out += [size, payload, _U32.pack(zlib.crc32(_U32.pack(index) + size + payload))]
    return b"".join(out)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


DTYPES: list[Any] = [
    "|b1", "|u1", "|i1", "<u2", ">u2", "<i2", ">i2", "<u4", ">i4", "<i8", ">u8", "<f2", "<f4", ">f4", "<f8", ">f8",
    "|V1", "|S1", "<U1", "<c8", "|O", "<M8[s]", "uint8", "bool", "u1", "b1", "(2,)u1", "u1,u1", "V1000000000000",
    "(99999999999,99999999999)u1", "\ud800", "", 7, None,
]
SHAPES: list[Any] = [
    [24, 8, 8], [24, 8, 8, 1], [24, 1, 8, 8], [24, 64], [1536], [24, 1, 64], [24, 1, 1, 8, 8], [12, 2, 8, 8],
    [48, 1, 8, 4], [23, 1, 8, 8], [25, 1, 8, 8], [16, 1, 8, 8], [0, 1, 8, 8], [], [-24, 1, 8, 8], [24.0, 1, 8, 8],
    [True, 1, 8, 8], [10**30, 1, 8, 8], [[24], 1, 8, 8], "24,1,8,8", None,
]
WHOLE_HEADERS: list[bytes] = [
    b"", b"null", b"[]", b'"x"', b"1e999", b"1" * 5000, b"\xff\xfe{}", b"\xef\xbb\xbf{}", b"{" * 100_000,
    _nested(100_000).encode(), ('{"a":' * 50_000 + "1" + "}" * 50_000).encode(),
]


def _field_edits(header: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Headers with one field (or dtype and shape and layout together) changed, added or removed."""
    hexes = ["", "0" * 64, hashlib.sha256(b"x").hexdigest(), header["sha256"].upper(), header["sha256"][:-1]]
    values: dict[str, list[Any]] = {
        "channels_last": [True, 0, 1, None],
        "chunk_size": [1, 7, 12, 23, 24, 25, 0, -1, 2**40, 10**30, "8", 8.0],
        "num_chunks": [0, 1, 2, 4, 24, -1, 10**9],
        "likelihood": ["bernoulli", "discretized_logistic", "gaussian", ""],
        "model_fingerprint": hexes,
        "sha256": hexes,
        "vaekit_version": ["9.9.9", 1, json.loads(_nested(500)), 10**4000],
        "coding": [{}, None, {**header["coding"], "extra": 1}],
    }
    for key, choices in values.items():
        for value in choices:
            yield {**header, key: value}
    for key in header["coding"]:
        for value in (-1, 0, 1, 3, 4, 8, 11, 13, 16, 20, 24, 25, 2**31, True, "8"):
            yield {**header, "coding": {**header["coding"], key: value}}
    for count, chunk_size in ((8, 8), (16, 8), (23, 8), (25, 8), (32, 8), (24, 12), (24, 6), (24, 24)):
        yield {**header, "shape": [count, *header["shape"][1:]], "chunk_size": chunk_size,
               "num_chunks": -(-count // chunk_size)}  # another layout that is consistent in itself
    for key in header:
        yield {k: v for k, v in header.items() if k != key}
    yield {**header, "extra": 1}
    for dtype in DTYPES:  # the edits a bytes-only hash misses: another dtype or shape over the same bytes
        for shape in SHAPES:
            for channels_last in (False, True):
                yield {**header, "dtype": dtype, "shape": shape, "channels_last": channels_last}


def _byte_edits(header: bytes, rng: np.random.Generator, count: int) -> Iterator[bytes]:
    """The header with random bytes flipped, replaced, inserted or deleted (mostly JSON syntax a parser must refuse)."""
    alphabet = b'[]{}",:0123456789-+.eE \\u|<>bfiu\x00\xff'
    for trial in range(count):
        edited = bytearray(header)
        position = int(rng.integers(0, len(edited)))
        kind = trial % 4
        if kind == 0:
            edited[position] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            edited[position] = alphabet[int(rng.integers(0, len(alphabet)))]
        elif kind == 2:
            edited[position:position] = bytes(alphabet[int(i)] for i in rng.integers(0, len(alphabet), 3))
        else:
            del edited[position : position + int(rng.integers(1, 5))]
        yield bytes(edited)


def _chunk_edits(payloads: list[bytes], rng: np.random.Generator, count: int) -> Iterator[list[bytes]]:
    """Chunk payloads with a field, a batch size or a coded word changed (the chunk CRCs are recomputed)."""
    for trial in range(count):
        edited = list(payloads)
        index = int(rng.integers(0, len(edited)))
        payload = bytearray(edited[index])
        (steps,) = _U32.unpack_from(payload, 12)
        word = int(rng.integers(0, 5 + steps)) if trial % 2 else int(rng.integers(0, len(payload) // 4))
        (value,) = _U32.unpack_from(payload, 4 * word)
        choices = [(value + 1) % 2**32, (value - 1) % 2**32, 0, 1, 2**31, 2**32 - 1, value ^ 1 << (trial % 32)]
        _U32.pack_into(payload, 4 * word, choices[trial % len(choices)])
        edited[index] = bytes(payload)
        yield edited


def _forgeries(data: bytes, seed: int) -> Iterator[bytes]:
    version, header, payloads = _split(data)
    rng = np.random.default_rng(seed)
    fields = json.loads(header)
    for edited in _field_edits(fields):
        yield _frame(version, json.dumps(edited, sort_keys=True, separators=(",", ":")).encode(), payloads)
    for body in WHOLE_HEADERS:
        yield _frame(version, body, payloads)
    for value in (b"9" * 5000, b"1e999", b"-0", b"NaN", _nested(5000).encode(), b'"\\ud800"'):
        yield _frame(version, header.replace(b'"num_chunks":3', b'"num_chunks":' + value), payloads)
    for body in _byte_edits(header, rng, 1200):
        yield _frame(version, body, payloads)
    for other in (0, 1, 2, 3, FORMAT_VERSION + 1, 65535):
        yield _frame(other, header, payloads)
    for delta in (-3, -1, 1, 2, 1000, 2**31):
        yield _frame(version, header, payloads, length=max(0, len(header) + delta))
    for edited_payloads in _chunk_edits(payloads, rng, 120):
        yield _frame(version, header, edited_payloads)


def _outcome(decode: Callable[[bytes], np.ndarray], original: np.ndarray, data: bytes) -> str:
    try:
        array = decode(data)
    except VaeKitError:
        return "refused"
    except Exception as exc:  # the point: count every crash that is not a vaekit error
        return f"crashed ({type(exc).__name__})"
    same = array.dtype.str == original.dtype.str and array.shape == original.shape
    return "exact" if same and array.tobytes() == original.tobytes() else f"other data ({array.dtype} {array.shape})"


def _edited(data: bytes, **fields: Any) -> bytes:
    """The file with header fields replaced and every checksum a forger can compute recomputed."""
    version, header, payloads = _split(data)
    edited = {**json.loads(header), **fields}
    return _frame(version, json.dumps(edited, sort_keys=True, separators=(",", ":")).encode(), payloads)


# -- the checks, one by one --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("likelihood", "fields"),
    [
        ("bernoulli", {"dtype": "|b1", "shape": [24, 8, 8]}),  # the case: 0/1 bytes read back as bool
        ("bernoulli", {"dtype": "|i1"}),
        ("bernoulli", {"shape": [24, 8, 8, 1], "channels_last": True}),
        ("discretized_logistic", {"dtype": "|i1"}),  # 0..240 as uint8 and as int8: the same bytes
        ("discretized_logistic", {"shape": [24, 8, 8]}),
    ],
)
def test_another_dtype_or_shape_over_the_same_bytes_is_refused(cases, likelihood, fields):
    model, _, data = cases[likelihood]
    assert data[8:10] == FORMAT_VERSION.to_bytes(2, "little") and FORMAT_VERSION >= 2
    with pytest.raises(CompressedFileError, match="fails the file's SHA-256"):
        decompress(model, _edited(data, **fields))


def test_a_file_relabelled_as_format_1_is_refused(cases):
    """Format 1 hashes the bytes only; a format-2 file claiming to be format 1 fails its hash all the same."""
    model, _, data = cases["bernoulli"]
    _, header, payloads = _split(data)
    with pytest.raises(CompressedFileError, match="SHA-256"):
        decompress(model, _frame(1, header, payloads))
    with pytest.raises(CompressedFileError, match="SHA-256"):
        decompress(model, _edited(_frame(1, header, payloads), dtype="|b1", shape=[24, 8, 8]))


def test_a_deeply_nested_header_is_refused_in_one_line(capsys, tmp_path, cases):
    model, _, data = cases["discretized_logistic"]
    model_dir = save_model(model, tmp_path / "model")
    path, out = tmp_path / "nested.vkz", tmp_path / "out.npy"
    version, header, payloads = _split(data)
    path.write_bytes(_frame(version, header.replace(b'"num_chunks":3', b'"num_chunks":' + _nested(5000).encode()),
                            payloads))
    code = main(["decompress", str(model_dir), str(path), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("vaekit: error: "), err
    assert "nests 5001 levels deep" in err and "corrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "nested.vkz"]


def test_oversized_or_unparsable_headers_are_refused(cases):
    model, original, data = cases["discretized_logistic"]
    version, header, payloads = _split(data)
    padded = header[:-1] + b" " * (MAX_HEADER_BYTES - len(header)) + b"}"  # valid JSON, at the size limit
    restored = decompress(model, _frame(version, padded, payloads)).array
    assert restored is not None and restored.tobytes() == original.tobytes()
    with pytest.raises(CompressedFileError, match=f"more than the {MAX_HEADER_BYTES}"):
        decompress(model, _frame(version, padded + b" ", payloads))
    with pytest.raises(CompressedFileError, match="not valid JSON"):  # Python refuses ints of over 4300 digits
        decompress(model, _frame(version, header.replace(b'"num_chunks":3', b'"num_chunks":' + b"9" * 5000), payloads))
    for key in ("sha256", "model_fingerprint"):
        with pytest.raises(CompressedFileError, match=f"{key!r} is not 64 lowercase hex digits"):
            decompress(model, _edited(data, **{key: "0\n1"}))
    with pytest.raises(CompressedFileError, match="unknown dtype"):
        decompress(model, _edited(data, dtype="(99999999999,99999999999)u1"))


# -- the fuzz test -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("likelihood", ["discretized_logistic", "bernoulli"])
def test_forged_files_are_refused_or_decode_exactly(cases, likelihood):
    model, original, data = cases[likelihood]

    def decode(forged: bytes) -> np.ndarray:
        array = decompress(model, forged).array
        assert array is not None
        return array

    assert _frame(*_split(data)) == data  # the forger's tools rebuild the file byte for byte
    outcomes: Counter[str] = Counter()
    for forged in _forgeries(data, seed=len(likelihood)):
        outcomes[_outcome(decode, original, forged)] += 1
    print(f"{likelihood}: {sum(outcomes.values())} forgeries: {dict(outcomes)}")
    assert set(outcomes) <= {"refused", "exact"}, dict(outcomes)
    assert outcomes["refused"] >= 2500
