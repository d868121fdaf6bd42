"""``POST /v1/recommend``: the top items for a user of a recommender, given the ids of the items the user has.

::

    {"items": ["1", "50", 172], "k": 20}  ->  {"items": [...], "scores": [...], "ignored": [...], "k": 20}

Ids may be strings or integers (compared as strings: ``172`` is the item ``"172"``). Ids the model does not know are
ignored and listed in ``ignored``; if none is known, or the model was not trained on interaction data, the answer
is a 422 naming the field ``items``. The scores are :func:`vaekit.apps.recommendation.top_items`'s: the mean of
p(x|z) at the posterior mean. A request is one small forward pass, so it runs on the event loop.
"""

from typing import Any

from vaekit.apps.recommendation import top_items
from vaekit.data.interactions import known_items, record_of
from vaekit.errors import DataError
from vaekit.serving.service import RequestError, Service

MAX_K = 1000


def add_recommend_route(app: Any, service: Service, request_base: Any) -> None:
    """Add ``POST /v1/recommend`` to ``app``, its request model built on ``request_base`` (which refuses unknown
    keys, as every request of the API does)."""
    from pydantic import BaseModel, Field, StrictInt, StrictStr

    record = getattr(service.model, "preprocessing", None)
    max_items = max(service.limits.max_batch, len(getattr(record, "items", ())))

    class RecommendRequest(request_base):  # type: ignore[misc, valid-type]  # a base made at run time
        items: list[StrictStr | StrictInt] = Field(  # strict: true or 1.0 is not the item "1"
            min_length=1, max_length=max_items, description="ids of the items the user interacted with"
        )
        k: int = Field(20, ge=1, le=MAX_K, description="how many items to recommend")

    class RecommendResponse(BaseModel):
        items: list[str] = Field(description="recommended item ids, best first (none the user has)")
        scores: list[float] = Field(description="their scores: the mean of p(x|z), e.g. P(next interaction)")
        ignored: list[str] = Field(description="given item ids the model does not know")
        k: int

    @app.post("/v1/recommend", summary="Top items for a user of a recommender, given the user's items")
    async def recommend(body: RecommendRequest) -> RecommendResponse:
        service.pin_threads()
        try:
            record = record_of(service.model)
            history, ignored = known_items(record, body.items)
        except DataError as exc:
            raise RequestError("items", " ".join(str(exc).split())) from None
        items, scores = top_items(service.model, record, history, body.k)
        return RecommendResponse(items=items, scores=scores, ignored=ignored, k=body.k)
