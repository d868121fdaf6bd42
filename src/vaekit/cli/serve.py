"""The ``vaekit export`` and ``vaekit serve`` commands: parse arguments, call :func:`vaekit.serving.export` or
:func:`vaekit.serving.serve`, print what happened. Registered from :func:`vaekit.cli.build_parser`."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from vaekit.cli.common import Commands
from vaekit.errors import ConfigError


def _cmd_export(args: argparse.Namespace) -> int:
    from vaekit.serving.onnx import MANIFEST_NAME, export

    out = export(args.model, args.out, args.format, check=not args.no_check)
    manifest = json.loads((Path(out) / MANIFEST_NAME).read_text())
    files = ", ".join(part["file"] for part in (manifest["encoder"], manifest["decoder"]))
    print(f"wrote {files} and {MANIFEST_NAME} to {out}")
    if manifest.get("check"):
        print(f"onnxruntime matches PyTorch to {manifest['check']['max_abs_error']:.2g} (max abs error)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from vaekit.serving import Limits, serve

    # serve() logs where it listens (and warns about a non-loopback host) once the model is loaded.
    if not (math.isfinite(args.max_body_mb) and args.max_body_mb > 0):
        raise ConfigError(f"--max-body-mb must be a positive number of MiB, got {args.max_body_mb:g}")
    limits = Limits(max_batch=args.max_batch, max_body_bytes=int(args.max_body_mb * (1 << 20)))
    serve(
        args.model,
        args.host,
        args.port,
        limits=limits,
        threads=args.threads,
        log_level="warning" if args.quiet else "info",
    )
    return 0


def register(commands: Commands) -> None:
    """Add ``export`` and ``serve``."""
    p = commands.model_command(
        "export",
        "Write the encoder and decoder as ONNX files with a JSON description (needs vaekit[export]).",
        _cmd_export,
        "vaekit export runs/digits-20240101-120000 --out exported/",
        "vaekit export runs/mnist/best --format onnx --out mnist-onnx",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (new, empty or an earlier export)")
    p.add_argument("--format", default="onnx", metavar="NAME", help="export format: onnx (the default)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch comparison")
    p.add_argument("--quiet", action="store_true", help="no log lines")

    p = commands.model_command(
        "serve",
        "Serve the model over HTTP: JSON API (/docs) and a latent explorer page (needs vaekit[serve]).",
        _cmd_serve,
        "vaekit serve runs/digits-20240101-120000",
        "vaekit serve runs/mnist/best --port 8080 --threads 2",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--max-batch", type=int, default=1024, metavar="N", help="examples per request (default 1024)")
    p.add_argument(
        "--max-body-mb", type=float, default=16.0, metavar="MB", help="request body limit in MiB (default 16)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads per request (default 1; more for big batches)",
    )
    p.add_argument("--quiet", action="store_true", help="log warnings only (no access log)")
