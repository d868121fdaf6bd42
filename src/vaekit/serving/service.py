"""The model behind the HTTP API, apart from the web framework: request limits, arrays in and out, and
:class:`Service`, whose methods check one request's values and call the library function that answers it.

Arrays travel as nested JSON lists, or (for large batches) as base64-encoded ``.npy`` files in the ``*_npy``
fields, read with ``allow_pickle=False`` after their header is checked; ``"output": "npy"`` answers in the same
form. A bad value raises :class:`RequestError` naming the request field, which the app answers with status 422.
"""

from __future__ import annotations

import base64
import copy
import io
import logging
import math
import struct
import tokenize
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit._version import __version__
from vaekit.apps.interpolation import INTERPOLATIONS, interpolate_latents
from vaekit.apps.neighbors import SavedDetector
from vaekit.apps.sampling import sample
from vaekit.apps.scoring import SCORES, UNITS, anomaly_scores, detector_scores
from vaekit.config import Config
from vaekit.errors import ConfigError, VaeKitError
from vaekit.extras import install_hint
from vaekit.files import npy_bytes
from vaekit.models import LatentVariableModel, as_model
from vaekit.models.inputs import decode_labels
from vaekit.models.serialization import find_model_dir

logger = logging.getLogger(__name__)

MAX_ABS_LATENT = 1e3  # the prior is N(0, I); codes beyond this are never meaningful and can overflow a decoder
MAX_TEMPERATURE = 100.0
MAX_NPY_DIMS = 32  # numpy allows 64; no batch of examples has more than a handful
# What numpy's .npy header parser (ast.literal_eval, tokenize, dtype descriptors) and np.load raise on garbage.
NPY_ERRORS = (
    ValueError,  # binascii.Error and UnicodeDecodeError included
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    SyntaxError,
    RecursionError,
    EOFError,
    OSError,
    struct.error,
    tokenize.TokenError,
)
EXTRA = install_hint("serve")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for.

    Parameters
    ----------
    max_batch
        Examples (rows of ``x`` / ``z``, or ``n``) per request.
    max_body_bytes
        Request body size, bytes.
    max_k
        Samples per example of ``/v1/score``.
    max_score_samples
        ``batch * k`` of ``/v1/score`` (its cost grows with both).
    max_steps
        Points of ``/v1/interpolate``.
    """

    max_batch: int = 1024
    max_body_bytes: int = 16 << 20
    max_k: int = 1000
    max_score_samples: int = 1 << 15
    max_steps: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"serving limit {name} must be a positive integer, got {value!r}")


class RequestError(VaeKitError, ValueError):
    """A request field holds a bad value; answered with status 422 naming ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@contextmanager
def _field(name: str) -> Iterator[None]:
    """Report errors the library raises on purpose as problems of request field ``name``."""
    try:
        yield
    except RequestError:
        raise
    except VaeKitError as exc:
        raise RequestError(name, " ".join(str(exc).split())) from None


def require(module: str) -> Any:
    """Import an optional module of the ``serve`` extra, or ConfigError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"serving needs the {module!r} package; run {EXTRA}") from None


# -- arrays in and out ---------------------------------------------------------------------------------------
def read_array(values: list[Any] | None, npy: str | None, field: str) -> np.ndarray:
    """An array from a request: nested JSON numbers (``values``) or a base64 ``.npy`` file (``npy``).

    Parameters
    ----------
    values
        Nested lists of numbers.
    npy
        Base64 of a ``.npy`` file of a numeric dtype (read with ``allow_pickle=False``).
    field
        The request field, for error messages (``x`` reads ``x`` or ``x_npy``).

    Returns
    -------
    np.ndarray
        float32, at least one dimension (the batch).

    Raises
    ------
    RequestError
        If neither or both are given, or the data is not a numeric array.
    """
    if (values is None) == (npy is None):
        raise RequestError(field, f"give exactly one of {field} (nested lists) or {field}_npy (base64 .npy)")
    if npy is not None:
        array = _read_npy(npy, f"{field}_npy")
    else:
        try:
            array = np.asarray(values)
        except (ValueError, TypeError, RecursionError):
            raise RequestError(
                field, "must be a rectangular nested array of numbers (all rows the same length)"
            ) from None
        if array.dtype.kind not in "iuf":
            raise RequestError(field, "must hold only numbers (no strings, booleans or nulls) in equal-length rows")
    if array.ndim < 1:
        raise RequestError(field, "must be a batch: an array whose first dimension counts the examples")
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(array, dtype=np.float32)


def _read_npy(text: str, field: str) -> np.ndarray:
    """Decode base64 ``.npy`` bytes after checking the header: a numeric dtype, a plain shape, and exactly as many
    data bytes as the shape needs (``np.load`` would otherwise allocate whatever size a tiny header claims).

    numpy parses the header text with ``ast`` and ``tokenize``, and garbage makes those raise many kinds of error
    (:data:`NPY_ERRORS`); every one of them is the client's bad value, never a server error.
    """
    try:
        raw = base64.b64decode(text, validate=True)
        buffer = io.BytesIO(raw)
        shape, dtype = _npy_header(buffer)
    except NPY_ERRORS as exc:
        reason = str(exc) if isinstance(exc, ValueError) else f"unparseable header, {type(exc).__name__}: {exc}"
        raise RequestError(field, f"not a base64-encoded .npy file ({_clip(reason)})") from None
    if dtype.hasobject or dtype.kind not in "iuf":
        raise RequestError(field, f"the .npy array has dtype {dtype}; send integers or floats (nothing pickled)")
    if len(shape) > MAX_NPY_DIMS or not all(type(n) is int and n >= 0 for n in shape):
        raise RequestError(
            field,
            f"the .npy header has shape {_clip(repr(shape))}; send at most {MAX_NPY_DIMS} dimensions, each a "
            "non-negative integer",
        )
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(raw) - buffer.tell():
        raise RequestError(
            field, f"the .npy header promises {expected} bytes of data but {len(raw) - buffer.tell()} follow"
        )
    buffer.seek(0)
    try:
        return np.load(buffer, allow_pickle=False)
    except NPY_ERRORS as exc:  # the checks above leave nothing known here; a numpy change must not become a 500
        raise RequestError(field, f"not a readable .npy file ({_clip(str(exc))})") from None


def _npy_header(buffer: io.BytesIO) -> tuple[tuple[Any, ...], np.dtype[Any]]:
    """The shape and dtype a ``.npy`` header declares (versions 1.0 and 2.0), the buffer left at the data."""
    fmt = np.lib.format
    version = fmt.read_magic(buffer)
    read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
    if read_header is None:
        raise ValueError(f".npy format version {version} is not supported; write it with numpy.save")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about headers "created on Python 2" before it fails on them
        shape, _, dtype = read_header(buffer)
    return shape, dtype


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}..."


def array_out(array: np.ndarray, output: str, dtype: str = "float32") -> list[Any] | str:
    """An array as ``dtype`` (float32; scores are float64, whose range a detector's z-scores may need) in nested lists
    or base64 ``.npy``; non-finite values are a 422 (JSON cannot hold them)."""
    with np.errstate(over="ignore"):
        array = np.asarray(array).astype(dtype, copy=False)
    if not np.isfinite(array).all():
        raise RequestError("body", "the model gives non-finite values for this input; send values of ordinary size")
    return base64.b64encode(npy_bytes(array)).decode() if output == "npy" else array.tolist()


# -- the service: parse, call one library function, format -----------------------------------------------------
class Service:
    """The model behind the API; every method checks its input and calls the library.

    Parameters
    ----------
    model
        A model, or the path of a model or run directory (loaded once, here).
    limits
        Request limits.
    threads
        torch intra-op threads per request (``None``: torch's default).
    """

    def __init__(self, model: LatentVariableModel | str | Path, limits: Limits, threads: int | None = 1) -> None:
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}")
        self.model = as_model(model).eval()
        # the directory of a saved AnomalyDetector: /v1/score also gives its score (method "detector"), from a
        # float64 copy of the network as the detector scores
        self.detector = None if isinstance(model, LatentVariableModel) else SavedDetector.read(
            find_model_dir(model), getattr(self.model, "metadata", {}))
        self.detector_model = None if self.detector is None else copy.deepcopy(self.model).double()
        if self.detector is not None:
            self.detector.prepare()  # its neighbour index, built once before requests share it
        self.score_methods = [*SCORES.names(), *(["detector"] if self.detector is not None else [])]
        self.limits = limits
        self.threads = threads
        self.image = self.model.modality() == "image"
        self.modality = self.model.modality()

    def pin_threads(self) -> None:
        """Give the calling thread ``threads`` torch threads.

        torch's intra-op thread count is an OpenMP setting of each OS thread, so ``torch.set_num_threads`` in
        the main thread does not reach the server's worker threads; left at the default there, every small
        request wakes OpenMP threads that spin for the cores, which cost about 10 ms a request on 2 busy cores.
        """
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def batch(self, values: list[Any] | None, npy: str | None, field: str, raw: bool = False) -> torch.Tensor:
        """Examples ``(B, *data_shape)`` from a request field, checked against the model."""
        self.pin_threads()
        model = self.model
        array = read_array(values, npy, field)
        name = field if values is not None else f"{field}_npy"
        count = len(array)
        if not 1 <= count <= self.limits.max_batch:
            raise RequestError(name, f"holds {count} examples; send 1 to {self.limits.max_batch} per request")
        features = model.num_dims
        if array[0].size != features:
            raise RequestError(
                name,
                f"has per-example shape {tuple(array.shape[1:])} ({array[0].size} values) but the model takes "
                f"{model.data_shape} ({features} values); send (B, {', '.join(map(str, model.data_shape))}) "
                f"or (B, {features})",
            )
        if raw:
            if model.preprocessing is None:
                raise RequestError("raw", "this model stores no preprocessing; send x in the model's input space")
            with _field(name), np.errstate(all="ignore"):
                array = model.preprocessing.apply(array)
        x = torch.from_numpy(array.reshape(count, *model.data_shape)).to(model.device)
        with _field(name):
            model.check_input(x)
        return x

    def latents(self, values: list[Any] | None, npy: str | None, field: str) -> torch.Tensor:
        """Latent codes ``(B, L)`` from a request field."""
        self.pin_threads()
        array = read_array(values, npy, field)
        name = field if values is not None else f"{field}_npy"
        latent_dim = self.model.latent_dim
        if array.ndim == 1 and field != "z":  # one code (interpolation end points)
            array = array[None]
        if array.ndim != 2 or array.shape[1] != latent_dim or not 1 <= len(array) <= self.limits.max_batch:
            raise RequestError(
                name, f"has shape {array.shape}; send (B, {latent_dim}) with 1 <= B <= {self.limits.max_batch}"
            )
        if not (np.isfinite(array).all() and np.abs(array).max() <= MAX_ABS_LATENT):
            raise RequestError(name, f"latent values must be finite and within +-{MAX_ABS_LATENT:g}")
        return torch.from_numpy(array).to(self.model.device)

    def labels(self, y: int | list[int] | None, n: int, field: str = "y") -> torch.Tensor | None:
        """Labels (n,) of a conditional model: one class for all (int) or one per example; ``None`` if absent."""
        with _field(field):
            return decode_labels(self.model, y, n)

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        with _field("y"):  # a conditional model without labels
            qz_x = self.model.encode(x, y)
        return qz_x.mean.float().cpu().numpy(), qz_x.variance.log().float().cpu().numpy()

    @torch.inference_mode()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None, field: str = "y") -> np.ndarray:
        with _field(field):
            return self.model.decode(z, y).mean.float().cpu().numpy()

    @torch.inference_mode()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None) -> np.ndarray:
        with _field("y"):
            return self.model.reconstruct(x, y=y).float().cpu().numpy()

    def sample(self, n: int, temperature: float, seed: int, label: int | None, draw: bool = False) -> np.ndarray:
        self.pin_threads()
        with torch.inference_mode(), _field("label"):
            return sample(self.model, n, temperature=temperature, seed=seed, label=label, draw=draw)

    def score(self, x: torch.Tensor, y: torch.Tensor | None, method: str, k: int, unit: str) -> np.ndarray:
        for field, value, valid in (("method", method, self.score_methods), ("unit", unit, UNITS)):
            if value not in valid:
                raise RequestError(field, f"unknown {field} {value!r}; choose one of: {', '.join(valid)}")
        if method == "detector":
            return self._detector_scores(x, unit)
        if method == "recon" and unit == "bits":
            raise RequestError("unit", "recon scores a squared error, which has no bits; leave unit out (nats)")
        if method != "recon" and len(x) * k > self.limits.max_score_samples:  # recon decodes one mean, no samples
            raise RequestError(
                "k", f"{len(x)} examples x k={k} exceeds {self.limits.max_score_samples} samples; lower k or B"
            )
        with torch.inference_mode(), _field("body"):
            return anomaly_scores(self.model, x, method, k=k, unit=unit, y=y).float().cpu().numpy()

    def _detector_scores(self, x: torch.Tensor, unit: str) -> np.ndarray:
        """The saved detector's scores of ``x``, with its own method and k (the request's k is not used)."""
        detector, model = self.detector, self.detector_model
        if detector is None or model is None:  # not reached: "detector" is a method only when both are loaded
            raise RequestError("method", "this model is not a saved AnomalyDetector; use iwae, elbo or recon")
        if unit != "nats":
            raise RequestError("unit", "the detector's score has no unit to choose (a sum of z-scores); leave unit out")
        if len(x) * detector.k > self.limits.max_score_samples:
            raise RequestError("x", f"{len(x)} examples x the detector's k={detector.k} exceeds "
                                    f"{self.limits.max_score_samples} samples; send fewer examples")
        with torch.inference_mode(), _field("body"):
            return detector_scores(model, detector, x)

    def interpolate(
        self, z_a: torch.Tensor, z_b: torch.Tensor, steps: int, method: str, label: int | None
    ) -> np.ndarray:
        for name, z in (("z_a", z_a), ("z_b", z_b)):
            if len(z) != 1:
                raise RequestError(name, f"must be one latent code of {self.model.latent_dim} values")
        y = self.labels(label, steps, "label")
        with torch.inference_mode(), _field("method"):
            path = interpolate_latents(z_a[0], z_b[0], steps, method)  # the registered paths, as the verb uses
        return self.decode(path, y, "label")

    def sound(self, x: torch.Tensor, iterations: int | None) -> tuple[list[str], int]:
        """Audio models: each example (model-space log-mel spectrogram) as a base64 16-bit WAV file, its phase by
        ``iterations`` Griffin-Lim iterations (``None``: the model's default); and the sample rate. A clip louder
        than full scale is scaled down, as ``vaekit sample`` does, not clipped."""
        from vaekit.apps.audio import audio_record, within_full_scale
        from vaekit.data.audio import wav_bytes

        self.pin_threads()
        with _field("x"):
            record = audio_record(self.model)
            waves, _ = within_full_scale(record.to_waveforms(x.float().cpu().numpy(), iterations))  # (B, S)
        rate = record.sample_rate
        return [base64.b64encode(wav_bytes(wave, rate)).decode() for wave in waves], rate

    def card(self) -> dict[str, Any]:
        """The model card: what the model is, what it was trained on, how well it did, what it accepts."""
        model, metadata = self.model, self.model.metadata
        training = metadata.get("training") if isinstance(metadata.get("training"), dict) else {}
        return {
            "vaekit_version": __version__,
            "model_vaekit_version": metadata.get("vaekit_version"),
            "format_version": metadata.get("format_version"),
            "config": Config(model=model.config).to_dict()["model"],
            "data_shape": list(model.data_shape),
            "latent_dim": model.latent_dim,
            "num_classes": model.num_classes,
            "num_dims": model.num_dims,
            "image": self.image,
            "modality": self.modality,
            "preprocessing": None if model.preprocessing is None else model.preprocessing.to_dict(),
            "binarize": metadata.get("binarize"),
            "metrics": metadata.get("metrics"),
            "training_config": (training or {}).get("config"),
            "score_methods": self.score_methods,
            "detector": None if self.detector is None else self.detector.settings(),
            "score_units": list(UNITS),
            "interpolation_methods": INTERPOLATIONS.names(),
            "limits": asdict(self.limits),
        }
