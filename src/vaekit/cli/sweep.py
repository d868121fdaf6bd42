"""``vaekit sweep``: parse the arguments and a ``--config`` file's ``sweep:`` section, call :func:`vaekit.sweep`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from vaekit.cli.common import EXIT_INTERRUPTED, Commands, add_quiet_arg
from vaekit.errors import ConfigError

SWEEP_KEYS = ("space", "metric", "trials", "pruner", "sampler", "sampler_seed", "eval_k", "workers", "anomaly_data",
              "study", "storage", "out")
DEFAULTS: dict[str, Any] = {"metric": "val_nll", "trials": 20, "pruner": "median", "sampler": "tpe",
                            "sampler_seed": 0, "eval_k": 100, "workers": 1, "study": "vaekit"}


def _file_sections(path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config sections, the ``sweep:`` section) of a ``--config`` file."""
    from vaekit.config import load_config_file

    if path is None:
        return {}, {}
    data = load_config_file(path)
    settings = data.pop("sweep", None) or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"the sweep section of {path!r} must be a mapping (space:, metric:, trials:, ...)")
    unknown = sorted(set(settings) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key sweep.{unknown[0]} in {path!r}; the sweep section takes {', '.join(SWEEP_KEYS)}"
        )
    return data, settings


def _settings(args: argparse.Namespace, from_file: dict[str, Any]) -> dict[str, Any]:
    """Each sweep setting from the flag, else the file's ``sweep:`` section, else the default."""
    settings = {key: from_file.get(key, DEFAULTS.get(key)) for key in SWEEP_KEYS}
    for key in SWEEP_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if args.space:
        settings["space"] = args.space
    return settings


def _base_config(args: argparse.Namespace, sections: dict[str, Any]) -> Any:
    from vaekit.config import resolve_config
    from vaekit.presets import get_preset

    config = resolve_config(get_preset(args.preset or "digits"), overrides=(), **sections)
    flags: dict[str, dict[str, Any]] = {"data": {}, "train": {}}
    for section, key, value in (("data", "source", args.data), ("data", "data_dir", args.data_dir),
                                ("train", "epochs", args.epochs)):
        if value is not None:
            flags[section][key] = value
    config = resolve_config(config, overrides=args.overrides)
    return resolve_config(config, data=flags["data"], train=flags["train"])


def _cmd_sweep(args: argparse.Namespace) -> int:
    from vaekit.tuning import sweep
    from vaekit.tuning.worker import quiet_libraries

    sections, from_file = _file_sections(args.config)
    settings = _settings(args, from_file)
    if not settings["space"]:  # continuing a sweep: the study keeps the settings it was made with
        given = [flag for flag, value in (("--metric", args.metric), ("--eval-k", args.eval_k),
                                          ("--anomaly-data", args.anomaly_data), ("--pruner", args.pruner),
                                          ("--sampler", args.sampler), ("--sampler-seed", args.sampler_seed),
                                          ("--preset", args.preset), ("--config", args.config),
                                          ("--data", args.data), ("--data-dir", args.data_dir),
                                          ("--epochs", args.epochs)) if value is not None]
        given += ["key=value overrides"] * bool(args.overrides)
        if given:
            raise ConfigError(f"no --space given, so this can only continue a sweep already in --out, which keeps "
                              f"the settings it was started with; drop {', '.join(given)} (only --trials, --workers, "
                              "--storage and --study apply), or start a new sweep with --space and another --out")
    config = _base_config(args, sections)
    out = Path(settings["out"] or Path("sweeps") / f"{args.preset or 'digits'}-{_now()}")
    quiet_libraries()
    if args.quiet:
        logging.getLogger("vaekit").setLevel(logging.WARNING)
    try:
        result = sweep(
            config, settings["space"], trials=settings["trials"], metric=settings["metric"], out=out,
            storage=settings["storage"], study_name=settings["study"], workers=settings["workers"],
            pruner=settings["pruner"], sampler=settings["sampler"], seed=settings["sampler_seed"],
            eval_k=settings["eval_k"], anomaly_data=settings["anomaly_data"],
        )
    except KeyboardInterrupt:
        again = f"vaekit sweep --out {out}" + (f" --storage {settings['storage']}" if settings["storage"] else "")
        print(f"vaekit: interrupted; the study keeps every finished trial and resumes the interrupted one. "
              f"Continue with:\n  {again} --study {settings['study']} --trials {settings['trials']}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.format_table())
    print(f"\nsweep folder:  {result.out} (trials.csv, summary.json, plots/, trials/)")
    print(f"study:         {result.study_name} in {result.storage}")
    if result.best_yaml is not None:
        print(f"best config:   {result.best_yaml}  (vaekit train --config {result.best_yaml})")
    return 0


def _now() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def register(commands: Commands) -> None:
    """Add ``sweep``."""
    p = commands.command(
        "sweep",
        "Search settings (latent size, beta, ...) with Optuna: every trial a training run, the best config as YAML.",
        _cmd_sweep,
        'vaekit sweep --space "model.latent_dim=int(2,64,log)" --trials 16 --out sweeps/latent',
        'vaekit sweep --preset mnist-mlp --data-dir ~/data/mnist --space "model.latent_dim=int(2,128,log)" '
        '--space "objective.beta=float(0.25,8,log)" --trials 20 --workers 2',
        'vaekit sweep --space "model.architecture=cat(mlp,conv)" --metric probe train.epochs=20',
        "vaekit sweep --out sweeps/latent                      # continue a killed sweep (same storage)",
        "vaekit sweep --storage postgresql://user@db/sweeps --study latent --out sweeps/b   # join from a 2nd machine",
        "vaekit train --config sweeps/latent/best.yaml           # train the best configuration again",
    )
    p.add_argument("--space", action="append", metavar="KEY=KIND(ARGS)",
                   help="a searched config key, repeatable: KEY=int(LOW,HIGH[,log][,step=S]), "
                        "KEY=float(LOW,HIGH[,log][,step=S]) or KEY=cat(A,B,...); none: continue the study as it is")
    p.add_argument("--trials", type=int, metavar="N", help="trials in the whole study, all workers and machines (20)")
    p.add_argument("--metric", choices=("val_nll", "val_elbo", "probe", "auroc"),
                   help="what a trial is judged by, on the validation split (val_nll: IWAE NLL, k=--eval-k)")
    p.add_argument("--eval-k", type=int, metavar="K", help="importance samples of val_nll and auroc (100)")
    p.add_argument("--anomaly-data", metavar="NAME_OR_PATH",
                   help="--metric auroc: labelled data to score (label 0 normal, anything else anomalous)")
    p.add_argument("--storage", metavar="URL",
                   help="study database: sqlite:///PATH or any SQLAlchemy URL (default sqlite:///OUT/study.db)")
    p.add_argument("--study", metavar="NAME", help="study name in the storage (vaekit)")
    p.add_argument("--workers", type=int, metavar="N", help="trials at once in N processes, one torch thread each (1)")
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), help="stop poor trials early (median)")
    p.add_argument("--sampler", choices=("tpe", "random", "grid"), help="how settings are chosen (tpe)")
    p.add_argument("--sampler-seed", type=int, metavar="S", help="seed of the sampler (0); worker i uses S + i")
    p.add_argument("--out", metavar="DIR", help="sweep folder; default sweeps/<preset>-<YYYYmmdd-HHMMSS>")
    p.add_argument("--preset", metavar="NAME", help="the base configuration (see `vaekit presets`); default digits")
    p.add_argument("--config", metavar="FILE",
                   help="YAML/JSON config sections over the preset, with an optional sweep: section (space:, "
                        "metric:, trials:, ...) that the flags override")
    p.add_argument("--data", metavar="NAME_OR_PATH", help="digits, mnist, fashion-mnist or a path (data.source)")
    p.add_argument("--data-dir", metavar="DIR", help="folder of the mnist / fashion-mnist IDX files (data.data_dir)")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs of every trial (train.epochs)")
    add_quiet_arg(p, "no log lines (the table is still printed)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides of the base configuration, such as train.epochs=20")
