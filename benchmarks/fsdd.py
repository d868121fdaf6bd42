"""Benchmark: spoken digits you can listen to, on the Free Spoken Digit Dataset (FSDD, issue 15).

FSDD: 3,000 recordings (6 speakers x 10 digits x 50 takes, 8 kHz); the conventional test split is takes 0-4 of
every speaker and digit (300 clips), the rest (2,700) train (10% of them validate). Clips become 0.8 s log-mel
spectrograms (64 mel bands, STFT 256 / hop 80: 1 x 64 x 81), as the ``fsdd`` preset says.

What it measures (every NLL in nats per clip of the model's input, the standardized log-mel values, with its
IWAE k; bits/dim over the 5,184 values of a clip):

1. ``fsdd`` (unconditional) and ``fsdd-cvae`` (conditional on the digit) trained by their presets: training time
   (process CPU seconds, one torch thread), test ELBO and IWAE NLL beside a probabilistic-PCA baseline with as
   many latent dimensions (Tipping and Bishop 1999: scikit-learn's ``PCA.score_samples``, fitted on the same
   training clips in the same input space). Target: the VAE's NLL below PPCA's.
2. The likelihood: ``fsdd`` trained again with ``model.likelihood=laplace`` beside the preset's ``gaussian`` (both
   with scales the decoder predicts); the test NLLs say which fits log-mel values better (``--skip-likelihoods``
   skips it).
3. vaekit's spoken-digit classifier (the feature extractor of :mod:`vaekit.evaluation.classifier`, trained on the
   2,700 training clips): its test accuracy (target > 95%); then the share of ``--conditional-samples``
   conditional samples it hears as the digit asked for (target >= 90%), and FID / KID of 150 samples (half the
   test split) against one half of the test split (A), mean and sd over five draws of samples, beside the other
   half's (B; target: FID within 2x of it) and beside 150 training clips' (as many per digit as A has; five
   draws). The halves split every (digit, speaker) group of test clips at random (seeded): the test split in file
   order is digits 0-4 then 5-9, so ``vaekit evaluate --samples``'s first-half / second-half reference differs in
   kind there. Half B holds the same takes (0-4) of the same speakers and digits as A, the training clips other ones
   (takes 5-49): how far real clips of other takes lie from A says what samples of a model trained on those
   takes can be expected to reach.
4. Griffin-Lim: every test clip -> log-mel -> back to sound (mel inversion by NNLS, 64 Griffin-Lim iterations);
   spectral convergence ``||S - S_hat||_F / ||S||_F`` of the STFT magnitudes (and of the mel spectrograms).
5. Five samples of the conditional model (digits 0-4, one clip each) and a reconstruction of a test clip (its
   original beside it) as WAV + PNG under ``benchmarks/results/fsdd/``.
6. Speaker anomaly: the preset trained on five speakers (train takes), scored (IWAE NLL, k=100) on the test takes
   of those five (normal) and on every clip of the sixth (anomalous): AUROC, for ``--anomaly-speakers``.

Run (the full benchmark: about 70 CPU-minutes on a quiet machine; one torch thread)::

    OMP_NUM_THREADS=1 python benchmarks/fsdd.py --data ../shared/data/fsdd/recordings

or its two halves side by side, one per core (``--part main`` writes ``fsdd.json``, ``--part extra``
``fsdd_extra.json``)::

    OMP_NUM_THREADS=1 python benchmarks/fsdd.py --part main & OMP_NUM_THREADS=1 python benchmarks/fsdd.py --part extra

A quick check that everything runs (a few epochs, small k; the numbers mean nothing)::

    OMP_NUM_THREADS=1 python benchmarks/fsdd.py --quick --out runs/bench-fsdd-quick

Results: ``benchmarks/results/fsdd.json`` (``fsdd_quick.json`` with ``--quick``) and ``benchmarks/results/fsdd/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import RESULTS, ROOT, save, table

import vaekit
from vaekit.config import resolve_config
from vaekit.data import load_data, load_examples
from vaekit.data.audio import AudioPreprocessing, spectral_convergence
from vaekit.data.audio_source import clips_of, test_rows
from vaekit.evaluation.classifier import get_classifier
from vaekit.evaluation.quality import class_accuracy, fid, kid
from vaekit.models.latent_density import FittedLatents, fit_latent_density
from vaekit.presets import get_preset

DEFAULT_FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
SOUNDS = RESULTS / "fsdd"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system), seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_preset(preset: str, data: str, out: Path, overrides: list[str]) -> tuple[Any, dict[str, float]]:
    """Train a preset; returns (the best model, wall and CPU seconds of the run)."""
    shutil.rmtree(out, ignore_errors=True)
    config = resolve_config(get_preset(preset), overrides=[f"data.source={data}", *overrides])
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = vaekit.train(config, out)
    spent = {"wall_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu}
    (out / "bench_time.json").write_text(json.dumps(spent))  # for --skip-train
    print(f"{preset} {' '.join(overrides)}: {spent['cpu_s'] / 60:.1f} CPU-minutes", flush=True)
    return vaekit.load(result.model_dir), spent


def likelihood_figures(model: Any, x: torch.Tensor, y: torch.Tensor | None, k: int) -> dict[str, float]:
    """Test ELBO and IWAE NLL, nats per clip, and the NLL in bits/dim."""
    torch.manual_seed(0)
    elbo = torch.cat([model.elbo(x[i : i + 50], None if y is None else y[i : i + 50]) for i in range(0, len(x), 50)])
    nll = -torch.cat([model.log_likelihood(x[i : i + 10], k=k, chunk_size=min(k, 100),
                                           y=None if y is None else y[i : i + 10]) for i in range(0, len(x), 10)])
    return {"elbo_nats": float(elbo.mean()), "nll_nats": float(nll.mean()), "k": k,
            "nll_bits_per_dim": float(nll.mean()) / (model.num_dims * np.log(2))}


def ppca_nll(x_train: np.ndarray, x_test: np.ndarray, latent_dim: int) -> dict[str, float]:
    """Probabilistic PCA (Tipping and Bishop 1999) with ``latent_dim`` components: exact test NLL, nats per clip."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=latent_dim, random_state=0).fit(x_train.reshape(len(x_train), -1))
    nll = -pca.score_samples(x_test.reshape(len(x_test), -1))
    return {"nll_nats": float(nll.mean()), "nll_bits_per_dim": float(nll.mean()) / (x_test[0].size * np.log(2)),
            "latent_dim": latent_dim}


def test_paths(data: str, record: AudioPreprocessing) -> list[Path]:
    """The test clips' files, in the order of the test split."""
    clips = clips_of(data, record.labels_from)
    rows = test_rows(clips, record.test_split)
    return [clips.paths[i] for i in (rows if rows is not None else range(len(clips.paths)))]


def griffin_lim(data: str, record: AudioPreprocessing, limit: int | None) -> dict[str, float]:
    """Spectral convergence of test clips sent through log-mel and back (NNLS mel inversion + Griffin-Lim)."""
    paths = test_paths(data, record)[:limit]
    waves, _ = record.read(paths)
    start = time.perf_counter()
    back = np.concatenate([record.to_waveforms(record.features(waves[i : i + 20])) for i in range(0, len(waves), 20)])
    seconds = time.perf_counter() - start
    sc = spectral_convergence(waves, back, record.n_fft, record.hop_length)
    mel = np.power(10.0, record.decibels(waves) / 20.0), np.power(10.0, record.decibels(back) / 20.0)
    mel_sc = np.sqrt(((mel[0] - mel[1]) ** 2).sum((1, 2)) / (mel[0] ** 2).sum((1, 2)))
    return {"clips": len(paths), "griffin_lim_iters": record.griffin_lim_iters,
            "spectral_convergence_mean": float(sc.mean()), "spectral_convergence_median": float(np.median(sc)),
            "mel_spectral_convergence_mean": float(mel_sc.mean()), "seconds_per_clip": seconds / len(paths)}


def conditional_accuracy(model: Any, classifier: Any, n: int, latents: str) -> dict[str, Any]:
    """Share of ``n`` conditional samples (digits 0..9 in turn, seeded) the classifier hears as the asked digit,
    their z drawn from ``latents`` (``prior`` or ``fitted``)."""
    asked = np.arange(n) % model.num_classes
    x = vaekit.sample(model, n, seed=123, label=asked, latents=latents)
    overall, per_class = class_accuracy(classifier, x, asked)
    return {"samples": n, "latents": latents, "accuracy": overall, "per_class": per_class}


def balanced_halves(groups: list[tuple[str, ...]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of the test clips with every (digit, speaker) group split between them (seeded), so the halves
    differ only by sampling: the test split in file order is digits 0-4 then 5-9, whose halves differ in kind."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for i, group in enumerate(sorted(set(groups))):
        members = rng.permutation([j for j, g in enumerate(groups) if g == group])
        cut = len(members) // 2 + (len(members) % 2) * (i % 2)  # odd groups alternate which half gets the extra
        first += members[:cut].tolist()
        second += members[cut:].tolist()
    return np.sort(first), np.sort(second)


SAMPLE_SEEDS = (7, 8, 9, 10, 11)  # FID of 150 samples moves by about 1 from one draw to the next: five draws


def test_halves(data: str, preprocessing: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`balanced_halves` of the test clips of FSDD's folder ``data``, grouped by (digit, speaker)."""
    return balanced_halves([(p.stem.split("_")[0], p.stem.split("_")[1]) for p in test_paths(data, preprocessing)])


def refit_latent_density(model: Any, bundle: Any, per_class: int) -> None:
    """Replace ``model``'s latent density by ``per_class`` Gaussians per digit fitted to the training clips' codes."""
    x_train, y_train = bundle.train.tensor(), torch.as_tensor(bundle.train.labels)
    model.latent_density = FittedLatents(model.latent_dim, per_class, model.num_classes)
    fit_latent_density(model, [(x_train[i : i + 256], y_train[i : i + 256]) for i in range(0, len(x_train), 256)])


def training_rows(bundle: Any, a: np.ndarray, seed: int) -> np.ndarray:
    """len(a) training clips (other takes than the test split's) with the digit frequencies of test clips ``a``,
    drawn without replacement by ``seed``: the training-clip reference of :func:`references`."""
    rng = np.random.default_rng(seed)
    labels = bundle.train.labels
    digits, counts = np.unique(bundle.test.labels[a], return_counts=True)
    return np.concatenate([rng.choice(np.flatnonzero(labels == d), c, replace=False)
                           for d, c in zip(digits, counts, strict=True)])


def references(classifier: Any, bundle: Any, halves: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """What real clips score against half A: half B (the same takes, 0-4), and len(A) training clips
    (other takes), drawn with A's digit frequencies once per seed of :data:`SAMPLE_SEEDS`."""
    a, b = halves
    features_a = classifier.features(bundle.test.tensor()[a])
    features_b = classifier.features(bundle.test.tensor()[b])
    train = bundle.train.tensor()
    train_fid = [fid(classifier.features(train[training_rows(bundle, a, seed)]), features_a) for seed in SAMPLE_SEEDS]
    return {"features_a": features_a, "real_fid": fid(features_b, features_a),
            "real_kid": kid(features_b, features_a)[0], "train_fid": float(np.mean(train_fid)),
            "train_fid_sd": float(np.std(train_fid, ddof=1)), "train_fid_each": train_fid}


def sample_figures(model: Any, classifier: Any, labels: np.ndarray, halves: tuple[np.ndarray, np.ndarray],
                   reference: dict[str, Any], latents: str, mean: bool = True) -> dict[str, Any]:
    """FID and KID of len(A) samples (z from ``latents``; decoded means, or draws of p(x|z) if not ``mean``)
    against half A of the test split, mean and sd over the seeds of :data:`SAMPLE_SEEDS`; beside half B's and the
    training clips' (``reference``)."""
    a, _ = halves
    n, features_a = len(a), reference["features_a"]
    asked = torch.as_tensor(np.random.default_rng(0).choice(labels[a], n)) if model.num_classes else None
    fids, kids = [], []
    for seed in SAMPLE_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        x = model.sample(n, generator=generator, mean=mean, y=asked, latents=latents)  # A's label frequencies
        features_s = classifier.features(x)
        fids.append(fid(features_s, features_a))
        kids.append(kid(features_s, features_a)[0])
    value = float(np.mean(fids))
    return {"samples": n, "latents": latents, "decoded": "means" if mean else "draws", "seeds": list(SAMPLE_SEEDS),
            "fid": value,
            "fid_sd": float(np.std(fids, ddof=1)), "fid_each": fids, "kid": float(np.mean(kids)),
            "real_fid": reference["real_fid"], "real_kid": reference["real_kid"], "train_fid": reference["train_fid"],
            "fid_ratio_halves": value / reference["real_fid"], "fid_ratio_train": value / reference["train_fid"]}


def write_sounds(model: Any, data: str) -> list[str]:
    """Five conditional samples (digits 0-4) and a reconstruction of test clip 0, as WAV + PNG."""
    shutil.rmtree(SOUNDS, ignore_errors=True)
    SOUNDS.mkdir(parents=True)
    for digit in range(5):
        vaekit.sample(model, 1, seed=digit, label=digit, out=SOUNDS / f"sample_digit{digit}.wav")
        (SOUNDS / f"sample_digit{digit}.npy").unlink()
    vaekit.reconstruct(model, data, n=1, out=SOUNDS / "reconstruction.wav")
    return sorted(p.name for p in SOUNDS.iterdir())


def speaker_anomaly(data: str, speaker: str, out: Path, overrides: list[str], k: int) -> dict[str, Any]:
    """Train on the other five speakers' train takes; AUROC of IWAE scores, their test takes vs all of ``speaker``."""
    from sklearn.metrics import roc_auc_score

    folder = Path(data).expanduser()
    names = sorted(p.name for p in folder.glob("*.wav"))
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / f"without_{speaker}.csv"
    with table_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "split"])
        for name in names:
            digit, who, take = Path(name).stem.split("_")
            if who != speaker:
                writer.writerow([name, digit, "test" if int(take) < 5 else "train"])
    model, spent = train_preset("fsdd", data, out / f"without_{speaker}",
                                [f"data.labels_from={table_path}", "data.test_split=null", *overrides])
    record = model.preprocessing
    normal = load_examples(data, record, split="test").tensor()
    anomalous = record.features(record.read(sorted(folder.glob(f"*_{speaker}_*.wav")))[0])
    torch.manual_seed(0)
    scores = [-torch.cat([model.log_likelihood(x[i : i + 10], k=k, chunk_size=min(k, 100))
                          for i in range(0, len(x), 10)]).numpy() for x in (normal, torch.from_numpy(anomalous))]
    truth = np.r_[np.zeros(len(scores[0])), np.ones(len(scores[1]))]
    return {"speaker": speaker, "normal_clips": len(scores[0]), "anomalous_clips": len(scores[1]), "k": k,
            "auroc": float(roc_auc_score(truth, np.r_[scores[0], scores[1]])), "train_cpu_s": spent["cpu_s"]}


def trained_rows(args: argparse.Namespace, names: tuple[str, ...], quick: list[str], k: int, bundle: Any,
                 results: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train the runs ``names`` and measure their test ELBO / NLL (into ``results``); (models, table rows)."""
    x_test, y_test = bundle.test.tensor(), torch.as_tensor(bundle.test.labels)
    runs = {"fsdd": ("fsdd", []), "fsdd-cvae": ("fsdd-cvae", []),
            "fsdd laplace": ("fsdd", ["model.likelihood=laplace"])}
    models, rows = {}, []
    for name in names:
        preset, extra = runs[name]
        run = Path(args.out) / name.replace(" ", "-")
        if args.skip_train:  # the models (and their training times, when recorded) of an earlier invocation
            timing = run / "bench_time.json"
            model = vaekit.load(run / "best")
            spent = json.loads(timing.read_text()) if timing.is_file() else {"wall_s": math.nan, "cpu_s": math.nan}
        else:
            model, spent = train_preset(preset, args.data, run, [*quick, *extra])
        models[name] = model
        figures = likelihood_figures(model, x_test, y_test if model.num_classes else None, k)
        rows.append({"model": name, "likelihood": model.config.likelihood, "train_cpu_min": spent["cpu_s"] / 60,
                     "test_elbo": figures["elbo_nats"], f"test_nll_k{k}": figures["nll_nats"],
                     "bits_per_dim": figures["nll_bits_per_dim"]})
        results[name] = {**figures, **spent}
    return models, rows


def quality_part(args: argparse.Namespace, models: dict[str, Any], bundle: Any, results: dict[str, Any]) -> None:
    """Classifier, conditional accuracy, FID / KID (fitted latents and prior), Griffin-Lim, the WAVs."""
    cvae = models["fsdd-cvae"]
    classifier = get_classifier(args.data, cvae.preprocessing)
    results["classifier"] = {"name": classifier.name, "test_accuracy": classifier.test_accuracy}
    n_conditional = 100 if args.quick else args.conditional_samples
    results["conditional"] = {latents: conditional_accuracy(cvae, classifier, n_conditional, latents)
                              for latents in ("fitted", "prior")}
    halves = test_halves(args.data, cvae.preprocessing)
    reference = references(classifier, bundle, halves)
    results["fid_reference"] = {k: v for k, v in reference.items() if k != "features_a"}
    print(f"FID against test half A: half B {reference['real_fid']:.2f}, training clips {reference['train_fid']:.2f} "
          f"+- {reference['train_fid_sd']:.2f}", flush=True)
    for name in ("fsdd", "fsdd-cvae"):
        results[name]["quality"] = {}
        for latents, mean in (("fitted", True), ("fitted", False), ("prior", True)):
            quality = sample_figures(models[name], classifier, bundle.test.labels, halves, reference, latents, mean)
            results[name]["quality"][latents + ("" if mean else " draws")] = quality
            print(f"{name}, {latents} latents, decoded {quality['decoded']}: FID {quality['fid']:.2f} +- "
                  f"{quality['fid_sd']:.2f} "
                  f"({quality['fid_ratio_halves']:.1f}x the test halves', {quality['fid_ratio_train']:.2f}x the "
                  f"training clips'), KID {quality['kid']:.4f} (halves {quality['real_kid']:.4f})", flush=True)
    print(f"classifier {classifier.describe()}; conditional samples heard as asked: "
          f"{results['conditional']['fitted']['accuracy']:.1%} (fitted latents), "
          f"{results['conditional']['prior']['accuracy']:.1%} (prior)", flush=True)
    results["griffin_lim"] = griffin_lim(args.data, cvae.preprocessing, 40 if args.quick else None)
    print(f"Griffin-Lim: spectral convergence {results['griffin_lim']['spectral_convergence_mean']:.3f}", flush=True)
    if not args.quick:
        results["sounds"] = write_sounds(cvae, args.data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_FSDD), help="FSDD's recordings/ folder")
    parser.add_argument("--out", default="runs/bench-fsdd", help="run directories")
    parser.add_argument("--k", type=int, default=1000, help="IWAE samples of the test NLL (default 1000)")
    parser.add_argument("--conditional-samples", type=int, default=1000)
    parser.add_argument("--anomaly-speakers", default="theo", help="comma-separated, or 'all' (default theo)")
    parser.add_argument("--skip-likelihoods", action="store_true", help="skip the laplace-likelihood run")
    parser.add_argument("--part", choices=("all", "main", "extra"), default="all",
                        help="all (default); or one of two halves to run side by side in two processes: main "
                             "(the two presets, PPCA, classifier, samples, Griffin-Lim, WAVs; fsdd.json) and extra "
                             "(the laplace-likelihood run and the speaker anomaly; fsdd_extra.json)")
    parser.add_argument("--skip-train", action="store_true",
                        help="measure the models an earlier invocation trained under --out instead of training")
    parser.add_argument("--quick", action="store_true", help="2 epochs, k=20, 100 samples: checks that it runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quick = ["train.epochs=2"] if args.quick else []
    k = 20 if args.quick else args.k
    results: dict[str, Any] = {"data": args.data, "quick": args.quick, "threads": 1, "part": args.part}
    bundle = load_data(resolve_config(get_preset("fsdd"), overrides=[f"data.source={args.data}"]).data)
    names = {"all": ("fsdd", "fsdd-cvae", "fsdd laplace"), "main": ("fsdd", "fsdd-cvae"),
             "extra": ("fsdd laplace",)}[args.part]
    names = tuple(n for n in names if not (n == "fsdd laplace" and args.skip_likelihoods))
    models, rows = trained_rows(args, names, quick, k, bundle, results)
    if args.part != "extra":
        x_train = torch.cat([bundle.train.tensor(), bundle.val.tensor()]).numpy()
        latent = models["fsdd"].latent_dim
        results["ppca"] = ppca_nll(x_train, bundle.test.tensor().numpy(), latent)
        rows.append({"model": f"PPCA ({latent} components)", "likelihood": "gaussian", "train_cpu_min": float("nan"),
                     "test_elbo": float("nan"), f"test_nll_k{k}": results["ppca"]["nll_nats"],
                     "bits_per_dim": results["ppca"]["nll_bits_per_dim"]})
    print(table(rows), flush=True)
    results["table"] = rows
    if args.part != "extra":
        quality_part(args, models, bundle, results)
    if args.part != "main":
        speakers = SPEAKERS if args.anomaly_speakers == "all" else tuple(args.anomaly_speakers.split(","))
        results["speaker_anomaly"] = [speaker_anomaly(args.data, s, Path(args.out) / "anomaly", quick, k)
                                      for s in speakers]
        print(table([{k_: v for k_, v in r.items() if k_ != "train_cpu_s"} for r in results["speaker_anomaly"]]))
    name = "fsdd" + ("_extra" if args.part == "extra" else "") + ("_quick" if args.quick else "")
    path = save(name, results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
