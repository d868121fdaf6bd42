"""``vaekit evaluate``, ``sample``, ``reconstruct``, ``interpolate``, ``traverse`` and ``embed``: the commands that
take a model and call the library function of the same name."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaekit.cli.common import Commands, add_data_args, add_label_arg, add_quiet_arg, int_list, write_json_report


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vaekit.evaluation import evaluate

    report = evaluate(
        args.model,
        args.data,
        k=args.k,
        data_dir=args.data_dir,
        chunk_size=args.chunk_size,
        seed=args.seed,
        progress=not args.quiet,
        samples=args.samples,
        halves=args.halves,
    )
    print(report.format_table())
    if args.json:
        write_json_report(args.json, report.to_dict())
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from vaekit.apps import sample

    sample(args.model, args.n, temperature=args.temperature, seed=args.seed, label=args.label, out=args.out,
           writer_options=_writer_options(args), latents=args.latents, draw=args.draw)
    out = Path(args.out)
    what = "samples" if args.label is None else f"samples of class {args.label}"
    print(f"wrote {args.n} {what} to {out} and {out.with_suffix('.npy')}")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from vaekit.apps import reconstruct

    originals, _ = reconstruct(args.model, args.data, n=args.n, data_dir=args.data_dir, out=args.out,
                               writer_options=_writer_options(args))
    print(f"wrote {len(originals)} reconstructions to {args.out}")
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from vaekit.apps import interpolate

    interpolate(
        args.model,
        args.data,
        index_a=args.a,
        index_b=args.b,
        steps=args.steps,
        method=args.method,
        label=args.label,
        data_dir=args.data_dir,
        out=args.out,
        writer_options=_writer_options(args),
    )
    print(f"wrote a {args.method} interpolation of {args.steps} steps to {args.out}")
    return 0


def _cmd_traverse(args: argparse.Namespace) -> int:
    from vaekit.apps import traverse

    x = traverse(
        args.model,
        args.data,
        index=args.index,
        dims=args.dims,
        span=args.span,
        steps=args.steps,
        label=args.label,
        data_dir=args.data_dir,
        out=args.out,
        writer_options=_writer_options(args),
    )
    print(f"wrote traversals of {len(x)} latent dimensions to {args.out}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from vaekit.apps import embed

    mu, _ = embed(args.model, args.data, data_dir=args.data_dir, out=args.out)
    extra = f" and {Path(args.out).stem}_logvar.npy" if Path(args.out).suffix.lower() == ".npy" else ""
    print(f"wrote the embeddings of {len(mu)} examples ({mu.shape[1]} latents) to {args.out}{extra}")
    return 0


def _writer_options(args: argparse.Namespace) -> dict[str, object]:
    """Options of the modality's writer given on the command line (audio: Griffin-Lim iterations)."""
    return {} if args.griffin_lim_iters is None else {"griffin_lim_iters": args.griffin_lim_iters}


def _add_griffin_lim_arg(parser: argparse.ArgumentParser) -> None:
    """``--griffin-lim-iters N`` of the commands that write examples (audio models: FILE.wav, FILE.png)."""
    parser.add_argument("--griffin-lim-iters", type=int, metavar="N",
                        help="audio models (which write FILE.wav, one WAV per clip and FILE.png): Griffin-Lim "
                             "iterations of the phase estimate (default the model's, 64)")


def register(commands: Commands) -> None:
    """Add the model commands."""
    _register_evaluate(commands)
    _register_generators(commands)
    _register_encoders(commands)


def _register_evaluate(commands: Commands) -> None:
    p = commands.model_command(
        "evaluate",
        "Estimate the ELBO, the importance-weighted NLL (nats, bits/dim) and active units.",
        _cmd_evaluate,
        "vaekit evaluate runs/digits-20240101-120000",
        "vaekit evaluate runs/mnist/best --data mnist --k 5000 --json report.json",
        "vaekit evaluate runs/mnist-cvae --k 1 --samples 5000   # + FID, KID, precision/recall",
    )
    add_data_args(p)
    p.add_argument(
        "--k", type=int, default=1000, help="importance samples per example (default 1000; 5000 for final figures)"
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        metavar="C",
        help="importance samples decoded at once (default: about 25,600 decoded examples per pass); it sets memory, "
        "and, as the samples are drawn chunk by chunk, which samples are drawn: the estimate is the same in "
        "distribution, not bit for bit",
    )
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the importance samples")
    p.add_argument(
        "--samples",
        type=int,
        default=0,
        metavar="N",
        help="also draw N samples and report FID, KID, precision/recall (and class-conditional accuracy) in the "
        "feature space of a classifier trained on the dataset, named beside each number (default 0: skip)",
    )
    p.add_argument(
        "--halves",
        choices=("ordered", "random"),  # vaekit.evaluation.quality.HALVES (not imported: the CLI starts light)
        default="ordered",
        help="with --samples: the test split's first and second half as the reference and the real-data line "
        "(ordered, the default), or the halves of a seeded shuffle (random: for data read in an order that makes "
        "its halves differ, such as a folder of clips named by digit)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")



def _register_generators(commands: Commands) -> None:
    p = commands.model_command(
        "sample",
        "Draw new examples from the prior; writes a PNG and a .npy array beside it.",
        _cmd_sample,
        "vaekit sample runs/digits-20240101-120000 -n 100 --temperature 0.8 --out samples.png",
        "vaekit sample runs/mnist-cvae/best --label 3 -n 16 --out threes.png   # a conditional model",
    )
    p.add_argument("-n", type=int, default=64, metavar="N", help="number of samples (default 64)")
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        metavar="T",
        help="scale of the prior draw; below 1 gives more typical samples (default 1.0)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the draw (default 0)")
    add_label_arg(p, "the class to generate (default: each class in turn)")
    p.add_argument("--latents", choices=("auto", "prior", "fitted"), default="auto",
                   help="where z comes from: the density fitted to the training codes when the model has one "
                        "(model.latent_density; auto, the default), or the prior N(0, I): prior")
    p.add_argument("--draw", action="store_true",
                   help="decode a draw of p(x|z) instead of its mean: the likelihood's noise on every value (an audio "
                        "model's noise floor; 0/1 pixels of a Bernoulli model); seeded by --seed")
    p.add_argument("--out", default="samples.png", metavar="FILE.png", help="default samples.png")
    _add_griffin_lim_arg(p)
    add_quiet_arg(p, "no log lines")

    p = commands.model_command(
        "interpolate",
        "Decode a path between the latent codes of two examples (a strip of images).",
        _cmd_interpolate,
        "vaekit interpolate runs/digits-20240101-120000 --a 0 --b 7 --steps 12 --method spherical",
    )
    add_data_args(p)
    p.add_argument("--a", type=int, default=0, metavar="I", help="index of the first example (default 0)")
    p.add_argument("--b", type=int, default=1, metavar="J", help="index of the second example (default 1)")
    p.add_argument(
        "--steps", type=int, default=10, metavar="S", help="points including both ends (default 10)"
    )
    p.add_argument("--method", default="linear", metavar="NAME",
                   help="path between the codes: linear (default) or spherical (the great circle)")
    add_label_arg(p, "the class every step is drawn as (default: the label of example --a)")
    p.add_argument("--out", default="interpolation.png", metavar="FILE.png", help="default interpolation.png")
    _add_griffin_lim_arg(p)
    add_quiet_arg(p, "no log lines")

    p = commands.model_command(
        "traverse",
        "Vary one latent dimension at a time over [-span, span]; one row per dimension.",
        _cmd_traverse,
        "vaekit traverse runs/digits-20240101-120000 --dims 0,1,2 --span 2.5",
        "vaekit traverse runs/digits-20240101-120000 --data digits --index 3",
    )
    add_data_args(p)
    p.add_argument(
        "--index",
        type=int,
        default=0,
        metavar="I",
        help="start from this example's code when --data is given (default: start from z = 0)",
    )
    p.add_argument("--dims", type=int_list, metavar="0,1,2", help="dimensions to vary (default: the first 10)")
    p.add_argument(
        "--span", type=float, default=3.0, help="each dimension runs over [-span, span] (default 3)"
    )
    p.add_argument("--steps", type=int, default=9, help="values per dimension (default 9)")
    add_label_arg(p, "the class the grid is drawn as (default: the starting example's label)")
    p.add_argument("--out", default="traversal.png", metavar="FILE.png", help="default traversal.png")
    _add_griffin_lim_arg(p)
    add_quiet_arg(p, "no log lines")



def _register_encoders(commands: Commands) -> None:
    p = commands.model_command(
        "reconstruct",
        "Reconstruct the first N examples; originals and reconstructions in alternate rows.",
        _cmd_reconstruct,
        "vaekit reconstruct runs/digits-20240101-120000 -n 16 --out recon.png",
    )
    add_data_args(p)
    p.add_argument("-n", type=int, default=32, metavar="N", help="number of examples (default 32)")
    p.add_argument(
        "--out", default="reconstructions.png", metavar="FILE.png", help="default reconstructions.png"
    )
    _add_griffin_lim_arg(p)
    add_quiet_arg(p, "no log lines")

    p = commands.model_command(
        "embed",
        "Write the posterior means and log-variances of every example (.npy, .csv or .parquet).",
        _cmd_embed,
        "vaekit embed runs/digits-20240101-120000 --out codes.csv",
        "vaekit embed runs/mnist/best --data mnist --out codes.npy   # also writes codes_logvar.npy",
    )
    add_data_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="FILE.npy, FILE.csv or FILE.parquet")
    add_quiet_arg(p, "no log lines")
