"""Unit tests of vaekit.data: readers, splits, preprocessing, binarization and error messages."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import data
from vaekit.config import DataConfig
from vaekit.data import DATASETS, DataBundle, ExampleSet, Preprocessing, builtin, load_data, load_examples, read_idx
from vaekit.errors import ConfigError, DataError

REAL_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_fake_mnist(folder: Path, n_train: int = 30, n_test: int = 10, compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                  compress=compress)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress=compress)


# --- built-in datasets


def test_digits_shapes_ranges_labels_and_split() -> None:
    bundle = load_data(DataConfig(source="digits", val_fraction=0.1, seed=0))
    assert isinstance(bundle, DataBundle)
    assert DATASETS == ("digits", "mnist", "fashion-mnist")
    assert bundle.preprocessing.shape == (1, 8, 8) and bundle.preprocessing.kind == "unit"
    assert bundle.preprocessing.scale == 16.0
    assert len(bundle.train) == 1350 and len(bundle.val) == 150
    assert bundle.test is not None and len(bundle.test) == builtin.DIGITS_TEST_SIZE
    assert not set(bundle.train.rows) & set(bundle.val.rows)
    x = bundle.train.tensor()
    assert x.shape == (1350, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert bundle.train.labels is not None and bundle.train.labels.dtype == np.int64
    assert set(bundle.train.labels.tolist()) == set(range(10))
    # The split is seeded: same seed same split, other seed another one.
    again = load_data(DataConfig(source="digits", seed=0))
    other = load_data(DataConfig(source="digits", seed=1))
    assert np.array_equal(again.val.rows, bundle.val.rows)
    assert not np.array_equal(other.val.rows, bundle.val.rows)


def test_digits_load_examples_test_split_matches_bundle() -> None:
    bundle = load_data(DataConfig(source="digits"))
    test = load_examples("digits", bundle.preprocessing, split="test")
    assert bundle.test is not None
    assert torch.equal(test.tensor(), bundle.test.tensor())
    assert len(load_examples("digits", bundle.preprocessing, split="train")) == 1500
    with pytest.raises(ConfigError, match="'train' or 'test'"):
        load_examples("digits", bundle.preprocessing, split="validation")


def test_subset_carries_labels() -> None:
    bundle = load_data(DataConfig(source="digits"))
    sub = bundle.train.subset(torch.tensor([3, 0, 7]))
    assert len(sub) == 3 and sub.labels is not None
    assert sub.labels.tolist() == [bundle.train.labels[i] for i in (3, 0, 7)]
    assert torch.equal(sub.batch(np.array([1])), bundle.train.batch(np.array([0])))


# --- IDX files


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path: Path, compress: bool, dtype: type) -> None:
    array = (np.arange(2 * 3 * 4) * 3).reshape(2, 3, 4).astype(dtype)
    path = write_idx(tmp_path / "a-idx3", array, compress=compress)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)


def test_idx_truncated_and_bad_magic(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a-idx3", np.zeros((5, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    header_only = tmp_path / "h-idx3"
    header_only.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="header"):
        read_idx(header_only)
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    broken_gz = tmp_path / "b-idx3.gz"
    broken_gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x10" + b"\x00" * 16)[:-10])
    with pytest.raises(DataError, match=str(broken_gz.name)):
        read_idx(broken_gz)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_from_data_dir_or_subfolder(tmp_path: Path, compress: bool) -> None:
    write_fake_mnist(tmp_path / "mnist", compress=compress)
    for data_dir in (tmp_path, tmp_path / "mnist"):
        bundle = load_data(DataConfig(source="mnist", data_dir=str(data_dir), val_fraction=0.2))
        assert bundle.preprocessing.shape == (1, 28, 28) and bundle.preprocessing.scale == 255.0
        assert (len(bundle.train), len(bundle.val)) == (24, 6)
        assert bundle.test is not None and len(bundle.test) == 10
        assert bundle.test.labels is not None and bundle.test.labels.tolist() == [i % 10 for i in range(10)]
        x = bundle.train.tensor()
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_mnist_missing_files_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_data(DataConfig(source="fashion-mnist"))
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "fashion-mnist") in message
    assert "vaekit data download fashion-mnist" in message


def test_resolve_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VAEKIT_DATA", raising=False)
    assert data.resolve_data_dir(None) == Path.home() / ".cache" / "vaekit" / "data"
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    assert data.resolve_data_dir(None) == tmp_path
    assert data.resolve_data_dir("/x/y") == Path("/x/y")


def test_real_mnist() -> None:
    if not (REAL_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {REAL_MNIST}")
    pre = Preprocessing(shape=(1, 28, 28), kind="unit", scale=255.0, source="mnist")
    for data_dir in (REAL_MNIST, REAL_MNIST.parent):
        train = load_examples("mnist", pre, data_dir=str(data_dir), split="train")
        assert len(train) == 60000 and train.shape == (1, 28, 28)
        assert train.labels is not None and int(train.labels[0]) == 5
        assert set(np.unique(train.labels).tolist()) == set(range(10))
    test = load_examples("mnist", pre, data_dir=str(REAL_MNIST), split="test")
    assert len(test) == 10000
    x = test.batch(np.arange(16))
    assert x.shape == (16, 1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) == 1.0


# --- array files


def test_npy_is_memory_mapped_and_standardized_on_train(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(3.0, 2.0, (200, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    bundle = load_data(DataConfig(source=str(tmp_path / "x.npy"), val_fraction=0.25, seed=3))
    assert isinstance(bundle.train.raw, np.memmap)
    pre = bundle.preprocessing
    assert pre.shape == (5,) and pre.kind == "real" and pre.mean is not None and pre.std is not None
    train = bundle.train.tensor().numpy()
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(pre.mean, array[bundle.train.rows].mean(0), rtol=1e-5)
    batch = bundle.val.batch(torch.tensor([0, 2]))
    expected = (array[bundle.val.rows[[0, 2]]] - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(batch.numpy(), expected, atol=1e-5)
    assert bundle.test is None and bundle.train.labels is None
    raw_only = load_data(DataConfig(source=str(tmp_path / "x.npy"), standardize=False))
    assert raw_only.preprocessing.mean is None


def test_npy_image_layouts(tmp_path: Path) -> None:
    nhwc = np.random.default_rng(0).integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "nhwc.npy", nhwc)
    bundle = load_data(DataConfig(source=str(tmp_path / "nhwc.npy"), val_fraction=0.0))
    assert bundle.preprocessing.shape == (3, 5, 4) and bundle.preprocessing.kind == "unit"
    assert isinstance(bundle.train.raw, np.memmap)
    np.testing.assert_allclose(bundle.train.tensor().numpy(), nhwc.transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
    np.save(tmp_path / "nhw.npy", (nhwc[..., 0] > 127).astype(np.uint8))
    binary = load_data(DataConfig(source=str(tmp_path / "nhw.npy"), val_fraction=0.0))
    assert binary.preprocessing.shape == (1, 5, 4)
    assert binary.preprocessing.kind == "binary" and binary.preprocessing.scale == 1.0
    np.save(tmp_path / "unit.npy", np.linspace(0, 1, 40, dtype=np.float32).reshape(4, 10))
    assert load_data(DataConfig(source=str(tmp_path / "unit.npy"))).preprocessing.kind == "unit"
    np.save(tmp_path / "bad.npy", np.zeros((4, 2, 2, 2, 2), np.float32))
    with pytest.raises(DataError, match="per-example shape"):
        load_data(DataConfig(source=str(tmp_path / "bad.npy")))


def test_npz_with_labels(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((40, 6)).astype(np.float32)
    y = np.array(["cat", "dog"] * 20)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    bundle = load_data(DataConfig(source=str(tmp_path / "d.npz"), val_fraction=0.25))
    assert bundle.preprocessing.kind == "unit" and bundle.preprocessing.shape == (6,)
    assert bundle.val.labels is not None
    assert bundle.val.labels.tolist() == [int(y[r] == "dog") for r in bundle.val.rows]
    np.savez(tmp_path / "only.npz", features=x)
    assert load_data(DataConfig(source=str(tmp_path / "only.npz"))).train.labels is None
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(DataError, match="under 'x'"):
        load_data(DataConfig(source=str(tmp_path / "two.npz")))


# --- tables


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_standardized_on_train_and_reused(tmp_path: Path, suffix: str) -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(10, 3, 120), "b": rng.normal(-2, 0.5, 120), "const": 7.0,
                          "label": rng.choice(["x", "y", "z"], 120)})
    path = tmp_path / f"t{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    bundle = load_data(DataConfig(source=str(path), label_column="label", val_fraction=0.2))
    pre = bundle.preprocessing
    assert pre.columns == ("a", "b", "const") and pre.kind == "real" and pre.label_column == "label"
    assert pre.std is not None and pre.std[2] == 1.0  # constant column: std guarded
    train = bundle.train.tensor().numpy()
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)
    assert abs(bundle.val.tensor().numpy()[:, 0].mean()) > 1e-6  # val is not refitted
    assert bundle.train.labels is not None and set(bundle.train.labels.tolist()) <= {0, 1, 2}

    # New data with reordered columns: the stored columns, mean and std are used.
    new = frame.iloc[:10][["b", "label", "a", "const"]]
    new_path = tmp_path / f"new{suffix}"
    new.to_csv(new_path, index=False) if suffix == ".csv" else new.to_parquet(new_path)
    examples = load_examples(str(new_path), pre)
    expected = (frame.iloc[:10][["a", "b", "const"]].to_numpy() - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(examples.tensor().numpy(), expected, atol=1e-4)
    assert examples.labels is not None and len(examples.labels) == 10

    with pytest.raises(DataError, match="lacks columns"):
        frame[["a", "label"]].to_csv(tmp_path / "few.csv", index=False)
        load_examples(str(tmp_path / "few.csv"), pre)
    with pytest.raises(DataError, match=r"1 columns the model was not trained on \('extra'\); drop them"):
        frame.assign(extra=1.0).to_csv(tmp_path / "more.csv", index=False)  # more columns than in training
        load_examples(str(tmp_path / "more.csv"), pre)


def test_table_errors(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    (tmp_path / "s.csv").write_text("a,name\n1,x\n2,y\n3,z\n")
    with pytest.raises(DataError, match="label column 'nope' not in"):
        load_data(DataConfig(source=str(tmp_path / "s.csv"), label_column="nope"))
    (tmp_path / "n.csv").write_text("a,b\n1,2\n3,\n5,6\n")
    match = r"column 'b' .* 1 missing \(NaN\) or infinite values \(first in row 1\); impute"
    with pytest.raises(DataError, match=match):
        load_data(DataConfig(source=str(tmp_path / "n.csv")))


# --- image folders


def test_image_folder_labels_and_resize(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for label, color in (("zebra", 200), ("ant", 50)):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (10 + i, 6), (color, color, color)).save(root / label / f"{i}.png")
    bundle = load_data(DataConfig(source=str(root), val_fraction=0.0, image_size=(4, 5), grayscale=True))
    pre = bundle.preprocessing
    assert pre.shape == (1, 4, 5) and pre.channels == 1 and pre.image_size == (4, 5) and pre.scale == 255.0
    assert bundle.train.labels is not None
    assert bundle.train.labels.tolist() == [0, 0, 0, 1, 1, 1]  # ant, zebra
    x = bundle.train.tensor()
    np.testing.assert_allclose(x[:3].numpy(), 50 / 255, atol=2e-3)
    rgb = load_data(DataConfig(source=str(root), val_fraction=0.0))
    assert rgb.preprocessing.shape == (3, 6, 10) and rgb.preprocessing.channels == 3
    # load_examples resizes new images to the model's size and channels.
    other = tmp_path / "other"
    other.mkdir()
    Image.new("L", (30, 20), 128).save(other / "a.jpg")
    assert load_examples(str(other), pre).tensor().shape == (1, 1, 4, 5)


def test_image_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no PNG/JPEG images"):
        load_data(DataConfig(source=str(empty)))
    (tmp_path / "bad").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "bad" / "a.png")
    (tmp_path / "bad" / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*b\.png"):
        load_data(DataConfig(source=str(tmp_path / "bad")))
    (tmp_path / "deep").mkdir()
    Image.fromarray(np.full((4, 4), 30598, dtype=np.uint16)).save(tmp_path / "deep" / "a.png")  # 16-bit
    with pytest.raises(DataError, match=r"a\.png' has I;16 pixels \(16/32-bit\), which would be clipped to 8 bits"):
        load_data(DataConfig(source=str(tmp_path / "deep")))


# --- binarization


def test_static_binarization_deterministic() -> None:
    cfg = DataConfig(source="digits", binarize="static", seed=5)
    a, b = load_data(cfg), load_data(cfg)
    xa = a.train.tensor()
    assert set(torch.unique(xa).tolist()) == {0.0, 1.0}
    assert torch.equal(xa, b.train.tensor())
    assert a.test is not None and set(torch.unique(a.test.tensor()).tolist()) == {0.0, 1.0}
    # The draw follows the example, not the batch it is read in.
    assert torch.equal(a.train.batch(np.array([4, 1])), xa[[4, 1]])
    # On average the draw keeps the intensities.
    plain = load_data(DataConfig(source="digits", seed=5)).train.tensor()
    assert abs(float(xa.mean()) - float(plain.mean())) < 0.01
    other = load_data(DataConfig(source="digits", binarize="static", seed=6))
    assert not torch.equal(other.test.tensor(), a.test.tensor())  # type: ignore[union-attr]
    dynamic = load_data(DataConfig(source="digits", binarize="dynamic"))
    assert torch.equal(dynamic.train.tensor(), load_data(DataConfig(source="digits")).train.tensor())


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_binarize_real_data_fails(tmp_path: Path, mode: str) -> None:
    np.save(tmp_path / "r.npy", np.linspace(-3, 3, 60, dtype=np.float32).reshape(10, 6))
    with pytest.raises(DataError, match=f"binarize='{mode}' needs values in \\[0, 1\\]"):
        load_data(DataConfig(source=str(tmp_path / "r.npy"), binarize=mode))  # type: ignore[arg-type]


# --- validation


def test_bad_inputs(tmp_path: Path) -> None:
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(DataError, match="0 examples"):
        load_data(DataConfig(source=str(tmp_path / "empty.npy")))
    np.save(tmp_path / "one.npy", np.zeros((1, 4), np.float32))
    with pytest.raises(DataError, match=r"lower data\.val_fraction or add data"):
        load_data(DataConfig(source=str(tmp_path / "one.npy"), val_fraction=0.5))
    nan = np.ones((8, 3), np.float32)
    nan[5, 1], nan[6, 0] = np.nan, np.inf
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(DataError, match=r"2 NaN or infinite values \(first in example 5\)"):
        load_data(DataConfig(source=str(tmp_path / "nan.npy")))
    for fraction in (1.0, -0.1):
        with pytest.raises(ConfigError, match="val_fraction"):
            load_data(DataConfig(source="digits", val_fraction=fraction))
    with pytest.raises(DataError, match=r"not found.*digits, mnist, fashion-mnist"):
        load_data(DataConfig(source=str(tmp_path / "missing.npy")))
    (tmp_path / "x.dat").write_text("1 2 3")  # (.txt is text: vaekit.data.text)
    with pytest.raises(DataError, match=r"unsupported data file .*\.dat.*\.npy, \.npz, \.csv, \.parquet"):
        load_data(DataConfig(source=str(tmp_path / "x.dat")))
    (tmp_path / "junk.npy").write_bytes(b"garbage bytes")
    with pytest.raises(DataError, match=r"cannot read .*junk\.npy"):
        load_data(DataConfig(source=str(tmp_path / "junk.npy")))


def npy_bytes(header: str, version: int = 1, data: bytes = b"") -> bytes:
    """An .npy file with the given header text, whatever it says (numpy.save would never write most of these)."""
    size = struct.pack("<H" if version == 1 else "<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + size + header.encode("latin-1") + data


# numpy reads an .npy header by tokenizing and evaluating it as a Python literal: on garbage it raises more than
# ValueError (tokenize.TokenError, OverflowError, ...), sometimes with a message over several lines.
MALFORMED_NPY = {
    "truncated header": b"\x93NUMPY\x01\x00\x04\x00{'de",  # tokenize.TokenError
    "unclosed bracket": npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (3,\n"),  # TokenError
    "huge dimension": npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (" + "9" * 40 + ",), }\n"),
    "oversized header": npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (1,)}" + " " * 20000 + "\n", 2),
    "not a literal": npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (2**40,)}\n"),
    "not UTF-8": npy_bytes("{'descr': '\xff', 'fortran_order': False, 'shape': (1,)}\n", 3),
    "nested": npy_bytes("{'descr': " + "[" * 400 + "]" * 400 + ", 'fortran_order': False, 'shape': (1,)}\n"),
    "missing data": npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (100, 8, 8), }\n"),
}


@pytest.mark.parametrize("case", list(MALFORMED_NPY))
def test_malformed_npy_is_refused_in_one_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    from vaekit.cli import main

    bad = tmp_path / "bad.npy"
    bad.write_bytes(MALFORMED_NPY[case])
    with pytest.raises(DataError, match=r"cannot read '.*bad\.npy'.*numpy\.save"):
        load_data(DataConfig(source=str(bad)))
    code = main(["train", "--data", str(bad), "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: error: cannot read") and "bad.npy" in lines[0], err
    assert "numpy.save" in lines[0] and len(lines[0]) < 400


def test_malformed_npz_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import zipfile

    from vaekit.cli import main

    good = io.BytesIO()
    np.save(good, np.zeros((8, 4), np.float32))
    bad = tmp_path / "bad.npz"
    for broken in ("x.npy", "y.npy", "the archive"):
        if broken == "the archive":
            bad.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
        else:
            with zipfile.ZipFile(bad, "w") as archive:
                for member in ("x.npy", "y.npy"):
                    archive.writestr(member, MALFORMED_NPY["truncated header"] if member == broken else good.getvalue())
        with pytest.raises(DataError, match=r"cannot read '.*bad\.npz'.*numpy\.savez"):
            load_data(DataConfig(source=str(bad)))
        code = main(["train", "--data", str(bad), "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("vaekit: error: cannot read"), err


def test_load_examples_shape_mismatch(tmp_path: Path) -> None:
    pre = load_data(DataConfig(source="digits")).preprocessing
    np.save(tmp_path / "v.npy", np.zeros((3, 13), np.float32))
    with pytest.raises(DataError, match=r"shape \(13,\).*expects \(1, 8, 8\).*trained on other data"):
        load_examples(str(tmp_path / "v.npy"), pre)
    np.save(tmp_path / "real.npy", np.full((3, 8, 8), 7.5, np.float32))
    with pytest.raises(DataError, match=r"outside \[0, 1\].*rescale"):
        load_examples(str(tmp_path / "real.npy"), pre)


def test_files_for_a_model_map_into_its_range_by_their_own_kind(tmp_path: Path) -> None:
    """A model trained on digits (0..16, divided by 16) reads uint8 files divided by 255 and 0/1 files as they
    are: the values land in [0, 1] as the file means them, never rescaled by the training data's divisor."""
    pre = load_data(DataConfig(source="digits")).preprocessing
    np.save(tmp_path / "u8.npy", np.full((3, 8, 8), 200, np.uint8))
    np.testing.assert_allclose(load_examples(str(tmp_path / "u8.npy"), pre).tensor().numpy(), 200 / 255, rtol=1e-6)
    binary = (np.arange(3 * 64).reshape(3, 8, 8) % 2).astype(np.uint8)
    np.save(tmp_path / "b.npy", binary)
    np.testing.assert_array_equal(load_examples(str(tmp_path / "b.npy"), pre).tensor().numpy()[:, 0], binary)


# --- download


def test_download_offline_names_files_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(builtin.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        data.download("mnist", str(tmp_path))
    message = str(info.value)
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", str(tmp_path / "mnist")):
        assert name in message
    assert "network unreachable" in message
    assert [p.name for p in (tmp_path / "mnist").iterdir()] == []  # no partial files left
    with pytest.raises(ConfigError, match="mnist, fashion-mnist"):
        data.download("cifar10", str(tmp_path))


def test_download_verifies_checksums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (REAL_MNIST / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {REAL_MNIST}")

    def serve(url: str, timeout: float):  # a local "mirror" serving the real files
        return open(REAL_MNIST / url.rsplit("/", 1)[1], "rb")

    monkeypatch.setattr(builtin.urllib.request, "urlopen", serve)
    folder = data.download("mnist", str(tmp_path))
    assert sorted(p.name for p in folder.iterdir()) == sorted(builtin.CHECKSUMS["mnist"])
    shutil.rmtree(folder)
    monkeypatch.setitem(builtin.CHECKSUMS["mnist"], "t10k-labels-idx1-ubyte.gz", ("sha256", "0" * 64))
    with pytest.raises(DataError, match="sha256"):
        data.download("mnist", str(tmp_path))


# --- preprocessing record


def test_preprocessing_json_round_trip() -> None:
    pre = Preprocessing(shape=(3,), kind="real", scale=1.0, mean=(0.5, 1.0, -2.0), std=(1.0, 2.0, 3.0),
                        columns=("a", "b", "c"), source="t.csv", label_column="y")
    back = Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert back == pre
    raw = np.array([[0.5, 3.0, 1.0]], np.float32)
    np.testing.assert_allclose(back.apply(raw), [[0.0, 1.0, 1.0]])
    image = Preprocessing(shape=(1, 4, 4), kind="unit", scale=255.0, image_size=(4, 4), channels=1)
    assert Preprocessing.from_dict(json.loads(json.dumps(image.to_dict()))) == image
    with pytest.raises(DataError, match="unknown preprocessing key"):
        Preprocessing.from_dict({**pre.to_dict(), "colour": 1})
    with pytest.raises(DataError, match="kind"):
        Preprocessing(shape=(2,), kind="gaussian")


def test_example_set_direct_use() -> None:
    raw = np.arange(12, dtype=np.uint8).reshape(3, 4)
    examples = ExampleSet(raw, Preprocessing(shape=(2, 2), kind="unit", scale=4.0), np.array([2, 1, 0]))
    assert len(examples) == 3 and examples.shape == (2, 2)
    assert examples.batch(np.array([2])).tolist() == [[[2.0, 2.25], [2.5, 2.75]]]
    assert examples.subset([2, 0]).labels.tolist() == [0, 2]  # type: ignore[union-attr]


def test_mnist_files_are_not_read_as_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the two datasets share file names; a data folder holding one directly must not serve as the other
    import hashlib

    for name in builtin.IDX_FILES["test"]:
        (tmp_path / f"{name}.gz").write_bytes(name.encode())
    digest = hashlib.sha256(b"t10k-images-idx3-ubyte").hexdigest()
    monkeypatch.setitem(builtin.CHECKSUMS["mnist"], "t10k-images-idx3-ubyte.gz", ("sha256", digest))
    with pytest.raises(DataError, match=r"is mnist's file, not fashion-mnist's"):
        builtin.find_idx("fashion-mnist", str(tmp_path), builtin.IDX_FILES["test"])
    assert builtin.find_idx("mnist", str(tmp_path), builtin.IDX_FILES["test"])[0].parent == tmp_path


def test_labels_read_for_a_model_are_numbered_by_its_classes(tmp_path: Path) -> None:
    # a test folder or file lacking a class must not shift the others: the model keeps its training classes
    for split, names in (("train", "abc"), ("test", "ac")):
        for name in names:
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("L", (4, 4), color=40 * i).save(tmp_path / split / name / f"{i}.png")
    prep = load_data(DataConfig(source=str(tmp_path / "train"), val_fraction=0.2)).preprocessing
    assert prep.label_classes == ("a", "b", "c")
    assert load_examples(str(tmp_path / "test"), prep).labels.tolist() == [0, 0, 0, 2, 2, 2]
    x = np.random.default_rng(0).random((30, 4)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x, y=np.array(["nine", "seven", "zero"] * 10))
    np.savez(tmp_path / "test.npz", x=x[:4], y=np.array(["nine", "zero", "nine", "zero"]))
    prep = load_data(DataConfig(source=str(tmp_path / "train.npz"), val_fraction=0.2)).preprocessing
    assert prep.label_classes == ("nine", "seven", "zero")
    assert load_examples(str(tmp_path / "test.npz"), prep).labels.tolist() == [0, 2, 0, 2]
