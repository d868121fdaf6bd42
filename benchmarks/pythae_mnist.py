"""Issue 6, benchmark 2: pythae's VAE and IWAE (its default MLP networks) under the same wall-clock budget.

pythae (https://github.com/clementchadebec/benchmark_VAE) is not a vaekit dependency; run this script in an
environment that has it, e.g. a virtual environment that sees this one's torch::

    python -m venv --system-site-packages /tmp/pythae-venv
    /tmp/pythae-venv/bin/pip install --no-deps pythae && /tmp/pythae-venv/bin/pip install imageio cloudpickle
    /tmp/pythae-venv/bin/python benchmarks/pythae_mnist.py --model vae --budget 3600

Protocol, the same as ``hvae_mnist.py`` wherever pythae allows it: the 60,000 MNIST training images minus the
last 5,000 (held out for pythae's per-epoch evaluation, binarized once), dynamically binarized (a pythae dataset
that draws a fresh Bernoulli sample every time an image is read), latent size 50, Adam at ``--lr`` with batch
``--batch-size``, trained by pythae's own ``BaseTrainer`` until ``--budget`` seconds of training are spent (a
callback stops it after the epoch that crosses the budget; pythae's per-epoch evaluation is counted as training
time, as it is part of pythae's loop). The model pythae keeps as best (lowest evaluation loss) is then scored by
vaekit's own estimator (:func:`vaekit.objectives.iwae_bound`) on the 10,000 test images binarized once with seed 0,
exactly as vaekit's models are: IWAE with k = ``--k``.
pythae's defaults otherwise: MLP 784-512-50 encoder and 50-512-784 decoder (ReLU, sigmoid output, BCE), IWAE
with its default number of samples (10). Not pythae's defaults: the learning rate (its default 1e-4 is 10x
lower than vaekit's presets') and the batch size (its default 64).
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import torch
from common import DEFAULT_MNIST, save, table
from torch.distributions import Bernoulli, Independent, Normal

from vaekit import objectives


class BudgetSpent(Exception):
    """Raised by the callback to end pythae's training loop once the budget is spent."""


def _images(data_dir: Path, name: str) -> np.ndarray:
    raw = gzip.open(data_dir / name).read()[16:]
    return np.frombuffer(raw, np.uint8).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0


class PythaeContract(torch.nn.Module):
    """pythae's encoder and decoder behind vaekit's model contract, so vaekit's estimator scores them."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Independent:
        out = self.model.encoder(x)
        return Independent(Normal(out.embedding, torch.exp(0.5 * out.log_covariance)), 1)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Independent:
        probs = self.model.decoder(z).reconstruction.reshape(len(z), 1, 28, 28)
        return Independent(Bernoulli(probs=probs.clamp(1e-7, 1 - 1e-7)), 3)

    def prior(self) -> Independent:
        dim = self.model.model_config.latent_dim
        return Independent(Normal(torch.zeros(dim), torch.ones(dim)), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("vae", "iwae"), default="vae")
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--budget", type=float, default=3600.0, help="training seconds")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--out", default="runs/bench-pythae")
    args = parser.parse_args()

    from pythae.data.datasets import DatasetOutput
    from pythae.models import IWAE, VAE, IWAEConfig, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    data_dir = Path(args.data_dir)
    train_all = _images(data_dir, "train-images-idx3-ubyte.gz")
    test = _images(data_dir, "t10k-images-idx3-ubyte.gz")
    generator = torch.Generator().manual_seed(0)
    train_x = torch.from_numpy(train_all[:-5000])
    val_x = torch.bernoulli(torch.from_numpy(train_all[-5000:]), generator=generator)
    test_x = torch.bernoulli(torch.from_numpy(test), generator=torch.Generator().manual_seed(0))

    class DynamicBinarized(torch.utils.data.Dataset):
        """pythae dataset of images binarized afresh every time one is read."""

        def __init__(self, x: torch.Tensor) -> None:
            self.x = x

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, index: int) -> DatasetOutput:
            return DatasetOutput(data=torch.bernoulli(self.x[index]))

    class StaticSet(DynamicBinarized):
        def __getitem__(self, index: int) -> DatasetOutput:
            return DatasetOutput(data=self.x[index])

    start: list[float] = []
    epochs: list[dict] = []

    class Budget(TrainingCallback):
        def on_epoch_begin(self, training_config, **kwargs) -> None:
            if not start:
                start.append(time.perf_counter())

        def on_epoch_end(self, training_config, **kwargs) -> None:
            elapsed = time.perf_counter() - start[0]
            epochs.append({"epoch": len(epochs) + 1, "train_time_s": round(elapsed, 1)})
            if elapsed >= args.budget:
                raise BudgetSpent

    shared = {"input_dim": (1, 28, 28), "latent_dim": args.latent_dim, "reconstruction_loss": "bce"}
    model = VAE(VAEConfig(**shared)) if args.model == "vae" else IWAE(IWAEConfig(**shared))
    torch.manual_seed(0)
    trainer = BaseTrainer(
        model=model,
        train_dataset=DynamicBinarized(train_x),
        eval_dataset=StaticSet(val_x),
        training_config=BaseTrainerConfig(
            output_dir=args.out, num_epochs=1_000_000, learning_rate=args.lr,
            per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=500, steps_saving=None,
            no_cuda=True,
        ),
        callbacks=[Budget()],
    )
    try:
        trainer.train()
    except BudgetSpent:
        pass
    best = getattr(trainer, "_best_model", trainer.model).eval()
    contract = PythaeContract(best)
    torch.manual_seed(0)
    nll = elbo = 0.0
    started = time.perf_counter()
    with torch.no_grad():
        for batch in test_x.split(250):
            nll -= float(objectives.iwae_bound(contract, batch, args.k, chunk_size=100).sum())
            elbo += float(objectives.elbo(contract, batch).elbo.sum())
    rows = [{"model": f"pythae {args.model.upper()}", "epochs": len(epochs),
             "train_time_s": epochs[-1]["train_time_s"], f"test_nll_k{args.k}": nll / len(test_x),
             "test_neg_elbo": -elbo / len(test_x), "eval_s": round(time.perf_counter() - started, 1)}]
    print(table(rows))
    path = save(f"pythae_{args.model}", {"args": vars(args), "rows": rows, "epochs": epochs})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
