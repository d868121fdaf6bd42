"""vaekit: variational autoencoders made practical.

Train, evaluate and use VAEs from Python or the ``vaekit`` command line. Every command is a function here of the
same name: :func:`train`, :func:`evaluate`, :func:`sample`, :func:`reconstruct`, :func:`interpolate`,
:func:`traverse`, :func:`embed`, :func:`export`, :func:`serve`, :func:`compress`, :func:`decompress`,
:func:`score`, :func:`plot_latent`, :func:`probe`, :func:`sweep`, :func:`recommend`; :func:`load` rebuilds a
saved model.

The names are imported on first use (``import vaekit`` loads neither torch nor scikit-learn); the code lives in
the subpackages, see ARCHITECTURE.md: :mod:`vaekit.models`, :mod:`vaekit.data`, :mod:`vaekit.training`,
:mod:`vaekit.evaluation`, :mod:`vaekit.apps`, :mod:`vaekit.codec`, :mod:`vaekit.serving`, :mod:`vaekit.cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vaekit._version import __version__
from vaekit.errors import ConfigError, DataError, ModelFileError, OutputError, TrainingError, VaeKitError

if TYPE_CHECKING:  # the names as type checkers and editors see them
    from vaekit.apps import (
        ScoreResult,
        embed,
        interpolate,
        plot_latent,
        reconstruct,
        sample,
        score,
        traverse,
    )
    from vaekit.apps.estimators import AnomalyDetector, VAETransformer
    from vaekit.apps.recommendation import Recommendations, recommend
    from vaekit.codec import CodingConfig, CompressReport, DecompressReport, compress, decompress
    from vaekit.config import Config, DataConfig, ModelConfig, ObjectiveConfig, TrainConfig, resolve_config
    from vaekit.evaluation import EvalReport, ProbeReport, QualityReport, evaluate, probe, sample_quality
    from vaekit.models import VAE, HierarchicalVAE, LatentVariableModel, build_model, load, save_model
    from vaekit.serving import export, serve
    from vaekit.training import TrainResult, train
    from vaekit.tuning import SweepResult, sweep

_LAZY = {
    "vaekit.apps": ("ScoreResult", "embed", "interpolate", "plot_latent", "reconstruct", "sample", "score",
                    "traverse"),
    "vaekit.apps.estimators": ("AnomalyDetector", "VAETransformer"),
    "vaekit.apps.recommendation": ("Recommendations", "recommend"),
    "vaekit.apps.text": ("interpolate_text", "reconstruct_text", "sample_text", "shuffle_auroc"),
    "vaekit.codec": ("CodingConfig", "CompressReport", "DecompressReport", "compress", "decompress"),
    "vaekit.config": ("Config", "DataConfig", "ModelConfig", "ObjectiveConfig", "TrainConfig", "resolve_config"),
    "vaekit.evaluation": ("EvalReport", "ProbeReport", "QualityReport", "evaluate", "probe", "sample_quality"),
    "vaekit.models": ("VAE", "HierarchicalVAE", "LatentVariableModel", "build_model", "load", "save_model"),
    "vaekit.serving": ("export", "serve"),
    "vaekit.training": ("TrainResult", "train"),
    "vaekit.tuning": ("SweepResult", "sweep"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "VAE",
    "AnomalyDetector",
    "CodingConfig",
    "CompressReport",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataError",
    "DecompressReport",
    "EvalReport",
    "HierarchicalVAE",
    "LatentVariableModel",
    "ModelConfig",
    "ModelFileError",
    "ObjectiveConfig",
    "OutputError",
    "ProbeReport",
    "QualityReport",
    "Recommendations",
    "ScoreResult",
    "SweepResult",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "VAETransformer",
    "VaeKitError",
    "__version__",
    "build_model",
    "compress",
    "decompress",
    "embed",
    "evaluate",
    "export",
    "interpolate",
    "interpolate_text",
    "load",
    "plot_latent",
    "probe",
    "recommend",
    "reconstruct",
    "reconstruct_text",
    "resolve_config",
    "sample",
    "sample_quality",
    "sample_text",
    "save_model",
    "score",
    "serve",
    "shuffle_auroc",
    "sweep",
    "train",
    "traverse",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its subpackage on first use (and keep it here)."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
