"""The ``vaekit`` command line: each command parses its arguments and calls the library function of its name.

No maths lives here. Errors raised on purpose (:class:`vaekit.errors.VaeKitError`) are printed as one line,
``vaekit: error: <message>``, with exit status 2; Ctrl-C exits with 130. Only this module prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from vaekit import __version__, cli_apps, cli_compress, cli_serve
from vaekit.errors import ConfigError, VaeKitError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in the same format as every other vaekit error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"vaekit: error: {message} (see `{self.prog} --help`)\n")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="NAME_OR_PATH",
        help="digits, mnist, fashion-mnist (test split) or a path; default: the model's own data",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="folder of the mnist / fashion-mnist IDX files")


def _add_label_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--label", type=int, metavar="K", help=f"conditional models only: {what}")


def _dims(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got {text!r}"
        ) from None


# -- commands ---------------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from vaekit.config import resolve_config
    from vaekit.presets import get_preset
    from vaekit.train import train

    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 logs and prints
    if rank > 0:
        logging.getLogger("vaekit").setLevel(logging.WARNING)
    # Explicit flags win over everything; passed as section dicts so paths are never parsed as YAML.
    flags: dict[str, dict[str, object]] = {"data": {}, "train": {}}
    for section, key, value in (
        ("data", "source", args.data),
        ("data", "data_dir", args.data_dir),
        ("train", "epochs", args.epochs),
        ("train", "seed", args.seed),
        ("train", "device", args.device),
        ("train", "time_budget_s", args.time_budget),
    ):
        if value is not None:
            flags[section][key] = value
    if args.time_budget is not None and args.epochs is None:  # the budget ends the run, not an epoch count
        flags["train"]["epochs"] = UNTIL_BUDGET_EPOCHS
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs the run directory to continue: pass --out DIR")
        if (
            args.preset
            or args.config
            or args.overrides
            or args.data
            or args.data_dir
            or args.seed is not None
            or args.device
            or args.time_budget is not None
        ):
            raise ConfigError("--resume reads the run's saved config; only --epochs may change when resuming")
        config = None
        if args.epochs is not None:
            config = resolve_config(config_file=Path(args.out) / "config.json", train=flags["train"])
        out = Path(args.out)
    else:
        preset = args.preset or "digits"
        config = resolve_config(get_preset(preset), args.config, overrides=args.overrides)
        config = resolve_config(config, data=flags["data"], train=flags["train"])
        out = Path(args.out or Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.nproc is not None and args.nproc > 1:  # re-launch this command in N processes through torchrun
        from vaekit.distributed import launch, local_batch_size
        from vaekit.train import resolve_device

        if config is not None:  # catch what would fail in every process before starting them
            local_batch_size(config.train.batch_size, args.nproc)
            resolve_device(config.train.device)
        return launch(args.nproc, [*_without_nproc(args.argv), *([] if args.out else ["--out", str(out)])])
    result = train(config, out, resume=args.resume, progress=not args.quiet)
    if rank > 0:
        return 0
    print(f"run directory:  {result.run_dir}")
    print(f"best model:     {result.model_dir}")
    if result.metrics and result.metrics[-1].get("val_elbo") is not None:
        print(f"final val ELBO: {result.metrics[-1]['val_elbo']:.4f} nats")
    return 0


UNTIL_BUDGET_EPOCHS = 1_000_000


def _duration(text: str) -> float:
    """``3600``, ``90s``, ``45m`` or ``1.5h`` -> seconds (argparse type: a bad value is a one-line usage error)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], text[-1].lower()) if text and text[-1].lower() in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 3600, 90s, 45m or 1.5h") from None
    if not seconds > 0 or not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"the time budget must be positive, got {text!r}")
    return seconds


def _without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (or an abbreviation argparse accepted)."""
    kept: list[str] = []
    skip = False
    for token in argv:
        name = token.split("=", 1)[0]
        if skip:
            skip = False
        elif len(name) > 2 and "--nproc".startswith(name):
            skip = "=" not in token
        else:
            kept.append(token)
    return kept


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vaekit.evaluate import evaluate
    from vaekit.serialization import atomic_write_text

    report = evaluate(
        args.model,
        args.data,
        k=args.k,
        data_dir=args.data_dir,
        chunk_size=args.chunk_size,
        seed=args.seed,
        progress=not args.quiet,
        samples=args.samples,
    )
    print(report.format_table())
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from vaekit.sample import sample

    sample(args.model, args.n, temperature=args.temperature, seed=args.seed, label=args.label, out=args.out)
    out = Path(args.out)
    what = "samples" if args.label is None else f"samples of class {args.label}"
    print(f"wrote {args.n} {what} to {out} and {out.with_suffix('.npy')}")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from vaekit.reconstruct import reconstruct

    originals, _ = reconstruct(args.model, args.data, n=args.n, data_dir=args.data_dir, out=args.out)
    print(f"wrote {len(originals)} reconstructions to {args.out}")
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from vaekit.interpolate import interpolate

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
    )
    print(f"wrote a {args.method} interpolation of {args.steps} steps to {args.out}")
    return 0


def _cmd_traverse(args: argparse.Namespace) -> int:
    from vaekit.traverse import traverse

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
    )
    print(f"wrote traversals of {len(x)} latent dimensions to {args.out}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from vaekit.embed import embed

    mu, _ = embed(args.model, args.data, data_dir=args.data_dir, out=args.out)
    extra = f" and {Path(args.out).stem}_logvar.npy" if Path(args.out).suffix.lower() == ".npy" else ""
    print(f"wrote the embeddings of {len(mu)} examples ({mu.shape[1]} latents) to {args.out}{extra}")
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from vaekit.data import download

    folder = download(args.name, args.data_dir)
    print(f"{args.name} is in {folder}")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from vaekit.presets import presets

    items = presets()
    width = max(len(p.name) for p in items)
    for preset in items:
        print(f"{preset.name:<{width}}  {preset.description}")
    return 0


# -- parser ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``vaekit`` argument parser (one subcommand per library verb)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="vaekit",
        description="Train, evaluate and use variational autoencoders.",
        epilog=_examples(
            "vaekit train                       # the digits preset, seconds on a CPU",
            "vaekit evaluate runs/digits-*/best --k 1000",
            "vaekit sample runs/digits-20240101-120000 -n 64 --out samples.png",
        ),
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(
        name: str,
        summary: str,
        handler: Callable[[argparse.Namespace], int],
        *examples: str,
        parent: argparse._SubParsersAction = commands,
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(
            name, help=summary, description=summary, epilog=_examples(*examples), formatter_class=fmt
        )
        sub.set_defaults(handler=handler)
        return sub

    def model_command(
        name: str, summary: str, handler: Callable[[argparse.Namespace], int], *examples: str
    ) -> argparse.ArgumentParser:
        sub = command(name, summary, handler, *examples)
        sub.add_argument("model", metavar="MODEL", help="a model directory or a run directory (uses best/)")
        return sub

    p = command(
        "train",
        "Train a VAE and write a run directory (config, metrics, best/ and last/ models, figures).",
        _cmd_train,
        "vaekit train",
        "vaekit train --preset mnist-conv --epochs 5 --out runs/conv",
        "vaekit train --data table.csv --preset tabular objective.beta=4 model.latent_dim=4",
        "vaekit train --out runs/conv --resume --epochs 10",
        "vaekit train --preset binarized-mnist-hvae --time-budget 30m   # hierarchical VAE, 30 minutes of training",
        "vaekit train --nproc 2 train.batch_size=256            # 2 processes, 128 examples each per step",
    )
    p.add_argument(
        "--preset", metavar="NAME", help="starting configuration (see `vaekit presets`); default digits"
    )
    p.add_argument(
        "--config", metavar="FILE", help="YAML/JSON file of config sections, applied over the preset"
    )
    _add_data_args(p)
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the training data (train.epochs)")
    p.add_argument("--seed", type=int, metavar="S", help="training seed (train.seed)")
    p.add_argument(
        "--time-budget",
        type=_duration,
        metavar="T",
        help="train until T of training time is spent (e.g. 3600, 90s, 45m, 1.5h; validation not counted) and "
        "schedule the learning rate over T (train.time_budget_s); with it, --epochs is only a cap",
    )
    p.add_argument("--out", metavar="DIR", help="run directory; default runs/<preset>-<YYYYmmdd-HHMMSS>")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), help="train.device: auto (CUDA if present, else CPU), cpu, cuda"
    )
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train in N processes on this machine (torchrun; gloo on CPU, NCCL on GPUs); train.batch_size is "
        "the global batch, split over them",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted config overrides such as train.lr=3e-4 model.hidden_dims=[512,256]",
    )

    p = model_command(
        "evaluate",
        "Estimate the ELBO, the importance-weighted NLL (nats, bits/dim) and active units.",
        _cmd_evaluate,
        "vaekit evaluate runs/digits-20240101-120000",
        "vaekit evaluate runs/mnist/best --data mnist --k 5000 --json report.json",
        "vaekit evaluate runs/mnist-cvae --k 1 --samples 5000   # + FID, KID, precision/recall",
    )
    _add_data_args(p)
    p.add_argument(
        "--k", type=int, default=1000, help="importance samples per example (default 1000; 5000 for final figures)"
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        metavar="C",
        help="importance samples decoded at once (default: about 25,600 decoded examples per pass); memory only, "
        "the estimate does not depend on it",
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = model_command(
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
    _add_label_arg(p, "the class to generate (default: each class in turn)")
    p.add_argument("--out", default="samples.png", metavar="FILE.png", help="default samples.png")

    p = model_command(
        "reconstruct",
        "Reconstruct the first N examples; originals and reconstructions in alternate rows.",
        _cmd_reconstruct,
        "vaekit reconstruct runs/digits-20240101-120000 -n 16 --out recon.png",
    )
    _add_data_args(p)
    p.add_argument("-n", type=int, default=32, metavar="N", help="number of examples (default 32)")
    p.add_argument(
        "--out", default="reconstructions.png", metavar="FILE.png", help="default reconstructions.png"
    )

    p = model_command(
        "interpolate",
        "Decode a path between the latent codes of two examples (a strip of images).",
        _cmd_interpolate,
        "vaekit interpolate runs/digits-20240101-120000 --a 0 --b 7 --steps 12 --method spherical",
    )
    _add_data_args(p)
    p.add_argument("--a", type=int, default=0, metavar="I", help="index of the first example (default 0)")
    p.add_argument("--b", type=int, default=1, metavar="J", help="index of the second example (default 1)")
    p.add_argument(
        "--steps", type=int, default=10, metavar="S", help="points including both ends (default 10)"
    )
    p.add_argument("--method", choices=("linear", "spherical"), default="linear", help="default linear")
    _add_label_arg(p, "the class every step is drawn as (default: the label of example --a)")
    p.add_argument("--out", default="interpolation.png", metavar="FILE.png", help="default interpolation.png")

    p = model_command(
        "traverse",
        "Vary one latent dimension at a time over [-span, span]; one row per dimension.",
        _cmd_traverse,
        "vaekit traverse runs/digits-20240101-120000 --dims 0,1,2 --span 2.5",
        "vaekit traverse runs/digits-20240101-120000 --data digits --index 3",
    )
    _add_data_args(p)
    p.add_argument(
        "--index",
        type=int,
        default=0,
        metavar="I",
        help="start from this example's code when --data is given (default: start from z = 0)",
    )
    p.add_argument("--dims", type=_dims, metavar="0,1,2", help="dimensions to vary (default: the first 10)")
    p.add_argument(
        "--span", type=float, default=3.0, help="each dimension runs over [-span, span] (default 3)"
    )
    p.add_argument("--steps", type=int, default=9, help="values per dimension (default 9)")
    _add_label_arg(p, "the class the grid is drawn as (default: the starting example's label)")
    p.add_argument("--out", default="traversal.png", metavar="FILE.png", help="default traversal.png")

    p = model_command(
        "embed",
        "Write the posterior means and log-variances of every example (.npy, .csv or .parquet).",
        _cmd_embed,
        "vaekit embed runs/digits-20240101-120000 --out codes.csv",
        "vaekit embed runs/mnist/best --data mnist --out codes.npy   # also writes codes_logvar.npy",
    )
    _add_data_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="FILE.npy, FILE.csv or FILE.parquet")

    p = command("data", "Manage built-in datasets.", lambda args: 0, "vaekit data download mnist")
    data_commands = p.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=_Parser)
    data_commands.required = True
    p = command(
        "download",
        "Download the IDX files of mnist or fashion-mnist (checksums verified).",
        _cmd_data_download,
        "vaekit data download mnist",
        "vaekit data download fashion-mnist --data-dir ~/data",
        parent=data_commands,
    )
    p.add_argument("name", metavar="NAME", help="mnist or fashion-mnist")
    p.add_argument("--data-dir", metavar="DIR", help="default $VAEKIT_DATA, else ~/.cache/vaekit/data")

    command(
        "presets",
        "List the named configurations for `vaekit train --preset`.",
        _cmd_presets,
        "vaekit presets",
    )
    # Commands defined in other modules: each module has `register(command, model_command)`, which adds its
    # subcommands with the two helpers above. Add one line per module here.
    # -- more commands register here --
    cli_apps.register(command, model_command)
    cli_compress.register(command, model_command)
    cli_serve.register(command, model_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vaekit`` command line and return its exit status (0 success, 2 error, 130 interrupted)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    args.argv = argv  # `train --nproc` re-launches the same command line
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("vaekit").setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        return args.handler(args)
    except VaeKitError as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"vaekit: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
