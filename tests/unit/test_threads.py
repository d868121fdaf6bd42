"""vaekit.threads: torch's thread count chosen by the work and the machine's load unless the user chose one."""

from __future__ import annotations

import pytest
import torch

from vaekit import threads
from vaekit.config import ModelConfig
from vaekit.models import build_model
from vaekit.models.bounds import elbo


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    yield
    torch.set_num_threads(before)


def test_small_steps_get_one_thread_and_large_ones_the_free_cores(monkeypatch):
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads.for_training(threads.SMALL_STEP_FLOPS / 10) == 1 and torch.get_num_threads() == 1
    assert threads.for_training(threads.SMALL_STEP_FLOPS * 10) == 4
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.6, 2.0, 1.0))  # three cores busy elsewhere
    assert threads.for_training(threads.SMALL_STEP_FLOPS * 10) == 1
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert threads.for_work() == 1  # never fewer than one


def test_the_users_choice_wins(monkeypatch):
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.for_training(1.0) == 3 and threads.for_work() == 3
    assert threads.for_training(1.0, requested=2) == 2


def test_step_flops_counts_forward_and_backward_per_batch():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=4, hidden_dims=(32,)), (10,))
    x = torch.rand(2, 10)
    flops = threads.step_flops(model, lambda a, b: elbo(model, a).loss, (x, None), batch_size=64)
    # the linear layers: 10-32-8 and 4-32-10, 2 flops a multiply-add; backward costs about twice the forward pass
    # (less the input's gradient, which nothing needs)
    forward = 2 * (10 * 32 + 32 * 8 + 4 * 32 + 32 * 10) * 64
    assert 2 * forward <= flops <= 3.3 * forward
    assert all(p.grad is None for p in model.parameters())  # the count leaves no gradients behind
