"""The text routes of the HTTP API: sentences travel as JSON strings (text models; a 422 for other models).

::

    POST /v1/text/encode       {"sentences": [...]}                 -> mean, log_var (B, L), unknown words
    POST /v1/text/score        {"sentences": [...], "k": 100}       -> nll (nats per sentence), tokens, unknown words
    POST /v1/text/sample       {"n": 5, "decoding": "greedy", ...}   -> sentences, seed
    POST /v1/text/reconstruct  {"sentences": [...], "decoding": ...} -> sentences (decodes of the posterior means)
    POST /v1/text/interpolate  {"a": "...", "b": "...", "steps": 5}  -> sentences along the path

Words the model's vocabulary lacks are read as ``<unk>`` and listed per sentence in ``unknown``. Every route calls
one function of :mod:`vaekit.apps.text` (or :func:`vaekit.apps.scoring.anomaly_scores`); the work runs in the
thread pool (decoding is a loop of up to ``max_length`` steps).
"""

from types import SimpleNamespace
from typing import Any, Literal

import torch

from vaekit.apps.scoring import anomaly_scores
from vaekit.apps.text import encode_text, interpolate_text, reconstruct_text, sample_text, text_record
from vaekit.data.text import PAD
from vaekit.errors import VaeKitError
from vaekit.serving.service import MAX_TEMPERATURE, RequestError, Service

MAX_SENTENCE_CHARS = 10_000  # characters of one sentence of a request
MAX_BEAM = 16
Decoding = Literal["greedy", "sample", "beam"]


def _call(field: str, work: Any) -> Any:
    """Run ``work()``; the library's own errors become a 422 naming ``field``."""
    try:
        return work()
    except RequestError:
        raise
    except VaeKitError as exc:
        raise RequestError(field, " ".join(str(exc).split())) from None


async def _in_thread(service: Service, field: str, work: Any) -> Any:
    import anyio

    def run() -> Any:
        service.pin_threads()
        with torch.inference_mode():
            return _call(field, work)

    return await anyio.to_thread.run_sync(run)


def _schemas(request_base: Any, limits: Any) -> SimpleNamespace:
    """The request and response models of the text routes, with the service's limits in their fields."""
    from pydantic import BaseModel, Field

    def sentence_list() -> Any:
        return Field(min_length=1, max_length=limits.max_batch, description="sentences (words separated by spaces)")

    class TextSentences(request_base):  # type: ignore[misc, valid-type]  # a base made at run time
        sentences: list[str] = sentence_list()

    class TextDecode(request_base):  # type: ignore[misc, valid-type]
        decoding: Decoding = Field("greedy", description="greedy, sample (at temperature 1; /v1/text/sample: at "
                                                         "temperature) or beam")
        beam_size: int = Field(5, ge=1, le=MAX_BEAM, description="decoding=beam: the beam's width")

    class TextSampleRequest(TextDecode):
        temperature: float = Field(1.0, gt=0, le=MAX_TEMPERATURE, allow_inf_nan=False,
                                   description="decoding=sample: the words' softmax temperature")
        n: int = Field(5, ge=1, le=limits.max_batch)
        prior_temperature: float = Field(1.0, gt=0, le=MAX_TEMPERATURE, allow_inf_nan=False)
        seed: int = Field(0, ge=0, lt=2**63)

    class TextReconstructRequest(TextDecode):
        sentences: list[str] = sentence_list()

    class TextInterpolateRequest(TextDecode):
        a: str
        b: str
        steps: int = Field(5, ge=2, le=limits.max_steps)
        method: str = "linear"

    class TextScoreRequest(TextSentences):
        k: int = Field(100, ge=1, le=limits.max_k)

    class TextSentencesResponse(BaseModel):
        sentences: list[str]
        unknown: list[list[str]] = Field(default_factory=list, description="words of each input read as <unk>")
        seed: int | None = None

    class TextEncodeResponse(BaseModel):
        mean: list[list[float]]
        log_var: list[list[float]]
        unknown: list[list[str]]

    class TextScoreResponse(BaseModel):
        nll: list[float] = Field(description="importance-weighted NLL, nats per sentence (exact without latents)")
        tokens: list[int] = Field(description="tokens of each sentence, its <eos> included")
        k: int
        unknown: list[list[str]]

    return SimpleNamespace(
        TextSentences=TextSentences, TextSampleRequest=TextSampleRequest, TextReconstructRequest=TextReconstructRequest,
        TextInterpolateRequest=TextInterpolateRequest, TextScoreRequest=TextScoreRequest,
        TextSentencesResponse=TextSentencesResponse, TextEncodeResponse=TextEncodeResponse,
        TextScoreResponse=TextScoreResponse,
    )


def add_text_routes(app: Any, service: Service, request_base: Any) -> None:
    """Add the ``/v1/text/*`` routes to ``app``, their request models built on ``request_base`` (which refuses
    unknown keys, as every request of the API does)."""
    limits, model = service.limits, service.model
    schemas = _schemas(request_base, limits)

    def sentences_of(values: list[str], fields: str | list[str] = "sentences") -> list[str]:
        """``values`` after checking that the model reads text and that every sentence is of a sensible size and is
        text (a lone surrogate, which JSON's \\u escapes can carry, is not); ``fields``: the field of all of them,
        or one field per sentence."""
        names = [fields] * len(values) if isinstance(fields, str) else fields
        _call(names[0] if names else "sentences", lambda: text_record(model))
        for i, (text, field) in enumerate(zip(values, names, strict=True)):
            which = f"sentence {i}" if isinstance(fields, str) else "the sentence"
            if not text.strip() or len(text) > MAX_SENTENCE_CHARS:
                raise RequestError(field, f"{which} is empty or longer than {MAX_SENTENCE_CHARS} characters")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise RequestError(field, f"{which} holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape "
                                          "without its pair), which is not text; send UTF-8 text") from None
        return values

    @app.post("/v1/text/encode", summary="Text models: posterior q(z|x) of sentences")
    async def text_encode(body: schemas.TextSentences) -> schemas.TextEncodeResponse:
        def work() -> Any:
            encoded = encode_text(model, sentences_of(body.sentences))
            qz_x = model.encode(encoded.ids)
            return schemas.TextEncodeResponse(mean=qz_x.mean.float().tolist(),
                                          log_var=qz_x.variance.log().float().tolist(), unknown=encoded.unknown)

        return await _in_thread(service, "sentences", work)

    @app.post("/v1/text/score", summary="Text models: NLL of sentences (nats), higher = more unusual")
    async def text_score(body: schemas.TextScoreRequest) -> schemas.TextScoreResponse:
        if len(body.sentences) * body.k > limits.max_score_samples:
            raise RequestError("k", f"{len(body.sentences)} sentences x k={body.k} exceeds "
                                    f"{limits.max_score_samples} samples; lower k or send fewer")

        def work() -> Any:
            encoded = encode_text(model, sentences_of(body.sentences))
            k = 1 if model.latent_dim == 0 else body.k
            nll = anomaly_scores(model, encoded.ids, "iwae", k=k)
            tokens = (encoded.ids != PAD).sum(1)
            return schemas.TextScoreResponse(nll=nll.double().tolist(), tokens=tokens.tolist(), k=k,
                                         unknown=encoded.unknown)

        return await _in_thread(service, "sentences", work)

    _add_generation_routes(app, service, schemas, sentences_of)


def _add_generation_routes(app: Any, service: Service, schemas: SimpleNamespace, sentences_of: Any) -> None:
    """Sampling, reconstruction and interpolation: the routes that decode sentences."""
    model, response = service.model, schemas.TextSentencesResponse

    @app.post("/v1/text/sample", summary="Text models: sentences decoded from prior draws")
    async def text_sample(body: schemas.TextSampleRequest) -> schemas.TextSentencesResponse:
        def work() -> Any:
            sentences_of([], "n")
            sentences = sample_text(model, body.n, decoding=body.decoding, temperature=body.temperature,
                                    prior_temperature=body.prior_temperature, beam_size=body.beam_size, seed=body.seed)
            return response(sentences=sentences, seed=body.seed)

        return await _in_thread(service, "n", work)

    @app.post("/v1/text/reconstruct", summary="Text models: decodes of the sentences' posterior means")
    async def text_reconstruct(body: schemas.TextReconstructRequest) -> schemas.TextSentencesResponse:
        def work() -> Any:
            given = sentences_of(body.sentences)
            pairs = reconstruct_text(model, given, decoding=body.decoding, beam_size=body.beam_size)
            return response(sentences=[decoded for _, decoded in pairs], unknown=encode_text(model, given).unknown)

        return await _in_thread(service, "sentences", work)

    @app.post("/v1/text/interpolate", summary="Text models: sentences along a path between two sentences' codes")
    async def text_interpolate(body: schemas.TextInterpolateRequest) -> schemas.TextSentencesResponse:
        def work() -> Any:
            ends = sentences_of([body.a, body.b], ["a", "b"])
            sentences = interpolate_text(model, ends[0], ends[1], steps=body.steps, method=body.method,
                                         decoding=body.decoding, beam_size=body.beam_size)
            return response(sentences=sentences, unknown=encode_text(model, ends).unknown)

        return await _in_thread(service, "method", work)
