"""``serve``: a trained model behind an HTTP API (FastAPI + uvicorn), with a latent explorer page.

::

    GET  /healthz          liveness                       GET /openapi.json  the schema; /docs its UI
    GET  /v1/model         model card: config, data shape, preprocessing, training metrics, versions, limits
    POST /v1/encode        x (B, *shape)   -> mean, log_var (B, L)       model.encode(x)
    POST /v1/decode        z (B, L)        -> x (B, *shape), E[x|z]      model.decode(z).mean
    POST /v1/reconstruct   x               -> x (B, *shape)              model.reconstruct(x)
    POST /v1/sample        n, temperature  -> x (n, *shape), seed        vaekit.sample.sample
    POST /v1/score         x, method, k    -> scores (B,)                vaekit.score.anomaly_scores
    POST /v1/interpolate   z_a, z_b, steps -> x (steps, *shape)          vaekit.interpolate.lerp / slerp
    GET  /                 the latent explorer (image models), else a page saying why not

Arrays travel as nested JSON lists, or (for large batches) as base64-encoded ``.npy`` files in the ``*_npy``
fields, read with ``allow_pickle=False``; ``"output": "npy"`` answers in the same form. Arrays are in the
model's input space; ``"raw": true`` applies the model's stored preprocessing first (e.g. 0..255 pixels).

Safety: binds to loopback unless told otherwise; request bodies and batches are bounded (:class:`Limits`);
malformed input gets a 4xx JSON answer ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` naming the
field; no request names a file, so none can read outside the served model; the model is loaded once and only
read (inference mode, no state changes), so requests can run concurrently.

Concurrency: a request of at most :data:`INLINE_EXAMPLES` example passes (a single example takes well under a
millisecond) runs directly on the event loop, because handing it to a worker thread costs more than the work
under the GIL; larger requests run in the thread pool so they never stall the loop. torch gets ``threads``
intra-op threads in every thread that runs the model (default 1).

FastAPI resolves request types from annotations at run time, and the request models carry the limits chosen
when the app is built, so they are made inside :func:`create_app` and this module does not use
``from __future__ import annotations``. ``fastapi`` / ``uvicorn`` are imported lazily (extra ``serve``).
"""

import base64
import binascii
import io
import ipaddress
import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch

from vaekit._verbs import as_model, draws_images
from vaekit.errors import ConfigError, VaeKitError
from vaekit.model import VAE

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_ABS_LATENT = 1e3  # the prior is N(0, I); codes beyond this are never meaningful and can overflow a decoder
MAX_TEMPERATURE = 100.0
INLINE_EXAMPLES = 64  # requests of at most this many example passes run on the event loop, larger ones in threads
STATIC_FILES = {"explorer.js": "text/javascript", "explorer.css": "text/css"}
_EXTRA = "pip install 'vaekit[serve]'"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


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


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"serving needs the {module!r} package; run {_EXTRA}") from None


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
    """Decode base64 ``.npy`` bytes after checking the header: a numeric dtype, and exactly as many data bytes
    as the shape needs (``np.load`` would otherwise allocate whatever size a tiny header claims)."""
    fmt = np.lib.format
    try:
        raw = base64.b64decode(text, validate=True)
        buffer = io.BytesIO(raw)
        version = fmt.read_magic(buffer)
        read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f".npy format version {version} is not supported; write it with numpy.save")
        shape, _, dtype = read_header(buffer)
    except (binascii.Error, ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise RequestError(field, f"not a base64-encoded .npy file ({reason})") from None
    if dtype.hasobject or dtype.kind not in "iuf":
        raise RequestError(field, f"the .npy array has dtype {dtype}; send integers or floats (nothing pickled)")
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(raw) - buffer.tell():
        raise RequestError(
            field, f"the .npy header promises {expected} bytes of data but {len(raw) - buffer.tell()} follow"
        )
    buffer.seek(0)
    return np.load(buffer, allow_pickle=False)


def _array_out(array: np.ndarray, output: str) -> list[Any] | str:
    """A float32 array as nested lists or base64 ``.npy``; non-finite values are a 422 (JSON cannot hold them)."""
    from vaekit.sample import npy_bytes

    if not np.isfinite(array).all():
        raise RequestError("body", "the model gives non-finite values for this input; send values of ordinary size")
    array = array.astype(np.float32, copy=False)
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

    def __init__(self, model: VAE | str | Path, limits: Limits, threads: int | None = 1) -> None:
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}")
        self.model = as_model(model).eval()
        self.limits = limits
        self.threads = threads
        self.image = draws_images(self.model)

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
        from vaekit._verbs import decode_labels

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

    def sample(self, n: int, temperature: float, seed: int, label: int | None) -> np.ndarray:
        from vaekit.sample import sample

        self.pin_threads()
        with torch.inference_mode(), _field("label"):
            return sample(self.model, n, temperature=temperature, seed=seed, label=label)

    def score(self, x: torch.Tensor, y: torch.Tensor | None, method: str, k: int, unit: str) -> np.ndarray:
        from vaekit.score import SCORES, UNITS, anomaly_scores

        for field, value, valid in (("method", method, SCORES.names()), ("unit", unit, UNITS)):
            if value not in valid:
                raise RequestError(field, f"unknown {field} {value!r}; choose one of: {', '.join(valid)}")
        if len(x) * k > self.limits.max_score_samples:
            raise RequestError(
                "k", f"{len(x)} examples x k={k} exceeds {self.limits.max_score_samples} samples; lower k or B"
            )
        with torch.inference_mode(), _field("body"):
            return anomaly_scores(self.model, x, method, k=k, unit=unit, y=y).float().cpu().numpy()

    def interpolate(
        self, z_a: torch.Tensor, z_b: torch.Tensor, steps: int, method: str, label: int | None
    ) -> np.ndarray:
        from vaekit.interpolate import METHODS, lerp, slerp

        if method not in METHODS:
            raise RequestError("method", f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
        path = {"linear": lerp, "spherical": slerp}[method]
        for name, z in (("z_a", z_a), ("z_b", z_b)):
            if len(z) != 1:
                raise RequestError(name, f"must be one latent code of {self.model.latent_dim} values")
        y = self.labels(label, steps, "label")
        with torch.inference_mode():
            t = torch.linspace(0.0, 1.0, steps, device=self.model.device)
            return self.decode(path(z_a[0], z_b[0], t), y, "label")

    def card(self) -> dict[str, Any]:
        """The model card: what the model is, what it was trained on, how well it did, what it accepts."""
        from vaekit import __version__
        from vaekit.config import Config
        from vaekit.interpolate import METHODS
        from vaekit.score import SCORES, UNITS

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
            "preprocessing": None if model.preprocessing is None else model.preprocessing.to_dict(),
            "binarize": metadata.get("binarize"),
            "metrics": metadata.get("metrics"),
            "training_config": (training or {}).get("config"),
            "score_methods": SCORES.names(),
            "score_units": list(UNITS),
            "interpolation_methods": list(METHODS),
            "limits": asdict(self.limits),
        }


# -- the HTTP layer ---------------------------------------------------------------------------------------------
def _error_body(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"detail": [{"loc": loc, "msg": msg, "type": kind}]}


class BodyLimit:
    """ASGI middleware: refuse (413) a request body larger than ``max_bytes``, declared or streamed."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send, status: int, msg: str) -> None:
        body = json.dumps(_error_body(["body"], msg, "too_large" if status == 413 else "bad_request")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = (
            f"request body exceeds the limit of {self.max_bytes} bytes; send fewer examples per request "
            "(or start the server with a larger --max-body-mb)"
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(send, 400, "the Content-Length header is not a number")
                return
            if int(declared) > self.max_bytes:
                await self._refuse(send, 413, too_large)
                return
        chunks, size = [], 0
        while True:  # read the whole body first, so a streamed (chunked) body is bounded too
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _rows(values: list[Any] | None) -> int:
    """Examples in a request field given as nested lists; base64 .npy fields are for large batches (a lot)."""
    return len(values) if values is not None else INLINE_EXAMPLES + 1


def _enum(names: Sequence[str]) -> dict[str, Any]:
    """An OpenAPI ``enum`` of the valid names (the library checks them again, with its own message)."""
    return {"enum": list(names)}


def _static(name: str) -> str:
    return resources.files("vaekit").joinpath("static", name).read_text(encoding="utf-8")


def _not_an_image_page(model: VAE) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>vaekit</title></head><body>"
        "<h1>No latent explorer for this model</h1>"
        f"<p>The explorer draws images, and this model's examples have shape {tuple(model.data_shape)} "
        "(it needs images of shape C x H x W with 1 or 3 channels and values in [0, 1]).</p>"
        "<p>The HTTP API works for every model: see <a href='/docs'>/docs</a> and the model card at "
        "<a href='/v1/model'>/v1/model</a>.</p></body></html>"
    )


def create_app(model_path: VAE | str | Path, limits: Limits | None = None, threads: int | None = 1) -> Any:
    """The FastAPI app serving one model (loaded once, here).

    Parameters
    ----------
    model_path
        A model or run directory (or a model object).
    limits
        Request limits (default :class:`Limits`).
    threads
        torch intra-op threads per request (default 1: many small concurrent requests share the cores
        without oversubscribing them); ``None`` keeps torch's default.

    Returns
    -------
    fastapi.FastAPI
        The app; run it with uvicorn (see :func:`serve`).

    Raises
    ------
    ConfigError
        If ``fastapi`` is not installed (``pip install 'vaekit[serve]'``).
    ModelFileError
        If the model cannot be loaded.
    """
    fastapi = _require("fastapi")
    import anyio
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, Field

    from vaekit import __version__
    from vaekit.interpolate import METHODS
    from vaekit.score import SCORES, UNITS

    limits_ = limits or Limits()
    service = Service(model_path, limits_, threads)
    latent_dim, shape = service.model.latent_dim, list(service.model.data_shape)
    Output = Literal["json", "npy"]
    Label = Annotated[int, Field(ge=0, lt=2**31)]
    Labels = Label | Annotated[list[Label], Field(min_length=1, max_length=limits_.max_batch)]

    class Request(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class Examples(Request):
        x: list[Any] | None = Field(
            None,
            min_length=1,
            max_length=limits_.max_batch,
            description=f"examples, nested lists of numbers of shape (B, {', '.join(map(str, shape))}) or "
            f"(B, {service.model.num_dims}), B <= {limits_.max_batch}",
        )
        x_npy: str | None = Field(None, description="instead of x: a base64-encoded .npy file (numeric dtype)")
        raw: bool = Field(False, description="x holds raw data (e.g. 0..255 pixels): apply the stored preprocessing")
        y: Labels | None = Field(None, description="conditional models: one class for all, or one per example")
        output: Output = Field("json", description="json (nested lists) or npy (base64 .npy strings)")

    class Latents(Request):
        z: list[Any] | None = Field(
            None, min_length=1, max_length=limits_.max_batch, description=f"latent codes (B, {latent_dim})"
        )
        z_npy: str | None = Field(None, description="instead of z: a base64-encoded .npy file")
        y: Labels | None = Field(None, description="conditional models: one class for all, or one per code")
        output: Output = "json"

    class SampleRequest(Request):
        n: int = Field(16, ge=1, le=limits_.max_batch, description="number of samples")
        temperature: float = Field(
            1.0, gt=0, le=MAX_TEMPERATURE, allow_inf_nan=False, description="scale of the prior draw"
        )
        seed: int | None = Field(None, ge=0, lt=2**63, description="seed of the draw; default a random one")
        label: Label | None = Field(None, description="conditional models: the class (default: each in turn)")
        output: Output = "json"

    class ScoreRequest(Examples):
        method: str = Field(
            "iwae", description=f"one of {', '.join(SCORES.names())}", json_schema_extra=_enum(SCORES.names())
        )
        k: int = Field(100, ge=1, le=limits_.max_k, description="importance / posterior samples per example")
        unit: str = Field(
            "nats", description="nats (per example) or bits (per dimension)", json_schema_extra=_enum(UNITS)
        )

    class InterpolateRequest(Request):
        z_a: list[Any] = Field(min_length=1, max_length=latent_dim, description=f"start code ({latent_dim},)")
        z_b: list[Any] = Field(min_length=1, max_length=latent_dim, description=f"end code ({latent_dim},)")
        steps: int = Field(8, ge=2, le=limits_.max_steps, description="points including both ends")
        method: str = Field("linear", json_schema_extra=_enum(METHODS))
        label: Label | None = Field(None, description="conditional models: the class every point is drawn as")
        output: Output = "json"

    Array = list[Any] | str

    class EncodeResponse(BaseModel):
        mean: Array = Field(description="posterior means (B, L)")
        log_var: Array = Field(description="posterior log-variances (B, L)")

    class ExamplesResponse(BaseModel):
        x: Array = Field(description="examples (B, *data_shape), means of p(x|z), in the model's input space")

    class SampleResponse(ExamplesResponse):
        seed: int
        temperature: float

    class ScoreResponse(BaseModel):
        scores: Array = Field(description="(B,) higher = more anomalous")
        method: str
        k: int
        unit: str

    card = service.card()
    page = _static("explorer.html") if service.image else _not_an_image_page(service.model)
    static_files = {name: _static(name) for name in STATIC_FILES}
    app = fastapi.FastAPI(
        title="vaekit",
        version=__version__,
        description="A trained variational autoencoder: encode, decode, sample, reconstruct, score.",
    )
    app.add_middleware(BodyLimit, max_bytes=limits_.max_body_bytes)
    app.state.service = service

    @app.exception_handler(RequestError)
    async def request_error(request: Any, exc: RequestError) -> Any:
        return JSONResponse(_error_body(["body", exc.field], str(exc), "value_error"), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Any, exc: Any) -> Any:
        # FastAPI's default echoes the whole input back (megabytes for a big batch); keep where and what.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Any, exc: Exception) -> Any:
        logger.exception("unexpected error handling %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)

    async def run(examples: int, work: Callable[[], Any]) -> Any:
        # Small requests run right here on the event loop: handing them to a worker thread costs more than
        # the work (GIL hand-offs; p99 at 32 clients was 3x higher). Larger ones go to the thread pool, so
        # they never stall the loop.
        if examples <= INLINE_EXAMPLES:
            return work()
        return await anyio.to_thread.run_sync(work)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", summary="Model card")
    async def model_card() -> dict[str, Any]:
        return card

    @app.post("/v1/encode", summary="Posterior q(z|x): means and log-variances")
    async def encode(body: Examples) -> EncodeResponse:
        def work() -> EncodeResponse:
            x = service.batch(body.x, body.x_npy, "x", body.raw)
            mean, log_var = service.encode(x, service.labels(body.y, len(x)))
            return EncodeResponse(mean=_array_out(mean, body.output), log_var=_array_out(log_var, body.output))

        return await run(_rows(body.x), work)

    @app.post("/v1/decode", summary="Mean of p(x|z) for latent codes")
    async def decode(body: Latents) -> ExamplesResponse:
        def work() -> ExamplesResponse:
            z = service.latents(body.z, body.z_npy, "z")
            return ExamplesResponse(x=_array_out(service.decode(z, service.labels(body.y, len(z))), body.output))

        return await run(_rows(body.z), work)

    @app.post("/v1/reconstruct", summary="Decode the posterior mean of each example")
    async def reconstruct(body: Examples) -> ExamplesResponse:
        def work() -> ExamplesResponse:
            x = service.batch(body.x, body.x_npy, "x", body.raw)
            x_hat = service.reconstruct(x, service.labels(body.y, len(x)))
            return ExamplesResponse(x=_array_out(x_hat, body.output))

        return await run(_rows(body.x), work)

    @app.post("/v1/sample", summary="Draw new examples from the prior at a temperature")
    async def sample(body: SampleRequest) -> SampleResponse:
        seed = secrets.randbelow(2**63) if body.seed is None else body.seed

        def work() -> SampleResponse:
            x = service.sample(body.n, body.temperature, seed, body.label)
            return SampleResponse(x=_array_out(x, body.output), seed=seed, temperature=body.temperature)

        return await run(body.n, work)

    @app.post("/v1/score", summary="Anomaly scores (higher = more anomalous)")
    async def score(body: ScoreRequest) -> ScoreResponse:
        def work() -> ScoreResponse:
            x = service.batch(body.x, body.x_npy, "x", body.raw)
            scores = service.score(x, service.labels(body.y, len(x)), body.method, body.k, body.unit)
            return ScoreResponse(scores=_array_out(scores, body.output), method=body.method, k=body.k, unit=body.unit)

        return await run(_rows(body.x) * body.k, work)

    @app.post("/v1/interpolate", summary="Decode a path between two latent codes")
    async def interpolate(body: InterpolateRequest) -> ExamplesResponse:
        def work() -> ExamplesResponse:
            z_a, z_b = service.latents(body.z_a, None, "z_a"), service.latents(body.z_b, None, "z_b")
            x = service.interpolate(z_a, z_b, body.steps, body.method, body.label)
            return ExamplesResponse(x=_array_out(x, body.output))

        return await run(body.steps, work)

    @app.get("/", include_in_schema=False)
    async def explorer() -> Any:
        return HTMLResponse(page)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Any:
        # A fixed set of packaged files, read once: the name is only a key, never a path.
        if name not in static_files:
            return JSONResponse({"detail": f"no static file {name!r}"}, status_code=404)
        return Response(static_files[name], media_type=STATIC_FILES[name])

    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: VAE | str | Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    limits: Limits | None = None,
    threads: int | None = 1,
    log_level: str = "info",
) -> None:
    """Serve ``model`` over HTTP until interrupted (Ctrl-C).

    Parameters
    ----------
    model
        A model, or the path of a model or run directory; loaded once.
    host
        Interface to bind; the default ``127.0.0.1`` accepts connections from this machine only. Another
        address exposes the model to the network without authentication (a warning is logged).
    port
        TCP port, 0 to 65535 (0 picks a free one, shown in the log).
    limits
        Request limits (default :class:`Limits`).
    threads
        torch intra-op threads per request (default 1, which suits many small concurrent requests; more
        helps large batches); ``None`` keeps torch's default.
    log_level
        uvicorn's log level (``critical``, ``error``, ``warning``, ``info``, ``debug``).

    Raises
    ------
    ConfigError
        For a bad port or thread count, or a missing optional dependency (``pip install 'vaekit[serve]'``).
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range; choose 1024..65535 (or 0 for any free port)")
    uvicorn = _require("uvicorn")
    app = create_app(model, limits, threads)
    if not is_loopback(host):
        logger.warning(
            "binding to %s exposes the model to the network with no authentication; use 127.0.0.1 unless you mean it",
            host,
        )
    where = f"http://{host}:{port}"
    logger.info(
        "serving %s at %s: explorer at %s/, API docs at %s/docs (torch threads per request: %s); Ctrl-C stops",
        model if isinstance(model, (str, Path)) else "the model",
        where,
        where,
        where,
        threads or "default",
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


__all__ = ["Limits", "RequestError", "Service", "create_app", "is_loopback", "read_array", "serve"]
