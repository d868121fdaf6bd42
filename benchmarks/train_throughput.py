"""Benchmark 1: training throughput of the `mnist-mlp` preset against a minimal hand-written PyTorch loop.

Both train the same 784-400-20 ReLU MLP with a Bernoulli decoder (BCE with logits, summed over pixels) and
analytic KL, Adam 1e-3, batch 128, on the same 55,000 MNIST training images held in one tensor. vaekit runs
through its public `vaekit.train` (timing its training loop: `train_time_s`, validation excluded); the
hand-written loop is the classic PyTorch example's, run twice: with the default Adam, as people write it, and
with the fused Adam kernel vaekit uses, which isolates vaekit's own per-step overhead. Rounds alternate in one
process so drift on a shared machine hits all alike; ratios of medians are reported. Target: vaekit >= 0.95x
the hand-written loop.

    python benchmarks/train_throughput.py [--data-dir ../shared/data/mnist] [--rounds 3] [--epochs 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from common import DEFAULT_MNIST, save, table
from torch import nn

from vaekit.config import resolve_config
from vaekit.data import load_data
from vaekit.presets import get_preset
from vaekit.training.loop import train


class HandWrittenVAE(nn.Module):
    """pytorch/examples vae/main.py, with logits instead of sigmoid-then-BCE."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.fc4(F.relu(self.fc3(z))), mu, logvar


def hand_written_epochs(x_train: torch.Tensor, epochs: int, seed: int, fused: bool = False) -> float:
    """Train the hand-written model; return seconds spent in the training loop.

    ``fused=False`` is the loop as people write it (default Adam); ``fused=True`` uses the fused Adam kernel that
    vaekit uses, isolating vaekit's own per-step overhead.
    """
    torch.manual_seed(seed)
    model = HandWrittenVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    flat = x_train.view(len(x_train), -1)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(flat))
        total = 0.0
        for i in range(0, len(flat), 128):
            x = flat[perm[i : i + 128]]
            logits, mu, logvar = model(x)
            bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = bce + kld
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
    return time.perf_counter() - start


def vaekit_epochs(data_dir: str, epochs: int, seed: int) -> float:
    """Train the mnist-mlp preset through vaekit.train; return seconds spent in its training loop."""
    config = resolve_config(
        get_preset("mnist-mlp"),
        overrides=[f"data.data_dir={data_dir}", f"train.epochs={epochs}", f"train.seed={seed}", "train.num_images=16"],
    )
    with tempfile.TemporaryDirectory() as out:
        result = train(config, f"{out}/run")
    return float(result.metrics[-1]["train_time_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    config = resolve_config(get_preset("mnist-mlp"), overrides=[f"data.data_dir={args.data_dir}"])
    x_train = load_data(config.data).train.tensor()
    n = len(x_train)
    rows = []
    for r in range(args.rounds):
        hand = hand_written_epochs(x_train, args.epochs, seed=r)
        ours = vaekit_epochs(args.data_dir, args.epochs, seed=r)
        fused = hand_written_epochs(x_train, args.epochs, seed=r, fused=True)
        rows.append({"round": r + 1, "hand_img_per_s": n * args.epochs / hand,
                     "hand_fused_img_per_s": n * args.epochs / fused,
                     "vaekit_img_per_s": n * args.epochs / ours,
                     "ratio_vs_hand": hand / ours, "ratio_vs_hand_fused": fused / ours})
    med = {key: statistics.median(row[key] for row in rows)
           for key in ("hand_img_per_s", "hand_fused_img_per_s", "vaekit_img_per_s")}
    ratio, ratio_fused = (med["vaekit_img_per_s"] / med["hand_img_per_s"],
                          med["vaekit_img_per_s"] / med["hand_fused_img_per_s"])
    print(table(rows))
    print(f"\nmedian img/s: hand-written {med['hand_img_per_s']:.0f}, hand-written with fused Adam "
          f"{med['hand_fused_img_per_s']:.0f}, vaekit {med['vaekit_img_per_s']:.0f}")
    print(f"vaekit / hand-written: {ratio:.3f} (target >= 0.95); vaekit / hand-written with fused Adam: "
          f"{ratio_fused:.3f} (vaekit's own overhead)")
    path = save("train_throughput", {"images": n, "epochs_per_round": args.epochs, "rounds": rows, **med,
                                     "ratio": ratio, "ratio_vs_fused": ratio_fused})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
