"""Optional dependencies: imported when first needed, with an error that says which extra installs them.

vaekit's core needs torch, numpy, scikit-learn, safetensors, tqdm, matplotlib, Pillow and PyYAML; everything else
is an extra (``pyproject.toml``): ``tables`` (pandas, pyarrow), ``serve`` (fastapi, uvicorn), ``export`` (onnx,
onnxscript, onnxruntime), ``compress`` (constriction).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from vaekit.errors import ConfigError, VaeKitError


def install_hint(extra: str) -> str:
    """How to install an extra, for a released package and for a source checkout."""
    return f"pip install 'vaekit[{extra}]' (in a source checkout: pip install -e '.[{extra}]')"


def import_optional(
    module: str, extra: str, purpose: str, error: type[VaeKitError] = ConfigError
) -> ModuleType:
    """``module``, imported; if it is missing, ``error`` saying ``purpose`` needs it and how to install it.

    Parameters
    ----------
    module
        The module to import, e.g. ``"pandas"``.
    extra
        The vaekit extra that installs it, e.g. ``"tables"``.
    purpose
        What needs it, for the message: ``"reading tables"``.
    error
        The error class to raise (a :class:`vaekit.errors.VaeKitError` subclass).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise error(f"{purpose} needs the {module.split('.')[0]} package: {install_hint(extra)}") from None
