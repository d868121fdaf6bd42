"""The training loop: one readable function from config to run directory.

::

    config ──> load_data ──> VAE ──┬─ epoch: shuffle ─> [binarize] ─> objective ─> backward ─> clip ─> Adam
                                   │          skip + count a non-finite loss or gradient norm
                                   ├─ validate (ELBO, optional IWAE NLL) ─> metrics.jsonl
                                   ├─ best/ (highest validation ELBO), last/, state/ (exact resume)
                                   └─ end: loss_curve.png, samples.png, reconstructions.png

Data reaches the loop one of three ways: one tensor on the device when it fits (``IN_MEMORY_BYTES``),
batches read from a (memory-mapped) :class:`ExampleSet`, or the stream of a directory of shards
(:mod:`vaekit.shards`). Under ``torchrun`` (N processes) the objective runs inside DistributedDataParallel,
each process trains on its share of every global batch, and rank 0 alone writes the run directory; see
:mod:`vaekit.distributed` for the batch-size, learning-rate and resume rules. ``train.amp=bf16`` runs the
training forward pass under bfloat16 autocast and ``train.compile=true`` compiles it; both are off by default.

Run directory::

    RUN/config.json         the fully resolved Config
    RUN/metrics.jsonl       one JSON record per epoch
    RUN/best/, RUN/last/    exported models (config.json + model.safetensors + metadata.json)
    RUN/state/              training state: weights, optimizer moments, step, RNG states (safetensors + JSON)
    RUN/loss_curve.png, RUN/samples.png, RUN/reconstructions.png

Resume is exact on CPU: the state saved at the end of every epoch holds everything the next epoch depends
on (weights, Adam moments, step counter, the global and data RNG states), so an interrupted run continued
with ``resume=True`` ends with the same weights as an uninterrupted one. The state is written as safetensors
plus JSON, never pickled. Two things are not replayed exactly: a run with ``train.time_budget_s`` (it stops
by the clock) and a ``schedule=cosine`` run resumed with more epochs (the decay stretches over the new total).
Resume under N processes is exact in the same way when N is unchanged.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from vaekit import distributed, objectives
from vaekit.config import Config
from vaekit.data import DataBundle, ExampleSet, load_data
from vaekit.distributed import Context
from vaekit.errors import ConfigError, DataError, ModelFileError, OutputError, TrainingError
from vaekit.model import VAE, build_model
from vaekit.serialization import atomic_dir, atomic_write_text, save_model
from vaekit.shards import ShardedExamples

logger = logging.getLogger(__name__)

# Keep the training data on the device as one tensor when it is smaller than this; stream from the
# (possibly memory-mapped) array otherwise.
IN_MEMORY_BYTES = 2 * 1024**3

Batch = tuple[torch.Tensor, "torch.Tensor | None"]  # x (B, *shape) on the device, labels (B,) or None


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes
    ----------
    run_dir
        The run directory.
    model_dir
        The best model (highest validation ELBO), loadable with :func:`vaekit.load`.
    last_dir
        The model after the last epoch.
    metrics
        One record per epoch (also in ``metrics.jsonl``).
    model
        The best model, in memory.
    skipped_steps
        Updates skipped for a non-finite loss or gradient.
    skipped_grad_norm
        Updates skipped because their gradient norm exceeded ``train.skip_grad_norm``.
    stopped_early
        Whether early stopping ended the run.
    """

    run_dir: Path
    model_dir: Path
    last_dir: Path
    metrics: list[dict[str, Any]]
    model: VAE
    skipped_steps: int = 0
    skipped_grad_norm: int = 0
    stopped_early: bool = False


@dataclass
class _State:
    """Counters carried across epochs and saved for resume."""

    epoch: int = 0
    step: int = 0
    best_val_elbo: float = -math.inf
    epochs_without_improvement: int = 0
    skipped_steps: int = 0
    skipped_grad_norm: int = 0
    train_time_s: float = 0.0
    world_size: int = 1
    metrics: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ConfigError(f"train.device=cuda (--device cuda) but {why}; use --device auto or --device cpu")
    return torch.device(name)


def learning_rate(step: int, total_steps: int, config: Config, elapsed_s: float = 0.0) -> float:
    """The learning rate: a linear warm-up over ``train.warmup_steps``, then constant, cosine decay from
    ``train.lr`` to 0, or step decay (x0.1 at half, x0.01 at three quarters), over the steps of the run (or over
    ``train.time_budget_s`` seconds of training when a budget is set)."""
    tc = config.train
    lr = tc.lr
    if tc.warmup_steps > 0 and step < tc.warmup_steps:
        lr *= (step + 1) / tc.warmup_steps
    if tc.schedule == "constant":
        return lr
    budget = tc.time_budget_s
    fraction = min(elapsed_s / budget, 1.0) if budget > 0 else min(step, total_steps) / max(total_steps, 1)
    if tc.schedule == "step":
        return lr * (1.0 if fraction < 0.5 else 0.1 if fraction < 0.75 else 0.01)
    return 0.5 * lr * (1.0 + math.cos(math.pi * fraction))


def make_optimizer(params: list[torch.nn.Parameter], config: Config) -> torch.optim.Optimizer:
    """Adam or AdamW; the fused implementation where this torch and device support it (same maths, about 3x
    faster per step than the default on CPU), else the default one."""
    opt_class = torch.optim.AdamW if config.train.optimizer == "adamw" else torch.optim.Adam
    lr, weight_decay = config.train.lr, config.train.weight_decay
    try:
        return opt_class(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch: no fused kernel for this device
        return opt_class(params, lr=lr, weight_decay=weight_decay)


def _clip_and_check(params: list[torch.nn.Parameter], max_norm: float, skip_above: float = 0.0) -> str:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping). Returns ``ok``, ``nonfinite`` or
    ``too_large`` (the norm before clipping exceeds ``skip_above`` > 0): the caller skips all but ``ok``."""
    grads = [p.grad for p in params if p.grad is not None]
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is None:  # torch < 2.6
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    else:
        norm = get_total_norm(grads)
    value = float(norm)
    if not math.isfinite(value):
        return "nonfinite"
    if skip_above > 0 and value > skip_above:
        return "too_large"
    if max_norm > 0 and get_total_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return "ok"


def _check_config(config: Config, bundle: DataBundle, ctx: Context) -> None:
    if config.model.likelihood == "bernoulli" and bundle.preprocessing.kind == "real":
        raise DataError(
            f"the Bernoulli likelihood needs data in [0, 1], but {config.data.source!r} holds real values; "
            "use model.likelihood=gaussian (or the tabular preset)"
        )
    positive = {
        "train.epochs": config.train.epochs,
        "train.batch_size": config.train.batch_size,
        "objective.k": config.objective.k,
        "train.max_bad_steps": config.train.max_bad_steps,
        "train.eval_every": config.train.eval_every,
        "data.shuffle_buffer": config.data.shuffle_buffer,
        "data.num_workers + 1": config.data.num_workers + 1,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    distributed.local_batch_size(config.train.batch_size, ctx.world_size)  # raises unless N divides it
    if len(bundle.val) == 0:
        raise ConfigError(
            "the validation split is empty; set data.val_fraction above 0 (validation picks the best model)"
        )
    if config.train.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {config.train.lr}")
    if config.objective.beta < 0 or config.objective.free_bits < 0:
        raise ConfigError("objective.beta and objective.free_bits must be non-negative")
    if not 0 <= config.train.ema < 1:
        raise ConfigError(f"train.ema must be in [0, 1) (e.g. 0.999; 0 disables it), got {config.train.ema}")
    if config.train.skip_grad_norm < 0 or config.train.warmup_steps < 0:
        raise ConfigError("train.skip_grad_norm and train.warmup_steps must be non-negative (0 disables them)")
    objective = config.objective
    if objective.name == "iwae" and (objective.beta != 1 or objective.free_bits or objective.kl_warmup_steps):
        raise ConfigError(
            "objective.name=iwae has no KL weight: leave objective.beta=1, objective.free_bits=0 and "
            "objective.kl_warmup_steps=0, or use objective.name=elbo"
        )


def _loss(model: VAE, x: torch.Tensor, y: torch.Tensor | None, config: Config, step: int) -> objectives.Terms:
    objective = config.objective
    if objective.name == "iwae":
        return objectives.iwae(model, x, objective.k, y=y, estimator=objective.estimator)
    beta = objectives.kl_weight(step, objective.beta, objective.kl_warmup_steps)
    return objectives.elbo(
        model, x, beta=beta, free_bits=objective.free_bits, y=y, free_bits_per=objective.free_bits_per
    )


class _Objective(torch.nn.Module):
    """The training objective as a module, so DistributedDataParallel and ``torch.compile`` can wrap it (DDP
    averages gradients only for what runs through a module's ``forward``)."""

    def __init__(self, model: VAE, config: Config) -> None:
        super().__init__()
        self.model, self.config = model, config

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, step: int) -> objectives.Terms:
        if self.config.train.amp == "bf16":
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return _loss(self.model, x, y, self.config, step)
        return _loss(self.model, x, y, self.config, step)


@torch.no_grad()
def _validate(model: VAE, batches: Iterator[Batch], n: int, ctx: Context, eval_k: int = 0) -> dict[str, Any]:
    """Mean validation ELBO and its parts (nats per example) over all ranks' batches of the ``n`` validation
    examples, and the IWAE NLL if ``eval_k`` > 0."""
    model.eval()
    sums = {"val_elbo": 0.0, "val_log_px_z": 0.0, "val_kl": 0.0, "val_nll": 0.0}
    layers = len(objectives.layer_sizes(model, model.latent_dim))
    if layers > 1:  # a hierarchical model: the KL of each stochastic layer, top first
        sums.update({f"val_kl_layer{i}": 0.0 for i in range(layers)})
    for x, y in batches:
        terms = objectives.elbo(model, x, y=y)
        sums["val_elbo"] += float(terms.elbo.sum())
        sums["val_log_px_z"] += float(terms.log_px_z.sum())
        sums["val_kl"] += float(terms.kl.sum())
        if terms.kl_per_layer is not None:
            for i, value in enumerate(terms.kl_per_layer.sum(0).tolist()):
                sums[f"val_kl_layer{i}"] += value
        if eval_k > 0:
            sums["val_nll"] -= float(objectives.iwae_bound(model, x, eval_k, y=y).sum())
    model.train()
    totals = distributed.all_reduce_sum(ctx, list(sums.values()))
    result: dict[str, Any] = {key: value / n for key, value in zip(sums, totals, strict=True)}
    if eval_k <= 0:
        del result["val_nll"]
    if layers > 1:
        result["val_kl_per_layer"] = [result.pop(f"val_kl_layer{i}") for i in range(layers)]
    return result


# -- training state: safetensors for tensors, JSON for the rest ---------------------------------------------
def _rng_states(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """This process's RNG states: the global torch RNG, the CUDA one, and the named generators."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    for name, generator in generators.items():
        states[name] = generator.get_state().cpu()
    return states


def _rng_key(rank: int, name: str) -> str:
    return f"rng.{name}" if rank == 0 else f"rng.rank{rank}.{name}"


def _save_state(
    path: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    state: _State,
    rng: list[dict[str, torch.Tensor]],
    ema: VAE | None = None,
) -> None:
    """Write the training state; ``rng[r]`` holds rank r's RNG states (one entry with one process)."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu() for k, v in ema.state_dict().items()})
    opt_state = optimizer.state_dict()
    opt_json: dict[str, Any] = {"param_groups": opt_state["param_groups"], "state": {}}
    for index, entry in opt_state["state"].items():
        opt_json["state"][str(index)] = {}
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu()
            else:
                opt_json["state"][str(index)][name] = value
    for rank, states in enumerate(rng):
        tensors.update({_rng_key(rank, name): value for name, value in states.items()})
    info = {"counters": {k: v for k, v in state.__dict__.items() if k != "metrics"}, "optimizer": opt_json}
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(info, indent=1) + "\n")


def _load_state(
    path: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    rank: int = 0,
    ema: VAE | None = None,
) -> _State:
    try:
        tensors = load_file(str(path / "state.safetensors"))
        info = json.loads((path / "state.json").read_text())
    except (OSError, SafetensorError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            f"cannot resume: the training state in {str(path)!r} is missing or corrupted ({exc}); "
            "start a new run with another --out"
        ) from None
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        saved = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
        ema.load_state_dict(saved if saved else model.state_dict())  # a run saved without EMA starts it here
    opt_json = info["optimizer"]
    opt_state: dict[str, Any] = {"param_groups": opt_json["param_groups"], "state": {}}
    for index, entry in opt_json["state"].items():
        opt_state["state"][int(index)] = dict(entry)
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            opt_state["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(opt_state)
    if _rng_key(rank, "torch") not in tensors:  # resumed with more processes than saved: fresh seeds here
        return _State(**info["counters"])
    torch.set_rng_state(tensors[_rng_key(rank, "torch")])
    if _rng_key(rank, "cuda") in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[_rng_key(rank, "cuda")])
    for name, generator in generators.items():
        generator.set_state(tensors[_rng_key(rank, name)].to(generator.get_state().device))
    return _State(**info["counters"])


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _resolve_run_config(config: Config | None, out: Path, resume: bool) -> Config:
    """The config of the run: ``config`` for a new run; ``out/config.json`` (epochs from ``config``) to resume."""
    config_path = out / "config.json"
    if not resume:
        if config_path.exists():
            raise ConfigError(
                f"{str(out)!r} already holds a run; pass --resume to continue it or choose another --out"
            )
        return config or Config()
    if not config_path.is_file():
        raise ConfigError(f"cannot resume: {str(out)!r} holds no run (no config.json); check --out")
    saved = Config.from_dict(json.loads(config_path.read_text()))
    if config is None:
        return saved
    saved_dict = saved.to_dict()
    resumed = Config.from_dict({**saved_dict, "train": {**saved_dict["train"], "epochs": config.train.epochs}})
    if resumed != config:  # compare every field, train.* included: a changed lr must not be ignored silently
        raise ConfigError("cannot resume with a different config; only train.epochs may change when resuming")
    return resumed


def _write_run_config(config: Config, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create run directory {str(out)!r}: {exc.strerror}; choose a writable --out"
        ) from None
    atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")


def train(
    config: Config | None = None,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    data: DataBundle | None = None,
) -> TrainResult:
    """Train a VAE and write a run directory.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment, or a process group the caller initialised) every
    process calls this with the same arguments; see :mod:`vaekit.distributed`.

    Parameters
    ----------
    config
        The run's configuration (default: ``Config()``, the digits setup). With ``resume`` it may only change
        ``train.epochs``; the rest is read from ``out/config.json``.
    out
        Run directory (default ``runs/vaekit-<time>``). It must not already hold a run unless ``resume``.
        Under N processes only rank 0 writes it; resuming needs it readable by every rank.
    resume
        Continue the run in ``out`` from its last saved epoch.
    progress
        Show a progress bar with the running loss (rank 0 only).
    data
        Already-loaded data (for example arrays wrapped by :func:`vaekit.data.from_arrays`) used instead of
        ``config.data.source``; ``config.data`` still sets binarization.

    Returns
    -------
    TrainResult
        On ranks other than 0, ``model`` is the in-memory model after the last epoch (rank 0 reloads the best).

    Raises
    ------
    ConfigError, DataError
        Bad configuration or data (before anything is trained), including a ``train.batch_size`` that the
        number of processes does not divide.
    TrainingError
        Too many consecutive non-finite updates; ``last/`` keeps the last good model.
    """
    if out is None:
        if resume:
            raise ConfigError("resume needs the run directory: pass out=/--out")
        out = Path("runs") / time.strftime("vaekit-%Y%m%d-%H%M%S")
    out = Path(out)
    config = _resolve_run_config(config, out, resume)
    ctx = distributed.init_context(resolve_device(config.train.device))
    try:
        distributed.barrier(ctx)  # every rank has checked `out` before rank 0 writes into it
        result = _train(config, out, resume, progress, data, ctx)
        distributed.barrier(ctx)  # rank 0 has written the run; all ranks leave the group together
        return result
    finally:
        distributed.close(ctx)


def _train(
    config: Config, out: Path, resume: bool, progress: bool, data: DataBundle | None, ctx: Context
) -> TrainResult:
    device, tc = ctx.device, config.train
    info = logger.info if ctx.is_main else logger.debug
    bundle = data if data is not None else load_data(config.data)
    _check_config(config, bundle, ctx)

    torch.manual_seed(tc.seed)
    model = build_model(config.model, bundle.preprocessing.shape).to(device)
    model.preprocessing = bundle.preprocessing
    if ctx.is_main:
        _write_run_config(config, out)  # only now: bad config, data or model leaves no run directory behind
    params = list(model.parameters())
    optimizer = make_optimizer(params, config)
    ema = copy.deepcopy(model) if tc.ema > 0 else None  # evaluated and saved in place of the raw weights
    ema_params = [] if ema is None else [p.detach() for p in ema.parameters()]
    eval_model = model if ema is None else ema
    if ctx.rank > 0:  # own noise on every rank; rank 0 keeps the one-process streams
        torch.manual_seed(distributed.rank_seed(tc.seed, ctx.rank))
    shuffle_gen = torch.Generator().manual_seed(tc.seed + 1)  # the same on every rank
    binarize_gen = torch.Generator(device=device).manual_seed(distributed.rank_seed(tc.seed + 2, ctx.rank))
    generators = {"shuffle": shuffle_gen, "binarize": binarize_gen}

    state = _State(world_size=ctx.world_size)
    if resume and (out / "state").exists():
        state = _load_state(out / "state", model, optimizer, generators, ctx.rank, ema)
        state.metrics = _read_metrics(out / "metrics.jsonl")[: state.epoch]
        if state.world_size != ctx.world_size:
            info("the run was saved with %d processes and resumes with %d: it goes on, but not bit for bit",
                 state.world_size, ctx.world_size)
            state.world_size = ctx.world_size
        info("resuming %s at epoch %d (step %d)", out, state.epoch, state.step)

    step_fn: torch.nn.Module = distributed.wrap(_Objective(model, config), ctx)
    if tc.compile:
        step_fn = torch.compile(step_fn)  # type: ignore[assignment]
    train_set, val_set = bundle.train, bundle.val
    conditional = bool(config.model.num_classes)
    batch_size = distributed.local_batch_size(tc.batch_size, ctx.world_size)
    feed = _Feed(config, ctx, train_set, conditional, batch_size, first_epoch=state.epoch)
    val_feed = _Feed(config, ctx, val_set, conditional, max(batch_size, 256), validation=True)
    steps_per_epoch = feed.num_batches()
    total_steps = steps_per_epoch * tc.epochs
    dynamic = config.data.binarize == "dynamic"
    extra = {"binarize": config.data.binarize, "training": {"config": config.to_dict()}}
    last_dir, best_dir = out / "last", out / "best"
    stopped_early = out_of_time = False
    bad_in_row = 0

    model.train()
    while state.epoch < tc.epochs:
        epoch_start = time.perf_counter()
        loss_sum, loss_count = 0.0, 0
        bar = tqdm(
            total=steps_per_epoch, desc=f"epoch {state.epoch + 1}/{tc.epochs}", leave=False, dynamic_ncols=True,
            disable=not (progress and ctx.is_main),
        )
        for i, (batch_x, y) in enumerate(feed.batches(state.epoch, shuffle_gen)):
            elapsed = state.train_time_s + time.perf_counter() - epoch_start
            if tc.time_budget_s > 0 and ctx.distributed:  # one clock for all, so all stop at the same step
                elapsed = distributed.all_reduce_sum(ctx, [elapsed])[0] / ctx.world_size
            if tc.time_budget_s > 0 and elapsed >= tc.time_budget_s and i > 0:
                break
            x = torch.bernoulli(batch_x, generator=binarize_gen) if dynamic else batch_x
            lr = learning_rate(state.step, total_steps, config, elapsed)
            for group in optimizer.param_groups:
                group["lr"] = lr
            terms = step_fn(x, y, state.step)
            state.step += 1
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(terms.loss.detach())
            ok = math.isfinite(loss_value)
            status = "ok" if ok else "nonfinite"
            if ok or ctx.distributed:  # under DDP every rank must join the gradient all-reduce; NaN poisons it,
                (terms.loss if ok else terms.loss * math.nan).backward()  # so every rank skips this update
                status = _clip_and_check(params, tc.grad_clip, tc.skip_grad_norm) if ok else "nonfinite"
            if status != "ok":  # the gradients are the same on every rank, so every rank decides alike
                if status == "too_large":
                    state.skipped_grad_norm += 1
                else:
                    state.skipped_steps += 1
                bad_in_row += 1
                (logger.warning if ctx.is_main else logger.debug)(
                    "skipped update at step %d: %s", state.step,
                    "non-finite loss or gradient" if status == "nonfinite"
                    else f"gradient norm above train.skip_grad_norm={tc.skip_grad_norm:g}",
                )
                if bad_in_row >= tc.max_bad_steps:
                    bar.close()
                    raise TrainingError(
                        f"training stopped at step {state.step}: {bad_in_row} updates in a row had a non-finite "
                        f"loss or gradient; the last good model is in {str(last_dir)!r}; lower train.lr or set "
                        "train.grad_clip"
                    )
                bar.update(1)
                continue
            optimizer.step()
            if ema_params:
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - tc.ema)
            bad_in_row = 0
            loss_sum += loss_value
            loss_count += 1
            if progress and (i % 10 == 0 or i == steps_per_epoch - 1):
                bar.set_postfix(loss=f"{loss_sum / loss_count:.2f}", refresh=False)
            bar.update(1)
        bar.close()
        epoch_time = time.perf_counter() - epoch_start
        if ctx.distributed:  # sums over ranks: every rank logs the same loss and agrees on the clock
            loss_sum, losses, times = distributed.all_reduce_sum(ctx, [loss_sum, loss_count, epoch_time])
            loss_count, epoch_time = round(losses), times / ctx.world_size
        state.train_time_s += epoch_time
        state.epoch += 1
        out_of_time = 0 < tc.time_budget_s <= state.train_time_s
        nll_due = state.epoch % tc.eval_every == 0 or state.epoch == tc.epochs or out_of_time

        record: dict[str, Any] = {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": loss_sum / max(loss_count, 1),
            **_validate(eval_model, val_feed.batches(), len(val_set), ctx, tc.eval_k if nll_due else 0),
            "kl_weight": objectives.kl_weight(state.step, config.objective.beta, config.objective.kl_warmup_steps),
            "lr": learning_rate(state.step, total_steps, config, state.train_time_s),
            "skipped_steps": state.skipped_steps,
            "skipped_grad_norm": state.skipped_grad_norm,
            "train_time_s": round(state.train_time_s, 3),
        }
        state.metrics.append(record)
        improved = record["val_elbo"] > state.best_val_elbo
        if improved:
            state.best_val_elbo = record["val_elbo"]
            state.epochs_without_improvement = 0
        elif state.step >= config.objective.kl_warmup_steps:  # early stopping never fires during warm-up
            state.epochs_without_improvement += 1
        rng = distributed.gather_tensors(ctx, _rng_states(generators))  # every rank takes part
        if ctx.is_main:
            if improved:
                save_model(eval_model, best_dir, {**extra, "metrics": record})
            save_model(eval_model, last_dir, {**extra, "metrics": record})
            _save_state(out / "state", model, optimizer, state, rng, ema)
            atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in state.metrics))
        info(
            "epoch %d: train loss %.3f, val ELBO %.3f nats%s",
            state.epoch, record["train_loss"], record["val_elbo"], " (best)" if improved else "",
        )
        if tc.patience > 0 and state.epochs_without_improvement >= tc.patience:
            info("early stopping: no better validation ELBO for %d epochs", tc.patience)
            stopped_early = True
            break
        if out_of_time:
            info("time budget of %.0f s spent after %d epochs", tc.time_budget_s, state.epoch)
            break

    best = model
    if ctx.is_main:
        from vaekit.serialization import load

        best = load(best_dir, device=str(device))
        originals, labels = val_feed.first(max(1, tc.num_images // 2))
        _write_figures(out, best, state.metrics, originals, labels, tc.num_images, tc.seed)
    return TrainResult(
        run_dir=out,
        model_dir=best_dir,
        last_dir=last_dir,
        metrics=state.metrics,
        model=best,
        skipped_steps=state.skipped_steps,
        skipped_grad_norm=state.skipped_grad_norm,
        stopped_early=stopped_early,
    )


class _Feed:
    """One split as the loop reads it: this rank's batches on the device, with labels for a conditional model.

    In memory (a tensor on the device, or a memory-mapped :class:`ExampleSet`) an epoch's order is a
    permutation from the shared ``shuffle`` generator and this rank takes :func:`distributed.shard` of it;
    validation takes every N-th example. A :class:`ShardedExamples` split streams (see :mod:`vaekit.shards`)
    through one loader whose workers start here, before the loop starts threads of its own, and last the run.
    Dynamic binarization draws one fixed sample of the validation split, so its ELBOs compare across epochs.
    """

    def __init__(
        self, config: Config, ctx: Context, examples: ExampleSet | ShardedExamples, conditional: bool,
        batch_size: int, validation: bool = False, first_epoch: int = 0,
    ) -> None:
        self.config, self.ctx, self.examples, self.validation = config, ctx, examples, validation
        self.batch_size = batch_size
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.fixed_draw = validation and config.data.binarize == "dynamic"
        if isinstance(examples, ShardedExamples):
            if conditional and not examples.has_labels:
                _labels(examples, config, ctx.device)  # raises the missing-labels error
            self.labelled = conditional
            self.loader = examples.loader(
                batch_size, rank=ctx.rank, world_size=ctx.world_size, shuffle=not validation,
                shuffle_buffer=config.data.shuffle_buffer, num_workers=config.data.num_workers,
                seed=config.train.seed + 1, pin_memory=ctx.device.type == "cuda",
            )
            self.started: tuple[int, Iterator[Batch]] | None = (first_epoch, self.loader(first_epoch))
            return
        self.labelled = False
        self.x = examples.tensor().to(ctx.device) if validation else _maybe_on_device(examples, ctx.device)
        self.y = _labels(examples, config, ctx.device)
        if self.fixed_draw and self.x is not None:
            self.x = torch.bernoulli(self.x, generator=self._val_generator(rank=0))
            self.fixed_draw = False

    def _val_generator(self, rank: int) -> torch.Generator:
        seed = distributed.rank_seed(self.config.train.seed + 3, rank)
        return torch.Generator(device=self.ctx.device).manual_seed(seed)

    def num_batches(self) -> int:
        """Training batches per epoch of this rank (the same on every rank)."""
        if isinstance(self.examples, ShardedExamples):
            return self.examples.num_batches(self.batch_size, self.ctx.world_size, self.config.data.num_workers)
        return math.ceil(len(self.examples) // self.ctx.world_size / self.batch_size)

    def batches(self, epoch: int = 0, shuffle_gen: torch.Generator | None = None) -> Iterator[Batch]:
        """This rank's batches: of epoch ``epoch`` in a fresh order (training), or in order (validation)."""
        ctx, examples, b = self.ctx, self.examples, self.batch_size
        if isinstance(examples, ShardedExamples):
            started, self.started = self.started, None
            batches = started[1] if started is not None and started[0] == epoch else self.loader(epoch)
            generator = self._val_generator(ctx.rank) if self.fixed_draw else None
            for x, y in batches:
                x = x.to(ctx.device, non_blocking=True)
                if generator is not None:
                    x = torch.bernoulli(x, generator=generator)
                yield x, (y.to(ctx.device, non_blocking=True) if self.labelled and y is not None else None)
            return
        if self.validation:
            order = torch.arange(ctx.rank, len(examples), ctx.world_size)
        else:
            assert shuffle_gen is not None  # internal: training always passes the shared generator
            order = distributed.shard(torch.randperm(len(examples), generator=shuffle_gen), ctx.rank, ctx.world_size)
        for start in range(0, len(order), b):
            idx = order[start : start + b]
            x = self.x[idx.to(self.x.device)] if self.x is not None else examples.batch(idx).to(ctx.device)
            yield x, (None if self.y is None else self.y[idx.to(self.y.device)])

    def first(self, n: int) -> Batch:
        """The first ``n`` examples this rank validates on (for the reconstruction figure)."""
        if self.x is not None:
            return self.x[:n], None if self.y is None else self.y[:n]
        x, y = next(iter(self.batches()))
        return x[:n], None if y is None else y[:n]


def _labels(examples: ExampleSet | ShardedExamples, config: Config, device: torch.device) -> torch.Tensor | None:
    """The labels of a split as a long tensor for a conditional model; ``None`` for an unconditional one."""
    num_classes = config.model.num_classes
    if not num_classes:
        return None
    if examples.labels is None:
        raise DataError(
            f"model.num_classes={num_classes} makes the model conditional, but {config.data.source!r} has no "
            "labels; use labelled data (digits, mnist, a table with data.label_column, ...) or model.num_classes=0"
        )
    labels = torch.as_tensor(examples.labels, dtype=torch.long)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"labels of {config.data.source!r} span {int(labels.min())}..{int(labels.max())}, outside "
            f"0..{num_classes - 1}; set model.num_classes to the number of classes"
        )
    return labels.to(device)


def _maybe_on_device(examples: ExampleSet, device: torch.device) -> torch.Tensor | None:
    """The whole split as one tensor on ``device`` if it is small enough, else ``None`` (stream batches)."""
    nbytes = len(examples) * math.prod(examples.shape) * 4
    if nbytes > IN_MEMORY_BYTES:
        return None
    return examples.tensor().to(device)


def _write_figures(
    out: Path,
    model: VAE,
    metrics: list[dict[str, Any]],
    originals: torch.Tensor,
    labels: torch.Tensor | None,
    n: int,
    seed: int,
) -> None:
    """Loss curve, a grid of samples and a grid of validation reconstructions (rows of originals, each above
    its row of reconstructions)."""
    from vaekit.plots import plot_loss_curve, save_image_grid
    from vaekit.reconstruct import interleave_rows

    plot_loss_curve(metrics, out / "loss_curve.png")
    generator = torch.Generator(device=model.device).manual_seed(seed)
    sample_labels = torch.arange(n) % model.num_classes if model.num_classes else None  # each class in turn
    save_image_grid(model.sample(n, generator=generator, y=sample_labels).cpu(), out / "samples.png")
    recon = model.reconstruct(originals, y=labels)
    width = 8
    rows = interleave_rows(originals.cpu().numpy(), recon.cpu().numpy(), width)
    save_image_grid(rows, out / "reconstructions.png", nrow=width)
