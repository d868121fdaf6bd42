"""``serve``: a trained model behind an HTTP API (FastAPI + uvicorn), with a latent explorer page.

::

    GET  /healthz          liveness                       GET /openapi.json  the schema; /docs its UI
    GET  /v1/model         model card: config, data shape, preprocessing, training metrics, versions, limits
    POST /v1/encode        x (B, *shape)   -> mean, log_var (B, L)       model.encode(x)
    POST /v1/decode        z (B, L)        -> x (B, *shape), E[x|z]      model.decode(z).mean
    POST /v1/reconstruct   x               -> x (B, *shape)              model.reconstruct(x)
    POST /v1/sample        n, temperature  -> x (n, *shape), seed        vaekit.sample.sample
    POST /v1/score         x, method, k    -> scores (B,)                vaekit.score.anomaly_scores
                           (method detector: a saved AnomalyDetector's score, vaekit.apps.neighbors)
    POST /v1/interpolate   z_a, z_b, steps -> x (steps, *shape)          vaekit.interpolate.lerp / slerp
    POST /v1/recommend     items, k        -> items, scores, ignored     vaekit.apps.recommendation.top_items
    POST /v1/sound         x (audio models) -> wav: base64 WAV (B,)     AudioPreprocessing.to_waveforms
    POST /v1/text/...      sentences as JSON strings (text models): encode, score, sample, reconstruct,
                           interpolate                                  vaekit.serving.text
    GET  /                 the latent explorer (image and audio models), else a page saying why not

Arrays travel as nested JSON lists, or (for large batches) as base64-encoded ``.npy`` files in the ``*_npy``
fields, read with ``allow_pickle=False``; ``"output": "npy"`` answers in the same form. Arrays are in the
model's input space; ``"raw": true`` applies the model's stored preprocessing first (e.g. 0..255 pixels).

Safety: binds to loopback unless told otherwise; request bodies and batches are bounded (:class:`Limits`);
malformed input gets a 4xx JSON answer ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` naming the
field, with at most :data:`MAX_ERRORS` entries (one more counts the rest) and nothing of the input echoed but
key names cut to :data:`MAX_ECHO` characters; a body with keys a request does not take is refused in one entry
naming the first of them and their count, before any field is checked. Only a bug (a 500) logs, once, with its
traceback; bad requests log nothing. Two answers come from below the app, in other forms: a request that is not
valid HTTP gets uvicorn's plain-text ``400 Invalid HTTP request received.``, and a body FastAPI cannot parse
beyond a JSON syntax error (nested too deeply, say) gets ``400 {"detail": "There was an error parsing the
body"}``. No request names a file, so none can read outside the served model; the model is loaded once and only
read (inference mode, no state changes), so requests can run concurrently.

Concurrency: a request of at most :data:`INLINE_EXAMPLES` example passes (a single example takes well under a
millisecond) runs directly on the event loop, because handing it to a worker thread costs more than the work
under the GIL; larger requests run in the thread pool so they never stall the loop. torch gets ``threads``
intra-op threads in every thread that runs the model (default 1).

FastAPI resolves request types from annotations at run time, and the request models carry the limits chosen
when the app is built, so they are made by :func:`_schemas` when the app is built and this module does not use
``from __future__ import annotations``. ``fastapi`` / ``uvicorn`` are imported lazily (extra ``serve``). What a
request means is in :mod:`vaekit.serving.service`; this module is the web layer around it.
"""

import ipaddress
import itertools
import json
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from vaekit._version import __version__
from vaekit.apps.interpolation import INTERPOLATIONS
from vaekit.apps.scoring import UNITS
from vaekit.errors import ConfigError
from vaekit.models import LatentVariableModel
from vaekit.serving.recommendations import add_recommend_route
from vaekit.serving.service import (
    MAX_TEMPERATURE,
    Limits,
    RequestError,
    Service,
    array_out,
    read_array,
    require,
)
from vaekit.serving.text import add_text_routes

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
INLINE_EXAMPLES = 64  # requests of at most this many example passes run on the event loop, larger ones in threads
MAX_ERRORS = 20  # entries of an error answer's "detail"; one more entry counts the rest
MAX_ECHO = 100  # characters of a request's own text (a key name) that an error answer repeats
STATIC_FILES = {"explorer.js": "text/javascript", "explorer.css": "text/css"}
MAX_SOUND_EXAMPLES = 64  # examples per /v1/sound request: Griffin-Lim costs about 0.1-0.5 s a clip on one core
MAX_GRIFFIN_LIM_ITERS = 1000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# -- the HTTP layer ---------------------------------------------------------------------------------------------
def _error_body(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"detail": [{"loc": loc, "msg": msg, "type": kind}]}


async def _send_json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class InternalErrors:
    """ASGI middleware: an exception no handler answered is a bug; log it once, with its traceback, and answer 500.

    Starlette's own catch-all answers too, but then re-raises so that the server logs the traceback a second time.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:
            logger.exception("unexpected error handling %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for an answer; the server closes the connection
                return
            await _send_json(send, 500, {"detail": "internal error; see the server log"})


class BodyLimit:
    """ASGI middleware: refuse (413) a request body larger than ``max_bytes``, declared or streamed."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send, status: int, msg: str) -> None:
        await _send_json(send, status, _error_body(["body"], msg, "too_large" if status == 413 else "bad_request"))

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
    return resources.files("vaekit.serving").joinpath("static", name).read_text(encoding="utf-8")


def _not_an_image_page(model: LatentVariableModel) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>vaekit</title></head><body>"
        "<h1>No latent explorer for this model</h1>"
        f"<p>The explorer draws images, and this model's examples have shape {tuple(model.data_shape)} "
        "(it needs images of shape C x H x W with 1 or 3 channels and values in [0, 1]).</p>"
        "<p>The HTTP API works for every model: see <a href='/docs'>/docs</a> and the model card at "
        "<a href='/v1/model'>/v1/model</a>.</p></body></html>"
    )


def create_app(
    model_path: LatentVariableModel | str | Path, limits: Limits | None = None, threads: int | None = 1
) -> Any:
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
    fastapi = require("fastapi")
    limits_ = limits or Limits()
    service = Service(model_path, limits_, threads)
    app = fastapi.FastAPI(
        title="vaekit",
        version=__version__,
        description="A trained variational autoencoder: encode, decode, sample, reconstruct, score.",
    )
    app.add_middleware(BodyLimit, max_bytes=limits_.max_body_bytes)
    app.add_middleware(InternalErrors)  # added last, so outermost: it sees every exception no handler answered
    app.state.service = service
    _add_error_handlers(app)
    _add_api_routes(app, service, _schemas(service, limits_))
    add_recommend_route(app, service, _request_base())  # POST /v1/recommend (recommenders; a 422 for other models)
    add_text_routes(app, service, _request_base())  # POST /v1/text/* (text models; a 422 for other models)
    _add_pages(app, service)
    return app


def _schemas(service: Service, limits: Limits) -> SimpleNamespace:
    """The request and response models, with the limits and the model's shapes built into their fields."""
    from pydantic import BaseModel, Field

    Request = _request_base()
    latent_dim, shape = service.model.latent_dim, list(service.model.data_shape)
    Output = Literal["json", "npy"]
    Label = Annotated[int, Field(ge=0, lt=2**31)]
    Labels = Label | Annotated[list[Label], Field(min_length=1, max_length=limits.max_batch)]

    class Examples(Request):  # type: ignore[misc, valid-type]  # a base made at run time
        x: list[Any] | None = Field(
            None,
            min_length=1,
            max_length=limits.max_batch,
            description=f"examples, nested lists of numbers of shape (B, {', '.join(map(str, shape))}) or "
            f"(B, {service.model.num_dims}), B <= {limits.max_batch}",
        )
        x_npy: str | None = Field(None, description="instead of x: a base64-encoded .npy file (numeric dtype)")
        raw: bool = Field(False, description="x holds raw data (e.g. 0..255 pixels): apply the stored preprocessing")
        y: Labels | None = Field(None, description="conditional models: one class for all, or one per example")
        output: Output = Field("json", description="json (nested lists) or npy (base64 .npy strings)")

    class Latents(Request):  # type: ignore[misc, valid-type]  # a base made at run time
        z: list[Any] | None = Field(
            None, min_length=1, max_length=limits.max_batch, description=f"latent codes (B, {latent_dim})"
        )
        z_npy: str | None = Field(None, description="instead of z: a base64-encoded .npy file")
        y: Labels | None = Field(None, description="conditional models: one class for all, or one per code")
        output: Output = "json"

    class SampleRequest(Request):  # type: ignore[misc, valid-type]  # a base made at run time
        n: int = Field(16, ge=1, le=limits.max_batch, description="number of samples")
        temperature: float = Field(
            1.0, gt=0, le=MAX_TEMPERATURE, allow_inf_nan=False, description="scale of the prior draw"
        )
        seed: int | None = Field(None, ge=0, lt=2**63, description="seed of the draw; default a random one")
        label: Label | None = Field(None, description="conditional models: the class (default: each in turn)")
        draw: bool = Field(False, description="a draw of p(x|z) instead of its mean (seeded by seed)")
        output: Output = "json"

    class ScoreRequest(Examples):
        method: str = Field("iwae", description=f"one of {', '.join(service.score_methods)}",
                            json_schema_extra=_enum(service.score_methods))
        k: int = Field(100, ge=1, le=limits.max_k, description="importance / posterior samples per example")
        unit: str = Field(
            "nats", description="nats (per example) or bits (per dimension)", json_schema_extra=_enum(UNITS)
        )

    class InterpolateRequest(Request):  # type: ignore[misc, valid-type]  # a base made at run time
        z_a: list[Any] = Field(min_length=1, max_length=latent_dim, description=f"start code ({latent_dim},)")
        z_b: list[Any] = Field(min_length=1, max_length=latent_dim, description=f"end code ({latent_dim},)")
        steps: int = Field(8, ge=2, le=limits.max_steps, description="points including both ends")
        method: str = Field("linear", json_schema_extra=_enum(INTERPOLATIONS.names()))
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

    SoundRequest, SoundResponse = _sound_schemas(Examples)
    return SimpleNamespace(**{cls.__name__: cls for cls in (
        Examples, Latents, SampleRequest, ScoreRequest, InterpolateRequest, EncodeResponse, ExamplesResponse,
        SampleResponse, ScoreResponse, SoundRequest, SoundResponse,
    )})


def _sound_schemas(examples: Any) -> tuple[Any, Any]:
    """The request and response of ``/v1/sound`` (audio models): examples plus Griffin-Lim iterations in, WAVs out."""
    from pydantic import BaseModel, Field

    class SoundRequest(examples):  # type: ignore[misc, valid-type]  # a base made at run time
        griffin_lim_iters: int | None = Field(
            None, ge=1, le=MAX_GRIFFIN_LIM_ITERS, description="Griffin-Lim iterations (default: the model's)"
        )

    class SoundResponse(BaseModel):
        wav: list[str] = Field(description="one base64-encoded 16-bit PCM WAV file per example")
        sample_rate: int

    return SoundRequest, SoundResponse


def _request_base() -> Any:
    """The base of the request models: a JSON object whose top-level keys are not all fields of the request is
    refused at once, with one error naming the first unknown keys and counting them.

    pydantic's ``extra="forbid"`` alone builds one error per unknown key, each echoing its value: a legal 13 MB body
    of a million keys took 20 s to answer with 87 MB, and the event loop answered nothing else meanwhile.
    """
    from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
    from pydantic_core import InitErrorDetails, PydanticCustomError

    class Request(BaseModel):
        model_config = ConfigDict(extra="forbid")

        @model_validator(mode="before")
        @classmethod
        def refuse_unknown_keys(cls, data: Any) -> Any:
            fields = cls.model_fields
            if not isinstance(data, dict) or data.keys() <= fields.keys():
                return data
            count = len(data) - len(data.keys() & fields.keys())
            first = list(itertools.islice((key for key in data if key not in fields), 3))
            names = ", ".join(_excerpt(repr(key), 40) for key in first) + (", ..." if count > len(first) else "")
            error = PydanticCustomError(
                "extra_forbidden",
                "Extra inputs are not permitted: {count} unknown {keys} ({names}); this request takes only: {fields}",
                {"count": count, "keys": "key" if count == 1 else "keys", "names": names, "fields": ", ".join(fields)},
            )
            line = InitErrorDetails(type=error, loc=(_excerpt(first[0]),), input=None)
            raise ValidationError.from_exception_data(cls.__name__, [line])

    return Request


def _excerpt(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters: error answers repeat only so much of what a request sent."""
    return text if len(text) <= limit else f"{text[:limit]}..."


def _bounded(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """The first :data:`MAX_ERRORS` of pydantic's errors as ``{loc, msg, type}`` (no input echoed), and one entry
    counting the rest."""
    detail = [
        {
            "loc": [_excerpt(part) if isinstance(part, str) else part for part in error.get("loc", ())],
            "msg": _excerpt(str(error.get("msg", "")), 10 * MAX_ECHO),
            "type": error.get("type", ""),
        }
        for error in errors[:MAX_ERRORS]
    ]
    if len(errors) > MAX_ERRORS:
        more = f"{len(errors) - MAX_ERRORS} more errors not shown ({len(errors)} in all)"
        detail.append({"loc": ["body"], "msg": more, "type": "too_many_errors"})
    return detail


def _add_error_handlers(app: Any) -> None:
    """Bad values -> 422 naming the field; malformed requests -> 422 without echoing the input (anything else: a 500
    from :class:`InternalErrors`)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @app.exception_handler(RequestError)
    async def request_error(request: Any, exc: RequestError) -> Any:
        return JSONResponse(_error_body(["body", exc.field], str(exc), "value_error"), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Any, exc: Any) -> Any:
        # FastAPI's default echoes the whole input back (megabytes for a big batch); keep where and what, bounded.
        return JSONResponse({"detail": _bounded(exc.errors())}, status_code=422)


async def anyio_to_thread(work: Callable[[], Any]) -> Any:
    """Run ``work`` in the thread pool (slow requests: Griffin-Lim), so it never stalls the event loop."""
    import anyio

    return await anyio.to_thread.run_sync(work)


async def _run(examples: int, work: Callable[[], Any]) -> Any:
    """Small requests run right here on the event loop: handing them to a worker thread costs more than the work
    (GIL hand-offs; p99 at 32 clients was 3x higher). Larger ones go to the thread pool, so they never stall it."""
    import anyio

    if examples <= INLINE_EXAMPLES:
        return work()
    return await anyio.to_thread.run_sync(work)


def _add_api_routes(app: Any, service: Service, schemas: SimpleNamespace) -> None:
    """The JSON API: one route per library call."""
    card = service.card()

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", summary="Model card")
    async def model_card() -> dict[str, Any]:
        return card

    @app.post("/v1/encode", summary="Posterior q(z|x): means and log-variances")
    async def encode(body: schemas.Examples) -> schemas.EncodeResponse:
        def work() -> Any:
            x = service.batch(body.x, body.x_npy, "x", body.raw)
            mean, log_var = service.encode(x, service.labels(body.y, len(x)))
            return schemas.EncodeResponse(mean=array_out(mean, body.output), log_var=array_out(log_var, body.output))

        return await _run(_rows(body.x), work)

    @app.post("/v1/decode", summary="Mean of p(x|z) for latent codes")
    async def decode(body: schemas.Latents) -> schemas.ExamplesResponse:
        def work() -> Any:
            z = service.latents(body.z, body.z_npy, "z")
            return schemas.ExamplesResponse(x=array_out(service.decode(z, service.labels(body.y, len(z))), body.output))

        return await _run(_rows(body.z), work)

    @app.post("/v1/reconstruct", summary="Decode the posterior mean of each example")
    async def reconstruct(body: schemas.Examples) -> schemas.ExamplesResponse:
        def work() -> Any:
            x = service.batch(body.x, body.x_npy, "x", body.raw)
            x_hat = service.reconstruct(x, service.labels(body.y, len(x)))
            return schemas.ExamplesResponse(x=array_out(x_hat, body.output))

        return await _run(_rows(body.x), work)

    _add_generative_routes(app, service, schemas)


def _add_generative_routes(app: Any, service: Service, schemas: SimpleNamespace) -> None:
    """Sampling, scoring and interpolation: the routes whose cost a request's parameters multiply."""

    @app.post("/v1/sample", summary="Draw new examples from the prior at a temperature")
    async def sample(body: schemas.SampleRequest) -> schemas.SampleResponse:
        seed = secrets.randbelow(2**63) if body.seed is None else body.seed

        def work() -> Any:
            x = service.sample(body.n, body.temperature, seed, body.label, body.draw)
            return schemas.SampleResponse(x=array_out(x, body.output), seed=seed, temperature=body.temperature)

        return await _run(body.n, work)

    @app.post("/v1/score", summary="Anomaly scores (higher = more anomalous)")
    async def score(body: schemas.ScoreRequest) -> schemas.ScoreResponse:
        def work() -> Any:
            x = service.batch(body.x, body.x_npy, "x", body.raw)
            scores = service.score(x, service.labels(body.y, len(x)), body.method, body.k, body.unit)
            detector = service.detector if body.method == "detector" else None  # its own k; a sum of z-scores
            k, unit = (body.k, body.unit) if detector is None else (detector.k, "z" if detector.n_terms > 1 else "nats")
            if body.method == "recon":
                k, unit = 1, "squared error"  # the decoded mean's squared distance: no samples, no nats
            return schemas.ScoreResponse(scores=array_out(scores, body.output, "float64"), method=body.method, k=k,
                                         unit=unit)

        return await _run(_rows(body.x) * (1 if body.method == "recon" else body.k), work)

    @app.post("/v1/sound", summary="Audio models: examples (log-mel spectrograms) as WAV files, by Griffin-Lim")
    async def sound(body: schemas.SoundRequest) -> schemas.SoundResponse:
        def work() -> Any:
            x = service.batch(body.x, body.x_npy, "x", body.raw)
            if len(x) > MAX_SOUND_EXAMPLES:
                raise RequestError("x", f"holds {len(x)} examples; send at most {MAX_SOUND_EXAMPLES} per request")
            wav, rate = service.sound(x, body.griffin_lim_iters)
            return schemas.SoundResponse(wav=wav, sample_rate=rate)

        return await anyio_to_thread(work)

    @app.post("/v1/interpolate", summary="Decode a path between two latent codes")
    async def interpolate(body: schemas.InterpolateRequest) -> schemas.ExamplesResponse:
        def work() -> Any:
            z_a, z_b = service.latents(body.z_a, None, "z_a"), service.latents(body.z_b, None, "z_b")
            x = service.interpolate(z_a, z_b, body.steps, body.method, body.label)
            return schemas.ExamplesResponse(x=array_out(x, body.output))

        return await _run(body.steps, work)


def _add_pages(app: Any, service: Service) -> None:
    """The latent explorer page and its packaged static files."""
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    explorable = service.image or service.modality == "audio"  # audio: spectrograms drawn, clips played
    page = _static("explorer.html") if explorable else _not_an_image_page(service.model)
    static_files = {name: _static(name) for name in STATIC_FILES}

    @app.get("/", include_in_schema=False)
    async def explorer() -> Any:
        return HTMLResponse(page)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Any:
        # A fixed set of packaged files, read once: the name is only a key, never a path.
        if name not in static_files:
            return JSONResponse({"detail": f"no static file {name!r}"}, status_code=404)
        return Response(static_files[name], media_type=STATIC_FILES[name])


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: LatentVariableModel | str | Path,
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
    uvicorn = require("uvicorn")
    app = create_app(model, limits, threads)
    if not is_loopback(host):
        logger.warning(
            "binding to %s exposes the model to the network with no authentication; use 127.0.0.1 unless you mean it",
            host,
        )
    sock = _listening_socket(host, port)  # bound before uvicorn starts: a busy port is one line, port 0 is known
    port = sock.getsockname()[1]
    where = f"http://{host}:{port}"
    logger.info(
        "serving %s at %s: explorer at %s/, API docs at %s/docs (torch threads per request: %s); Ctrl-C stops",
        model if isinstance(model, (str, Path)) else "the model",
        where,
        where,
        where,
        threads or "default",
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])


def _listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: a free port, chosen here), for uvicorn to listen on.

    Raises
    ------
    ConfigError
        The host does not resolve, or the port is taken or not allowed.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror or exc}; give a host name or address that "
                          "resolves (--host, default 127.0.0.1)") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port (0 picks "
                          "a free one)") from None
    return sock


__all__ = ["Limits", "RequestError", "Service", "create_app", "is_loopback", "read_array", "serve"]
