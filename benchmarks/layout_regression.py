"""Side-by-side: training throughput (benchmark 1) and the quick quality benchmark (benchmark 2) of this checkout
against an older one, alternating processes in one run so machine drift hits both alike.

    git worktree add /tmp/old-tree 8aa0882          # vaekit 0.1.0, before the package was split into layers
    python benchmarks/layout_regression.py --old-tree /tmp/old-tree [--rounds 5] [--data-dir ../shared/data/mnist]

Each round runs `benchmarks/train_throughput.py --rounds 1` of the old tree, then of this one, in fresh processes,
and reads vaekit's and the hand-written loop's images/s from their printout; then `mnist_mlp_quality.py` once
for each. Prints a table and writes benchmarks/results/layout_regression.json.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from common import DEFAULT_MNIST, save, table

HERE = Path(__file__).resolve().parent


def _run(tree: Path, script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run([sys.executable, script, *args], cwd=tree / "benchmarks", env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout


def _throughput(text: str) -> tuple[float, float]:
    match = re.search(r"median img/s: hand-written (\d+), hand-written with fused Adam (\d+), vaekit (\d+)", text)
    assert match, text[-2000:]
    return float(match.group(3)), float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-tree", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    args = parser.parse_args()
    trees = {"old": args.old_tree.resolve(), "new": HERE.parent}
    rows, speed = [], {"old": [], "new": []}
    for r in range(1, args.rounds + 1):
        for name, tree in trees.items():
            vaekit_rate, hand_rate = _throughput(_run(tree, "train_throughput.py", "--rounds", "1", "--data-dir",
                                                      args.data_dir))
            speed[name].append(vaekit_rate / hand_rate)
            rows.append({"round": r, "tree": name, "vaekit_img_per_s": vaekit_rate, "hand_img_per_s": hand_rate,
                         "ratio_vs_hand": round(vaekit_rate / hand_rate, 4)})
    quality = {}
    for name, tree in trees.items():
        text = _run(tree, "mnist_mlp_quality.py", "--data-dir", args.data_dir)
        match = re.search(r"test loss[^\d]*([\d.]+)", text)
        quality[name] = float(match.group(1)) if match else text[-500:]
    print(table(rows))
    medians = {name: statistics.median(values) for name, values in speed.items()}
    print(f"median vaekit / hand-written: old {medians['old']:.3f}, new {medians['new']:.3f}")
    print(f"mnist-mlp test loss after 10 epochs (nats/image): old {quality['old']}, new {quality['new']}")
    save("layout_regression", {"rounds": rows, "median_ratio": medians, "quality_test_loss": quality,
                               "old_tree": str(trees["old"])})


if __name__ == "__main__":
    main()
