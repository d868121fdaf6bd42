"""Tables and scaling (vaekit.data.tables, vaekit.data.scaling): string columns one-hot encoded and stored with the
model, robust / asinh scaling, constant and near-constant columns, chunked reading, and the bad inputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from vaekit.config import DataConfig
from vaekit.data import Preprocessing, from_arrays, load_data, load_examples
from vaekit.data.arrays import fit_standardization
from vaekit.data.scaling import IQR_TO_STD, fit_scaling
from vaekit.data.tables import MAX_CATEGORIES, iter_table, read_table
from vaekit.errors import DataError

pd = pytest.importorskip("pandas")


def mixed_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "amount": rng.lognormal(0.0, 2.0, n),  # heavy-tailed
        "count": rng.integers(0, 50, n),  # integer dtype
        "kind": rng.choice(["card", "cash", "wire"], n),  # a string column
        "flag": (rng.random(n) < 0.1).astype(float),  # mostly 0: interquartile range 0
        "const": 3.0,
        "label": rng.integers(0, 2, n),
    })


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.name.endswith(".parquet"):
        frame.to_parquet(path)
    elif path.name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            frame.to_csv(handle, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


# --- scaling ---------------------------------------------------------------------------------------------------


def test_robust_and_asinh_scaling_are_median_and_quartiles() -> None:
    x = mixed_frame()[["amount", "count", "flag", "const"]].to_numpy(np.float64)
    rows = np.arange(0, len(x), 2)  # the training rows
    centre, spread = fit_scaling(x, rows, 1.0, "robust")
    train = x[rows]
    q25, med, q75 = np.percentile(train, [25, 50, 75], axis=0)
    np.testing.assert_allclose(centre, med)
    np.testing.assert_allclose(spread[:2], (q75 - q25)[:2] / IQR_TO_STD)
    assert spread[2] == pytest.approx(train[:, 2].std())  # interquartile range 0: the standard deviation instead
    assert spread[3] == 1.0  # constant: centred, not divided by zero
    assert fit_scaling(x, rows, 1.0, "asinh") == (centre, spread)
    assert fit_scaling(x, rows, 1.0, "standard") == fit_standardization(x, rows, 1.0)

    prep = Preprocessing(shape=(4,), kind="real", mean=centre, std=spread, scaling="asinh")
    expected = np.arcsinh((x[:5] - np.array(centre)) / np.array(spread))
    np.testing.assert_allclose(prep.apply(x[:5]), expected, rtol=1e-5)
    # asinh keeps the order of values and extrapolates: ten times further out is still further out
    far = prep.apply(np.array([[1e3, 0, 0, 3], [1e4, 0, 0, 3]]))
    assert far[1, 0] > far[0, 0] > np.abs(prep.apply(x)[:, 0]).max() - 1e-6


def test_no_training_value_lies_beyond_the_reach_limit() -> None:
    from vaekit.data.scaling import MAX_REACH

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 2))
    x[17, 1] = 1e5  # one value 10^5 interquartile spreads out: the spread is widened so it lies at MAX_REACH
    centre, spread = fit_scaling(x, np.arange(1000), 1.0, "robust")
    q25, q75 = np.percentile(x[:, 0], [25, 75])
    assert spread[0] == pytest.approx((q75 - q25) / IQR_TO_STD)  # a column within reach keeps its quartiles
    assert spread[1] == pytest.approx((1e5 - centre[1]) / MAX_REACH)
    assert np.abs((x - np.array(centre)) / np.array(spread)).max() == pytest.approx(MAX_REACH)


def test_near_constant_columns_are_constant_not_divided_by_rounding_noise() -> None:
    """E[x^2] - E[x]^2 of a constant column of 0.35 left a 1e-8 'standard deviation', blowing other rows up 1e8x."""
    x = np.full((3000, 2), 0.35)
    x[:, 1] = np.random.default_rng(0).normal(size=3000)
    x[-1, 0] = 1.0  # differs only outside the training rows
    mean, std = fit_standardization(x, np.arange(2999), 1.0)
    assert std[0] == 1.0 and mean[0] == pytest.approx(0.35)
    bundle = from_arrays(x, config=DataConfig(source="array", scaling="robust"))
    assert np.abs(bundle.val.tensor().numpy()).max() < 10


def test_unknown_scaling_is_an_error_naming_the_choices() -> None:
    with pytest.raises(DataError, match="preprocessing scaling 'log' is not one of standard, robust, asinh"):
        Preprocessing(shape=(1,), kind="real", scaling="log")


def test_preprocessing_json_keeps_old_files_and_stores_new_fields() -> None:
    old = Preprocessing(shape=(2,), kind="real", mean=(0.0, 1.0), std=(1.0, 2.0))
    assert "scaling" not in old.to_dict() and "categories" not in old.to_dict()  # as older vaekit wrote it
    new = Preprocessing(shape=(4,), kind="real", columns=("a", "kind"), scaling="robust",
                        categories=(("kind", ("card", "cash", "wire")),))
    assert Preprocessing.from_dict(json.loads(json.dumps(new.to_dict()))) == new


# --- tables ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.parquet"])
def test_string_columns_are_one_hot_encoded_and_stored(tmp_path: Path, name: str) -> None:
    frame = mixed_frame()
    path = write(frame, tmp_path / name)
    bundle = load_data(DataConfig(source=str(path), label_column="label", scaling="asinh"))
    prep = bundle.preprocessing
    assert prep.columns == ("amount", "count", "kind", "flag", "const")
    assert prep.categories == (("kind", ("card", "cash", "wire")),) and prep.shape == (7,)
    assert prep.scaling == "asinh"
    raw = read_table(path, label_column="label")
    onehot = raw.x[:, 2:5]
    assert set(onehot.sum(1)) == {1.0}
    np.testing.assert_array_equal(onehot.argmax(1), pd.Categorical(frame["kind"]).codes)
    np.testing.assert_array_equal(raw.x[:, 1], frame["count"].to_numpy())  # integers, as numbers

    # data for the model: the stored categories; an unseen value is all zeros; the label column may be absent
    new = frame.drop(columns="label").iloc[:4].copy()
    new.loc[new.index[0], "kind"] = "crypto"
    examples = load_examples(str(write(new, tmp_path / f"new-{name}")), prep)
    x = read_table(tmp_path / f"new-{name}", prep.columns, "label", prep.categories).x
    assert x[0, 2:5].tolist() == [0.0, 0.0, 0.0] and examples.labels is None
    np.testing.assert_allclose(examples.tensor().numpy(), prep.apply(x), rtol=1e-6)


def test_missing_strings_are_a_category_missing_numbers_an_error(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("a,kind\n1,x\n2,\n3,y\n")
    raw = read_table(tmp_path / "s.csv")
    assert raw.categories == (("kind", ("<NA>", "x", "y")),)
    (tmp_path / "n.csv").write_text("a,b\n1,2\n3,inf\n5,6\n")
    with pytest.raises(DataError, match=r"column 'b' of .*n\.csv' holds 1 missing \(NaN\) or infinite values"):
        read_table(tmp_path / "n.csv")


def test_table_bad_inputs_name_the_column(tmp_path: Path) -> None:
    frame = mixed_frame()
    prep = load_data(DataConfig(source=str(write(frame, tmp_path / "t.csv")), label_column="label")).preprocessing
    text = frame.astype({"count": object})
    text.loc[7, "count"] = "seven"
    with pytest.raises(DataError, match=r"column 'count' of .* holds text \('seven' in row 7\) where the model was "
                                        r"trained on numbers"):
        load_examples(str(write(text, tmp_path / "text.csv")), prep)
    with pytest.raises(DataError, match=r"has 2 columns the model was not trained on \('x', 'y'\); drop them"):
        load_examples(str(write(frame.assign(x=1, y=2), tmp_path / "more.csv")), prep)
    ids = pd.DataFrame({"a": np.arange(MAX_CATEGORIES + 1.0), "id": [f"u{i}" for i in range(MAX_CATEGORIES + 1)]})
    with pytest.raises(DataError, match=r"column 'id' of .* holds 1,001 distinct strings.*drop it"):
        read_table(write(ids, tmp_path / "ids.csv"))


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.parquet"])
def test_chunks_encode_exactly_as_the_whole_table(tmp_path: Path, name: str) -> None:
    frame = mixed_frame(n=250)
    path = write(frame, tmp_path / name)
    whole = read_table(path, label_column="label")
    assert whole.columns is not None
    chunks = list(iter_table(path, whole.columns, "label", whole.categories, rows=64))
    assert [len(x) for x, _ in chunks] == [64, 64, 64, 58]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in chunks]), whole.x)
    assert whole.labels is not None
    np.testing.assert_array_equal(np.concatenate([y for _, y in chunks if y is not None]), whole.labels)


def test_chunked_reading_names_a_bad_column_in_a_late_chunk(tmp_path: Path) -> None:
    frame = mixed_frame(n=300)
    whole = read_table(write(frame, tmp_path / "t.csv"), label_column="label")
    assert whole.columns is not None
    bad = frame.astype({"amount": object})
    bad.loc[280, "amount"] = "n/a!"
    path = write(bad, tmp_path / "bad.csv")
    chunks = iter_table(path, whole.columns, "label", whole.categories, rows=50)
    with pytest.raises(DataError, match=r"column 'amount' of .*bad\.csv' holds a value that is not a number"):
        list(chunks)
    bad.loc[280, "amount"] = np.nan
    chunks = iter_table(write(bad, tmp_path / "nan.csv"), whole.columns, "label", whole.categories, rows=50)
    with pytest.raises(DataError, match=r"column 'amount' .* missing \(NaN\) or infinite values \(first in row 280\)"):
        list(chunks)


@pytest.mark.parametrize("missing", ["", "NA", "null"])
def test_chunks_read_missing_strings_as_training_did(tmp_path: Path, missing: str) -> None:
    # pandas (training, whole tables) reads these as missing: the streamed reader must give the same <NA> category
    path = tmp_path / "m.csv"
    path.write_text(f"a,city\n1,paris\n2,{missing}\n3,rome\n4,paris\n")
    whole = read_table(path)
    assert whole.categories == (("city", ("<NA>", "paris", "rome")),)
    assert whole.columns is not None
    chunks = list(iter_table(path, whole.columns, None, whole.categories, rows=2))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in chunks]), whole.x)
    assert whole.x[1].tolist() == [2.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["b.csv", "b.csv.gz", "b.parquet"])
def test_boolean_columns_stream_as_training_read_them(tmp_path: Path, name: str) -> None:
    # pandas reads True/False as booleans (1, 0); the streamed CSV reader refused them as 'not a number'
    frame = pd.DataFrame({"a": [1.5, 2.0, 3.0, 4.0, 5.5], "fraud": [True, False, False, True, False]})
    path = write(frame, tmp_path / name)
    whole = read_table(path)
    assert whole.categories is None and whole.x[:, 1].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert whole.columns is not None
    chunks = list(iter_table(path, whole.columns, None, whole.categories, rows=2))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in chunks]), whole.x)


@pytest.mark.parametrize("name", ["d.csv", "d.csv.gz"])
def test_a_repeated_column_name_is_refused_when_training_and_scoring(tmp_path: Path, name: str) -> None:
    # pandas renamed the second 'a' to 'a.1', so a model trained on it could not score the same file streamed
    path = tmp_path / name
    text = "a,b,a\n1,2,3\n4,5,6\n"
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    message = r"has two columns named 'a' \(columns 1 and 3\); give every column its own name"
    with pytest.raises(DataError, match=message):
        read_table(path)
    with pytest.raises(DataError, match=message):
        list(iter_table(path, ("a", "b"), None, None))
