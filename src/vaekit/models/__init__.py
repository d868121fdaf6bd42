"""Models: the contract every family keeps, the families, their building parts, and model files.

::

    contract.py      LatentVariableModel: encode / decode / prior, and what is built on them
    posteriors.py    q(z|x) with the contract's optional parts (analytic KL, reparameterize, layers)
    likelihoods.py   p(x|z), registered by name        priors.py   p(z), registered by name
    conditioning.py  label conditioning (conditional VAEs)
    families.py      FAMILIES and build_model          vae.py, hierarchical.py   the families
    bounds.py        ELBO and importance-weighted bounds on the contract
    serialization.py save_model / load: config.json + model.safetensors + metadata.json
    inputs.py        a model's data, read through its stored preprocessing
"""

from vaekit.models import hierarchical as _hierarchical  # noqa: F401  (registers the "hierarchical" family)
from vaekit.models import text as _text  # noqa: F401  (registers the "text" family)
from vaekit.models import vae as _vae  # noqa: F401  (registers the "vae" family)
from vaekit.models.contract import ContractExample, LatentVariableModel
from vaekit.models.families import FAMILIES, build_model, family_name
from vaekit.models.hierarchical import HierarchicalVAE
from vaekit.models.posteriors import DiagonalGaussian, Posterior
from vaekit.models.serialization import as_model, load, save_model, with_latents
from vaekit.models.vae import VAE

__all__ = [
    "FAMILIES",
    "VAE",
    "ContractExample",
    "DiagonalGaussian",
    "HierarchicalVAE",
    "LatentVariableModel",
    "Posterior",
    "as_model",
    "build_model",
    "family_name",
    "load",
    "save_model",
    "with_latents",
]
