"""``vaekit train``, ``vaekit presets`` and ``vaekit data download``: parse the arguments, call the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from vaekit.cli.common import EXIT_INTERRUPTED, Commands, add_quiet_arg, duration
from vaekit.config import Config, resolve_config
from vaekit.errors import ConfigError

UNTIL_BUDGET_EPOCHS = 1_000_000


def _flags(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """The explicit flags as config sections; they win over everything, and paths are never parsed as YAML."""
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
    return flags


def _run_config(args: argparse.Namespace) -> tuple[Config | None, Path]:
    """The config to train (``None`` to resume with the saved one as it is) and the run directory.

    To resume, the original command line may be repeated with ``--resume`` (its config must then equal the saved
    one except for ``train.epochs``), or only ``--out DIR --resume [--epochs N]`` given."""
    from vaekit.presets import get_preset

    flags = _flags(args)
    described = args.preset or args.config or args.overrides or any(flags["data"].values()) or any(
        key != "epochs" for key in flags["train"]
    )
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs the run directory to continue: pass --out DIR")
        out = Path(args.out)
        if not described:
            if args.epochs is None:
                return None, out
            return resolve_config(config_file=out / "config.json", train=flags["train"]), out
    preset = args.preset or "digits"
    config = resolve_config(get_preset(preset), args.config, overrides=args.overrides)
    config = resolve_config(config, data=flags["data"], train=flags["train"])
    if args.resume and args.epochs is None:  # the original command line: keep the run's own epoch count
        saved = resolve_config(config_file=Path(args.out) / "config.json")
        config = resolve_config(config, train={"epochs": saved.train.epochs})
    out = Path(args.out or Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    return config, out


def _cmd_train(args: argparse.Namespace) -> int:
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 logs and prints
    if rank > 0:
        logging.getLogger("vaekit").setLevel(logging.WARNING)
    if args.nproc is not None and args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1 (processes on this machine), got {args.nproc}")
    config, out = _run_config(args)
    if args.nproc is not None and args.nproc > 1:  # re-launch this command in N processes through torchrun
        from vaekit.training import resolve_device
        from vaekit.training.distributed import launch, local_batch_size

        if config is not None:  # catch what would fail in every process before starting them
            local_batch_size(config.train.batch_size, args.nproc)
            resolve_device(config.train.device)
        return launch(args.nproc, [*_without_nproc(args.argv), *([] if args.out else ["--out", str(out)])])
    from vaekit.training import train

    try:
        result = train(config, out, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        if rank == 0:
            world = int(os.environ.get("WORLD_SIZE", "1"))  # a resume must use as many processes to be exact
            nproc = f" --nproc {world}" if world > 1 else ""
            print(f"vaekit: interrupted; the run keeps its last finished epoch. Continue it with:\n"
                  f"  vaekit train --out {out} --resume{nproc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if rank > 0:
        return 0
    print(f"run directory:  {result.run_dir}")
    print(f"best model:     {result.model_dir}")
    if result.metrics and result.metrics[-1].get("val_elbo") is not None:
        print(f"final val ELBO: {result.metrics[-1]['val_elbo']:.4f} nats")
    return 0


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


def register(commands: Commands) -> None:
    """Add ``train``, ``data download`` and ``presets``."""
    p = commands.command(
        "train",
        "Train a VAE and write a run directory (config, metrics, best/ and last/ models, figures).",
        _cmd_train,
        "vaekit train",
        "vaekit train --preset mnist-conv --epochs 5 --out runs/conv",
        "vaekit train --data table.csv --preset tabular objective.beta=4 model.latent_dim=4",
        "vaekit train --out runs/conv --resume --epochs 10   # or the original command line with --resume",
        "vaekit train --preset binarized-mnist-hvae --time-budget 30m   # hierarchical VAE, 30 minutes of training",
        "vaekit train --nproc 2 train.batch_size=256            # 2 processes, 128 examples each per step",
    )
    p.add_argument("--preset", metavar="NAME", help="starting configuration (see `vaekit presets`); default digits")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of config sections, applied over the preset")
    p.add_argument("--data", metavar="NAME_OR_PATH", help="digits, mnist, fashion-mnist or a path (data.source)")
    p.add_argument("--data-dir", metavar="DIR", help="folder of the mnist / fashion-mnist IDX files (data.data_dir)")
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the training data (train.epochs)")
    p.add_argument("--seed", type=int, metavar="S", help="training seed (train.seed)")
    p.add_argument(
        "--time-budget", type=duration, metavar="T",
        help="train until T of training time is spent (e.g. 3600, 90s, 45m, 1.5h; validation not counted) and "
        "schedule the learning rate over T (train.time_budget_s); with it, --epochs is only a cap",
    )
    p.add_argument("--out", metavar="DIR", help="run directory; default runs/<preset>-<YYYYmmdd-HHMMSS>")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last finished epoch (alone, with --epochs N, or added "
                        "to the command line that started the run)")
    add_quiet_arg(p)
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), help="train.device: auto (CUDA if present, else CPU), cpu, cuda"
    )
    p.add_argument(
        "--nproc", type=int, metavar="N",
        help="train in N processes on this machine (torchrun; gloo on CPU, NCCL on GPUs); train.batch_size is "
        "the global batch, split over them",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key=value",
        help="dotted config overrides such as train.lr=3e-4 model.hidden_dims=[512,256]",
    )
    p = commands.command("data", "Manage built-in datasets.", lambda args: 0, "vaekit data download mnist")
    data_commands = p.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=type(p))
    data_commands.required = True
    p = commands.command(
        "download",
        "Download the IDX files of mnist or fashion-mnist (checksums verified).",
        _cmd_data_download,
        "vaekit data download mnist",
        "vaekit data download fashion-mnist --data-dir ~/data",
        parent=data_commands,
    )
    p.add_argument("name", metavar="NAME", help="mnist or fashion-mnist")
    p.add_argument("--data-dir", metavar="DIR", help="default $VAEKIT_DATA, else ~/.cache/vaekit/data")
    commands.command("presets", "List the named configurations for `vaekit train --preset`.", _cmd_presets,
                     "vaekit presets")
