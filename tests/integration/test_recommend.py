"""A recommender end to end: `vaekit train --preset ml-100k` on a small interaction file the test writes, the best
epoch picked by validation NDCG@100, `evaluate` with ranking metrics, `recommend`, `embed` of user codes,
`POST /v1/recommend`, and the bad input (one-line errors, exit code 2, nothing half-written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from vaekit.cli import main
from vaekit.data import load_examples
from vaekit.data.ranking import mean_metrics, user_metrics
from vaekit.errors import ConfigError


def clustered_rows(n_users: int, n_items: int, groups: int = 3, seed: int = 0) -> list[tuple[str, str, int]]:
    """(user, item, rating) rows: each user likes (rates 4-5) 6+ items of its group's block, dislikes (1-2) 3 others
    (as in tests/unit/test_interactions.py)."""
    rng = np.random.default_rng(seed)
    per = n_items // groups
    rows = []
    for u in range(n_users):
        block = np.arange((u % groups) * per, (u % groups + 1) * per)
        for i in rng.choice(block, size=int(rng.integers(6, per + 1)), replace=False):
            rows.append((str(u + 1), str(i + 1), int(rng.integers(4, 6))))
        for i in rng.choice(n_items, size=3, replace=False):
            rows.append((str(u + 1), str(i + 1), int(rng.integers(1, 3))))
    return rows


def write_udata(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    """GroupLens u.data: user, item, rating, timestamp separated by tabs, no header."""
    path.write_text("".join(f"{u}\t{i}\t{r}\t{881250949 + n}\n" for n, (u, i, r) in enumerate(rows)))
    return path


SMALL = ("data.heldout_users=12", "model.hidden_dims=[32]", "model.latent_dim=8", "train.batch_size=16",
         "objective.kl_warmup_steps=40", "train.epochs=12", "train.device=cpu", "train.num_images=4")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the interaction file, an item table, the run directory of a small Mult-VAE trained on it)."""
    folder = tmp_path_factory.mktemp("recommend")
    data = write_udata(folder / "u.data", clustered_rows(120, 45))
    names = folder / "items.tsv"
    names.write_text("item_id\ttitle\n" + "".join(f"{i}\tMovie {i}\n" for i in range(1, 46)))
    run = folder / "run"
    assert main(["train", "--preset", "ml-100k", "--data", str(data), "--out", str(run), "--quiet", *SMALL]) == 0
    return data, names, run


def test_the_best_epoch_is_the_one_with_the_best_validation_ndcg(trained: tuple[Path, Path, Path]) -> None:
    _, _, run = trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"val_recall@20", "val_recall@50", "val_ndcg@100", "val_elbo"} <= records[0].keys()
    best = max(records, key=lambda r: r["val_ndcg@100"])
    saved = json.loads((run / "best" / "metadata.json").read_text())
    assert saved["metrics"]["epoch"] == best["epoch"]
    assert saved["preprocessing"]["kind"] == "interactions" and len(saved["preprocessing"]["test_users"]) == 12
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["likelihood"] == "multinomial" and config["input_norm"] == "l2" and config["input_dropout"] == 0.2


def test_evaluate_reports_ranking_metrics_that_beat_popularity(trained, tmp_path: Path, capsys) -> None:
    data, _, run = trained
    report_path = tmp_path / "report.json"
    assert main(["evaluate", str(run), "--k", "20", "--json", str(report_path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Recall@20" in printed and "NDCG@100" in printed and "NLL (IWAE, k=20)" in printed
    report = json.loads(report_path.read_text())
    assert report["num_examples"] == 12 and report["heldout"]["users"] == 12
    model = vaekit.load(run)
    test = load_examples(str(data), model.preprocessing)
    x = test.tensor()
    train_counts = load_examples(str(data), model.preprocessing, split="train").tensor().sum(0)
    heldout = torch.from_numpy(test.targets.toarray())
    popularity = mean_metrics([user_metrics(train_counts.expand_as(x), heldout, exclude=x > 0)])
    assert report["heldout"]["ndcg@100"] > popularity["ndcg@100"] + 0.1  # it learned the users' tastes


def test_mult_dae_is_the_same_model_trained_without_its_kl_term(trained, tmp_path: Path) -> None:
    data, _, _ = trained
    run = tmp_path / "dae"
    dae = ("objective.beta=0", "objective.kl_warmup_steps=0")
    assert main(["train", "--preset", "ml-100k", "--data", str(data), "--out", str(run), "--quiet", *SMALL, *dae]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["kl_weight"] == 0.0 for r in records)  # the loss is the reconstruction term alone
    assert max(r["val_ndcg@100"] for r in records) > 0.4  # it learns to rank (popularity: 0.36 on the test users)


def test_recommend_excludes_what_the_user_has_and_ignores_unknown_ids(trained, caplog, capsys) -> None:
    _, names, run = trained
    code = main(["recommend", str(run), "--items", "1,2,3,4,99999,abc", "-k", "5", "--item-names", str(names)])
    assert code == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "(2 unknown ignored)" in lines[0] and len(lines) == 2 + 5
    items = [line.split()[1] for line in lines[2:]]
    assert not {"1", "2", "3", "4"} & set(items) and all(f"Movie {i}" in out for i in items)
    assert "99999, abc" in caplog.text  # listed in a warning
    # the user likes items of the first block (1-15): so should the recommendations
    result = vaekit.recommend(run, ["1", "2", "3", "4", "5"], k=5)
    assert sum(int(item) <= 15 for item in result.items) >= 4, result.items
    assert result.scores == sorted(result.scores, reverse=True) and 0 < sum(result.scores) <= 1


def test_recommend_for_a_user_of_a_file(trained, tmp_path: Path) -> None:
    data, _, run = trained
    out = tmp_path / "recs.json"
    assert main(["recommend", str(run), "--user", "7", "--data", str(data), "-k", "3", "--json", str(out)]) == 0
    recs = json.loads(out.read_text())
    missing = tmp_path / "missing.csv"
    assert main(["recommend", str(run), "--user", "7", "--data", str(missing)]) == 2  # one line, no traceback
    with pytest.raises(ConfigError, match="is one string; give a list of item ids"):
        vaekit.recommend(run, "1,50", k=3)
    with pytest.raises(ConfigError, match=r"k must be at least 1 \(a whole number of items\), got 2.5"):
        vaekit.recommend(run, ["1"], k=2.5)
    rows = clustered_rows(120, 45)
    liked = {i for u, i, r in rows if u == "7" and r >= 4}
    assert set(recs["history"]) <= liked and not set(recs["items"]) & set(recs["history"])


def test_embed_writes_user_codes_with_ids(trained, tmp_path: Path) -> None:
    data, _, run = trained
    out = tmp_path / "codes.csv"
    assert main(["embed", str(run), "--out", str(out), "--quiet"]) == 0  # the model's own data: its test users
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[:2] == ["id", "mu_0"]
    assert [line.split(",")[0] for line in lines[1:]] == list(vaekit.load(run).preprocessing.test_users)
    other = tmp_path / "other.data"  # another file: every user of it
    other.write_bytes(data.read_bytes())
    assert main(["embed", str(run), "--data", str(other), "--out", str(out), "--quiet"]) == 0
    lines = out.read_text().splitlines()
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(str(u) for u in range(1, 121))


def test_the_service_answers_recommend(trained) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vaekit.serving import create_app

    _, _, run = trained
    with TestClient(create_app(run)) as client:
        good = client.post("/v1/recommend", json={"items": ["1", 2, "zz"], "k": 4})
        assert good.status_code == 200, good.text
        body = good.json()
        assert len(body["items"]) == 4 and body["ignored"] == ["zz"] and not {"1", "2"} & set(body["items"])
        python = vaekit.recommend(run, ["1", "2"], k=4)
        assert body["items"] == python.items and np.allclose(body["scores"], python.scores)
        for request, field in (({"items": ["zz"]}, "items"), ({"items": []}, "items"), ({"items": ["1"], "k": 0}, "k"),
                               ({"items": ["1"], "user": 3}, "user"), ({"items": [True]}, "items"),
                               ({"items": [1.0]}, "items")):
            bad = client.post("/v1/recommend", json=request)
            assert bad.status_code == 422 and field in json.dumps(bad.json()["detail"]), (request, bad.text)


def test_a_model_of_images_cannot_recommend_and_reads_no_interactions(trained, tiny_config, tmp_path: Path,
                                                                       capsys) -> None:
    data, _, run = trained
    result = vaekit.train(tiny_config("train.epochs=1"), tmp_path / "digits")
    for argv in (["recommend", str(result.run_dir), "--items", "1,2"],
                 ["evaluate", str(result.run_dir), "--data", str(data), "--k", "2", "--quiet"],  # the reverse
                 ["evaluate", str(run), "--data", "digits", "--k", "2", "--quiet"]):  # a recommender given images
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("vaekit: error:") and len(err.strip().splitlines()) == 1, err
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vaekit.serving import create_app

    with TestClient(create_app(result.run_dir)) as client:
        answer = client.post("/v1/recommend", json={"items": ["1"]})
        assert answer.status_code == 422 and "not trained on interaction data" in answer.text


@pytest.mark.parametrize(("content", "message"), [
    ("", "is empty"),
    ("1\t2\tnan\t0\n", "missing or NaN"),
    ("1\t2\t-3\t0\n", "negative"),
])
def test_bad_interaction_files_leave_no_run(tmp_path: Path, capsys, content: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    assert main(["train", "--preset", "ml-100k", "--data", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_recommend_refuses_bad_requests_in_one_line(trained, capsys) -> None:
    data, _, run = trained
    for argv, message in (
        (["--items", "zz,yy"], "none of the 2 item ids"),
        (["--user", "nobody", "--data", str(data)], "user 'nobody' is not in"),
        (["--items", "1", "-k", "0"], "k must be at least 1"),
    ):
        capsys.readouterr()
        assert main(["recommend", str(run), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_an_interrupted_recommender_run_resumes_to_the_same_weights(trained, tmp_path: Path) -> None:
    """Input dropout, the held-out metrics and the NDCG-picked best model keep exact resume."""
    from safetensors.torch import load_file

    data, _, _ = trained
    common = ["train", "--preset", "ml-100k", "--data", str(data), "--quiet", *SMALL]
    assert main([*common, "--out", str(tmp_path / "whole"), "--epochs", "4"]) == 0
    assert main([*common, "--out", str(tmp_path / "parts"), "--epochs", "2"]) == 0
    assert main([*common, "--out", str(tmp_path / "parts"), "--epochs", "4", "--resume"]) == 0
    for sub in ("last", "best"):
        whole = load_file(str(tmp_path / "whole" / sub / "model.safetensors"))
        parts = load_file(str(tmp_path / "parts" / sub / "model.safetensors"))
        assert all(torch.equal(whole[key], parts[key]) for key in whole), sub
    records = [json.loads(line) for line in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]


@pytest.mark.slow
def test_two_processes_train_a_recommender(trained, tmp_path: Path) -> None:
    data, _, _ = trained
    run = tmp_path / "ddp"
    argv = ["train", "--preset", "ml-100k", "--data", str(data), "--quiet", "--nproc", "2", "--out", str(run),
            *SMALL, "train.epochs=2"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[-1]["val_users"] == 12 and 0 < records[-1]["val_ndcg@100"] <= 1
