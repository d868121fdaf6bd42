"""``vaekit compress`` and ``vaekit decompress``: parse the arguments and call :mod:`vaekit.codec.compression`."""

from __future__ import annotations

import argparse

from vaekit.cli.common import Commands, write_json_report


def _cmd_compress(args: argparse.Namespace) -> int:
    from vaekit.codec import CodingConfig, compress

    config = CodingConfig(
        latent_bits=args.latent_bits,
        posterior_precision=args.posterior_precision,
        likelihood_precision=args.likelihood_precision,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    report = compress(
        args.model, args.input, args.out, config=config, chunk_size=args.chunk_size, data_dir=args.data_dir,
        seed=args.seed, progress=not args.quiet,
    )
    print(report.format_table())
    print(f"wrote {report.out}")
    if args.json:
        write_json_report(args.json, report.to_dict())
    return 0


def _cmd_decompress(args: argparse.Namespace) -> int:
    from vaekit.codec import decompress

    report = decompress(args.model, args.file, args.out, progress=not args.quiet)
    print(
        f"wrote {report.count} examples, shape {tuple(report.shape)} {report.dtype}, to {report.out} "
        f"({report.seconds:.2f} s, {report.examples_per_s:,.0f} examples/s)"
    )
    return 0


def register(commands: Commands) -> None:
    """Add ``compress`` and ``decompress``."""
    p = commands.model_command(
        "compress",
        "Compress a dataset losslessly with a trained VAE (bits-back ANS); reports bits/dim next to the -ELBO.",
        _cmd_compress,
        "vaekit compress runs/bmnist/best binarized.npy -o binarized.vkz",
        "vaekit compress runs/mnist8/best t10k-images-idx3-ubyte.gz -o mnist.vkz --json report.json",
    )
    p.add_argument(
        "input", metavar="INPUT",
        help=".npy/.npz array, IDX file, folder of images, or mnist/fashion-mnist/digits (test split)",
    )
    p.add_argument("-o", "--out", required=True, metavar="FILE.vkz", help="the compressed file to write")
    p.add_argument("--data-dir", metavar="DIR", help="folder of the mnist / fashion-mnist IDX files")
    p.add_argument("--latent-bits", type=int, default=12, metavar="B",
                   help="2^B equal-prior-mass buckets per latent dimension (default 12)")
    p.add_argument("--posterior-precision", type=int, default=24, metavar="P",
                   help="bits of the q(z|x) probability tables, 8..24 (default 24)")
    p.add_argument("--likelihood-precision", type=int, default=24, metavar="P",
                   help="bits of the p(x|z) probability tables, 8..24 (default 24)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="most examples per network pass")
    p.add_argument("--threads", type=int, default=2, metavar="T",
                   help="blocks of each batch coded on parallel threads; stored in the file (default 2)")
    p.add_argument("--chunk-size", type=int, metavar="N",
                   help="examples per independently coded chunk (default: 2^23 values' worth)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the reported -ELBO's samples")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = commands.model_command(
        "decompress",
        "Decompress a .vkz file with the model that compressed it; the output is the original array, bit for bit.",
        _cmd_decompress,
        "vaekit decompress runs/bmnist/best binarized.vkz -o binarized.npy",
        "vaekit decompress runs/mnist8/best mnist.vkz -o t10k-images-idx3-ubyte   # an IDX file",
    )
    p.add_argument("file", metavar="FILE.vkz", help="a file written by `vaekit compress`")
    p.add_argument("-o", "--out", required=True, metavar="OUTPUT",
                   help="OUTPUT.npy (or a name ending in -ubyte for an IDX file of uint8 data)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
