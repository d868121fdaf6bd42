"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` and DistributedDataParallel (DDP).

::

    torchrun --nproc-per-node N -m vaekit train ...        (one machine: vaekit train --nproc N ...)
       │  starts N processes with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set
       ▼
    init_context(device) ──> process group: gloo on CPU, NCCL on CUDA (process r takes GPU LOCAL_RANK)
       │
    epoch: perm = randperm(n, the shared shuffle generator)            the same permutation on every rank
           shard(perm, r, N) = perm[: n - n % N][r::N]                  disjoint, equal sizes
           step i: rank r trains on shard[i*b : (i+1)*b], b = batch_size / N
           DDP averages the N gradients: one update from the global batch perm[i*B : (i+1)*B], B = batch_size

Global batch and learning rate. ``train.batch_size`` is the global batch: N processes each take
``batch_size / N`` examples per step (N must divide it, else :class:`ConfigError`) and DDP averages their
gradients, so an update is the same average over ``batch_size`` examples as with one process, and the learning
rate is unchanged. ``shard`` leaves out the last ``n % N`` examples of each epoch's permutation (at most
N - 1, different ones every epoch) so every rank takes the same number of steps, as DDP requires; one process
leaves out nothing. Steps per epoch: ``ceil((n // N) / (batch_size / N))``.

What differs from one process: each rank draws its own reparameterization noise and dynamic binarization
(seeded by :func:`rank_seed`), so N processes do not replay a one-process run bit for bit; they reach the
same ELBO within noise (tested).

Rank 0 alone writes the run directory (config, metrics, models, state, figures) and logs; the others keep
their weights in step through DDP. Validation sums are all-reduced, so every rank sees the same metrics and
takes the same early-stopping decision. A non-finite loss on any rank poisons the averaged gradient, so every
rank skips that update together.

Exact resume: at the end of every epoch rank 0 gathers the RNG states of every rank (global torch RNG,
CUDA RNG, the ``shuffle`` and ``binarize`` generators) and writes them into ``state/state.safetensors``,
rank r > 0 under ``rng.rank<r>.<name>``; on resume each rank restores its own. Resume with the same number
of processes and it replays the uninterrupted run exactly. Resume with another number and training goes on,
with a warning, but not bit for bit.
"""

from __future__ import annotations

import collections
import datetime
import gc
import inspect
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vaekit.errors import ConfigError

logger = logging.getLogger(__name__)

TIMEOUT = datetime.timedelta(minutes=10)  # a rank that stops answering fails the run after this

# The tensors of the latest collectives, kept referenced from Python. A gloo worker thread drops its references to
# a finished collective's tensors a moment after the caller has moved on; if the caller's were the last Python
# references, that drop needs the GIL, and when it lands during interpreter shutdown the process aborts
# ("terminate called without an active exception"; seen on rank 1 at exit under load, core dump:
# ~AsyncBarrierWork -> ~AsyncAllgatherWork -> TensorImpl::decref_pyobject). Holding the last few here keeps
# that drop free of Python.
_IN_FLIGHT: collections.deque[torch.Tensor] = collections.deque(maxlen=64)


@dataclass(frozen=True)
class Context:
    """This process's place in a (possibly one-process) run.

    Attributes
    ----------
    rank, world_size, local_rank
        As set by ``torchrun``; 0, 1, 0 for a plain process.
    device
        The device this process trains on (``cuda:<local_rank>`` on GPUs).
    owns_group
        Whether :func:`init_context` created the process group (and :func:`close` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0


def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with torchrun") from None


def init_context(device: torch.device) -> Context:
    """Join the process group that ``torchrun`` describes in the environment, or run as one process.

    Parameters
    ----------
    device
        The resolved ``train.device`` (``cpu`` or ``cuda``). Under N processes on CUDA each process takes
        ``cuda:<LOCAL_RANK>`` and NCCL; on CPU they use gloo.

    Returns
    -------
    Context
        With ``owns_group`` set when this call created the group. A group the caller initialised is used as is.

    Raises
    ------
    ConfigError
        Launch variables missing or inconsistent, or fewer GPUs than local processes.
    """
    if dist.is_available() and dist.is_initialized():  # the caller set the group up
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return Context(dist.get_rank(), dist.get_world_size(), local_rank, _rank_device(device, local_rank))
    world_size = launched_world_size()
    if world_size <= 1:
        return Context(device=device)
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world_size} is set but {', '.join(missing)} is not; launch with torchrun "
            "(or vaekit train --nproc N), or unset WORLD_SIZE"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = _rank_device(device, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=TIMEOUT)
    logger.debug("rank %d of %d joined the %s group on %s", rank, world_size, backend, device)
    return Context(rank, world_size, local_rank, device, owns_group=True)


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; start at most "
            "that many processes per node (--nproc-per-node)"
        )
    return torch.device("cuda", local_rank)


def close(ctx: Context) -> None:
    """Destroy the process group if :func:`init_context` created it.

    A DistributedDataParallel wrapper sits in reference cycles (its reducer's hooks point back at it), so it, and
    its hold on the group, outlive the training run until Python's cycle collector happens to run. Destroying the
    group while one is alive leaves the gloo group's threads to the interpreter's exit, where a thread still
    joinable aborts the process ("terminate called without an active exception", exit -6: seen once in a CI run of
    the two-node test). So the cycles are collected first, and the group's threads are joined here, on every rank.
    """
    if ctx.owns_group and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def local_batch_size(batch_size: int, world_size: int) -> int:
    """Examples per step on each of ``world_size`` processes for the global ``batch_size``.

    Raises
    ------
    ConfigError
        When ``world_size`` does not divide ``batch_size``.
    """
    if batch_size % world_size:
        lower = max(world_size, batch_size // world_size * world_size)
        raise ConfigError(
            f"train.batch_size={batch_size} is the global batch and must split evenly over {world_size} "
            f"processes; use train.batch_size={lower} or {lower + world_size}"
        )
    return batch_size // world_size


def shard(perm: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of an epoch's permutation: ``perm[: n - n % world_size][rank::world_size]``.

    Shares are disjoint, equally long and together cover all but the last ``n % world_size`` entries. Step i of
    rank r takes ``share[i*b : (i+1)*b]``: the r-th, (r+N)-th, ... entries of the global batch
    ``perm[i*B : (i+1)*B]`` with B = N b. One process gets ``perm`` itself.

    Parameters
    ----------
    perm
        (n,) the epoch's permutation, the same on every rank.
    """
    usable = len(perm) - len(perm) % world_size
    return perm[:usable][rank::world_size]


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random streams (noise, dynamic binarization): ``seed`` on rank 0."""
    return seed + (rank << 32)


def wrap(module: nn.Module, ctx: Context) -> nn.Module:
    """``module`` in DistributedDataParallel when there are several processes, else unchanged.

    Gradients are averaged during ``backward``; parameters are broadcast from rank 0 once, here.
    """
    if not ctx.distributed:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # The model's buffers are constants (the prior's N(0, I), a fixed Gaussian scale), identical on every rank:
    # no need to broadcast them before every forward pass (the keyword was renamed in torch 2.13).
    parameters = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    no_sync: dict[str, Any] = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}
    )
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **no_sync)


def all_reduce_sum(ctx: Context, values: Sequence[float]) -> list[float]:
    """Sum each value over the ranks (float64); the values themselves with one process."""
    if not ctx.distributed:
        return [float(v) for v in values]
    tensor = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)
    _IN_FLIGHT.append(tensor)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_tensors(ctx: Context, tensors: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Every rank's ``tensors`` (same keys, shapes and dtypes on every rank), indexed by rank; on CPU."""
    if not ctx.distributed:
        return [tensors]
    gathered: list[dict[str, torch.Tensor]] = [{} for _ in range(ctx.world_size)]
    for key in sorted(tensors):
        local = tensors[key].to(ctx.device)
        parts = [torch.empty_like(local) for _ in range(ctx.world_size)]
        _IN_FLIGHT.extend([local, *parts])
        dist.all_gather(parts, local)
        for rank, part in enumerate(parts):
            gathered[rank][key] = part.cpu()
    return gathered


def barrier(ctx: Context) -> None:
    """Wait for every rank (no-op with one process)."""
    if not ctx.distributed:
        return
    if ctx.device.type == "cuda":
        dist.barrier(device_ids=[ctx.device.index])
    else:
        dist.barrier()


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m vaekit ARGV`` in ``nproc`` processes on this machine through ``torch.distributed.run``.

    The ``--nproc`` shortcut of ``vaekit train``: ``torchrun --standalone --nproc-per-node NPROC -m vaekit ARGV``
    with a free rendezvous port. Each process gets ``OMP_NUM_THREADS`` = cores / ``nproc`` (at least 1) unless
    it is set already.

    Returns
    -------
    int
        The launcher's exit status (0 when every process succeeded).

    Raises
    ------
    ConfigError
        ``nproc`` below 1, or a call from inside a ``torchrun`` process.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    if launched_world_size() > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        raise ConfigError("--nproc starts its own processes; under torchrun leave it out (use --nproc-per-node)")
    env = dict(os.environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc-per-node", str(nproc), "-m", "vaekit", *argv]
    logger.info("launching %d processes: %s", nproc, " ".join(command[1:]))
    return subprocess.run(command, env=env, check=False).returncode
