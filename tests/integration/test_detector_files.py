"""Fitted estimators on disk: an AnomalyDetector saved and loaded without pickle, scored by `vaekit score` and
`vaekit serve` as it scores itself; a VAETransformer the same way; the files' failures as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from vaekit.apps import score
from vaekit.apps.estimators import AnomalyDetector, VAETransformer
from vaekit.apps.neighbors import DETECTOR_NAME
from vaekit.apps.scoring import anomaly_scores
from vaekit.cli.main import main
from vaekit.errors import ConfigError, ModelFileError, OutputError
from vaekit.models import load
from vaekit.training import loop

SETTINGS: dict[str, Any] = {"latent_dim": 3, "hidden_dims": (16,), "epochs": 3, "batch_size": 32, "k": 4,
                            "device": "cpu"}
COLUMNS = ["amount", "age", "hour", "count"]


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(400, 4)) * [100.0, 10.0, 5.0, 1.0], columns=COLUMNS)
    train.iloc[350:] = train.iloc[:50].to_numpy()  # duplicated rows: each copy is the other's neighbour
    new = pd.DataFrame(np.concatenate([rng.normal(size=(30, 4)) * [300.0, 10.0, 5.0, 3.0], train.iloc[:5]]),
                       columns=COLUMNS)
    return train, new


@pytest.fixture(scope="module")
def saved(tables: tuple[pd.DataFrame, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[AnomalyDetector, Path]:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(loop, "write_figures", lambda *args, **kwargs: None)  # figures of a deleted run dir
    try:
        detector = AnomalyDetector(**SETTINGS, neighbors=2, random_state=3).fit(tables[0])
    finally:
        monkeypatch.undo()
    path = tmp_path_factory.mktemp("detector") / "fraud"
    assert detector.save(path) == path
    return detector, path


def test_a_loaded_detector_scores_exactly_as_the_fitted_one(saved: tuple[AnomalyDetector, Path],
                                                            tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    detector, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", DETECTOR_NAME, "metadata.json",
                                                       "model.safetensors"]
    loaded = AnomalyDetector.load(path)
    assert loaded.get_params() == detector.get_params()
    assert list(loaded.feature_names_in_) == COLUMNS and loaded.n_features_in_ == 4
    assert loaded.offset_ == detector.offset_ and loaded.n_iter_ == detector.n_iter_ == 3
    np.testing.assert_array_equal(loaded.codes_, detector.codes_)
    np.testing.assert_array_equal(loaded.code_counts_, detector.code_counts_)
    np.testing.assert_array_equal(loaded.rows_, detector.rows_)  # the scaled training rows of the third term
    np.testing.assert_array_equal(loaded.row_counts_, detector.row_counts_)
    assert loaded.input_neighbors == 1 and len(loaded.score_center_) == 3
    for rows in tables:
        np.testing.assert_array_equal(loaded.score_samples(rows), detector.score_samples(rows))
        np.testing.assert_array_equal(loaded.predict(rows), detector.predict(rows))
    assert np.mean(loaded.predict(tables[0]) == -1) == pytest.approx(0.1, abs=0.01)  # contamination, as fitted
    assert AnomalyDetector.load(path.parent / "fraud").score_samples(tables[1][:3]).shape == (3,)
    with pytest.raises(ValueError, match="feature names"):  # scikit-learn's own check, as fitted
        loaded.score_samples(tables[1].rename(columns={"age": "years"}))


def test_vaekit_score_gives_the_detector_score(saved: tuple[AnomalyDetector, Path], tmp_path: Path,
                                               tables: tuple[pd.DataFrame, pd.DataFrame],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    detector, path = saved
    new = tables[1]
    new.to_csv(tmp_path / "new.csv", index=False)
    assert main(["score", str(path), "--data", str(tmp_path / "new.csv"), "--contamination", "0.2", "--out",
                 str(tmp_path / "flags.csv"), "--quiet"]) == 0
    assert "robust z-scores of the importance-weighted NLL (k=4) and of the distance to the 2 nearest" in \
        capsys.readouterr().out
    flags = pd.read_csv(tmp_path / "flags.csv")
    expected = -detector.score_samples(new)
    np.testing.assert_allclose(flags["score"], expected, rtol=1e-12, atol=1e-12)
    assert flags["decision"].sum() == 7 and set(np.argsort(-expected)[:7]) == set(np.flatnonzero(flags["decision"]))
    # a table is read by column name, so the columns may come in another order (and a Parquet file too)
    new[COLUMNS[::-1]].to_parquet(tmp_path / "reordered.parquet")
    np.testing.assert_allclose(score(path, str(tmp_path / "reordered.parquet")).scores, expected, rtol=1e-12,
                               atol=1e-12)
    new.drop(columns="age").to_csv(tmp_path / "short.csv", index=False)
    assert "lacks columns ['age']" in one_line_error(capsys, "score", str(path), "--data", str(tmp_path / "short.csv"),
                                                       "--quiet")
    # the network's likelihood alone, on request: the model's IWAE score with the settings given
    result = score(path, str(tmp_path / "new.csv"), k=7, detector=False)
    model = load(path)
    x = model.preprocessing.apply(new.to_numpy().astype(np.float32))
    np.testing.assert_allclose(result.scores, anomaly_scores(model, _tensor(x), k=7).double().numpy(), rtol=1e-5)
    assert result.score_name == "importance-weighted NLL (k=7), nats per example"


def _tensor(x: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def test_a_detector_without_neighbours_round_trips(tables: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "write_figures", lambda *args, **kwargs: None)
    detector = AnomalyDetector(**SETTINGS, neighbors=0, input_neighbors=0, random_state=0).fit(tables[0].to_numpy())
    detector.save(tmp_path / "plain")
    assert not (tmp_path / "plain" / DETECTOR_NAME).exists()
    loaded = AnomalyDetector.load(tmp_path / "plain")
    assert not hasattr(loaded, "feature_names_in_")
    np.testing.assert_array_equal(loaded.score_samples(tables[1].to_numpy()),
                                  detector.score_samples(tables[1].to_numpy()))
    result = score(tmp_path / "plain", _npy(tmp_path, tables[1]))
    np.testing.assert_allclose(result.scores, -detector.score_samples(tables[1].to_numpy()), rtol=1e-9)
    assert result.unit == "nats" and result.score_name == "importance-weighted NLL (k=4), nats per example"


def _npy(folder: Path, table: pd.DataFrame) -> str:
    path = folder / "rows.npy"
    np.save(path, table.to_numpy())
    return str(path)


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vaekit: error: "), lines
    return lines[0]


def test_settings_of_the_likelihood_score_are_refused_for_a_detector(
    saved: tuple[AnomalyDetector, Path], tables: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, path = saved
    data = _npy(tmp_path, tables[1])
    for flags in (["--k", "50"], ["--method", "elbo"], ["--relative"], ["--unit", "bits"], ["--seed", "3"]):
        error = one_line_error(capsys, "score", str(path), "--data", data, *flags)
        assert "a saved AnomalyDetector" in error and flags[0] in error and "--likelihood-only" in error
    assert "--calibrate" in one_line_error(capsys, "score", str(path), "--data", data, "--fpr", "0.05")
    assert "trained on arrays in memory" in one_line_error(capsys, "score", str(path), "--quiet")  # no --data
    with pytest.raises(ConfigError, match="pass its directory"):
        score(load(path), data)  # its neighbours are in the directory, not in the model object


def test_a_detector_saved_before_the_row_term_reads_as_two_terms(tables: tuple[pd.DataFrame, pd.DataFrame],
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    # detectors saved before input_neighbors existed have neither the setting nor the rows: they score as before
    monkeypatch.setattr(loop, "write_figures", lambda *args, **kwargs: None)
    detector = AnomalyDetector(**SETTINGS, input_neighbors=0, random_state=1).fit(tables[0])
    detector.save(tmp_path / "old")
    metadata = json.loads((tmp_path / "old" / "metadata.json").read_text())
    del metadata["detector"]["input_neighbors"], metadata["detector"]["params"]["input_neighbors"]
    (tmp_path / "old" / "metadata.json").write_text(json.dumps(metadata))
    loaded = AnomalyDetector.load(tmp_path / "old")
    assert loaded.input_neighbors == 0 and not hasattr(loaded, "rows_")
    np.testing.assert_array_equal(loaded.score_samples(tables[1]), detector.score_samples(tables[1]))
    np.testing.assert_allclose(score(tmp_path / "old", _npy(tmp_path, tables[1])).scores,
                               -detector.score_samples(tables[1]), rtol=1e-12, atol=1e-12)


def test_broken_detector_files_are_one_line_errors(saved: tuple[AnomalyDetector, Path], tmp_path: Path,
                                                   tables: tuple[pd.DataFrame, pd.DataFrame],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    _, path = saved
    data = _npy(tmp_path, tables[1])
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    payload = (broken / DETECTOR_NAME).read_bytes()
    (broken / DETECTOR_NAME).write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        AnomalyDetector.load(broken)
    assert "truncated or corrupted" in one_line_error(capsys, "score", str(broken), "--data", data)
    (broken / DETECTOR_NAME).unlink()
    with pytest.raises(ModelFileError, match=r"misses detector\.safetensors"):
        AnomalyDetector.load(broken)
    shutil.copy(path / DETECTOR_NAME, broken / DETECTOR_NAME)
    for key, value in (("k", "ten"), ("neighbors", True), ("feature_names", "amount"), ("n_features", 0)):
        metadata = json.loads((path / "metadata.json").read_text())
        metadata["detector"][key] = value
        (broken / "metadata.json").write_text(json.dumps(metadata))
        with pytest.raises(ModelFileError, match="invalid settings"):
            AnomalyDetector.load(broken)
    from safetensors.numpy import load_file, save_file

    (broken / "metadata.json").write_text((path / "metadata.json").read_text())
    arrays = load_file(str(path / DETECTOR_NAME))
    save_file({**arrays, "codes": np.zeros((len(arrays["codes"]), 5))}, str(broken / DETECTOR_NAME))  # 5 latents, not 3
    with pytest.raises(ModelFileError, match="does not fit its model"):
        AnomalyDetector.load(broken)
    save_file({**arrays, "rows": np.zeros((len(arrays["rows"]), 5))}, str(broken / DETECTOR_NAME))  # 5 columns
    with pytest.raises(ModelFileError, match="does not fit its model"):
        AnomalyDetector.load(broken)
    save_file({**arrays, "center": np.zeros(2)}, str(broken / DETECTOR_NAME))  # three terms
    with pytest.raises(ModelFileError, match="does not hold the arrays it should"):
        AnomalyDetector.load(broken)
    save_file({k: v for k, v in arrays.items() if k != "row_counts"}, str(broken / DETECTOR_NAME))
    with pytest.raises(ModelFileError, match="does not hold the arrays it should"):
        AnomalyDetector.load(broken)
    del metadata["detector"]
    (broken / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelFileError, match="no AnomalyDetector"):
        AnomalyDetector.load(broken)  # a plain model: vaekit.load reads it
    assert load(broken).latent_dim == 3


def test_saving_is_atomic_and_refuses_an_unfitted_detector(saved: tuple[AnomalyDetector, Path],
                                                           tmp_path: Path) -> None:
    detector, _ = saved
    with pytest.raises(NotFittedError):
        AnomalyDetector().save(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    target = tmp_path / "again"
    target.mkdir()
    (target / "notes.txt").write_text("not a model")
    for other in (target, tmp_path / "table.csv"):  # a folder of other files, a file: refused, left as they were
        if other.suffix:
            other.write_text("a,b\n1,2\n")
        with pytest.raises(OutputError, match=r"is a (directory|file) that is not a saved model"):
            detector.save(other)
    assert (target / "notes.txt").read_text() == "not a model" and (tmp_path / "table.csv").read_text() == "a,b\n1,2\n"
    (target / "notes.txt").unlink()
    detector.save(target)  # an empty folder
    (target / "old.txt").write_text("inside an earlier save")
    transformer = VAETransformer(**{k: v for k, v in SETTINGS.items() if k != "k"})
    transformer.fit(np.random.default_rng(0).normal(size=(64, 4))).save(target)  # over an earlier save
    assert not (target / "old.txt").exists() and not (target / DETECTOR_NAME).exists()  # replaced whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary directory left
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError):
        detector.save(tmp_path / "file" / "below")


def test_serve_gives_the_detector_score_on_request(saved: tuple[AnomalyDetector, Path],
                                                   tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    from fastapi.testclient import TestClient

    from vaekit.serving.http import create_app

    detector, path = saved
    new = tables[1].to_numpy()
    with TestClient(create_app(path)) as client:
        card = client.get("/v1/model").json()
        assert card["score_methods"][-1] == "detector" and card["detector"]["neighbors"] == 2
        body = client.post("/v1/score", json={"x": new.tolist(), "raw": True, "method": "detector"}).json()
        assert body["method"] == "detector" and body["k"] == 4 and body["unit"] == "z"
        np.testing.assert_allclose(body["scores"], -detector.score_samples(tables[1]), rtol=1e-6, atol=1e-6)
        far = new[:2].copy()
        far[0, 0] = 1e30  # its z-score passes float32's range: answered as a number, not null
        far_body = client.post("/v1/score", json={"x": far.tolist(), "raw": True, "method": "detector"}).json()
        expected = -detector.score_samples(pd.DataFrame(far, columns=COLUMNS))
        assert expected[0] > np.finfo(np.float32).max and None not in far_body["scores"]
        np.testing.assert_allclose(far_body["scores"], expected, rtol=1e-6)
        plain = client.post("/v1/score", json={"x": new.tolist(), "raw": True, "k": 4}).json()
        assert plain["unit"] == "nats" and not np.allclose(plain["scores"], body["scores"])  # the network's IWAE
        refused = client.post("/v1/score", json={"x": new.tolist(), "raw": True, "method": "detector",
                                                  "unit": "bits"})
        assert refused.status_code == 422 and "leave unit out" in refused.text
    with TestClient(create_app(load(path))) as client:  # a model object: the network alone
        assert "detector" not in client.get("/v1/model").json()["score_methods"]


def test_a_saved_transformer_transforms_as_the_fitted_one(saved: tuple[AnomalyDetector, Path], tmp_path: Path,
                                                          tables: tuple[pd.DataFrame, pd.DataFrame],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "write_figures", lambda *args, **kwargs: None)
    train, new = tables
    transformer = VAETransformer(latent_dim=2, hidden_dims=(16,), epochs=3, random_state=1, device="cpu").fit(train)
    assert transformer.save(tmp_path / "codes") == tmp_path / "codes"
    loaded = VAETransformer.load(tmp_path / "codes")
    assert loaded.get_params() == transformer.get_params() and list(loaded.feature_names_in_) == COLUMNS
    np.testing.assert_array_equal(loaded.transform(new), transformer.transform(new))
    codes = transformer.transform(new)
    np.testing.assert_array_equal(loaded.inverse_transform(codes), transformer.inverse_transform(codes))
    assert list(loaded.get_feature_names_out()) == ["vaetransformer0", "vaetransformer1"]
    new[COLUMNS[::-1]].to_csv(tmp_path / "new.csv", index=False)  # `vaekit embed` reads its directory, by column name
    assert main(["embed", str(tmp_path / "codes"), "--data", str(tmp_path / "new.csv"), "--out",
                 str(tmp_path / "codes.csv"), "--quiet"]) == 0
    embedded = pd.read_csv(tmp_path / "codes.csv")[["mu_0", "mu_1"]].to_numpy()
    np.testing.assert_allclose(embedded, codes, atol=1e-5)  # float32 there
    with pytest.raises(ModelFileError, match="no AnomalyDetector"):
        AnomalyDetector.load(tmp_path / "codes")
    with pytest.raises(ModelFileError, match="no VAETransformer"):
        VAETransformer.load(saved[1])
    metadata = json.loads((tmp_path / "codes" / "metadata.json").read_text())
    metadata["transformer"]["n_features"] = 5
    (tmp_path / "codes" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelFileError, match="does not fit its model"):
        VAETransformer.load(tmp_path / "codes")
