"""`vaekit train` / `vaekit score` on tables: string columns, robust scaling, scores streamed chunk by chunk (the same
numbers as scoring the table whole), written as they come, and bad tables refused in one line with nothing left."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import vaekit
from vaekit.apps import scoring, streaming
from vaekit.apps.scoring import anomaly_scores
from vaekit.cli import main
from vaekit.data import load_examples, tables

pd = pytest.importorskip("pandas")
TINY = ["model.latent_dim=2", "model.hidden_dims=[16]", "train.batch_size=64", "train.num_images=4",
        "train.device=cpu", "data.label_column=label", "data.scaling=robust"]


def transactions(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "amount": rng.lognormal(1.0, 1.5, n), "items": rng.integers(1, 9, n),
        "channel": rng.choice(["web", "shop", "phone"], n, p=[0.6, 0.3, 0.1]), "label": rng.integers(0, 2, n),
    })


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tables")
    transactions(400, 0).to_csv(folder / "train.csv", index=False)
    run = folder / "run"
    assert main(["train", "--preset", "tabular", "--data", str(folder / "train.csv"), "--out", str(run), "--epochs",
                 "2", "--quiet", *TINY]) == 0
    return run


def read_scores(path: Path) -> dict[str, np.ndarray]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def test_the_model_stores_its_encoders_and_scaling(run: Path) -> None:
    prep = vaekit.load(run).preprocessing
    assert prep is not None and prep.scaling == "robust"
    assert prep.columns == ("amount", "items", "channel")
    assert prep.categories == (("channel", ("phone", "shop", "web")),) and prep.shape == (5,)


def test_streamed_scores_equal_whole_table_scores(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(tables, "CHUNK_ROWS", 64)  # 300 rows: five chunks
    new = transactions(300, 1)
    new.loc[5, "channel"] = "fax"  # unseen category: all zeros
    new.drop(columns="label").to_parquet(tmp_path / "new.parquet")  # no label column at scoring time: fine
    written: list[int] = []
    original = streaming.CsvScoreWriter.write

    def spy(self: streaming.CsvScoreWriter, scores: np.ndarray, *args: object) -> None:
        written.append(len(scores))
        original(self, scores, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(streaming.CsvScoreWriter, "write", spy)
    out = tmp_path / "scores.csv"
    assert main(["score", str(run), "--data", str(tmp_path / "new.parquet"), "--threshold", "9", "--out", str(out),
                 "--quiet"]) == 0
    assert written == [64, 64, 64, 64, 44]  # each chunk written once it was scored
    model = vaekit.load(run)
    assert model.preprocessing is not None
    whole = anomaly_scores(model, load_examples(str(tmp_path / "new.parquet"), model.preprocessing).tensor())
    got = read_scores(out)
    assert list(got) == ["index", "score", "decision"]
    np.testing.assert_allclose(got["score"], whole.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(got["decision"], (got["score"] > 9).astype(float))
    assert "flagged" in capsys.readouterr().out


def test_contamination_and_npy_are_written_at_the_end(run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "CHUNK_ROWS", 50)
    monkeypatch.setattr(streaming, "WRITE_ROWS", 40)  # the whole result is written 40 rows at a time
    transactions(120, 2).to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "flags.csv"
    result = scoring.score(str(run), str(tmp_path / "new.csv"), contamination=0.1, out=out, k=10)
    got = read_scores(out)
    assert list(got) == ["index", "label", "score", "decision"] and len(got["score"]) == 120
    assert got["decision"].sum() == result.num_flagged == 12
    np.testing.assert_array_equal(got["label"], transactions(120, 2)["label"].to_numpy())
    records = scoring.score(str(run), str(tmp_path / "new.csv"), out=tmp_path / "s.npy", k=10)
    np.testing.assert_allclose(np.load(tmp_path / "s.npy")["score"], records.scores)
    np.testing.assert_allclose(records.scores, result.scores)


def test_text_labels_are_numbered_as_in_training_in_every_file_and_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # labels "fraud" / "normal" are numbered 0 / 1 by the training file; the model keeps that numbering, so a file
    # of normal rows alone, every chunk of a streamed file and a whole-read file all write normal as 1
    train = transactions(300, 3)
    train["label"] = np.where(train["label"] == 1, "fraud", "normal")
    train.to_csv(tmp_path / "train.csv", index=False)
    run = tmp_path / "run"
    assert main(["train", "--preset", "tabular", "--data", str(tmp_path / "train.csv"), "--out", str(run),
                 "--epochs", "1", "--quiet", *TINY]) == 0
    assert vaekit.load(run).preprocessing.label_classes == ("fraud", "normal")
    monkeypatch.setattr(tables, "CHUNK_ROWS", 50)
    new = transactions(120, 4)
    new["label"] = "normal"
    new.loc[[60, 119], "label"] = ["fraud", "theft"]  # a class the model never saw: -1, with a warning
    new.to_csv(tmp_path / "new.csv", index=False)
    expected = np.ones(120)
    expected[[60, 119]] = [0, -1]
    for out in (tmp_path / "streamed.csv", tmp_path / "whole.npy"):
        assert main(["score", str(run), "--data", str(tmp_path / "new.csv"), "--k", "2", "--out", str(out),
                     "--quiet"]) == 0
        got = read_scores(out)["label"] if out.suffix == ".csv" else np.load(out)["label"]
        np.testing.assert_array_equal(got, expected)
    prep = vaekit.load(run).preprocessing
    np.testing.assert_array_equal(load_examples(str(tmp_path / "new.csv"), prep).labels, expected)  # read whole
    assert "not among the 2 classes of the training labels (fraud, normal); they are -1 (not a class): theft" in (
        caplog.text)


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vaekit: error: "), err
    return lines[0]


@pytest.mark.parametrize(("change", "named"), [
    ("text", r"column 'amount' of .* holds a value that is not a number"),
    ("nan", r"column 'items' .* missing \(NaN\) or infinite values \(first in row 250\)"),
    ("extra", r"has 1 columns the model was not trained on \('note'\); drop them"),
    ("missing", r"lacks columns \['channel'\]"),
])
def test_bad_tables_are_refused_in_one_line_and_nothing_is_written(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, change: str,
    named: str,
) -> None:
    monkeypatch.setattr(tables, "CHUNK_ROWS", 100)  # the bad row is in the third chunk: two were written already
    frame = transactions(300, 3)
    if change == "text":
        frame = frame.astype({"amount": object})
        frame.loc[250, "amount"] = "twelve"
    elif change == "nan":
        frame.loc[250, "items"] = np.nan
    elif change == "extra":
        frame["note"] = "x"
    else:
        frame = frame.drop(columns="channel")
    frame.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "out" / "scores.csv"
    message = _one_line_error(capsys, "score", str(run), "--data", str(tmp_path / "bad.csv"), "--out", str(out),
                              "--quiet")
    assert pytest.importorskip("re").search(named, message), message
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no scores.csv, no temporary file


def test_an_all_constant_column_trains_and_scores(tmp_path: Path) -> None:
    frame = transactions(200, 4).assign(region=7)
    frame.to_csv(tmp_path / "c.csv", index=False)
    run = tmp_path / "run"
    assert main(["train", "--preset", "tabular", "--data", str(tmp_path / "c.csv"), "--out", str(run), "--epochs",
                 "2", "--quiet", *TINY]) == 0
    frame.assign(region=[7] * 199 + [9]).to_csv(tmp_path / "new.csv", index=False)
    scores = scoring.score(str(run), str(tmp_path / "new.csv"), k=5).scores
    same = scoring.score(str(run), str(tmp_path / "c.csv"), k=5).scores
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores[:199], same[:199])
    assert scores[199] > same[199] + 1  # the row off the constant value is less likely


def test_finite_values_beyond_float32_are_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 1e39 is finite in float64 and infinite in float32, where the model computes: a one-line error naming the
    # value, never "NaN or infinite values" after training on infinities
    from vaekit.errors import DataError
    from vaekit.estimators import AnomalyDetector

    table = transactions(200, 5).drop(columns="channel")
    table.loc[7, "amount"] = 1e39
    table.to_csv(tmp_path / "huge.csv", index=False)
    assert main(["train", "--preset", "tabular", "--data", str(tmp_path / "huge.csv"), "--out",
                 str(tmp_path / "run"), "--epochs", "1", *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "column 'amount'" in err[0] and "beyond float32's range" in err[0] and "row 7" in err[0]
    assert not (tmp_path / "run").exists()
    x = table.drop(columns="label").to_numpy()
    with pytest.raises(DataError, match="beyond float32's range"):
        AnomalyDetector(max_steps=5).fit(x)
    detector = AnomalyDetector(max_steps=5, epochs=1).fit(np.delete(x, 7, axis=0))
    with pytest.raises(DataError, match=r"beyond float32's range \(\+-3.4e38; first 1e\+39, example 7\)"):
        detector.score_samples(x)
