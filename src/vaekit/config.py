"""Configuration: frozen dataclasses, YAML/JSON files and dotted ``key=value`` overrides.

A run is described by one :class:`Config` made of four parts::

    Config
    ├── model:     ModelConfig      architecture, likelihood, sizes (saved with every model)
    ├── data:      DataConfig       where the data comes from and how it is prepared
    ├── objective: ObjectiveConfig  ELBO / IWAE, beta, KL warm-up, free bits
    └── train:     TrainConfig      optimizer, schedule, epochs, seed, checkpoints

Overrides such as ``train.lr=3e-4`` or ``model.hidden_dims=[512,256]`` are parsed as YAML scalars and checked
against the field's type: an unknown key or a value of the wrong type raises :class:`ConfigError` naming it.
The fully resolved config is written into every run directory and model.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from vaekit.errors import ConfigError

# -- value checks: every section checks its own values when it is built, naming the key -----------------------
Check = Callable[[Any], "str | None"]  # returns what is wrong with a value, or None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def at_least(lower: float, *, finite: bool = True) -> Check:
    """A number >= ``lower`` (and finite)."""
    return lambda v: None if (_finite(v) or not finite) and v >= lower else f"must be a finite number >= {lower:g}"


def positive() -> Check:
    """A finite number > 0."""
    return lambda v: None if _finite(v) and v > 0 else "must be a finite number > 0"


def between(lower: float, upper: float, *, upper_open: bool = True) -> Check:
    """A finite number in [lower, upper) (or [lower, upper])."""
    closing = ")" if upper_open else "]"

    def check(v: Any) -> str | None:
        inside = _finite(v) and lower <= v and (v < upper if upper_open else v <= upper)
        return None if inside else f"must be in [{lower:g}, {upper:g}{closing}"

    return check


def all_at_least(lower: int) -> Check:
    """A list of integers, each >= ``lower``."""
    return lambda v: None if all(x >= lower for x in v) else f"must hold sizes >= {lower}"


def optional(check: Check) -> Check:
    """``None`` or a value that passes ``check``."""
    return lambda v: None if v is None else check(v)


def _check_section(obj: Any, section: str, checks: Mapping[str, Check]) -> None:
    for name, check in checks.items():
        value = getattr(obj, name)
        problem = check(value)
        if problem is not None:
            raise ConfigError(f"config key {section}.{name} {problem}, got {value!r}")


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_types(obj: Any, section: str) -> None:
    """Every field of a section built directly (``TrainConfig(schedule="linear")``) checked as ``from_dict`` checks
    it: its type and, for a fixed set of choices, its value; lists become tuples, numpy numbers Python ones."""
    hints = _hints(type(obj))  # type: ignore[arg-type]  # a class is hashable
    for field_ in dataclasses.fields(obj):
        annotation = hints[field_.name]
        if dataclasses.is_dataclass(annotation):
            continue
        value = getattr(obj, field_.name)
        checked = _coerce(value, annotation, f"{section}.{field_.name}")
        if checked is not value:
            object.__setattr__(obj, field_.name, checked)


@dataclass(frozen=True)
class ModelConfig:
    """The model: what is saved in ``config.json`` beside the weights.

    Parameters
    ----------
    family
        Registered model family (:data:`vaekit.models.FAMILIES`): ``vae`` (one stochastic layer),
        ``hierarchical`` (top-down, :mod:`vaekit.models.hierarchical`), or ``auto`` (the default):
        ``hierarchical`` when ``latent_layers`` is set, else ``vae``. Saved models record the family they are.
    architecture
        Registered encoder/decoder networks: ``mlp`` (any input, flattened) or ``conv`` (images C x H x W).
    likelihood
        Registered p(x|z): ``bernoulli`` (logits; binary or [0, 1] data), ``gaussian`` (real data) or
        ``discretized_logistic`` (8-bit data such as uint8 images; a proper discrete likelihood, so bits/dim
        are true code lengths), or ``multinomial`` (counts, such as a user's interactions with items: a softmax
        over all of them, as in Mult-VAE).
    latent_dim
        Number of latent dimensions.
    hidden_dims
        ``mlp``: widths of the hidden layers of the encoder (the decoder mirrors them).
    channels
        ``conv``: channels of the strided convolutions of the encoder (the decoder mirrors them).
    activation
        Registered activation: ``relu``, ``elu``, ``gelu``, ``silu``, ``tanh``, ``leaky_relu``.
    gaussian_scale
        ``gaussian`` only: a fixed standard deviation of p(x|z); ``None`` learns one per feature.
    num_classes
        0 for an unconditional VAE; K > 0 makes it conditional on a label in 0..K-1 (a conditional VAE, Sohn
        et al. 2015): the one-hot label is appended to z at the decoder input and shifts the encoder's output.
        Training takes the labels from the dataset.
    mixture_components
        ``discretized_logistic`` only: logistic components per data element (1 = one discretized logistic,
        more = a discretized mixture of logistics, Salimans et al. 2017, arXiv:1701.05517).
    latent_layers
        Sizes of the stochastic layers of a hierarchical (top-down, ladder) VAE, bottom layer (nearest x) first:
        units for ``mlp``, channels on the latent grid for ``conv`` (see :mod:`vaekit.hvae`). Empty (the
        default) gives the one-layer VAE; when set, ``latent_dim`` is ignored (the latent size is the sum).
    residual_blocks
        Hierarchical VAE: residual blocks per stochastic layer in each of the bottom-up and top-down passes.
    weight_norm
        Hierarchical VAE: weight normalisation of every layer (Salimans and Kingma 2016, arXiv:1602.07868),
        a stabiliser for deep stacks.
    prior
        Registered prior p(z) (:data:`vaekit.models.priors.PRIORS`): ``standard_normal``, N(0, I).
    embedding_dim
        ``text`` family: size of the token embeddings (shared by encoder and decoder).
    word_dropout
        ``text`` family: probability that a decoder input token is replaced by ``<unk>`` during training (word
        dropout, Bowman et al. 2016, arXiv:1511.06349), which makes the decoder lean on z; 0 disables it.
    dropout
        ``text`` family: dropout on the embeddings and on the LSTM outputs during training; 0 disables it.
    softmax_cutoffs
        ``text`` family: empty for a full softmax over the vocabulary; ascending token ids splitting it into an
        adaptive softmax (Grave et al. 2016, arXiv:1609.04309): the frequent head, then tail clusters. Still an
        exact, normalised distribution, so the NLL stays a true code length; several times faster on a CPU.
        Cutoffs outside a smaller vocabulary are not used.
    posterior_batchnorm
        ``text`` family: gamma of a batch normalisation of the posterior means with fixed scale (BN-VAE, Zhu et
        al. 2020, arXiv:2004.12585), a remedy for posterior collapse: it keeps the expected KL above about
        ``latent_dim * gamma^2 / 2``; 0 disables it.
    input_norm
        ``vae`` family: ``l2`` divides each example by its Euclidean norm before the encoder (Mult-VAE, Liang et al.
        2018, arXiv:1802.05814: users with many and with few interactions look alike to the encoder); ``none``
        leaves it. The likelihood still scores the example itself.
    input_dropout
        ``vae`` family: dropout on the encoder's input during training (after ``input_norm``): each value is zeroed
        with this probability and the others scaled up, so the encoder learns to complete partial histories
        (Mult-VAE and Mult-DAE use 0.5); 0 disables it. Validation, evaluation and the verbs never drop.
    vocab_size
        ``text`` family: tokens the model predicts over, the special ones included; 0 (the default) takes it from
        the training text's tokenizer (and the saved model records it).
    likelihood_scale
        ``gaussian`` and ``laplace``: where the scale of p(x|z) comes from: ``feature`` (one learned scale per data
        element, shared by every example; or ``gaussian_scale``, fixed) or ``decoder`` (the decoder predicts a
        scale for every element of every example: heteroscedastic, e.g. quiet and loud parts of a spectrogram).
    latent_density
        ``vae`` family: 0 (the default) samples latents from the prior; n > 0 fits, when training ends, a mixture
        of n full-covariance Gaussians per class (in all, for an unconditional model) to the training examples'
        posterior means, which ``sample`` then draws from (ex-post density estimation, Ghosh et al. 2020; see
        :mod:`vaekit.models.latent_density`). The NLL, scores and compression still use the prior.
    """

    family: str = "auto"
    architecture: str = "mlp"
    likelihood: str = "bernoulli"
    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (256, 128)
    channels: tuple[int, ...] = (32, 64)
    activation: str = "relu"
    gaussian_scale: float | None = None
    num_classes: int = 0
    mixture_components: int = 1
    latent_layers: tuple[int, ...] = ()
    residual_blocks: int = 1
    weight_norm: bool = False
    prior: str = "standard_normal"
    embedding_dim: int = 256
    word_dropout: float = 0.0
    dropout: float = 0.0
    softmax_cutoffs: tuple[int, ...] = ()
    posterior_batchnorm: float = 0.0
    vocab_size: int = 0
    input_norm: Literal["none", "l2"] = "none"
    input_dropout: float = 0.0
    likelihood_scale: Literal["feature", "decoder"] = "feature"
    latent_density: int = 0

    def __post_init__(self) -> None:
        _check_types(self, "model")
        _check_section(self, "model", {
            "latent_dim": at_least(0), "hidden_dims": all_at_least(1), "channels": all_at_least(1),
            "gaussian_scale": optional(positive()), "num_classes": at_least(0), "mixture_components": at_least(1),
            "latent_layers": all_at_least(1), "residual_blocks": at_least(1), "latent_density": at_least(0),
        })
        _check_section(self, "model", {  # the text family's settings
            "embedding_dim": at_least(1), "word_dropout": between(0.0, 1.0), "dropout": between(0.0, 1.0),
            "softmax_cutoffs": all_at_least(1), "posterior_batchnorm": at_least(0.0),
            "vocab_size": at_least(0),
        })
        _check_section(self, "model", {"input_dropout": between(0.0, 1.0)})  # the vae family's input
        if list(self.softmax_cutoffs) != sorted(set(self.softmax_cutoffs)):
            raise ConfigError(
                f"config key model.softmax_cutoffs must be ascending token ids, got {list(self.softmax_cutoffs)!r}"
            )


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is prepared.

    Parameters
    ----------
    source
        A built-in dataset (``digits``, ``mnist``, ``fashion-mnist``) or a path: ``.npy``, ``.npz``, ``.csv``,
        ``.parquet`` or a folder of PNG/JPEG images.
    data_dir
        Folder holding the IDX files of ``mnist`` / ``fashion-mnist``; default ``$VAEKIT_DATA``, else
        ``~/.cache/vaekit/data``.
    binarize
        For data in [0, 1]: ``none``, ``static`` (one fixed Bernoulli draw, seeded by ``seed``) or ``dynamic``
        (a fresh draw every time an example is used in training).
    val_fraction
        Fraction of the training examples held out for validation (early stopping, best model).
    image_size
        Folders of images: ``[height, width]`` every image is resized to; default the first image's size.
    grayscale
        Folders of images: convert to one channel (``True``), to RGB (``False``) or by the first image (``None``).
    standardize
        Tables and real-valued arrays: subtract the mean and divide by the standard deviation of the training
        split (stored with the model).
    label_column
        Tables: the column that holds labels (kept apart from the features); ``None`` for no labels.
    seed
        Seed of the train/validation split and of static binarization.
    shuffle_buffer
        Directories of shards (streamed, see :mod:`vaekit.shards`): examples held in the shuffle buffer of each
        data-loading process; more mixes better and costs memory.
    num_workers
        Directories of shards: DataLoader worker processes reading shards beside each training process
        (0 reads in the training process).
    sample_rate
        Audio folders (:mod:`vaekit.data.audio`): every clip is resampled to this rate in Hz; default the rate
        of the first clip.
    clip_seconds
        Audio folders: the fixed length of every clip; longer clips are cropped, shorter ones padded with silence.
    clip_align
        Audio folders: ``center`` (crop or pad equally at both ends) or ``start`` (keep the beginning, pad the end).
    n_fft
        Audio folders: STFT window and FFT size in samples.
    hop_length
        Audio folders: STFT hop in samples.
    n_mels
        Audio folders: mel bands of the log-mel spectrogram.
    labels_from
        Audio folders: where labels come from: a file-name pattern such as ``{label}_{speaker}_{take}`` (the
        ``label`` field is the class; other fields can select the test split), a ``.csv`` file with columns
        ``file`` and ``label`` (and optionally ``split``), or ``None``: class subfolders when every clip is in
        one, else no labels.
    test_split
        Audio folders: which clips form the test split, ``FIELD=VALUES`` over the fields of ``labels_from``
        (values comma-separated, integer ranges ``a-b``), e.g. ``take=0-4``; ``None``: a CSV's ``split`` column,
        else no test split.
    tokenizer
        Text (``.txt`` files, :mod:`vaekit.data.text`): ``whitespace`` (tokens separated by spaces, as in the
        Penn Treebank) or ``bpe`` (byte-pair subwords trained on the training split with the ``tokenizers``
        library, for raw text: ``pip install 'vaekit[text]'``).
    vocab_size
        Text: ``whitespace`` keeps the most frequent words of the training split, up to this many (the rest
        become ``<unk>``); ``bpe`` learns a vocabulary of this size. The special tokens come on top.
    max_length
        Text: tokens per sentence at most (``<eos>`` not counted); longer lines are truncated and counted.
    format
        Which registered data source (:data:`vaekit.data.SOURCES`) reads ``source``: ``auto`` (the default) picks
        one by the path; a source's name (``interactions``, ``file``, ...) makes that one read it, e.g. a table of
        interactions whose columns have other names.
    user_column, item_column, rating_column
        Interactions (:mod:`vaekit.data.interactions`): the columns of user ids, item ids and ratings; ``None``
        finds them by name (``user``, ``user_id``, ``userId``, ...; ``item``, ``item_id``, ``movieId``, ...;
        ``rating``). Files without a header, such as GroupLens ``u.data``, are read as user, item, rating,
        timestamp.
    min_rating
        Interactions: a rating at least this counts as a positive (implicit feedback); ``None`` makes every row a
        positive and ignores the ratings.
    min_user_items
        Interactions: users with fewer positives are left out.
    heldout_users
        Interactions: users in each of the validation and the test split (strong generalization: never trained
        on); 0 takes ``val_fraction`` of the users for each.
    scaling
        Tables and real-valued arrays, with ``standardize``: ``standard`` (mean and standard deviation of the
        training split), ``robust`` (median and interquartile range) or ``asinh`` (robust, then the inverse
        hyperbolic sine: heavy-tailed columns such as amounts or counts, the choice for anomaly detection on
        tables); see :mod:`vaekit.data.scaling`. Stored with the model.
    """

    source: str = "digits"
    data_dir: str | None = None
    binarize: Literal["none", "static", "dynamic"] = "none"
    val_fraction: float = 0.1
    image_size: tuple[int, ...] | None = None
    grayscale: bool | None = None
    standardize: bool = True
    label_column: str | None = None
    seed: int = 0
    shuffle_buffer: int = 16384
    num_workers: int = 0
    tokenizer: Literal["whitespace", "bpe"] = "whitespace"
    vocab_size: int = 10000
    max_length: int = 100
    sample_rate: int | None = None
    clip_seconds: float = 1.0
    clip_align: Literal["center", "start"] = "center"
    n_fft: int = 512
    hop_length: int = 128
    n_mels: int = 64
    labels_from: str | None = None
    test_split: str | None = None
    format: str = "auto"
    user_column: str | None = None
    item_column: str | None = None
    rating_column: str | None = None
    min_rating: float | None = 4.0
    min_user_items: int = 5
    heldout_users: int = 0
    scaling: Literal["standard", "robust", "asinh"] = "standard"

    def __post_init__(self) -> None:
        _check_types(self, "data")
        _check_section(self, "data", {
            "val_fraction": between(0.0, 1.0), "shuffle_buffer": at_least(1), "num_workers": at_least(0),
        })
        _check_section(self, "data", {"vocab_size": at_least(1), "max_length": at_least(1)})  # text
        _check_section(self, "data", {
            "sample_rate": optional(at_least(1)), "clip_seconds": positive(), "n_fft": at_least(2),
            "hop_length": at_least(1), "n_mels": at_least(1),
        })
        _check_section(self, "data", {  # interactions
            "min_rating": optional(at_least(0.0)), "min_user_items": at_least(1), "heldout_users": at_least(0),
        })
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ConfigError(f"config key data.image_size must be [height, width], got {list(self.image_size)!r}")


@dataclass(frozen=True)
class ObjectiveConfig:
    """The training objective (all terms in nats per example, summed over dimensions).

    Parameters
    ----------
    name
        Registered training objective (:data:`vaekit.objectives.OBJECTIVES`): ``elbo`` (beta-weighted ELBO) or
        ``iwae`` (importance-weighted bound with ``k`` samples, Burda et al. 2015, arXiv:1509.00519).
    beta
        Weight of the KL term (beta-VAE, Higgins et al. 2017); 1 gives the true ELBO.
    kl_warmup_steps
        Steps over which the KL weight grows linearly from 0 to ``beta``; 0 disables warm-up.
    free_bits
        Floor, in nats, on the KL of each latent dimension averaged over the batch (Kingma et al. 2016,
        arXiv:1606.04934); 0 disables it. Only the training loss uses it; reported ELBOs never do.
    k
        Number of importance samples of the ``iwae`` objective.
    estimator
        Gradient estimator of the ``iwae`` objective: ``iwae`` (plain reparameterisation) or ``dreg`` (doubly
        reparameterised, Tucker et al. 2018, arXiv:1810.04152: lower-variance inference-network gradients
        whose signal does not fade as k grows). The bound itself is the same.
    free_bits_per
        What ``free_bits`` floors: each latent ``dimension`` or each stochastic ``layer`` of a hierarchical VAE
        (a one-layer VAE has one layer: the whole latent).
    kl_cycles
        Cyclical KL annealing (Fu et al. 2019, arXiv:1903.10145): the run is split into this many cycles and in
        each the KL weight rises linearly from 0 to ``beta`` over the first ``kl_cycle_ratio`` of the cycle, then
        stays at ``beta``; 0 disables it (``kl_warmup_steps`` is the one-cycle, linear annealing).
    kl_cycle_ratio
        Fraction of each cycle spent rising, in (0, 1].
    """

    name: str = "elbo"
    beta: float = 1.0
    kl_warmup_steps: int = 0
    free_bits: float = 0.0
    k: int = 5
    estimator: Literal["iwae", "dreg"] = "iwae"
    free_bits_per: Literal["dimension", "layer"] = "dimension"
    kl_cycles: int = 0
    kl_cycle_ratio: float = 0.5

    def __post_init__(self) -> None:
        _check_types(self, "objective")
        _check_section(self, "objective", {
            "beta": at_least(0.0), "kl_warmup_steps": at_least(0), "free_bits": at_least(0.0), "k": at_least(1),
        })
        _check_section(self, "objective", {"kl_cycles": at_least(0), "kl_cycle_ratio": between(0.0, 1.0,
                                                                                               upper_open=False)})
        if self.kl_cycle_ratio <= 0:
            raise ConfigError(f"config key objective.kl_cycle_ratio must be in (0, 1], got {self.kl_cycle_ratio!r}")
        if self.kl_cycles and self.kl_warmup_steps:
            raise ConfigError(
                "objective.kl_cycles and objective.kl_warmup_steps are two KL schedules; set one of them to 0"
            )
        if self.name == "iwae" and (self.beta != 1 or self.free_bits or self.kl_warmup_steps or self.kl_cycles):
            raise ConfigError(
                "objective.name=iwae has no KL weight: leave objective.beta=1, objective.free_bits=0, "
                "objective.kl_warmup_steps=0 and objective.kl_cycles=0, or use objective.name=elbo"
            )


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation and bookkeeping of a training run.

    Parameters
    ----------
    epochs
        Passes over the training split.
    batch_size
        Examples per update: the global batch. Under N processes (``torchrun``, ``--nproc``) each process
        takes ``batch_size / N`` of them (it must divide) and their gradients are averaged, so one update
        sees the same number of examples whatever N is.
    lr
        Learning rate of Adam (or AdamW); the same under N processes, since the global batch is.
    weight_decay
        Weight decay (L2 for ``adam``, decoupled for ``adamw``).
    optimizer
        ``adam`` or ``adamw``.
    schedule
        ``constant``, ``cosine`` (cosine decay from ``lr`` to 0 over the run) or ``step`` (``lr``, then a tenth
        of it from half the run, a hundredth from three quarters). "The run" is all steps, or the seconds
        of ``time_budget_s`` when a budget is set.
    warmup_steps
        Learning-rate warm-up: the rate rises linearly from 0 over this many first steps, then follows
        ``schedule``; 0 disables it.
    grad_clip
        Clip the global gradient norm to this value; 0 disables clipping.
    skip_grad_norm
        Skip (and count, as ``skipped_grad_norm`` in the metrics) every update whose gradient norm, before
        clipping, exceeds this value: rare exploding batches of deep hierarchies (as in VDVAE); 0 disables it.
    ema
        Decay of an exponential moving average of the weights (e.g. 0.999), used for validation and written
        as the best and last models; the optimiser keeps training the raw weights, whose buffers (running
        statistics such as BN-VAE's) the averaged model carries as they are. 0 disables it.
    max_bad_steps
        Stop training after this many consecutive updates skipped for a non-finite loss or gradient.
    patience
        Early stopping: stop after this many epochs without a better validation ELBO (never during KL
        warm-up); 0 disables it.
    eval_k
        Importance samples of the validation NLL estimate; 0 logs only the ELBO.
    eval_every
        Epochs between validation NLL estimates (the ELBO is logged every epoch).
    time_budget_s
        Stop once this many seconds of training (validation excluded) are spent; 0 means no limit. With
        ``schedule=cosine`` the learning rate then decays over the budget instead of over the epochs.
    seed
        Seed of parameter initialisation, shuffling, sampling and dynamic binarization.
    device
        ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``. Under N processes on CUDA each process
        takes the GPU of its local rank.
    amp
        Mixed precision of the training forward pass: ``none`` (float32) or ``bf16`` (autocast to bfloat16;
        weights, optimizer and validation stay float32). Fast on recent GPUs; slower than float32 on most CPUs.
    compile
        Compile the training step with ``torch.compile``; the first steps take long (minutes on a CPU), later
        ones may be faster. Worth it on a GPU for long runs.
    num_images
        Examples shown in the sample and reconstruction grids of the run directory.
    max_warmup_fraction
        The warm-ups (``train.warmup_steps`` of the learning rate and ``objective.kl_warmup_steps`` of the KL
        weight) end by this fraction of the run at the latest (of its steps, or of ``time_budget_s``), however
        many steps they ask for, so a short run still trains most of its time at the full KL weight and rate;
        1 turns the cap off (the warm-ups then last their steps, even past the end of the run). A run resumed
        with more epochs replays exactly only if its warm-ups were not cut.
    threads
        torch threads of the training process: 0 (the default) chooses by the model's size and the machine's load
        (:mod:`vaekit.threads`: one thread for small models or busy machines), N uses N; ``OMP_NUM_THREADS``,
        when set, is used instead of the automatic choice.
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw"] = "adam"
    schedule: Literal["constant", "cosine", "step"] = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0
    skip_grad_norm: float = 0.0
    ema: float = 0.0
    max_bad_steps: int = 20
    patience: int = 0
    eval_k: int = 0
    eval_every: int = 1
    time_budget_s: float = 0.0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16"] = "none"
    compile: bool = False
    num_images: int = 64
    max_warmup_fraction: float = 0.25
    threads: int = 0

    def __post_init__(self) -> None:
        _check_types(self, "train")
        _check_section(self, "train", {
            "epochs": at_least(1), "batch_size": at_least(1), "lr": positive(), "weight_decay": at_least(0.0),
            "warmup_steps": at_least(0), "grad_clip": at_least(0.0), "skip_grad_norm": at_least(0.0),
            "ema": between(0.0, 1.0), "max_bad_steps": at_least(1), "patience": at_least(0), "eval_k": at_least(0),
            "eval_every": at_least(1), "time_budget_s": at_least(0.0), "num_images": at_least(1),
            "max_warmup_fraction": between(0.0, 1.0, upper_open=False), "threads": at_least(0),
        })


@dataclass(frozen=True)
class Config:
    """A whole run: model, data, objective and training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict (tuples become lists)."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build a config from a nested dict, checking every key and type."""
        return _build(cls, data, prefix="")


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (``3e-4``), which YAML 1.1 leaves as strings."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation and convert lists to tuples; raise ConfigError if it fails."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key!r} expects {_type_name(annotation)}, got {value!r}")
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            raise ConfigError(
                f"config key {key!r} must be one of {', '.join(map(repr, choices))}, got {value!r}"
            )
        return value
    if origin is tuple:
        args = get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list such as [256, 128], got {value!r}")
        item_type = args[0]
        items = tuple(_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
        return value if isinstance(value, tuple) and all(a is b for a, b in zip(items, value, strict=True)) else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return value if type(value) is int else int(value)
        raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return value if type(value) is float else float(value)
        raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value if type(value) is str else str(value)
        raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
    raise AssertionError(f"unsupported annotation {annotation!r} for {key}")  # internal invariant


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r}; valid keys here: "
            f"{', '.join(prefix + name for name in fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, value, prefix + name + ".")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(value, annotation, prefix + name)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"train.lr=3e-4"`` into ``(["train", "lr"], 0.0003)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (for example train.lr=3e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key; write it as section.key=value")
    try:
        value = yaml.load(raw, Loader=_YamlLoader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads "3e-4" as a string; accept it as a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def merge(base: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``updates`` into a copy of ``base``."""
    result = dict(base)
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Return ``config`` with dotted ``key=value`` overrides applied and type-checked."""
    data = config.to_dict()
    for text in overrides:
        path, value = parse_override(text)
        if len(path) != 2 or path[0] not in data:
            sections = ", ".join(data)
            raise ConfigError(
                f"unknown config key {'.'.join(path)!r}; keys are section.name with section one of: {sections}"
            )
        data[path[0]] = merge(data[path[0]], {path[1]: value})
    return Config.from_dict(data)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a nested dict (not yet checked)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}; check the path") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=_YamlLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r} is not valid YAML/JSON: {first_line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections (model, data, ...)")
    return data


def resolve_config(
    base: Config | None = None,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    **sections: Mapping[str, Any],
) -> Config:
    """Combine a base config (e.g. a preset), a config file, section dicts and dotted overrides, in that order.

    Examples
    --------
    >>> resolve_config(overrides=["train.epochs=2"]).train.epochs
    2
    """
    data = (base or Config()).to_dict()
    if config_file is not None:
        data = merge(data, load_config_file(config_file))
    data = merge(data, {k: dict(v) for k, v in sections.items()})
    return apply_overrides(Config.from_dict(data), overrides)
