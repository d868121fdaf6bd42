"""``vaekit score``, ``vaekit plot-latent`` and ``vaekit probe``: parse arguments, call :func:`vaekit.apps.score`,
:func:`vaekit.apps.plot_latent` or :func:`vaekit.evaluation.probe`, print what happened."""

from __future__ import annotations

import argparse

from vaekit.cli.common import Commands, add_data_args, write_json_report


def _cmd_score(args: argparse.Namespace) -> int:
    from vaekit.apps import score

    result = score(
        args.model, args.data, method=args.method, k=args.k, unit=args.unit, data_dir=args.data_dir,
        out=args.out, threshold=args.threshold, fpr=args.fpr, contamination=args.contamination,
        calibrate=args.calibrate, histogram=args.histogram, seed=args.seed, relative=args.relative,
        progress=not args.quiet, detector=not args.likelihood_only,
    )
    print(f"scored {len(result.scores)} examples of {result.source}: {result.score_name}")
    if result.threshold is not None:
        print(f"threshold {result.threshold:.6g} ({result.threshold_rule}): flagged {result.num_flagged} "
              f"of {len(result.scores)}")
    for path in (args.out, args.histogram):
        if path is not None:
            print(f"wrote {path}")
    return 0


def _cmd_plot_latent(args: argparse.Namespace) -> int:
    from vaekit.apps import plot_latent

    points = plot_latent(
        args.model, args.data, data_dir=args.data_dir, projection=args.projection, max_points=args.max_points,
        seed=args.seed, out=args.out, progress=not args.quiet,
    )
    print(f"wrote a map of {len(points)} examples (projection {args.projection}) to {args.out}")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from vaekit.evaluation import probe

    report = probe(
        args.model, args.data, data_dir=args.data_dir, k_neighbors=args.neighbors,
        test_fraction=args.test_fraction, seed=args.seed, progress=not args.quiet,
    )
    print(report.format_table())
    if args.json:
        write_json_report(args.json, report.to_dict())
    return 0


def register(commands: Commands) -> None:
    """Add ``score``, ``plot-latent`` and ``probe``."""
    _register_score(commands)
    _register_latents(commands)


def _register_score(commands: Commands) -> None:
    p = commands.model_command(
        "score",
        "Anomaly score per example (higher = more anomalous), optionally a threshold and 0/1 decisions. A "
        "directory saved by AnomalyDetector.save is scored as that detector scores.",
        _cmd_score,
        "vaekit score runs/digits-20240101-120000 --out scores.csv",
        "vaekit score runs/mnist/best --data mnist --fpr 0.05 --out scores.csv --histogram scores.png",
        "vaekit score runs/tab/best --data new.csv --method recon --contamination 0.02 --out flags.npy",
        "vaekit score fraud-detector --data day2.parquet --threshold 3 --out flags.csv",
    )
    add_data_args(p)
    p.add_argument("--method", metavar="NAME",
                   help="iwae: importance-weighted NLL (default); elbo: -ELBO; recon: squared error (a saved "
                        "AnomalyDetector uses its own)")
    p.add_argument("--k", type=int, help="posterior samples of iwae / elbo (default 100; a saved AnomalyDetector "
                                         "uses its own)")
    p.add_argument("--unit", choices=("nats", "bits"), default="nats",
                   help="nats per example (default) or bits per dimension (likelihood scores)")
    p.add_argument("--relative", action="store_true",
                   help="iwae / elbo: subtract the saturated model's NLL (the image's own entropy for a "
                        "Bernoulli decoder on grayscale data)")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, metavar="T", help="flag examples whose score is above T")
    rule.add_argument("--fpr", type=float, metavar="A",
                      help="flag about a fraction A of held-out normal data (--calibrate, default the model's "
                           "validation split)")
    rule.add_argument("--contamination", type=float, metavar="C",
                      help="flag the fraction C of the scored data with the highest scores, C in (0, 0.5]")
    p.add_argument("--calibrate", metavar="NAME_OR_PATH", help="held-out normal data for --fpr")
    p.add_argument("--out", metavar="FILE", help="FILE.csv or FILE.npy: index, label, score, decision")
    p.add_argument("--histogram", metavar="FILE.png", help="histogram of the scores, normal vs flagged")
    p.add_argument("--seed", type=int, metavar="S", help="seed of the posterior samples (default 0; a saved "
                                                          "AnomalyDetector uses its own)")
    p.add_argument("--likelihood-only", action="store_true",
                   help="a saved AnomalyDetector: score its network's likelihood alone (--method, --k), not the "
                        "detector's sum of z-scores")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")


def _register_latents(commands: Commands) -> None:
    p = commands.model_command(
        "plot-latent",
        "Map the posterior means of a dataset to 2-D (first two dims, or PCA) coloured by label, as a PNG.",
        _cmd_plot_latent,
        "vaekit plot-latent runs/digits-20240101-120000 --out latent.png",
        "vaekit plot-latent runs/mnist/best --data mnist --projection pca --max-points 5000",
    )
    add_data_args(p)
    p.add_argument("--projection", default="auto", metavar="NAME",
                   help="auto (default): first two dims when L <= 2, else pca (PCA of the posterior means); first: "
                        "the first two dims")
    p.add_argument("--max-points", type=int, metavar="N", help="plot a random N of the examples (default all)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of --max-points (default 0)")
    p.add_argument("--out", default="latent.png", metavar="FILE.png", help="default latent.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")

    p = commands.model_command(
        "probe",
        "Linear-probe and k-NN accuracy of the latent codes next to PCA with as many dimensions, same split "
        "(a built-in dataset: fitted on its train split, tested on its test split).",
        _cmd_probe,
        "vaekit probe runs/digits-20240101-120000",
        "vaekit probe runs/mnist/best --data mnist --data-dir ../shared/data/mnist --json probe.json",
    )
    add_data_args(p)
    p.add_argument("--neighbors", type=int, default=5, metavar="K", help="k of the k-NN probe (default 5)")
    p.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                   help="test share of data without its own test split (default 0.2)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the split (default 0)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
