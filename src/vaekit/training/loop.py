"""The training loop: one readable function from config to run directory.

::

    config ──> load_data ──> build_model ──┬─ epoch: shuffle ─> [binarize] ─> objective ─> backward ─> clip ─> Adam
                                           │          skip + count a non-finite loss or a huge gradient norm
                                           ├─ validate (ELBO, optional IWAE NLL) ─> one metrics record
                                           ├─ commit: best/ (highest validation ELBO), last/, state/ (exact resume)
                                           └─ end: loss_curve.png, samples.png, reconstructions.png

The objective is looked up by name (:data:`vaekit.objectives.OBJECTIVES`) and the model by family
(:data:`vaekit.models.FAMILIES`), so the loop trains whatever is registered. The learning rate and KL weight
follow :mod:`vaekit.training.schedules`; the data arrive through :class:`vaekit.training.feed.Feed`; the run
directory and its atomic epoch commit are :mod:`vaekit.training.checkpoints`. Under ``torchrun`` (N processes)
the objective runs inside DistributedDataParallel, each process trains on its share of every global batch, and
rank 0 alone writes the run directory (:mod:`vaekit.training.distributed`). ``train.amp=bf16`` runs the training
forward pass under bfloat16 autocast and ``train.compile=true`` compiles it; both are off by default.

Resume is exact on CPU: the state saved at the end of every epoch holds everything the next epoch depends on
(weights, Adam moments, step counter, the global and data RNG states), so an interrupted run continued with
``resume=True`` ends with the same weights as an uninterrupted one. Two things are not replayed exactly: a run
with ``train.time_budget_s`` (it stops by the clock) and a ``schedule=cosine`` run resumed with more epochs (the
decay stretches over the new total). Resume under N processes is exact in the same way when N is unchanged.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaekit import threads
from vaekit.config import Config
from vaekit.data import DataBundle, load_data
from vaekit.errors import ConfigError, DataError, TrainingError
from vaekit.memory import check_fits
from vaekit.models import LatentVariableModel, build_model, load, save_model
from vaekit.models.bounds import Terms, elbo, iwae_bound
from vaekit.models.families import check_names, config_for_data, count_parameters
from vaekit.models.latent_density import fit_latent_density
from vaekit.models.serialization import extra_metadata
from vaekit.objectives import OBJECTIVES
from vaekit.training import checkpoints, distributed, schedules
from vaekit.training.checkpoints import State, Trainables
from vaekit.training.distributed import Context
from vaekit.training.feed import Batch, Feed
from vaekit.training.figures import write_figures

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes
    ----------
    run_dir
        The run directory.
    model_dir
        The best model (highest validation ELBO, or the validation split's ``selection_metric``: NDCG@100 of held-out
        interactions), loadable with :func:`vaekit.load`.
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
    model: LatentVariableModel
    skipped_steps: int = 0
    skipped_grad_norm: int = 0
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ConfigError(f"train.device=cuda (--device cuda) but {why}; use --device auto or --device cpu")
    return torch.device(name)


def clip_and_check(params: list[torch.nn.Parameter], max_norm: float, skip_above: float = 0.0) -> str:
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


def check_data(config: Config, bundle: DataBundle, ctx: Context) -> None:
    """Refuse data the configured model cannot train on, before anything is written."""
    kind = bundle.preprocessing.kind
    if config.model.likelihood == "bernoulli" and kind in ("real", "audio"):
        what, preset = ("log-mel spectrograms (standardized dB)", "--preset fsdd") if kind == "audio" else (
            "real values", "the tabular preset")
        raise DataError(
            f"the Bernoulli likelihood needs data in [0, 1], but {config.data.source!r} holds {what}; "
            f"use model.likelihood=gaussian (or {preset})"
        )
    scale = getattr(bundle.preprocessing, "scale", 255.0)
    if config.model.likelihood == "discretized_logistic" and (kind not in ("unit", "binary") or scale != 255.0):
        raise DataError(
            f"the discretized logistic likelihood models 8-bit data (values k/255), but {config.data.source!r} holds "
            f"{kind} values (a divisor of {scale:g}, not 255); give uint8 images (0..255), or use another likelihood"
        )
    if math.prod(bundle.preprocessing.shape) == 0:
        raise DataError(
            f"{config.data.source!r} has examples of shape {tuple(bundle.preprocessing.shape)}, which hold no "
            "values; give data with at least one feature per example"
        )
    distributed.local_batch_size(config.train.batch_size, ctx.world_size)  # raises unless N divides it
    if len(bundle.val) == 0:
        raise ConfigError(
            "the validation split is empty; set data.val_fraction above 0 (validation picks the best model)"
        )


def compute_loss(
    model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None, config: Config, step: int, kl_weight: float
) -> Terms:
    """The registered objective ``objective.name`` on the batch of update ``step``, with the scheduled KL weight."""
    return OBJECTIVES.get(config.objective.name)(model, x, y, config.objective, kl_weight)


class _Objective(torch.nn.Module):
    """The training objective as a module, so DistributedDataParallel and ``torch.compile`` can wrap it (DDP
    averages gradients only for what runs through a module's ``forward``)."""

    def __init__(self, model: LatentVariableModel, config: Config) -> None:
        super().__init__()
        self.model, self.config = model, config

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, step: int, kl_weight: float) -> Terms:
        if self.config.train.amp == "bf16":
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return compute_loss(self.model, x, y, self.config, step, kl_weight)
        return compute_loss(self.model, x, y, self.config, step, kl_weight)


@torch.no_grad()
def validate(
    model: LatentVariableModel, batches: Iterator[Batch], n: int, ctx: Context, eval_k: int = 0
) -> dict[str, Any]:
    """Mean validation ELBO and its parts (nats per example) over all ranks' batches of the ``n`` validation
    examples, the KL of each stochastic layer of a hierarchical model, and the IWAE NLL if ``eval_k`` > 0."""
    model.eval()
    sums = {"val_elbo": 0.0, "val_log_px_z": 0.0, "val_kl": 0.0, "val_nll": 0.0}
    layers = len(model.layer_sizes)
    if layers > 1:  # a hierarchical model: the KL of each stochastic layer, top first
        sums.update({f"val_kl_layer{i}": 0.0 for i in range(layers)})
    for x, y in batches:
        terms = elbo(model, x, y=y)
        sums["val_elbo"] += float(terms.elbo.sum())
        sums["val_log_px_z"] += float(terms.log_px_z.sum())
        sums["val_kl"] += float(terms.kl.sum())
        if terms.kl_per_layer is not None:
            for i, value in enumerate(terms.kl_per_layer.sum(0).tolist()):
                sums[f"val_kl_layer{i}"] += value
        if eval_k > 0:
            sums["val_nll"] -= float(iwae_bound(model, x, eval_k, y=y).sum())
    model.train()
    totals = distributed.all_reduce_sum(ctx, list(sums.values()))
    result: dict[str, Any] = {key: value / n for key, value in zip(sums, totals, strict=True)}
    if eval_k <= 0:
        del result["val_nll"]
    if layers > 1:
        result["val_kl_per_layer"] = [result.pop(f"val_kl_layer{i}") for i in range(layers)]
    return result


def train(
    config: Config | None = None,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    data: DataBundle | None = None,
    on_epoch: Callable[[dict[str, Any]], bool] | None = None,
) -> TrainResult:
    """Train a model and write a run directory.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment, or a process group the caller initialised) every
    process calls this with the same arguments; see :mod:`vaekit.training.distributed`.

    Parameters
    ----------
    config
        The run's configuration (default: ``Config()``, the digits setup). With ``resume`` it may only change
        ``train.epochs``; the rest is read from ``out/config.json``.
    out
        Run directory (default ``runs/vaekit-<time>``). It must not already hold a run unless ``resume``.
        Under N processes only rank 0 writes it; resuming needs it readable by every rank.
    resume
        Continue the run in ``out`` from its last saved epoch (see :mod:`vaekit.training.checkpoints` for what a
        kill can leave and how it is recovered).
    progress
        Show a progress bar with the running loss (rank 0 only).
    data
        Already-loaded data (for example arrays wrapped by :func:`vaekit.data.from_arrays`) used instead of
        ``config.data.source``; ``config.data`` still sets binarization.
    on_epoch
        Called with each epoch's metrics record once the epoch is committed (so a stop here keeps exact resume);
        returning ``True`` ends the run there, as early stopping would. Under N processes every rank calls it with
        the same record and must return the same answer. :func:`vaekit.sweep` prunes trials with it.

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
    if data is not None and not isinstance(data, DataBundle):
        raise ConfigError(f"data must be a DataBundle, got {type(data).__name__}; build one from arrays with "
                          "vaekit.data.from_arrays(x, y), or set config.data.source to a file")
    if config is not None and not isinstance(config, Config):
        raise ConfigError(f"config must be a vaekit Config, got {type(config).__name__}; build one with "
                          "vaekit.resolve_config(...) or Config.from_dict(...)")
    config = checkpoints.resolve_run_config(config, out, resume)
    check_names(config.model)
    OBJECTIVES.get(config.objective.name)
    ctx = distributed.init_context(resolve_device(config.train.device))
    callers_threads = torch.get_num_threads()  # the run chooses its own; the caller's is given back after it
    try:
        distributed.barrier(ctx)  # every rank has checked `out` before rank 0 writes into it
        result = _train(config, out, resume, progress, data, ctx, on_epoch)
        distributed.barrier(ctx)  # rank 0 has written the run; all ranks leave the group together
        return result
    finally:
        torch.set_num_threads(callers_threads)
        distributed.close(ctx)


@dataclass
class _Run:
    """Everything one training run works with, built once by :func:`_setup`."""

    config: Config
    ctx: Context
    out: Path
    parts: Trainables
    step_fn: Callable[..., Terms]
    params: list[torch.nn.Parameter]
    ema_params: list[torch.Tensor]
    progress: bool
    ema_buffers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (EMA copy, raw model's)
    feed: Feed = field(init=False)
    val_feed: Feed = field(init=False)
    total_steps: int = field(init=False)

    def attach_data(self, bundle: DataBundle, first_epoch: int) -> None:
        """The training and validation feeds (a stream of shards starts its readers for ``first_epoch`` here)."""
        config, ctx = self.config, self.ctx
        conditional = bool(config.model.num_classes)
        batch_size = distributed.local_batch_size(config.train.batch_size, ctx.world_size)
        self.feed = Feed(config, ctx, bundle.train, conditional, batch_size, first_epoch=first_epoch)
        self.val_feed = Feed(config, ctx, bundle.val, conditional, max(batch_size, 256), validation=True)
        self.total_steps = self.feed.num_batches() * config.train.epochs

    @property
    def eval_model(self) -> LatentVariableModel:
        """The model validated and saved: the EMA weights when ``train.ema`` is set."""
        return self.parts.ema if self.parts.ema is not None else self.parts.model

    def info(self, message: str, *args: object) -> None:
        (logger.info if self.ctx.is_main else logger.debug)(message, *args)


def _train(
    config: Config, out: Path, resume: bool, progress: bool, data: DataBundle | None, ctx: Context,
    on_epoch: Callable[[dict[str, Any]], bool] | None = None,
) -> TrainResult:
    bundle = data if data is not None else load_data(config.data)
    check_data(config, bundle, ctx)
    has_state = resume and ctx.is_main and checkpoints.prepare_resume(out)
    has_state = bool(distributed.all_reduce_sum(ctx, [float(has_state)])[0]) if ctx.distributed else has_state
    run = _setup(config, bundle, ctx, out, progress)
    state = _resume(run) if has_state else State(world_size=ctx.world_size)
    run.attach_data(bundle, first_epoch=state.epoch)  # checks the labels against the model
    if ctx.is_main and not (out / "config.json").exists():
        checkpoints.write_run_config(config, out)  # only now: bad config, data or model leaves no run directory
    _choose_threads(run, state)
    stopped_early, out_of_time = _ended(config, state)  # a resumed run that had ended stays ended
    if has_state and (stopped_early or out_of_time):
        run.info("the run had ended (%s) after epoch %d; nothing more to train",
                 "early stopping" if stopped_early else "time budget spent", state.epoch)
    while state.epoch < config.train.epochs and not (stopped_early or out_of_time):
        loss = _train_epoch(run, state)
        stopped_early, out_of_time = _end_epoch(run, state, loss)
        if on_epoch is not None and on_epoch(state.metrics[-1]):
            run.info("stopped after epoch %d by the on_epoch hook", state.epoch)
            break
    return _finish(run, state, stopped_early)


def _ended(config: Config, state: State) -> tuple[bool, bool]:
    """Whether a run in ``state`` has stopped early (patience spent) and whether it has spent its time budget."""
    tc = config.train
    stopped = tc.patience > 0 and state.epochs_without_improvement >= tc.patience
    return stopped, 0 < tc.time_budget_s <= state.train_time_s


def _setup(config: Config, bundle: DataBundle, ctx: Context, out: Path, progress: bool) -> _Run:
    """Seed, build the model, optimizer, EMA copy and generators."""
    tc = config.train
    model_config = config_for_data(config.model, bundle.preprocessing)  # settings a family takes from its data
    weights = count_parameters(model_config, bundle.preprocessing.shape)
    check_fits(16 * weights, f"training a model of {weights:,} weights (them, their gradients and Adam's two "
               "moments, float32)", "make the model smaller (model.hidden_dims, model.channels, model.latent_dim)")
    torch.manual_seed(tc.seed)
    model = build_model(model_config, bundle.preprocessing.shape).to(ctx.device)
    model.preprocessing = bundle.preprocessing
    params = list(model.parameters())
    optimizer = schedules.make_optimizer(params, config)
    ema = copy.deepcopy(model) if tc.ema > 0 else None  # evaluated and saved in place of the raw weights
    if ctx.rank > 0:  # own noise on every rank; rank 0 keeps the one-process streams
        torch.manual_seed(distributed.rank_seed(tc.seed, ctx.rank))
    generators = {
        "shuffle": torch.Generator().manual_seed(tc.seed + 1),  # the same on every rank
        "binarize": torch.Generator(device=ctx.device).manual_seed(distributed.rank_seed(tc.seed + 2, ctx.rank)),
    }
    step_fn: Any = distributed.wrap(_Objective(model, config), ctx)
    if tc.compile:
        step_fn = torch.compile(step_fn)
    return _Run(
        config=config, ctx=ctx, out=out, parts=Trainables(model, optimizer, generators, ema), step_fn=step_fn,
        params=params, ema_params=[] if ema is None else [p.detach() for p in ema.parameters()], progress=progress,
        ema_buffers=[] if ema is None else list(zip(ema.buffers(), model.buffers(), strict=True)),
    )


def _choose_threads(run: _Run, state: State) -> None:
    """torch's thread count for this run (:mod:`vaekit.threads`), kept in the state: a resumed run computes with the
    count it started with, so it ends bit for bit where an uninterrupted one would (sums split over another number
    of threads round differently). The FLOP count draws no random numbers of the run and leaves the model's buffers
    (batch-norm statistics) as they were."""
    if run.ctx.device.type != "cpu":
        return
    if state.threads > 0 and run.config.train.threads == 0 and threads.chosen_by_user() is None:
        threads.apply(state.threads, "as when the run started")
        return
    model = run.parts.model
    buffers = [b.clone() for b in model.buffers()]
    with torch.random.fork_rng(devices=[]):
        flops = threads.step_flops(model, lambda x, y: elbo(model, x, y=y).loss, run.val_feed.first(2),
                                   run.feed.batch_size)
    with torch.no_grad():
        for buffer, saved in zip(model.buffers(), buffers, strict=True):
            buffer.copy_(saved)
    state.threads = threads.for_training(flops, run.config.train.threads)


def _resume(run: _Run) -> State:
    """Restore the saved state into the run and rewrite ``metrics.jsonl`` from it."""
    ctx, out = run.ctx, run.out
    state = checkpoints.load_state(out / checkpoints.STATE_DIR, run.parts, ctx.rank)
    if state.world_size != ctx.world_size:
        run.info("the run was saved with %d processes and resumes with %d: it goes on, but not bit for bit",
                 state.world_size, ctx.world_size)
        state.world_size = ctx.world_size
    if ctx.is_main:
        checkpoints.write_metrics(out, state.metrics)  # a kill may have come between state/ and metrics.jsonl
    run.info("resuming %s at epoch %d (step %d)", out, state.epoch, state.step)
    return state


def _train_epoch(run: _Run, state: State) -> float:
    """One pass over this rank's share of the training data; returns the mean training loss (over all ranks)."""
    tc, ctx = run.config.train, run.ctx
    epoch_start = time.perf_counter()
    loss_sum, loss_count = 0.0, 0
    bar = tqdm(
        total=run.feed.num_batches(), desc=f"epoch {state.epoch + 1}/{tc.epochs}", leave=False, dynamic_ncols=True,
        disable=not (run.progress and ctx.is_main),
    )
    dynamic = run.config.data.binarize == "dynamic"
    for i, (batch_x, y) in enumerate(run.feed.batches(state.epoch, run.parts.generators["shuffle"])):
        elapsed = state.train_time_s + time.perf_counter() - epoch_start
        if tc.time_budget_s > 0 and ctx.distributed:  # one clock for all, so all stop at the same step
            elapsed = distributed.all_reduce_sum(ctx, [elapsed])[0] / ctx.world_size
        if tc.time_budget_s > 0 and elapsed >= tc.time_budget_s and i > 0:
            break
        x = torch.bernoulli(batch_x, generator=run.parts.generators["binarize"]) if dynamic else batch_x
        loss = _update(run, state, x, y, elapsed)
        if loss is not None:
            loss_sum, loss_count = loss_sum + loss, loss_count + 1
            if run.progress and (i % 10 == 0 or i == bar.total - 1):
                bar.set_postfix(loss=f"{loss_sum / loss_count:.2f}", refresh=False)
        bar.update(1)
    bar.close()
    epoch_time = time.perf_counter() - epoch_start
    if ctx.distributed:  # sums over ranks: every rank logs the same loss and agrees on the clock
        loss_sum, losses, times = distributed.all_reduce_sum(ctx, [loss_sum, loss_count, epoch_time])
        loss_count, epoch_time = round(losses), times / ctx.world_size
    state.train_time_s += epoch_time
    state.epoch += 1
    return loss_sum / max(loss_count, 1)


def _update(run: _Run, state: State, x: torch.Tensor, y: torch.Tensor | None, elapsed: float) -> float | None:
    """One optimizer step on a batch; returns its loss, or ``None`` when the update was skipped (and counted)."""
    tc, ctx, optimizer = run.config.train, run.ctx, run.parts.optimizer
    for group in optimizer.param_groups:
        group["lr"] = schedules.learning_rate(state.step, run.total_steps, run.config, elapsed)
    terms = run.step_fn(x, y, state.step, schedules.kl_weight(state.step, run.total_steps, run.config, elapsed))
    state.step += 1
    optimizer.zero_grad(set_to_none=True)
    loss_value = float(terms.loss.detach())
    ok = math.isfinite(loss_value)
    status = "ok" if ok else "nonfinite"
    if ok or ctx.distributed:  # under DDP every rank must join the gradient all-reduce; NaN poisons it,
        (terms.loss if ok else terms.loss * math.nan).backward()  # so every rank skips this update
        status = clip_and_check(run.params, tc.grad_clip, tc.skip_grad_norm) if ok else "nonfinite"
    if status != "ok":  # the gradients are the same on every rank, so every rank decides alike
        _skip(run, state, status)
        return None
    optimizer.step()
    if run.ema_params:
        with torch.no_grad():
            torch._foreach_lerp_(run.ema_params, [p.detach() for p in run.params], 1.0 - tc.ema)
            for ema_buffer, buffer in run.ema_buffers:  # running statistics (BN-VAE's) are the raw model's
                ema_buffer.copy_(buffer)
    state.bad_in_row = 0
    return loss_value


def _skip(run: _Run, state: State, status: str) -> None:
    """Count a skipped update; stop training after ``train.max_bad_steps`` of them in a row."""
    tc = run.config.train
    if status == "too_large":
        state.skipped_grad_norm += 1
    else:
        state.skipped_steps += 1
    state.bad_in_row += 1
    bad_in_row = state.bad_in_row
    why = ("non-finite loss or gradient" if status == "nonfinite"
           else f"gradient norm above train.skip_grad_norm={tc.skip_grad_norm:g}")
    (logger.warning if run.ctx.is_main else logger.debug)("skipped update at step %d: %s", state.step, why)
    if bad_in_row >= tc.max_bad_steps:
        kept = f"the last good model is in {str(run.out / 'last')!r}"
        if state.epoch == 0:  # nothing committed: no model to keep, and no half-made run to block a retry
            kept = "no epoch had finished, so no model was saved (the run directory is removed)"
            if run.ctx.is_main:
                checkpoints.remove_unstarted_run(run.out)
        raise TrainingError(
            f"training stopped at step {state.step}: {bad_in_row} updates in a row had a non-finite "
            f"loss or gradient; {kept}; lower train.lr or set train.grad_clip"
        )


@torch.no_grad()
def heldout_metrics(model: LatentVariableModel, examples: object, device: torch.device) -> dict[str, Any]:
    """Metrics a validation split computes itself from the model's predictions (``reconstruct``: the mean of p(x|z)
    at the posterior mean), named ``val_<name>``: the ranking metrics of held-out interactions
    (:meth:`vaekit.data.interactions.InteractionExamples.heldout_metrics`); nothing for other data. A split with a
    ``selection_metric`` (``ndcg@100``) picks the best model by it instead of by the validation ELBO."""
    hook = getattr(examples, "heldout_metrics", None)
    if hook is None:
        return {}
    model.eval()
    metrics = hook(lambda x: model.reconstruct(x.to(device)))
    model.train()
    return {f"val_{name}": value for name, value in metrics.items()}


def _end_epoch(run: _Run, state: State, train_loss: float) -> tuple[bool, bool]:
    """Validate, record, commit the epoch (rank 0 writes); return (stop early, out of time)."""
    tc, config = run.config.train, run.config
    out_of_time = 0 < tc.time_budget_s <= state.train_time_s
    nll_due = state.epoch % tc.eval_every == 0 or state.epoch == tc.epochs or out_of_time
    record: dict[str, Any] = {
        "epoch": state.epoch,
        "step": state.step,
        "train_loss": train_loss,
        **validate(run.eval_model, run.val_feed.batches(), len(run.val_feed.examples), run.ctx,
                   tc.eval_k if nll_due else 0),
        **heldout_metrics(run.eval_model, run.val_feed.examples, run.ctx.device),
        "kl_weight": schedules.kl_weight(state.step, run.total_steps, config, state.train_time_s),
        "lr": schedules.learning_rate(state.step, run.total_steps, config, state.train_time_s),
        "skipped_steps": state.skipped_steps,
        "skipped_grad_norm": state.skipped_grad_norm,
        "train_time_s": round(state.train_time_s, 3),
    }
    state.metrics.append(record)
    selection = getattr(run.val_feed.examples, "selection_metric", None)  # e.g. ndcg@100 of held-out interactions
    selected = f"val_{selection}" if selection else "val_elbo"
    improved = record[selected] > state.best_val_elbo  # best_val_elbo holds the best value of `selected`
    if improved:
        state.best_val_elbo = record[selected]
        state.epochs_without_improvement = 0
    elif record["kl_weight"] >= config.objective.beta:  # early stopping never fires during warm-up
        state.epochs_without_improvement += 1
    _commit(run, state, record, improved)
    also = f", val {selection} {record[selected]:.4f}" if selection else ""
    run.info("epoch %d: train loss %.3f, val ELBO %.3f nats%s%s", state.epoch, train_loss, record["val_elbo"], also,
             " (best)" if improved else "")
    stop = tc.patience > 0 and state.epochs_without_improvement >= tc.patience
    if stop:
        run.info("early stopping: no better validation %s for %d epochs", selection or "ELBO", tc.patience)
    if out_of_time:
        run.info("time budget of %.0f s spent after %d epochs", tc.time_budget_s, state.epoch)
    return stop, out_of_time


def _commit(run: _Run, state: State, record: dict[str, Any], improved: bool) -> None:
    """best/ (when better), last/, then state/ (the commit point), then metrics.jsonl derived from it."""
    rng = distributed.gather_tensors(run.ctx, checkpoints.rng_states(run.parts.generators))  # every rank joins
    if not run.ctx.is_main:
        return
    extra = {"binarize": run.config.data.binarize, "training": {"config": run.config.to_dict()}, "metrics": record}
    if improved:
        save_model(run.eval_model, run.out / "best", extra)
    save_model(run.eval_model, run.out / "last", extra)
    checkpoints.save_state(run.out / checkpoints.STATE_DIR, run.parts, state, rng)
    checkpoints.write_metrics(run.out, state.metrics)


def _fit_latents(run: _Run, best: LatentVariableModel) -> None:
    """Fit the best model's latent density to the training codes and save it into best/ (rank 0)."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(run.config.train.seed)
    used = fit_latent_density(best, run.feed.all_batches(generator), seed=run.config.train.seed)
    extra = extra_metadata(best.metadata)
    extra["latent_density"] = {"examples": used, "gaussians_per_class": run.config.model.latent_density}
    save_model(best, run.out / "best", extra)
    best.metadata = {**best.metadata, **extra}
    run.info("fitted the latent density (%d Gaussians per class) to %d training codes in %.1f s; sample draws "
             "from it (--latents prior for the prior)", run.config.model.latent_density, used,
             time.perf_counter() - start)


def _finish(run: _Run, state: State, stopped_early: bool) -> TrainResult:
    """Warn about a warm-up the run never finished; reload the best model and draw the figures (rank 0)."""
    out, config = run.out, run.config
    last_weight = state.metrics[-1]["kl_weight"] if state.metrics else config.objective.beta
    if config.objective.name == "elbo" and last_weight < config.objective.beta and run.ctx.is_main:
        logger.warning(
            "the KL weight ended at %.3g, below objective.beta=%g: the run stopped during its KL warm-up, so its "
            "models were trained on a weakened KL term; train longer or lower objective.kl_warmup_steps",
            last_weight, config.objective.beta,
        )
    best: LatentVariableModel = run.parts.model
    if run.ctx.is_main and not (out / "best").is_dir():  # no epoch had a finite validation value to compare
        selected = getattr(run.val_feed.examples, "selection_metric", None) or "ELBO"
        raise TrainingError(
            f"no epoch reached a finite validation {selected} (the model in {out / 'last'} gives NaN or infinite "
            "values: the training diverged), so there is no best model; lower train.lr, or scale the data "
            "(data.scaling=robust for columns with extreme values)"
        )
    if run.ctx.is_main:
        best = load(out / "best", device=str(run.ctx.device))
        if config.model.latent_density:
            _fit_latents(run, best)
        originals, labels = run.val_feed.first(max(1, config.train.num_images // 2))
        write_figures(out, best, state.metrics, originals, labels, config.train.num_images, config.train.seed)
    return TrainResult(
        run_dir=out, model_dir=out / "best", last_dir=out / "last", metrics=state.metrics, model=best,
        skipped_steps=state.skipped_steps, skipped_grad_norm=state.skipped_grad_norm, stopped_early=stopped_early,
    )
