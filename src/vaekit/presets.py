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

_add(
    "ml-100k",
    "Mult-VAE recommender (Liang et al. 2018) for implicit feedback, sized for MovieLens 100K (--data u.data or any "
    "user, item[, rating] file): ratings >= 4 are positives, multinomial likelihood, L2-normalised input with "
    "dropout 0.2, linear encoder and decoder with 400 latents (the paper's items-600-200 tanh network, dropout 0.5, "
    "for ML-20M-size data: model.hidden_dims=[600] model.latent_dim=200 model.input_dropout=0.5), KL weight "
    "annealed to 0.2, best epoch by validation NDCG@100",
    Config(
        model=ModelConfig(architecture="mlp", likelihood="multinomial", latent_dim=400, hidden_dims=(),
                          activation="tanh", input_norm="l2", input_dropout=0.2),
        data=DataConfig(source="", format="interactions", min_rating=4.0, min_user_items=5, heldout_users=100),
        objective=ObjectiveConfig(beta=0.2, kl_warmup_steps=1600),
        train=TrainConfig(epochs=200, batch_size=100, lr=1e-3, max_warmup_fraction=1.0, num_images=16),
    ),
)

def _ptb(latent_dim: int) -> Config:
    """The Penn Treebank presets (issue 13): one sentence a line, whitespace tokens, the 10,000-word vocabulary; an
    LSTM decoder (512 units, 256-dim embeddings, dropout 0.5, an adaptive softmax), trained for 60 minutes of
    training time (``--time-budget`` to change it), batch 64, Adam 1e-3 cosine-decayed over the budget. With
    ``latent_dim`` > 0 a sentence VAE: a bidirectional LSTM encoder of 64 units, 32 latents, BN-VAE (gamma 0.45,
    a KL floor of about 3.2 nats) and cyclical KL annealing (4 cycles), no word dropout (``model.word_dropout=0.25``
    for Bowman et al.'s; what each remedy does is what ``benchmarks/ptb.py --remedies`` measures); with 0 the same
    decoder as a language model. Gamma 0.45 and the 64-unit encoder (against 0.6 and 128 before) ended an hour's
    training at 105.58 nats of test NLL instead of 106.29, below the language model's 105.85 (BENCHMARKS.md,
    "Text")."""
    vae = latent_dim > 0
    return Config(
        model=ModelConfig(family="text", latent_dim=latent_dim, hidden_dims=(64, 512) if vae else (512,),
                          embedding_dim=256, dropout=0.5, word_dropout=0.0,
                          softmax_cutoffs=(2000, 6000), posterior_batchnorm=0.45 if vae else 0.0),
        data=DataConfig(source="", tokenizer="whitespace", vocab_size=10000, max_length=100),
        objective=ObjectiveConfig(kl_cycles=4 if vae else 0),
        train=TrainConfig(epochs=1_000_000, batch_size=64, lr=1e-3, schedule="cosine", time_budget_s=3600,
                          grad_clip=5.0, eval_every=1, eval_k=0, num_images=10, patience=0),
    )


_add(
    "ptb",
    "sentence VAE of the Penn Treebank (Bowman et al. 2016; --data ptb/, a folder of ptb.{train,valid,test}.txt): "
    "bidirectional LSTM encoder (64), LSTM decoder (512, adaptive softmax), 32 latents, BN-VAE and cyclical KL "
    "annealing against posterior collapse; 60-minute budget (--time-budget to change it)",
    _ptb(latent_dim=32),
)
_add(
    "ptb-lm",
    "the language-model baseline of the ptb preset: the same LSTM decoder with no latent variable "
    "(model.latent_dim=0), trained the same way; its NLL is exact",
    _ptb(latent_dim=0),
)


def _fsdd(num_classes: int) -> Config:
    """The FSDD presets (issue 15): 0.8 s clips at 8 kHz as log-mel spectrograms (STFT 256, hop 80, 64 mel bands:
    1 x 64 x 81), labels from FSDD's names ``{digit}_{speaker}_{take}``, takes 0-4 the test split; a
    convolutional VAE (32-64-128 channels, dense 256, 32 latents) with a Gaussian likelihood whose scales the decoder
    predicts (better than the Laplace on test NLL and on samples, BENCHMARKS.md "Audio"), 60 epochs of batch 64.
    Samples draw z from Gaussians fitted to the training codes when training ends (eight per digit for the
    conditional preset, a mixture of 80 for the other; ``model.latent_density``), whose samples are heard as the
    asked digit far more often than prior draws and lie closer to real clips (BENCHMARKS.md, "Audio")."""
    return Config(
        model=ModelConfig(architecture="conv", likelihood="gaussian", likelihood_scale="decoder", latent_dim=32,
                          channels=(32, 64, 128), hidden_dims=(256,), num_classes=num_classes,
                          latent_density=8 if num_classes else 80),
        data=DataConfig(source="", sample_rate=8000, clip_seconds=0.8, n_fft=256, hop_length=80, n_mels=64,
                        labels_from="{label}_{speaker}_{take}", test_split="take=0-4"),
        train=TrainConfig(epochs=60, batch_size=64, lr=1e-3, num_images=16),
    )


_add(
    "fsdd",
    "spoken digits (FSDD or any folder of clips, --data FOLDER): 0.8 s log-mel spectrograms (64 mels, 8 kHz), conv "
    "VAE 32-64-128, 32 latents, Gaussian likelihood; sample/reconstruct/interpolate write WAV (Griffin-Lim) + PNG",
    _fsdd(num_classes=0),
)
_add(
    "fsdd-cvae",
    "the fsdd preset conditional on the digit (labels from the file names {digit}_{speaker}_{take}); "
    "vaekit sample RUN --label 7 --out seven.wav says a seven",
    _fsdd(num_classes=10),
)


def get_preset(name: str) -> Config:
    """The config of preset ``name`` (raises ConfigError listing the presets if unknown)."""
    return PRESETS.get(name).config


def presets() -> list[Preset]:
    """All presets, sorted by name."""
    return [PRESETS.get(name) for name in PRESETS.names()]
