"""``compress`` / ``decompress`` end to end: bit-identical round trips from every input kind, the container's
checks, every bad input and fault the issue names (clear error, exit 2, no output file), and a fuzz test."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from vaekit.cli.main import main
from vaekit.codec.bitsback import CodingConfig
from vaekit.codec.compression import compress, decompress
from vaekit.codec.container import FORMAT_VERSION, CompressedFileError
from vaekit.config import ModelConfig
from vaekit.errors import ConfigError, DataError, OutputError, VaeKitError
from vaekit.models.serialization import save_model
from vaekit.models.vae import VAE

CODING = CodingConfig(latent_bits=12, batch_size=16)


def _model(likelihood: str, seed: int = 0, **fields: object) -> VAE:
    torch.manual_seed(seed)
    settings: dict[str, object] = {"likelihood": likelihood, "latent_dim": 3, "hidden_dims": (16,), **fields}
    return VAE(ModelConfig(**settings), (1, 8, 8)).eval()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """(60, 8, 8) uint8: scikit-learn's digits scaled to 0..240."""
    from sklearn.datasets import load_digits

    return (load_digits().images[:60] * 15).astype(np.uint8)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        name: save_model(_model(likelihood, seed=seed), root / name)
        for name, likelihood, seed in [
            ("8bit", "discretized_logistic", 0), ("8bit-other", "discretized_logistic", 1), ("binary", "bernoulli", 0),
        ]
    }


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == b.tobytes()


# -- round trips ------------------------------------------------------------------------------------------------------
def _arrays(pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
    binary = pixels > 100
    return [
        ("discretized_logistic", pixels),
        ("discretized_logistic", pixels[:, None]),  # (N, 1, H, W)
        ("discretized_logistic", pixels[..., None]),  # channels last (N, H, W, 1)
        ("discretized_logistic", pixels.astype(">i2")),  # big-endian 16-bit integers holding 8-bit values
        ("bernoulli", binary),  # bool
        ("bernoulli", binary.astype(np.float32)),
        ("bernoulli", binary.astype(np.int64)[:, None]),
    ]


@pytest.mark.parametrize("case", range(7))
def test_python_round_trip_is_bit_identical(pixels, case):
    likelihood, x = _arrays(pixels)[case]
    model = _model(likelihood)
    report = compress(model, x, config=CODING, chunk_size=25)
    assert report.count == 60 and report.chunks == 3 and report.compressed is not None
    assert report.compressed_bytes == len(report.compressed)
    assert report.bits_per_dim > 0 and report.elbo_bits_per_dim > 0 and report.initial_bits > 0
    restored = decompress(model, report.compressed)
    assert restored.array is not None and _same_array(x, restored.array)


def test_rate_tracks_the_negative_elbo_of_a_trained_model(tmp_path, pixels):
    from vaekit.config import resolve_config
    from vaekit.data import from_arrays

    x = np.concatenate([pixels] * 5)  # 300 examples
    config = resolve_config(overrides=[
        "model.likelihood=discretized_logistic", "model.latent_dim=4", "model.hidden_dims=[64]",
        "train.epochs=15", "train.batch_size=32", "train.device=cpu", "train.num_images=4",
    ])
    model = vaekit.train(config, tmp_path / "run", data=from_arrays(x, config=config.data)).model
    report = compress(model, x, config=CodingConfig(batch_size=64))
    coded_bits = 8 * (report.compressed_bytes - report.container_bytes)
    elbo_bits = report.elbo_bits_per_dim * report.count * report.num_dims
    assert report.elbo_bits_per_dim < 5.0  # it learned something (an untrained model needs about 8)
    assert abs(coded_bits - elbo_bits) < 0.02 * elbo_bits


def test_cli_round_trip_of_npy_and_idx_files(capsys, tmp_path, pixels, model_dirs):
    npy = tmp_path / "pixels.npy"
    np.save(npy, pixels)
    code, out, _ = _run(capsys, "compress", str(model_dirs["8bit"]), str(npy), "-o", str(tmp_path / "p.vkz"),
                        "--latent-bits", "12", "--chunk-size", "32", "--json", str(tmp_path / "r.json"), "--quiet")
    assert code == 0 and "bits/dim (actual)" in out and "bits/dim (-ELBO)" in out
    assert (tmp_path / "r.json").is_file()
    code, out, _ = _run(capsys, "decompress", str(model_dirs["8bit"]), str(tmp_path / "p.vkz"),
                        "-o", str(tmp_path / "back.npy"), "--quiet")
    assert code == 0 and "60 examples" in out
    assert _same_array(pixels, np.load(tmp_path / "back.npy"))

    # An IDX file (gzipped) in, the same IDX bytes out.
    idx = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in pixels.shape) + pixels.tobytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx))
    code, _, _ = _run(capsys, "compress", str(model_dirs["8bit"]), str(tmp_path / "t10k-images-idx3-ubyte.gz"),
                      "-o", str(tmp_path / "i.vkz"), "--quiet")
    assert code == 0
    code, _, _ = _run(capsys, "decompress", str(model_dirs["8bit"]), str(tmp_path / "i.vkz"),
                      "-o", str(tmp_path / "out-images-idx3-ubyte"), "--quiet")
    assert code == 0 and (tmp_path / "out-images-idx3-ubyte").read_bytes() == idx


def test_image_folder_round_trip(tmp_path, pixels, model_dirs):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(pixels[:12]):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    report = compress(model_dirs["8bit"], folder, tmp_path / "f.vkz", config=CODING)
    assert report.count == 12 and report.example_shape == [1, 8, 8]
    restored = decompress(model_dirs["8bit"], tmp_path / "f.vkz")
    assert restored.array is not None and _same_array(pixels[:12, None], restored.array)


def test_progress_bar_on_long_inputs(capsys, monkeypatch, pixels):
    from vaekit.codec import compression as module

    model = _model("discretized_logistic")
    compress(model, pixels, config=CODING, progress=True)
    assert "compress" not in capsys.readouterr().err  # a short input shows no bar
    monkeypatch.setattr(module, "PROGRESS_DELAY_S", 0.0)
    report = compress(model, pixels, config=CODING, progress=True)
    assert "compress" in capsys.readouterr().err
    decompress(model, report.compressed, progress=True)
    assert "decompress" in capsys.readouterr().err


# -- bad input and faults: a clear error, exit code 2, no output file ------------------------------------------------
@pytest.fixture(scope="module")
def vkz(tmp_path_factory: pytest.TempPathFactory, pixels: np.ndarray, model_dirs: dict[str, Path]) -> bytes:
    path = tmp_path_factory.mktemp("vkz") / "p.vkz"
    compress(model_dirs["8bit"], pixels, path, config=CODING, chunk_size=20)
    return path.read_bytes()


def _damaged(data: bytes) -> dict[str, bytes]:
    version = bytearray(data)
    version[8:10] = (FORMAT_VERSION + 1).to_bytes(2, "little")
    middle = bytearray(data)
    middle[len(data) // 2] ^= 0x10
    last = bytearray(data)
    last[-1] ^= 0x01
    return {
        "truncated": data[: len(data) - 37],
        "flipped byte": bytes(middle),
        "flipped last byte": bytes(last),
        "wrong magic": b"PK\x03\x04" + data[4:],
        "future version": bytes(version),
        "inserted bytes": data[:200] + b"\x00\x01" + data[200:],
        "empty": b"",
    }


MESSAGES = {
    "truncated": "truncated", "flipped byte": "checksum", "flipped last byte": "checksum",
    "wrong magic": "not a vaekit compressed file", "future version": "upgrade vaekit",
    "inserted bytes": "", "empty": "not a vaekit compressed file",
}


@pytest.mark.parametrize("fault", list(MESSAGES))
def test_damaged_files_are_rejected_by_the_cli(capsys, tmp_path, vkz, model_dirs, fault):
    path = tmp_path / "bad.vkz"
    path.write_bytes(_damaged(vkz)[fault])
    out = tmp_path / "out.npy"
    code, _, err = _run(capsys, "decompress", str(model_dirs["8bit"]), str(path), "-o", str(out), "--quiet")
    _assert_one_line_error(code, err, MESSAGES[fault])
    assert not out.exists() and list(tmp_path.iterdir()) == [path]  # no output, no temporary file


def test_decompressing_with_another_model_is_rejected(capsys, tmp_path, vkz, model_dirs):
    path = tmp_path / "p.vkz"
    path.write_bytes(vkz)
    for other, fragment in (("8bit-other", "another model"), ("binary", "likelihood")):
        code, _, err = _run(capsys, "decompress", str(model_dirs[other]), str(path), "-o", str(tmp_path / "o.npy"))
        _assert_one_line_error(code, err, fragment, "decompress with the model that compressed it")
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize(
    ("model", "data", "fragments"),
    [
        ("8bit", np.zeros((4, 7, 7), np.uint8), ("shape (7, 7)", "(1, 8, 8)")),
        ("8bit", np.zeros((4, 8, 8), np.float32), ("dtype float32", "does not match")),
        ("8bit", np.full((4, 8, 8), 300, np.int16), ("300", "outside the support")),
        ("8bit", np.full((4, 8, 8), -1, np.int16), ("-1", "outside the support")),
        ("binary", np.full((4, 8, 8), 0.5, np.float32), ("0.5", "outside the support", "binarize")),
        ("binary", np.full((4, 8, 8), np.nan, np.float64), ("nan", "outside the support")),
        ("binary", np.full((4, 8, 8), -0.0, np.float32), ("-0.0",)),
        ("binary", np.zeros((0, 8, 8), np.uint8), ("at least one example",)),
    ],
)
def test_bad_data_is_rejected_by_the_cli(capsys, tmp_path, model_dirs, model, data, fragments):
    npy = tmp_path / "data.npy"
    np.save(npy, data)
    out = tmp_path / "x.vkz"
    code, _, err = _run(capsys, "compress", str(model_dirs[model]), str(npy), "-o", str(out), "--quiet")
    _assert_one_line_error(code, err, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npy"]


def _npy_with_header(header: str, version: int = 1) -> bytes:
    size = len(header).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + header.encode("latin-1")


MALFORMED = {  # numpy raises tokenize.TokenError, SyntaxError, OverflowError, ... on these, not only ValueError
    "bad.npy": b"\x93NUMPY\x01\x00\x04\x00{'de",
    "open.npy": _npy_with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (3,\n"),
    "huge.npy": _npy_with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (" + "9" * 40 + ",), }\n"),
    "long.npy": _npy_with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (1,)}" + " " * 20000 + "\n", 2),
    "echo.npy": _npy_with_header("{'descr': " + "[" * 400 + "]" * 400 + ", 'fortran_order': False, 'shape': (1,)}\n"),
    "bad.npz": b"PK\x03\x04" + b"\x00" * 40,
    "member.npz": b"",  # a zip whose x.npy is bad.npy, written below
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_npy_and_npz_are_refused_by_the_cli(capsys, tmp_path, model_dirs, name):
    import zipfile

    path = tmp_path / name
    if name == "member.npz":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.npy", MALFORMED["bad.npy"])
    else:
        path.write_bytes(MALFORMED[name])
    code, _, err = _run(capsys, "compress", str(model_dirs["8bit"]), str(path), "-o", str(tmp_path / "x.vkz"))
    writer = "numpy.savez" if name.endswith(".npz") else "numpy.save"
    _assert_one_line_error(code, err, "cannot read", name, f"write it with {writer}")
    assert "Traceback" not in err and len(err) < 400
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_other_bad_requests(tmp_path, pixels, model_dirs):
    with pytest.raises(ConfigError, match="continuous"):
        compress(_model("gaussian"), pixels)
    with pytest.raises(DataError, match="not found"):
        compress(model_dirs["8bit"], tmp_path / "missing.npy")
    with pytest.raises(DataError, match="cannot compress"):
        (tmp_path / "table.csv").write_text("a,b\n1,2\n")
        compress(model_dirs["8bit"], tmp_path / "table.csv")
    report = compress(model_dirs["8bit"], pixels, config=CODING)
    with pytest.raises(OutputError, match=r"\.npy"):
        decompress(model_dirs["8bit"], report.compressed, tmp_path / "out.txt")
    with pytest.raises(OutputError, match="directory"):
        compress(model_dirs["8bit"], pixels, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    np.save(tmp_path / "same.npy", pixels)
    with pytest.raises(OutputError, match="is the input file"):
        compress(model_dirs["8bit"], tmp_path / "same.npy", tmp_path / "same.npy", config=CODING)
    np.testing.assert_array_equal(np.load(tmp_path / "same.npy"), pixels)  # left as it was
    (tmp_path / "c.vkz").write_bytes(report.compressed)
    with pytest.raises(OutputError, match=r"is the \.vkz being read"):
        decompress(model_dirs["8bit"], tmp_path / "c.vkz", tmp_path / "c.vkz")


def test_a_flipped_byte_anywhere_is_rejected(pixels):
    model = _model("bernoulli")
    data = compress(model, pixels[:12] > 100, config=CODING, chunk_size=5).compressed
    assert data is not None
    for position in range(len(data)):  # every byte of the file: magic, header, each chunk, each checksum
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        with pytest.raises(CompressedFileError):
            decompress(model, bytes(damaged))


# -- fuzz --------------------------------------------------------------------------------------------------------------
def test_fuzzed_files_are_rejected_or_decode_exactly(pixels, vkz, model_dirs):
    """Random truncations, bit flips and inserted or deleted bytes: every mutation is rejected with a vaekit error
    or decodes to the exact original; nothing crashes, hangs or returns other data."""
    model = vaekit.load(model_dirs["8bit"])
    rng = np.random.default_rng(2024)
    outcomes = {"rejected": 0, "exact": 0}
    for trial in range(240):
        data = bytearray(vkz)
        kind = trial % 4
        if kind == 0:
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == 1:
            for _ in range(int(rng.integers(1, 4))):
                position = int(rng.integers(0, len(data)))
                data[position] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:
            position = int(rng.integers(0, len(data) + 1))
            data[position:position] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        else:
            position = int(rng.integers(0, len(data)))
            del data[position : position + int(rng.integers(1, 9))]
        try:
            result = decompress(model, bytes(data))
        except VaeKitError:
            outcomes["rejected"] += 1
            continue
        assert result.array is not None and _same_array(pixels, result.array), f"trial {trial} returned other data"
        outcomes["exact"] += 1
    assert outcomes["rejected"] >= 200  # nearly every mutation damages something the checks cover


def test_readme_compression_example_runs(tmp_path, monkeypatch):
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Lossless compression") :]
    (code,) = re.findall(r"```py\n(.*?)```", section[: section.index("\n## ", 3)], flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the documented example, unchanged
    report = namespace["report"]
    assert report.count == 1797 and (tmp_path / "runs" / "digits.vkz").stat().st_size == report.compressed_bytes
    assert report.bits_per_dim < 8.0


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_files_decompress_whatever_the_thread_count(pixels, architecture):
    """Matrix products round differently on different thread counts; the coder's networks run on one thread."""
    model = _model("discretized_logistic", architecture=architecture, channels=(4, 8), mixture_components=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = compress(model, pixels, config=CODING).compressed
        torch.set_num_threads(1)
        one = compress(model, pixels, config=CODING).compressed
        restored = decompress(model, two)
    finally:
        torch.set_num_threads(threads)
    assert one == two
    assert restored.array is not None and _same_array(pixels, restored.array)
    assert torch.get_num_threads() == threads
