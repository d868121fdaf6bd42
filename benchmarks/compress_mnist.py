"""Benchmark 4: lossless compression of the 10,000 MNIST test images with `vaekit compress` (bits-back ANS),
side by side with gzip, bz2, lzma (whole set as one byte stream, level 9; binary images bit-packed first) and
PNG and WebP lossless (Pillow, per image, best effort settings), all in bits per pixel, in one run.

1. Binarized MNIST: the test images binarized once, ``np.random.default_rng(0).random(x.shape) < x / 255``
   (seed 0). Model: the `binarized-mnist` preset (MLP 784-512-512-50, Bernoulli, dynamic binarization).
   Target: at or below 0.175 bits/pixel.
2. 8-bit MNIST: the uint8 test images as they are. Model: the same MLP with the `discretized_logistic`
   likelihood (see GRAY_OVERRIDES). Target: at or below 1.35 bits/pixel.
3. Actual rate within 1% of the model's negative ELBO in bits/dim on the same images.
4. Throughput: at least 1,000 images per second for compress and for decompress on 2 CPU cores.

Models are trained here under a time budget (training time only, cosine learning rate over the budget) unless
given with --binary-model / --gray-model. Every decompressed array is checked to be identical to the input.

    python benchmarks/compress_mnist.py [--data-dir ../shared/data/mnist] [--budget 900]
                                        [--binary-model DIR] [--gray-model DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import lzma
import statistics
from pathlib import Path

import numpy as np
import torch
from common import DEFAULT_MNIST, save, table
from PIL import Image

import vaekit
from vaekit.config import resolve_config
from vaekit.data import read_idx
from vaekit.presets import get_preset

BINARIZE_SEED = 0
GRAY_OVERRIDES = [
    "data.binarize=none", "model.likelihood=discretized_logistic", "model.mixture_components=1",
]


def train_model(overrides: list[str], budget: float, data_dir: str, out: str) -> Path:
    """Train the binarized-mnist preset with ``overrides`` for ``budget`` seconds; return the best model."""
    config = resolve_config(get_preset("binarized-mnist"), overrides=[
        f"data.data_dir={data_dir}", f"train.time_budget_s={budget}", "train.epochs=100000", *overrides,
    ])
    return vaekit.train(config, out).model_dir


def baselines(x: np.ndarray, binary: bool) -> dict[str, int]:
    """Compressed sizes in bytes of the standard-library codecs (whole set) and of PNG / WebP (per image)."""
    stream = np.packbits(x).tobytes() if binary else x.tobytes()
    sizes = {
        "gzip": len(gzip.compress(stream, compresslevel=9)),
        "bz2": len(bz2.compress(stream, compresslevel=9)),
        "lzma": len(lzma.compress(stream, preset=9 | lzma.PRESET_EXTREME)),
    }
    png = webp = 0
    for image in x:
        pil = Image.fromarray(image.astype(np.uint8) * 255, mode="L").convert("1") if binary else Image.fromarray(image)
        buffer = io.BytesIO()
        pil.save(buffer, format="PNG", optimize=True)
        png += buffer.tell()
        buffer = io.BytesIO()
        (pil.convert("L") if binary else pil).save(buffer, format="WEBP", lossless=True, quality=100, method=6)
        webp += buffer.tell()
    sizes["png"], sizes["webp"] = png, webp
    return sizes


def run_vaekit(model_dir: Path, x: np.ndarray, rounds: int) -> dict[str, float]:
    """Compress and decompress ``rounds`` times (median times); check the round trip is exact."""
    model = vaekit.load(model_dir)
    compress_s, decompress_s = [], []
    report = None
    for _ in range(rounds):
        report = vaekit.compress(model, x)
        compress_s.append(report.seconds)
        restored = vaekit.decompress(model, report.compressed)
        decompress_s.append(restored.seconds)
        if restored.array is None or restored.array.dtype != x.dtype or not np.array_equal(restored.array, x):
            raise SystemExit("decompressed data differs from the input")
    assert report is not None
    n = len(x)
    return {
        "bytes": report.compressed_bytes, "bits_per_pixel": report.bits_per_dim,
        "elbo_bits_per_pixel": report.elbo_bits_per_dim, "overhead_pct": 100 * report.overhead,
        "initial_bits": report.initial_bits, "container_bytes": report.container_bytes,
        "compress_img_per_s": n / statistics.median(compress_s),
        "decompress_img_per_s": n / statistics.median(decompress_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--budget", type=float, default=900.0, help="training seconds per model")
    parser.add_argument("--binary-model", help="a trained binarized-MNIST model (skips its training)")
    parser.add_argument("--gray-model", help="a trained 8-bit MNIST model (skips its training)")
    parser.add_argument("--rounds", type=int, default=3, help="compress/decompress repetitions (median time)")
    parser.add_argument("--out", default="runs/bench-compress")
    args = parser.parse_args()

    images = read_idx(next(Path(args.data_dir).glob("t10k-images-idx3-ubyte*")))  # (10000, 28, 28) uint8
    binary = (np.random.default_rng(BINARIZE_SEED).random(images.shape) < images / 255.0).astype(np.uint8)
    binary_model = Path(args.binary_model) if args.binary_model else train_model(
        [], args.budget, args.data_dir, f"{args.out}/binarized")
    gray_model = Path(args.gray_model) if args.gray_model else train_model(
        GRAY_OVERRIDES, args.budget, args.data_dir, f"{args.out}/gray")

    rows, results = [], {}
    pixels = images.size
    for name, x, model_dir, target in (
        ("binarized", binary, binary_model, 0.175), ("8-bit", images, gray_model, 1.35),
    ):
        ours = run_vaekit(model_dir, x, args.rounds)
        others = baselines(x, binary=name == "binarized")
        results[name] = {"model": str(model_dir), "vaekit": ours, "baselines_bytes": others, "target_bpp": target}
        row = {"data": name, "vaekit": ours["bits_per_pixel"], "-ELBO": ours["elbo_bits_per_pixel"]}
        row.update({codec: 8 * size / pixels for codec, size in others.items()})
        row.update({"overhead_%": ours["overhead_pct"], "compress_img/s": ours["compress_img_per_s"],
                    "decompress_img/s": ours["decompress_img_per_s"]})
        rows.append(row)
    print(table(rows))
    print(f"\nbits/pixel of 10,000 MNIST test images; torch threads {torch.get_num_threads()}; "
          f"binarization seed {BINARIZE_SEED}")
    for row, target in zip(rows, (0.175, 1.35), strict=True):
        print(f"{row['data']}: {row['vaekit']:.4f} bits/pixel (target <= {target}), -ELBO {row['-ELBO']:.4f}, "
              f"overhead {row['overhead_%']:+.2f}% (target within 1%), compress {row['compress_img/s']:.0f} img/s, "
              f"decompress {row['decompress_img/s']:.0f} img/s (target >= 1000)")
    print(f"results: {save('compress_mnist', {'rows': rows, **results, 'gray_overrides': GRAY_OVERRIDES})}")


if __name__ == "__main__":
    main()
