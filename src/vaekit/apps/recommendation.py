"""``recommend``: the items a recommender ranks highest for a user, leaving out what the user already has.

::

    the user's items ──> x (1, D) 0/1 over the model's items ──encode──> mean of q(z|x) ──decode──> p(x|z)
                                                                                    │ its mean: each item's score
    top k of the items not in x <───────────────────────────────────────────────────┘

A user is given by the ids of the items they interacted with (``items``), or as a user of an interaction file
(``user``, ``data``: their positives, read as the model's training data was, by default from that file). The scores
are the mean of p(x|z) at the posterior mean: for a ``multinomial`` model (Mult-VAE) the probability that the
user's next interaction is each item (they sum to 1 over all items); for a ``bernoulli`` model each item's
probability on its own. Item ids the model does not know are listed in a warning and ignored; if none is known, or
none is given, it is an error. Titles come from an item table (``item_names``, e.g. MovieLens ``items.tsv``).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vaekit.data.interactions import (
    InteractionRecord,
    known_items,
    read_item_names,
    record_of,
    user_history,
)
from vaekit.data.ranking import top_k
from vaekit.errors import ConfigError
from vaekit.models import LatentVariableModel, as_model

logger = logging.getLogger(__name__)


@dataclass
class Recommendations:
    """The top items for one user.

    Attributes
    ----------
    items
        Recommended item ids, best first (at most ``k``; fewer when the user has nearly every item).
    scores
        Their scores: the mean of p(x|z) for each (for a multinomial model, the probability of being the user's
        next interaction).
    titles
        Their titles, when an item table was given (``""`` for an item it does not name), else ``None``.
    history
        The user's items the model knows (the input), in the model's order.
    ignored
        The given item ids the model does not know.
    """

    items: list[str]
    scores: list[float]
    titles: list[str] | None
    history: list[str]
    ignored: list[str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def format_table(self) -> str:
        """Rank, item, score (and title) per line, under one line about the input."""
        lines = [f"top {len(self.items)} items for a user with {len(self.history)} known item(s)"
                 + (f" ({len(self.ignored)} unknown ignored)" if self.ignored else "")]
        width = max([4, *(len(item) for item in self.items)])
        header = f"{'rank':>4}  {'item':<{width}}  {'score':>9}" + ("  title" if self.titles is not None else "")
        lines.append(header)
        for rank, (item, score) in enumerate(zip(self.items, self.scores, strict=True), 1):
            title = f"  {self.titles[rank - 1]}" if self.titles is not None else ""
            lines.append(f"{rank:>4}  {item:<{width}}  {score:>9.3g}{title}")
        return "\n".join(lines)


@torch.no_grad()
def top_items(
    model: LatentVariableModel, record: InteractionRecord, history: Sequence[str], k: int
) -> tuple[list[str], list[float]]:
    """The ``k`` best-scored items (ids, scores) for a user with the item ids ``history`` (all known to the model),
    leaving those out."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    index = record.item_index()
    x = torch.zeros(1, len(record.items))  # (1, D)
    x[0, [index[item] for item in history]] = 1.0
    model.eval()
    scores = model.reconstruct(x.to(model.device)).float().cpu().reshape(1, -1)  # (1, D)
    available = len(record.items) - len(history)
    top = top_k(scores, min(k, available), exclude=x > 0)[0]  # (k,)
    return [record.items[i] for i in top.tolist()], [float(scores[0, i]) for i in top.tolist()]


def recommend(
    model: LatentVariableModel | str | Path,
    items: Sequence[str | int] | None = None,
    *,
    user: str | int | None = None,
    data: str | Path | None = None,
    k: int = 20,
    item_names: str | Path | None = None,
) -> Recommendations:
    """Recommend ``k`` items for a user, excluding the items the user has.

    Parameters
    ----------
    model
        A recommender (trained on interaction data), or its model or run directory.
    items
        Ids of the items the user interacted with; ids the model does not know are ignored with a warning.
    user
        Instead of ``items``: a user id of the interaction file ``data`` (default the model's training file),
        whose positives (by the model's rating threshold) are the user's items.
    data
        The interaction file of ``user``.
    k
        How many items.
    item_names
        A table of item ids and titles (CSV or TSV with a header, e.g. MovieLens ``items.tsv``).

    Returns
    -------
    Recommendations

    Raises
    ------
    ConfigError
        Both or neither of ``items`` and ``user``, or ``k < 1``.
    DataError
        The model is not a recommender, no item is given or none is known, the user is not in the file or has no
        known positive.
    """
    if (items is None) == (user is None):
        raise ConfigError("give the user's items (--items 1,50,172) or a user of an interaction file "
                          "(--user ID [--data FILE]), one of the two")
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be at least 1 (a whole number of items), got {k!r}")
    if isinstance(items, (str, bytes)):  # a string is a sequence of characters, not of ids
        raise ConfigError(f"items={items!r} is one string; give a list of item ids, e.g. ['1', '50', '172']")
    model = as_model(model)
    record = record_of(model)
    ignored: list[str] = []
    if user is not None:
        history = user_history(Path(data or record.source), record, str(user))
    else:
        history, ignored = known_items(record, items or [])
        if ignored:
            shown = ", ".join(ignored[:10]) + (f", ... ({len(ignored)} in all)" if len(ignored) > 10 else "")
            logger.warning("ignored %d item id(s) the model does not know: %s", len(ignored), shown)
    names = None if item_names is None else read_item_names(item_names)
    chosen, scores = top_items(model, record, history, k)
    titles = None if names is None else [names.get(item, "") for item in chosen]
    return Recommendations(chosen, scores, titles, history, ignored)
