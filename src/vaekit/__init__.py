"""vaekit: variational autoencoders made practical.

Train, evaluate and use VAEs from Python or the ``vaekit`` command line. Every command is a function here
of the same name: :func:`train`, :func:`evaluate`, :func:`sample`, :func:`reconstruct`, :func:`interpolate`,
:func:`traverse`, :func:`embed`, :func:`export`, :func:`serve`, :func:`compress`, :func:`decompress`,
:func:`score`, :func:`plot_latent`, :func:`probe`; :func:`load` rebuilds a saved model. The scikit-learn
estimators :class:`AnomalyDetector` and :class:`VAETransformer` are imported on first use.
"""

__version__ = "0.1.0"

from vaekit.bitsback import CodingConfig
from vaekit.compress import CompressReport, DecompressReport, compress, decompress
from vaekit.config import Config, DataConfig, ModelConfig, ObjectiveConfig, TrainConfig, resolve_config
from vaekit.embed import embed
from vaekit.errors import ConfigError, DataError, ModelFileError, OutputError, TrainingError, VaeKitError
from vaekit.evaluate import EvalReport, evaluate
from vaekit.export import export
from vaekit.hvae import HierarchicalVAE
from vaekit.interpolate import interpolate
from vaekit.model import VAE, build_model
from vaekit.plot_latent import plot_latent
from vaekit.probe import ProbeReport, probe
from vaekit.quality import QualityReport, sample_quality
from vaekit.reconstruct import reconstruct
from vaekit.sample import sample
from vaekit.score import ScoreResult, score
from vaekit.serialization import load, save_model
from vaekit.serve import serve
from vaekit.train import TrainResult, train
from vaekit.traverse import traverse

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
    "ModelConfig",
    "ModelFileError",
    "ObjectiveConfig",
    "OutputError",
    "ProbeReport",
    "QualityReport",
    "ScoreResult",
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
    "load",
    "plot_latent",
    "probe",
    "reconstruct",
    "resolve_config",
    "sample",
    "sample_quality",
    "save_model",
    "score",
    "serve",
    "train",
    "traverse",
]


def __getattr__(name: str) -> object:
    """``vaekit.AnomalyDetector`` and ``vaekit.VAETransformer``, imported on first use: they import scikit-learn,
    which would otherwise add about a second to every ``import vaekit`` and every command."""
    if name in ("AnomalyDetector", "VAETransformer"):
        from vaekit import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
