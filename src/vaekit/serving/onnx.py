"""``export``: write a model's encoder and decoder as standalone files for other runtimes (ONNX).

::

    out/
    ├── encoder.onnx   x (batch, *data_shape) float32  ──>  mean (batch, L), log_var (batch, L)      q(z|x)
    ├── decoder.onnx   z (batch, L) float32            ──>  the parameters of p(x|z), e.g. logits, probs
    └── export.json    inputs, outputs, shapes, dtypes, the mean output, preprocessing, check result

Both graphs are traced through the model contract (``encode`` / ``decode``), so any registered encoder
works; a likelihood only needs its parameter names in :data:`LIKELIHOOD_OUTPUTS` (the attributes of the
distribution ``decode`` returns, per element, shape ``(batch, *data_shape)``). The batch dimension is dynamic.

The inputs are in the model's input space: raw data must first go through the preprocessing written in
``export.json`` (``x = (raw / scale - mean) / std`` on the flattened features, then reshaped), exactly as
:meth:`vaekit.data.Preprocessing.apply` does.

Exporter: torch 2.13's ``torch.onnx.export`` defaults to the ``torch.export``-based ("dynamo") exporter,
which needs ``onnxscript``; it is what we use (``dynamo=True``, stated explicitly): the TorchScript exporter
is deprecated and prints deprecation warnings. Both ``onnxscript`` and ``onnxruntime`` come with the
``export`` extra (``pip install 'vaekit[export]'``) and work offline. After writing, the files are run in
onnxruntime on a random batch and compared with PyTorch (``check=True``); the largest absolute difference is
recorded in ``export.json``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import warnings
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, Independent

from vaekit._version import __version__
from vaekit.errors import ConfigError, OutputError, VaeKitError
from vaekit.extras import install_hint
from vaekit.files import atomic_dir
from vaekit.models import VAE, LatentVariableModel, as_model
from vaekit.registry import Registry

logger = logging.getLogger(__name__)

ENCODER_NAME = "encoder.onnx"
DECODER_NAME = "decoder.onnx"
MANIFEST_NAME = "export.json"
CHECK_TOLERANCE = 1e-4  # largest absolute difference between ONNX Runtime and PyTorch that passes the check
CHECK_BATCH = 3
_EXTRA = install_hint("export")


@dataclass(frozen=True)
class LikelihoodOutputs:
    """The decoder outputs of one likelihood: attributes of the (base) distribution ``decode`` returns.

    Parameters
    ----------
    names
        Output names, each an attribute of the distribution, shape (batch, *data_shape).
    mean
        Which of ``names`` is the mean of p(x|z).
    """

    names: tuple[str, ...]
    mean: str


LIKELIHOOD_OUTPUTS: Registry[LikelihoodOutputs] = Registry("likelihood for export")
LIKELIHOOD_OUTPUTS.register("bernoulli")(LikelihoodOutputs(("logits", "probs"), mean="probs"))
LIKELIHOOD_OUTPUTS.register("gaussian")(LikelihoodOutputs(("loc", "scale"), mean="loc"))
LIKELIHOOD_OUTPUTS.register("laplace")(LikelihoodOutputs(("loc", "scale"), mean="loc"))
LIKELIHOOD_OUTPUTS.register("multinomial")(LikelihoodOutputs(("logits", "probs"), mean="probs"))

FORMATS: Registry[Callable[..., Path]] = Registry("export format", "--format")


class ExportError(VaeKitError, RuntimeError):
    """The exported files do not reproduce the model (or the exporter failed)."""


class _Encoder(nn.Module):
    """x (B, *shape) -> (mean (B, L), log-variance (B, L)) of q(z|x)."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qz_x = self.model.encode(x)
        return qz_x.mean, qz_x.variance.log()


def _base(distribution: Distribution) -> Distribution:
    return distribution.base_dist if isinstance(distribution, Independent) else distribution


class _Decoder(nn.Module):
    """z (B, L) -> the named parameters of p(x|z), each (B, *shape)."""

    def __init__(self, model: VAE, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        px_z = _base(self.model.decode(z))
        return tuple(getattr(px_z, name).expand(z.shape[0], *self.model.data_shape) for name in self.names)


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"ONNX export needs the {module!r} package; run {_EXTRA}") from None


def _onnx_export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, outputs: list[str]) -> None:
    """Write ``module`` to ``path`` with a dynamic batch dimension (torch.export-based exporter)."""
    _require("onnxscript")
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    torch_onnx_log = logging.getLogger("torch.onnx")
    level = torch_onnx_log.level
    try:
        # The exporter prints progress to stdout, warns about torchvision and emits deprecation warnings from
        # torch internals; the library never prints, so all of it goes to this module's debug log.
        torch_onnx_log.setLevel(logging.ERROR)
        with redirect_stdout(io.StringIO()) as captured, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                input_names=[input_name],
                output_names=outputs,
                dynamic_shapes=({0: batch},),
                external_data=False,
                optimize=True,
            )
    except Exception as exc:  # the exporter raises many types; report them as one
        message = " ".join(str(exc).split())[:300]
        raise ExportError(f"torch.onnx.export failed for {path.name}: {type(exc).__name__}: {message}") from None
    finally:
        torch_onnx_log.setLevel(level)
    logger.debug("onnx exporter output for %s:\n%s", path.name, captured.getvalue())
    for warning in caught:
        logger.debug("onnx exporter warning: %s", warning.message)


def _describe(path: Path) -> list[list[dict[str, Any]]]:
    """Inputs and outputs of an ONNX file: name, dtype, shape (symbolic dimensions as their names)."""
    onnx = _require("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph

    def one(value: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return {"name": value.name, "dtype": dtype, "shape": dims}

    return [[one(v) for v in graph.input], [one(v) for v in graph.output]]


def _check(model: VAE, folder: Path, outputs: tuple[str, ...], seed: int) -> float:
    """Run both files in onnxruntime on a random batch; the largest absolute difference from PyTorch."""
    ort = _require("onnxruntime")
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(CHECK_BATCH, *model.data_shape, generator=generator)  # (B, *shape)
    z = torch.randn(CHECK_BATCH, model.latent_dim, generator=generator)  # (B, L)
    with torch.no_grad():
        expected = [*_Encoder(model)(x), *_Decoder(model, outputs)(z)]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    got = []
    for name, feed in ((ENCODER_NAME, {"x": x.numpy()}), (DECODER_NAME, {"z": z.numpy()})):
        session = ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
        got += session.run(None, feed)
    return max(float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected, strict=True))


@FORMATS.register("onnx")
def _export_onnx(model: LatentVariableModel, out: Path, *, check: bool, seed: int) -> Path:
    if not isinstance(model, VAE):
        raise ConfigError(
            f"this is a {model.family!r} model; its posterior is not one Gaussian computed by one encoder network, "
            "so the ONNX encoder graph does not fit it: ONNX export takes the one-layer 'vae' family only for now "
            "(serve it with vaekit serve)"
        )
    if model.num_classes:
        raise ConfigError(
            f"this model is conditional ({model.num_classes} classes); ONNX export takes unconditional models only "
            "for now: export a model trained with model.num_classes=0"
        )
    if model.config.likelihood not in LIKELIHOOD_OUTPUTS:
        raise ConfigError(
            f"ONNX export does not support the {model.config.likelihood!r} likelihood yet (it exports "
            f"{', '.join(LIKELIHOOD_OUTPUTS)}); serve such a model with vaekit serve"
        )
    outputs = LIKELIHOOD_OUTPUTS.get(model.config.likelihood)
    original_device, was_training = model.device, model.training
    model = model.to("cpu").eval()
    generator = torch.Generator().manual_seed(seed)
    # A batch of 2, not 1: the exporter would specialise a batch of 1 to a constant.
    x = torch.rand(2, *model.data_shape, generator=generator)  # (2, *shape)
    z = torch.randn(2, model.latent_dim, generator=generator)  # (2, L)
    try:
        with atomic_dir(out) as tmp:
            _onnx_export(_Encoder(model).eval(), x, tmp / ENCODER_NAME, "x", ["mean", "log_var"])
            _onnx_export(_Decoder(model, outputs.names).eval(), z, tmp / DECODER_NAME, "z", list(outputs.names))
            max_error = _check(model, tmp, outputs.names, seed) if check else None
            if max_error is not None and not max_error <= CHECK_TOLERANCE:
                raise ExportError(
                    f"the ONNX files differ from PyTorch by up to {max_error:.3g} (> {CHECK_TOLERANCE:g}); "
                    "report this with the model's config.json, or pass check=False to keep them anyway"
                )
            manifest = _manifest(model, tmp, outputs, max_error)
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    finally:
        model.to(original_device).train(was_training)
    logger.info("exported %s and %s to %s", ENCODER_NAME, DECODER_NAME, out)
    return out


def _manifest(model: VAE, folder: Path, outputs: LikelihoodOutputs, max_error: float | None) -> dict[str, Any]:
    encoder_io, decoder_io = _describe(folder / ENCODER_NAME), _describe(folder / DECODER_NAME)
    preprocessing = model.preprocessing
    return {
        "format": "onnx",
        "vaekit_version": __version__,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "opset": _opset(folder / ENCODER_NAME),
        "data_shape": list(model.data_shape),
        "latent_dim": model.latent_dim,
        "architecture": model.config.architecture,
        "likelihood": model.config.likelihood,
        "encoder": {
            "file": ENCODER_NAME,
            "inputs": encoder_io[0],
            "outputs": encoder_io[1],
            "description": "q(z|x) = N(mean, diag exp(log_var)); x in the model's input space (after preprocessing)",
        },
        "decoder": {
            "file": DECODER_NAME,
            "inputs": decoder_io[0],
            "outputs": decoder_io[1],
            "mean_output": outputs.mean,
            "description": f"parameters of the {model.config.likelihood} p(x|z), one per data element",
        },
        "preprocessing": None
        if preprocessing is None
        else {
            "kind": preprocessing.kind,
            "scale": preprocessing.scale,
            "mean": None if preprocessing.mean is None else list(preprocessing.mean),
            "std": None if preprocessing.std is None else list(preprocessing.std),
            "features": math.prod(model.data_shape),
            "scaling": getattr(preprocessing, "scaling", "standard"),
            "formula": _formula(preprocessing),
        },
        "check": None
        if max_error is None
        else {"runtime": "onnxruntime", "batch": CHECK_BATCH, "max_abs_error": max_error, "tolerance": CHECK_TOLERANCE},
    }


def _formula(preprocessing: Any) -> str:
    """How raw values become the encoder's input ``x``, as the model's preprocessing computes it."""
    if preprocessing.mean is None:
        return "x = (raw.reshape(batch, -1) / scale).reshape(batch, *data_shape)"
    inner = "(raw.reshape(batch, -1) / scale - mean) / std"  # robust scaling: mean and std hold its centre and spread
    if getattr(preprocessing, "scaling", "standard") == "asinh":
        return f"x = arcsinh({inner}).reshape(batch, *data_shape)  (decoded means: sinh, then * std + mean, * scale)"
    return f"x = ({inner}).reshape(batch, *data_shape)"


def _opset(path: Path) -> int | None:
    onnx = _require("onnx")
    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def export(
    model: VAE | str | Path,
    out: str | Path,
    format: str = "onnx",
    *,
    check: bool = True,
    seed: int = 0,
) -> Path:
    """Write the encoder and the decoder of ``model`` as standalone files with a JSON description.

    Parameters
    ----------
    model
        A model, or the path of a model or run directory.
    out
        Output directory, replaced atomically if it exists (nothing half-written is ever left there).
    format
        Registered export format; ``onnx`` writes ``encoder.onnx`` (x (batch, *data_shape) -> mean, log_var,
        each (batch, latent_dim)), ``decoder.onnx`` (z (batch, latent_dim) -> the likelihood's parameters, each
        (batch, *data_shape)) and ``export.json``. All tensors are float32; batch is dynamic.
    check
        Run the files in onnxruntime on a random batch and compare with PyTorch (max abs error <= 1e-4).
    seed
        Seed of the example inputs used for tracing and for the check.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError
        For an unknown format, a likelihood without registered export outputs, or a missing optional
        dependency (``pip install 'vaekit[export]'``).
    ExportError
        If the exporter fails or the check finds a difference above the tolerance.
    OutputError
        If ``out`` cannot be written.
    """
    exporter = FORMATS.get(format)
    out = Path(out)
    # The target is replaced as a whole, so only an empty folder or an earlier export may be overwritten.
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MANIFEST_NAME).is_file())):
        raise OutputError(
            f"export target {str(out)!r} exists and is not an earlier export; pass a new or empty directory"
        )
    return exporter(as_model(model), out, check=check, seed=seed)
