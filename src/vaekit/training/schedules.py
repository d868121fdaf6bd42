"""Schedules of a training run: the learning rate and the KL weight, and the optimiser they drive.

Both warm-ups scale with the run: a warm-up of ``w`` steps ends after ``min(w, f * total)`` steps, ``f`` being
``train.max_warmup_fraction`` (default a quarter; 1 turns the cap off) and ``total`` the run's steps, or, for a
run with a time budget, when ``f`` of the budget is spent. So a short run (few epochs, small data) still trains
most of its time at the full KL weight and learning rate instead of ending mid-warm-up; a long run keeps the
warm-up it asks for::

    progress p      = step / total_steps                (or elapsed / time_budget_s with a budget)
    warm-up factor  = min(1, max(step / w, p / f))      (1 when w = 0)
    KL weight       = beta * warm-up factor(objective.kl_warmup_steps)
                      or, with objective.kl_cycles = M, beta * min(1, ((p M) mod 1) / objective.kl_cycle_ratio)
    learning rate   = lr * warm-up factor(train.warmup_steps) * decay(p)     decay: 1, cosine or step
"""

from __future__ import annotations

import math

import torch

from vaekit.config import Config


def progress(step: int, total_steps: int, config: Config, elapsed_s: float = 0.0) -> float:
    """How much of the run is done, in [0, 1]: of its steps, or of ``train.time_budget_s`` when one is set."""
    budget = config.train.time_budget_s
    if budget > 0:
        return min(elapsed_s / budget, 1.0)
    return min(step, total_steps) / max(total_steps, 1)


def warmup_factor(step: float, warmup_steps: int, done: float, max_fraction: float) -> float:
    """Linear warm-up from 0 to 1 over ``warmup_steps`` steps, ended early once ``done`` (the run's progress)
    reaches ``max_fraction`` (1: never ended early); 1 without warm-up."""
    if warmup_steps <= 0:
        return 1.0
    if max_fraction >= 1.0:
        return min(1.0, step / warmup_steps)
    return min(1.0, max(step / warmup_steps, done / max_fraction))


def kl_weight(step: int, total_steps: int, config: Config, elapsed_s: float = 0.0) -> float:
    """The KL weight at ``step``: ``objective.beta`` after a warm-up of ``objective.kl_warmup_steps`` (see the
    module docstring)."""
    objective = config.objective
    done = progress(step, total_steps, config, elapsed_s)
    if objective.kl_cycles > 0:
        return objective.beta * cyclical_factor(done, objective.kl_cycles, objective.kl_cycle_ratio)
    return objective.beta * warmup_factor(step, objective.kl_warmup_steps, done, config.train.max_warmup_fraction)


def cyclical_factor(done: float, cycles: int, ratio: float) -> float:
    """Cyclical annealing (Fu et al. 2019, arXiv:1903.10145): the run's progress ``done`` in [0, 1] is split into
    ``cycles`` equal cycles; in each the factor rises linearly from 0 to 1 over the first ``ratio`` of the cycle,
    then stays at 1. The end of the run (``done = 1``) has the factor 1."""
    if done >= 1.0:
        return 1.0
    position = (done * cycles) % 1.0  # within the current cycle, in [0, 1)
    return min(1.0, position / ratio)


def learning_rate(step: int, total_steps: int, config: Config, elapsed_s: float = 0.0) -> float:
    """The learning rate: a linear warm-up over ``train.warmup_steps`` (capped as in the module docstring), then
    constant, cosine decay from ``train.lr`` to 0, or step decay (x0.1 at half, x0.01 at three quarters), over
    the steps of the run (or over ``train.time_budget_s`` seconds of training when a budget is set)."""
    tc = config.train
    done = progress(step, total_steps, config, elapsed_s)
    lr = tc.lr * warmup_factor(step + 1, tc.warmup_steps, done, tc.max_warmup_fraction)
    if tc.schedule == "constant":
        return lr
    if tc.schedule == "step":
        return lr * (1.0 if done < 0.5 else 0.1 if done < 0.75 else 0.01)
    return 0.5 * lr * (1.0 + math.cos(math.pi * done))


def make_optimizer(params: list[torch.nn.Parameter], config: Config) -> torch.optim.Optimizer:
    """Adam or AdamW; the fused implementation where this torch and device support it (same maths, about 3x
    faster per step than the default on CPU), else the default one."""
    opt_class = torch.optim.AdamW if config.train.optimizer == "adamw" else torch.optim.Adam
    lr, weight_decay = config.train.lr, config.train.weight_decay
    try:
        return opt_class(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch: no fused kernel for this device
        return opt_class(params, lr=lr, weight_decay=weight_decay)
