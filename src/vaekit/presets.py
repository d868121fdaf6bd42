"""Named configurations that reproduce classic setups, each runnable with ``vaekit train --preset NAME``."""

from __future__ import annotations

from dataclasses import dataclass

from vaekit.config import Config, DataConfig, ModelConfig, ObjectiveConfig, TrainConfig
from vaekit.registry import Registry


@dataclass(frozen=True)
class Preset:
    """A named, documented configuration."""

    name: str
    description: str
    config: Config


PRESETS: Registry[Preset] = Registry("preset", "--preset")


def _add(name: str, description: str, config: Config) -> None:
    PRESETS.register(name)(Preset(name, description, config))


_add(
    "digits",
    "default: scikit-learn's 8x8 digits (no files needed), MLP 64-256-128-8, Bernoulli; trains in seconds",
    Config(
        model=ModelConfig(architecture="mlp", likelihood="bernoulli", latent_dim=8, hidden_dims=(256, 128)),
        data=DataConfig(source="digits"),
        train=TrainConfig(epochs=60, batch_size=64, lr=1e-3),
    ),
)
_add(
    "mnist-mlp",
    "the classic PyTorch example: 784-400-20 ReLU MLP, Bernoulli on grayscale MNIST, Adam 1e-3, batch 128",
    Config(
        model=ModelConfig(architecture="mlp", likelihood="bernoulli", latent_dim=20, hidden_dims=(400,)),
        data=DataConfig(source="mnist", val_fraction=1 / 12),
        train=TrainConfig(epochs=10, batch_size=128, lr=1e-3),
    ),
)
_add(
    "mnist-conv",
    "small convolutional VAE for 28x28 MNIST: conv 32-64 (stride 2), dense 256, 16 latents, Bernoulli",
    Config(
        model=ModelConfig(
            architecture="conv", likelihood="bernoulli", latent_dim=16, channels=(32, 64), hidden_dims=(256,)
        ),
        data=DataConfig(source="mnist", val_fraction=1 / 12),
        train=TrainConfig(epochs=10, batch_size=128, lr=1e-3),
    ),
)
_add(
    "binarized-mnist",
    "dynamically binarized MNIST for likelihood benchmarks: ReLU MLP 784-512-512-50, KL warm-up, cosine schedule",
    Config(
        model=ModelConfig(architecture="mlp", likelihood="bernoulli", latent_dim=50, hidden_dims=(512, 512)),
        data=DataConfig(source="mnist", binarize="dynamic", val_fraction=1 / 12),
        objective=ObjectiveConfig(name="elbo", kl_warmup_steps=10_000),
        train=TrainConfig(epochs=100, batch_size=100, lr=1e-3, schedule="cosine", eval_k=0),
    ),
)


def _hvae(likelihood: str, mixture_components: int = 1) -> ModelConfig:
    """The record-likelihood presets' model: a top-down hierarchical VAE, MLP residual blocks of width 512,
    stochastic layers 64 + 32, weight norm, SiLU."""
    return ModelConfig(
        architecture="mlp", likelihood=likelihood, latent_layers=(64, 32), hidden_dims=(512,), residual_blocks=1,
        weight_norm=True, activation="silu", mixture_components=mixture_components,
    )


def _budget_training(skip_grad_norm: float) -> TrainConfig:
    """The record-likelihood presets' training: batch 128, LR 2e-3 warmed up over 500 steps then cosine-decayed
    over a 60-minute budget, EMA 0.999 of the weights, updates skipped above ``skip_grad_norm``."""
    return TrainConfig(
        epochs=1_000_000, batch_size=128, lr=2e-3, schedule="cosine", warmup_steps=500, time_budget_s=3600,
        ema=0.999, skip_grad_norm=skip_grad_norm, eval_every=25, eval_k=0,
    )


_add(
    "binarized-mnist-hvae",
    "record likelihood per CPU-hour: dynamically binarized MNIST, top-down hierarchical VAE (MLP residual blocks, "
    "width 512, stochastic layers 64 + 32, weight norm), KL warm-up, EMA, LR warm-up + cosine over a 60-minute "
    "budget (--time-budget to change it)",
    Config(
        model=_hvae("bernoulli"),
        data=DataConfig(source="mnist", binarize="dynamic", val_fraction=1 / 12),
        objective=ObjectiveConfig(name="elbo", kl_warmup_steps=10_000),
        train=_budget_training(skip_grad_norm=2000.0),
    ),
)
_add(
    "mnist8-hvae",
    "8-bit MNIST (uint8 pixels, discretized logistic mixture): top-down hierarchical VAE, MLP residual blocks, "
    "stochastic layers 64 + 32; bits/dim; 60-minute budget (--time-budget to change it); vaekit compress codes it",
    Config(
        model=_hvae("discretized_logistic", mixture_components=3),
        data=DataConfig(source="mnist", binarize="none", val_fraction=1 / 12),
        objective=ObjectiveConfig(name="elbo", kl_warmup_steps=5_000),
        train=_budget_training(skip_grad_norm=20000.0),
    ),
)
_add(
    "mnist-cvae",
    "conditional VAE of MNIST (labels into encoder and decoder): MLP 784-512-256-16, Bernoulli, KL weight 2 "
    "(prior samples of the asked digit: 97% vs 89% at weight 1, see BENCHMARKS.md); sample --label 3",
    Config(
        model=ModelConfig(
            architecture="mlp", likelihood="bernoulli", latent_dim=16, hidden_dims=(512, 256), num_classes=10
        ),
        data=DataConfig(source="mnist", val_fraction=1 / 12),
        objective=ObjectiveConfig(beta=2.0),
        train=TrainConfig(epochs=20, batch_size=128, lr=1e-3),
    ),
)
_add(
    "tabular",
    "standardized numeric columns (CSV/Parquet/.npy): Gaussian MLP with learned scales; set objective.beta",
    Config(
        model=ModelConfig(architecture="mlp", likelihood="gaussian", latent_dim=8, hidden_dims=(128, 64)),
        data=DataConfig(source="", standardize=True),
        objective=ObjectiveConfig(beta=1.0),
        train=TrainConfig(epochs=50, batch_size=128, lr=1e-3),
    ),
)


def get_preset(name: str) -> Config:
    """The config of preset ``name`` (raises ConfigError listing the presets if unknown)."""
    return PRESETS.get(name).config


def presets() -> list[Preset]:
    """All presets, sorted by name."""
    return [PRESETS.get(name) for name in PRESETS.names()]
