"""How many threads torch computes with, chosen by the work and the machine unless the user chose.

torch starts one intra-op thread per core. For small models that costs more than it gains (each step's few
millions of operations are split into pieces too small to pay for waking the threads), and on a machine whose
cores are busy with other work the extra threads wait for cores and spin: the default ``vaekit train`` (digits)
once took 111 s with two threads beside another job, 10.9 s with one. So, unless ``OMP_NUM_THREADS`` is set or a
count is given (``train.threads``, ``--threads``):

- the cores this process may use (its CPU affinity), minus the cores other processes keep busy (the 1-minute load
  average, read before the work starts), at least one;
- and for training, one thread when a step is small (fewer than :data:`SMALL_STEP_FLOPS` floating-point operations:
  forward and backward passes over a batch, counted by torch's FLOP counter on two examples), else the free cores.

The thresholds were measured (BENCHMARKS.md, "Threads"). The choice is logged; ``OMP_NUM_THREADS=N`` or
``train.threads=N`` (N >= 1) overrides it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SMALL_STEP_FLOPS = 1e8  # below this many operations per training step one thread beats two on an idle machine
# (BENCHMARKS.md, "Threads": 2 threads / 1 = 0.87 at 3.7e7 operations a step, 1.13 at 4.2e8, 1.38 at 7.6e8)


def usable_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def busy_cores() -> float:
    """How many cores other processes keep busy: the 1-minute load average (0 where the system does not tell)."""
    try:
        return max(0.0, os.getloadavg()[0])
    except (OSError, AttributeError):
        return 0.0


def free_cores() -> int:
    """Usable cores not taken by other work, at least one."""
    return max(1, usable_cores() - round(busy_cores()))


def chosen_by_user() -> int | None:
    """The count ``OMP_NUM_THREADS`` sets, if any."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def apply(count: int, why: str) -> int:
    """Set torch's intra-op threads to ``count`` and log why; returns it."""
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    logger.info("torch threads: %d (%s)", count, why)
    return count


def for_work(requested: int = 0) -> int:
    """Threads for evaluation and the other verbs: ``requested`` if positive, else ``OMP_NUM_THREADS``, else the
    free cores."""
    if requested > 0:
        return apply(requested, "as requested")
    user = chosen_by_user()
    if user is not None:
        return apply(user, "OMP_NUM_THREADS")
    return apply(free_cores(), f"{usable_cores()} cores, load {busy_cores():.1f}")


def step_flops(
    model: torch.nn.Module,
    objective: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    example: tuple[torch.Tensor, torch.Tensor | None],
    batch_size: int,
) -> float:
    """Floating-point operations of one training step (forward and backward) for ``batch_size`` examples,
    counted on two examples by torch's FLOP counter; ``objective(x, y)`` returns the loss."""
    from torch.utils.flop_counter import FlopCounterMode

    x, y = example
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            loss = objective(x[:2], None if y is None else y[:2])
            loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
    per_example = counter.get_total_flops() / min(2, len(x))
    return float(per_example * batch_size)


def for_training(flops: float, requested: int = 0) -> int:
    """Threads for a training run whose steps take ``flops`` operations (see the module docstring)."""
    if requested > 0:
        return apply(requested, "train.threads")
    user = chosen_by_user()
    if user is not None:
        return apply(user, "OMP_NUM_THREADS")
    free = free_cores()
    if flops < SMALL_STEP_FLOPS:
        return apply(1, f"a small model: {flops:.2g} operations per step; one thread is faster")
    return apply(free, f"{flops:.2g} operations per step, {usable_cores()} cores, load {busy_cores():.1f}")
