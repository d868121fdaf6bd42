"""Shared fixtures: tiny configs and models that keep the whole suite fast on two CPU cores."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import settings

from vaekit.config import Config, ModelConfig, resolve_config
from vaekit.models import VAE, build_model
from vaekit.presets import get_preset

# A model small enough that a digits epoch takes milliseconds; figures stay small too.
TINY = (
    "model.latent_dim=3",
    "model.hidden_dims=[16]",
    "model.channels=[4, 8]",
    "train.epochs=2",
    "train.batch_size=64",
    "train.num_images=4",
    "train.device=cpu",
)


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., Config]:
    """``tiny_config("train.epochs=4", ...)``: the digits preset shrunk by :data:`TINY`, plus overrides."""

    def make(*overrides: str, base: Config | None = None) -> Config:
        return resolve_config(base or get_preset("digits"), overrides=[*TINY, *overrides])

    return make


@pytest.fixture(scope="session")
def digits_x() -> torch.Tensor:
    """(64, 1, 8, 8) digits in [0, 1], the way vaekit preprocesses them."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:64].astype(np.float32) / 16.0
    return torch.from_numpy(images).unsqueeze(1)


@pytest.fixture
def tiny_model() -> Callable[..., VAE]:
    """``tiny_model(shape=(1, 8, 8), seed=0, **model_fields)``: a freshly seeded small VAE (hierarchical when
    ``latent_layers`` is given)."""

    def make(shape: tuple[int, ...] = (1, 8, 8), seed: int = 0, **fields: object) -> VAE:
        settings: dict[str, object] = {"latent_dim": 3, "hidden_dims": (16,), "channels": (4, 8), **fields}
        torch.manual_seed(seed)
        return build_model(ModelConfig(**settings), shape)  # type: ignore[arg-type]

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests run only when asked for (``-m slow``), as the marker's description in pyproject says."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# Hypothesis's per-example deadline measures wall time, which a loaded machine stretches: no test may fail for that.
settings.register_profile("vaekit", deadline=None, database=None)
settings.load_profile("vaekit")
