"""A short run of `binarized-mnist` compresses held-out digits better than bz2 and lzma (issue: its 10,000-step KL
warm-up used to outlast a 10-epoch run on 9,500 digits, and the model lost to bz2).

Data: the first 10,000 MNIST training images, binarized once (a Bernoulli draw per pixel, seed 0) and stored as
uint8 0/1: the first 9,500 to train on (`train.npy`), the next 500 held out (`heldout.npy`). Both runs:
`vaekit train --preset binarized-mnist --data train.npy --epochs 10` — with the warm-up capped at a quarter of the
run (train.max_warmup_fraction=0.25, the default now) and without the cap (=1, as before); then
`vaekit compress RUN heldout.npy`, against bz2 (level 9) and lzma (preset 9 | extreme) of the same 500 x 784 bytes.

    python benchmarks/short_run_compress.py [--data-dir ../shared/data/mnist] [--out runs/short-run]
"""

from __future__ import annotations

import argparse
import bz2
import json
import lzma
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import DEFAULT_MNIST, save, table

from vaekit.data import read_idx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_MNIST)
    parser.add_argument("--out", type=Path, default=Path("runs/short-run"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    images = read_idx(args.data_dir / "train-images-idx3-ubyte.gz")[:10_000].astype(np.float64) / 255
    binary = (np.random.default_rng(0).random(images.shape) < images).astype(np.uint8)  # (10000, 28, 28)
    np.save(args.out / "train.npy", binary[:9_500])
    np.save(args.out / "heldout.npy", binary[9_500:])
    raw = binary[9_500:].tobytes()
    pixels = binary[9_500:].size
    lzma_bytes = len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    rows = [{"coder": "bz2 -9", "bits_per_pixel": 8 * len(bz2.compress(raw, 9)) / pixels, "final_kl_weight": ""},
            {"coder": "lzma -9e", "bits_per_pixel": 8 * lzma_bytes / pixels, "final_kl_weight": ""}]
    for cap, name in ((0.25, "vaekit, warm-up capped at 1/4 of the run (default)"), (1.0, "vaekit, uncapped (before)")):
        run = args.out / f"run-cap-{cap:g}"
        subprocess.run([sys.executable, "-m", "vaekit", "train", "--preset", "binarized-mnist", "--data",
                        str(args.out / "train.npy"), "--epochs", "10", "--out", str(run), "--quiet",
                        f"train.max_warmup_fraction={cap}"], check=True)
        report = args.out / f"compress-cap-{cap:g}.json"
        subprocess.run([sys.executable, "-m", "vaekit", "compress", str(run), str(args.out / "heldout.npy"), "-o",
                        str(args.out / f"heldout-{cap:g}.vkz"), "--json", str(report), "--quiet"], check=True,
                       capture_output=True)
        result = json.loads(report.read_text())
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        rows.append({"coder": name, "bits_per_pixel": result["bits_per_dim"],
                     "final_kl_weight": round(last["kl_weight"], 3)})
    print(table(rows))
    save("short_run_compress", {"rows": rows, "train_examples": 9_500, "heldout_examples": 500})


if __name__ == "__main__":
    main()
