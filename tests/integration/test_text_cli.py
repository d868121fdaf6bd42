"""Text end to end through the command line and the HTTP API: tiny sentence VAE and language model trained on a corpus
the test writes, evaluated honestly (perplexity with one <eos> per sentence), used by every verb, and bad input
refused in one line with exit code 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.cli import main
from vaekit.config import resolve_config
from vaekit.data.text import PAD
from vaekit.models import load
from vaekit.presets import get_preset
from vaekit.training.loop import train

NOUNS = ("cat", "dog", "bird", "market", "company", "trader")
VERBS = ("saw", "bought", "sold", "liked")
ADJECTIVES = ("big", "small", "old", "new")
SMALL = ("model.hidden_dims=[16,16]", "model.embedding_dim=8", "train.batch_size=16", "train.time_budget_s=0",
         "train.num_images=4")


def _sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        words = ["the", rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(VERBS), "the", rng.choice(NOUNS)]
        lines.append(" ".join(words[: rng.integers(3, 7)]))
    return lines


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("text") / "corpus"
    folder.mkdir()
    (folder / "ptb.train.txt").write_text("\n".join(_sentences(160, 0)) + "\n")
    (folder / "ptb.valid.txt").write_text("\n".join(_sentences(20, 1)) + "\n")
    (folder / "ptb.test.txt").write_text("\n".join(_sentences(24, 2)) + "\nthe zebra saw the dog\n")
    return folder


@pytest.fixture(scope="module")
def runs(corpus: Path) -> dict[str, Path]:
    out = corpus.parent / "runs"
    for preset in ("ptb", "ptb-lm"):
        code = main(["train", "--preset", preset, "--data", str(corpus), "--out", str(out / preset), "--epochs", "3",
                     "--quiet", *SMALL, *(("model.latent_dim=4",) if preset == "ptb" else ())])
        assert code == 0
    return {"vae": out / "ptb", "lm": out / "ptb-lm"}


def test_training_writes_text_figures_and_a_model_that_carries_its_vocabulary(runs: dict[str, Path]) -> None:
    run = runs["vae"]
    assert len((run / "samples.txt").read_text().splitlines()) == 4
    assert "  -> " in (run / "reconstructions.txt").read_text()
    metadata = json.loads((run / "best" / "metadata.json").read_text())
    assert metadata["preprocessing"]["kind"] == "text" and "market" in metadata["preprocessing"]["vocabulary"]
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["family"] == "text" and config["vocab_size"] == len(metadata["preprocessing"]["vocabulary"])
    assert json.loads((run / "config.json").read_text())["model"]["vocab_size"] == 0  # the run keeps what was asked


def test_evaluate_reports_perplexity_over_words_and_one_eos_per_sentence(
    runs: dict[str, Path], corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(runs["vae"]), "--data", str(corpus), "--k", "20", "--json", str(tmp_path / "r.json"),
                 "--quiet"]) == 0
    table = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    lines = (corpus / "ptb.test.txt").read_text().splitlines()
    tokens = sum(len(line.split()) + 1 for line in lines)
    extras = report["extras"]
    assert extras["tokens"] == tokens and extras["sentences"] == len(lines) == report["num_examples"]
    assert math.isclose(extras["perplexity"], math.exp(report["nll_nats"] * len(lines) / tokens), rel_tol=1e-9)
    assert math.isclose(extras["bits_per_token"], report["nll_nats"] * len(lines) / tokens / math.log(2), rel_tol=1e-9)
    assert extras["oov_words"] == 1  # "zebra"
    assert -0.5 < extras["mutual_information"] <= extras["mutual_information_max"] + 0.5
    assert report["bits_per_dim"] is None and report["recon_mse"] is None
    assert "perplexity (NLL)" in table and "NLL (IWAE, k=20)" in table and "bits/dim" not in table
    assert "(words + one <eos> each)" in table


def test_a_subword_model_counts_pieces_not_words(corpus: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tokenizers")
    out = tmp_path / "bpe"
    assert main(["train", "--preset", "ptb", "--data", str(corpus), "--out", str(out), "--epochs", "1", "--quiet",
                 *SMALL, "model.latent_dim=2", "data.tokenizer=bpe", "data.vocab_size=40"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(corpus), "--k", "2", "--quiet"]) == 0
    assert "(subword pieces + one <eos> each)" in capsys.readouterr().out


def test_the_language_model_is_evaluated_exactly(runs: dict[str, Path], corpus: Path, tmp_path: Path) -> None:
    assert main(["evaluate", str(runs["lm"]), "--data", str(corpus), "--k", "50", "--json", str(tmp_path / "r.json"),
                 "--quiet"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["k"] == 1 and report["kl"] == 0.0 and report["latent_dim"] == 0
    assert math.isclose(report["nll_nats"], -report["elbo"], rel_tol=1e-6)


def test_text_verbs_print_sentences_and_report_unknown_words(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    vae = str(runs["vae"])
    assert main(["text", "sample", vae, "-n", "3", "--decoding", "sample", "--out", str(tmp_path / "s.txt")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == (tmp_path / "s.txt").read_text().splitlines() and len(printed[:3]) == 3
    assert main(["text", "sample", vae, "-n", "2", "--decoding", "beam", "--quiet"]) == 0
    assert main(["text", "reconstruct", vae, "the big cat saw the dog", "the zebra sold"]) == 0
    out = capsys.readouterr().out
    assert "the big cat saw the dog\n  -> " in out and "the <unk> sold\n  -> " in out
    assert "zebra" in caplog.text  # the unknown word, reported
    assert main(["text", "interpolate", vae, "the big cat", "the old company sold the bird", "--steps", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4  # one sentence a line (an undertrained one may be empty)
    assert main(["text", "shuffle-auroc", vae, "--k", "5"]) == 0
    assert "relative to the training text's unigram model" in capsys.readouterr().out


def test_the_generic_verbs_write_text(runs: dict[str, Path], corpus: Path, tmp_path: Path) -> None:
    vae = str(runs["vae"])
    assert main(["sample", vae, "-n", "4", "--out", str(tmp_path / "s.txt")]) == 0
    assert len((tmp_path / "s.txt").read_text().splitlines()) == 4 and (tmp_path / "s.npy").is_file()
    assert main(["reconstruct", vae, "-n", "2", "--out", str(tmp_path / "r.txt")]) == 0
    lines = (tmp_path / "r.txt").read_text().splitlines()
    assert lines[0].startswith("originals: ") and lines[1].startswith("reconstructed: ")
    assert main(["embed", vae, "--out", str(tmp_path / "codes.npy")]) == 0
    assert np.load(tmp_path / "codes.npy").shape == (25, 4)
    assert main(["score", vae, "--k", "5", "--out", str(tmp_path / "scores.csv")]) == 0
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 26
    assert main(["score", vae, "--k", "5", "--unit", "bits"]) == 2  # sentences vary in length: nats only
    assert main(["sample", vae, "--out", str(tmp_path / "s.png")]) == 2  # a text model writes .txt


def test_resume_replays_a_bucketed_run_exactly(corpus: Path, tmp_path: Path) -> None:
    config = resolve_config(get_preset("ptb"), overrides=[*SMALL, "model.latent_dim=3", "train.epochs=2"],
                            data={"source": str(corpus)})
    whole = train(config, tmp_path / "whole")
    train(config, tmp_path / "split", on_epoch=lambda record: record["epoch"] == 1)  # stopped, as by a kill
    resumed = train(config, tmp_path / "split", resume=True)
    assert len(resumed.metrics) == 2
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_weight_averaging_keeps_the_running_statistics_of_the_trained_weights(corpus: Path, tmp_path: Path) -> None:
    # train.ema averages the weights; BN-VAE's batch-norm statistics are not weights: the averaged model validates,
    # saves and evaluates with the trained model's, which a run without averaging (the same updates) ends with
    overrides = [*SMALL, "model.latent_dim=3", "train.epochs=2"]
    configs = {name: resolve_config(get_preset("ptb"), overrides=[*overrides, f"train.ema={ema}"],
                                    data={"source": str(corpus)}) for name, ema in (("plain", 0.0), ("ema", 0.5))}
    for name, config in configs.items():
        train(config, tmp_path / name)
    plain, averaged = (load(tmp_path / name / "last") for name in configs)
    buffers = dict(plain.named_buffers())
    assert any("running_var" in name for name in buffers)
    for name, value in averaged.named_buffers():
        assert torch.equal(value, buffers[name]), name
        if "running_var" in name:
            assert not torch.equal(value, torch.ones_like(value))  # moved from its starting value
    weights = dict(plain.named_parameters())
    assert any(not torch.equal(value, weights[name]) for name, value in averaged.named_parameters())


def test_the_http_api_takes_and_returns_strings(runs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vaekit.serving import create_app

    with TestClient(create_app(runs["vae"] / "best")) as client:
        encoded = client.post("/v1/text/encode", json={"sentences": ["the cat saw the dog", "the zebra"]})
        assert encoded.status_code == 200, encoded.text
        assert len(encoded.json()["mean"][0]) == 4 and encoded.json()["unknown"] == [[], ["zebra"]]
        scored = client.post("/v1/text/score", json={"sentences": ["the cat saw the dog"], "k": 5}).json()
        assert scored["tokens"] == [6] and scored["nll"][0] > 0
        sampled = client.post("/v1/text/sample", json={"n": 2, "decoding": "sample", "seed": 3}).json()
        again = client.post("/v1/text/sample", json={"n": 2, "decoding": "sample", "seed": 3}).json()
        assert len(sampled["sentences"]) == 2 and sampled == again
        path = client.post("/v1/text/interpolate", json={"a": "the cat", "b": "the old dog sold", "steps": 3}).json()
        assert len(path["sentences"]) == 3
        recon = client.post("/v1/text/reconstruct", json={"sentences": ["the new trader"]}).json()
        assert len(recon["sentences"]) == 1
        ignored = client.post("/v1/text/reconstruct", json={"sentences": ["the cat"], "temperature": 0.5})
        assert ignored.status_code == 422  # only /v1/text/sample draws at a temperature: never silently ignored
        bad = client.post("/v1/text/encode", json={"sentences": [""]})
        assert bad.status_code == 422 and "empty" in bad.text
        empty_b = client.post("/v1/text/interpolate", json={"a": "the cat", "b": "", "steps": 3})
        assert empty_b.status_code == 422 and empty_b.json()["detail"][0]["loc"] == ["body", "b"]
        surrogate = '{"sentences": ["the \\ud800 cat"]}'  # JSON's escape of half a UTF-16 pair: not text
        for route in ("encode", "score", "reconstruct"):
            answer = client.post(f"/v1/text/{route}", content=surrogate, headers={"content-type": "application/json"})
            assert answer.status_code == 422 and "lone UTF-16 surrogate" in answer.text, answer.text
    with TestClient(create_app(runs["lm"] / "best")) as client:
        refused = client.post("/v1/text/interpolate", json={"a": "the cat", "b": "the dog"})
        assert refused.status_code == 422 and "no latent variable" in refused.text
        refused = client.post("/v1/text/reconstruct", json={"sentences": ["the cat"]})
        assert refused.status_code == 422 and "no latent variable" in refused.text


def test_bad_input_is_refused_in_one_line(
    runs: dict[str, Path], corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(argv: list[str], message: str) -> None:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    refused(["train", "--preset", "ptb", "--data", str(empty), "--out", str(tmp_path / "r1"), "--quiet"],
            "holds no sentences (2 empty lines)")
    assert not (tmp_path / "r1").exists()
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"fine\ncaf\xe9 au lait\n")
    refused(["train", "--preset", "ptb", "--data", str(latin), "--out", str(tmp_path / "r2"), "--quiet"],
            "line 2 of")
    refused(["train", "--data", str(corpus), "--out", str(tmp_path / "r3"), "--quiet"],
            "which the 'vae' family does not model")
    refused(["train", "--preset", "ptb", "--data", "digits", "--out", str(tmp_path / "r4"), "--quiet"],
            "the text family models token sequences")
    assert not any((tmp_path / f"r{i}").exists() for i in (2, 3, 4))
    array = tmp_path / "x.npy"
    np.save(array, np.zeros((2, 11), dtype=np.float32))
    refused(["evaluate", str(runs["vae"]), "--data", str(array), "--quiet"], "is not text")
    refused(["text", "interpolate", str(runs["lm"]), "a", "b"], "no latent variable")
    refused(["evaluate", str(runs["vae"]), "--data", str(tmp_path / "missing"), "--quiet"],
            "text source '" + str(tmp_path / "missing") + "' not found: no such file or folder")
    refused(["evaluate", str(runs["vae"]), "--samples", "10", "--quiet"], "a text model has none: drop --samples")
    for limit in ("0", "-1"):
        refused(["text", "shuffle-auroc", str(runs["vae"]), "--limit", limit], "limit must be at least 1")
    refused(["score", str(runs["vae"]), "--relative", "--quiet"], "not a registered likelihood")
    refused(["score", str(runs["vae"]), "--method", "recon", "--quiet"], "not a registered likelihood")
    refused(["compress", str(runs["vae"]), str(corpus / "ptb.test.txt"), "-o", str(tmp_path / "c.vkz")],
            "bits-back coding of it is not implemented")
    assert not (tmp_path / "c.vkz").exists()
    digits = tmp_path / "digits-run"
    assert main(["train", "--out", str(digits), "--epochs", "1", "--quiet", "model.hidden_dims=[8]",
                 "model.latent_dim=2"]) == 0
    refused(["evaluate", str(digits), "--data", str(corpus), "--quiet"], "is text, but the model was trained on")
    refused(["text", "sample", str(digits)], "the text verbs need a model trained on text")


def test_padding_never_reaches_the_likelihood(runs: dict[str, Path]) -> None:
    model = load(runs["vae"] / "best").double()
    x = torch.tensor([[5, 6, 3] + [PAD] * (model.data_shape[0] - 3)])
    z = torch.zeros(1, model.latent_dim, dtype=torch.float64)
    with torch.no_grad():
        full = model.decode(z).log_prob(x)
        short = model.decode(z).log_prob(x[:, :3])
    torch.testing.assert_close(full, short, rtol=0, atol=0)


def test_sentence_scores_are_the_importance_weighted_bound_of_real_valued_draws(runs: dict[str, Path],
                                                                                corpus: Path) -> None:
    # token ids are integers; the k draws eps ~ N(0, I) must stay real (they were once cast to the ids' type)
    from vaekit.apps.scoring import anomaly_scores
    from vaekit.data import load_examples

    model = load(runs["vae"] / "best").eval()
    x = load_examples(str(corpus / "ptb.test.txt"), model.preprocessing).tensor()[:12]
    assert not x.is_floating_point()
    k, seed = 7, 3
    eps = torch.randn(k, model.latent_dim, generator=torch.Generator().manual_seed(seed))  # as scoring draws them
    with torch.no_grad():
        qz_x, pz = model.encode(x), model.prior()
        z = qz_x.mean + qz_x.stddev * eps[:, None, :]  # (k, B, L)
        log_px_z = torch.stack([model.decode(z_i).log_prob(x) for z_i in z])
        log_w = log_px_z + pz.log_prob(z) - qz_x.log_prob(z)  # (k, B)
    expected = -(torch.logsumexp(log_w, 0) - math.log(k))
    got = anomaly_scores(model, x, "iwae", k=k, seed=seed)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("verb", "out"), [("plot-latent", "m.png"), ("reconstruct", "r.txt"), ("interpolate", "i.txt"),
                                           ("traverse", "t.txt"), ("embed", "e.npy"), ("probe", None)])
def test_a_language_model_is_refused_by_the_verbs_of_latent_codes(
        runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str, out: str | None) -> None:
    code = main([verb, str(runs["lm"]), *(("--out", str(tmp_path / out)) if out else ())])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "has no latent variable (model.latent_dim=0" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_byte_order_mark_is_not_part_of_the_first_word(runs: dict[str, Path], tmp_path: Path) -> None:
    from vaekit.data import load_examples

    prep = load(runs["vae"] / "best").preprocessing
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text("the cat saw the dog\nthe old dog\n")
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    a, b = (load_examples(str(path), prep) for path in (plain, marked))
    assert torch.equal(a.tensor(), b.tensor()) and b.stats.oov == 0

