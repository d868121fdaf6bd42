"""vaekit: variational autoencoders made practical.

Train, evaluate and use VAEs from Python or the ``vaekit`` command line. Every command is a function here
of the same name: :func:`train`, :func:`evaluate`, :func:`sample`, :func:`reconstruct`, :func:`interpolate`,
:func:`traverse`, :func:`embed`; :func:`load` rebuilds a saved model.
"""

__version__ = "0.1.0"

from vaekit.config import Config, DataConfig, ModelConfig, ObjectiveConfig, TrainConfig, resolve_config
from vaekit.embed import embed
from vaekit.errors import ConfigError, DataError, ModelFileError, OutputError, TrainingError, VaeKitError
from vaekit.evaluate import EvalReport, evaluate
from vaekit.interpolate import interpolate
from vaekit.model import VAE
from vaekit.reconstruct import reconstruct
from vaekit.sample import sample
from vaekit.serialization import load, save_model
from vaekit.train import TrainResult, train
from vaekit.traverse import traverse

__all__ = [
    "VAE",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataError",
    "EvalReport",
    "ModelConfig",
    "ModelFileError",
    "ObjectiveConfig",
    "OutputError",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "VaeKitError",
    "__version__",
    "embed",
    "evaluate",
    "interpolate",
    "load",
    "reconstruct",
    "resolve_config",
    "sample",
    "save_model",
    "train",
    "traverse",
]
