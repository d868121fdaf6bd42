"""Ranking metrics of held-out interactions: the strong-generalization protocol of Liang et al. 2018
("Variational Autoencoders for Collaborative Filtering", arXiv:1802.05814).

For each user: scores over all D items, the items folded in (given to the model, so never recommended: they are
excluded from the ranking) and the held-out items, the relevant ones::

    top-k     the k best-scored items that were not folded in
    Recall@k  = |top-k ∩ held out| / min(k, |held out|)       (1 when the top k are all held out, whatever |held out|)
    DCG@k     = sum_{r=1..k} [item at rank r is held out] / log2(r + 1)
    NDCG@k    = DCG@k / IDCG@k,    IDCG@k = sum_{r=1..min(k, |held out|)} 1 / log2(r + 1)

Users without held-out items have no defined metric (NaN here) and are left out of the means.

The functions live in the data layer, beside the protocol's splits (:mod:`vaekit.data.interactions`), because
both the training loop (which picks the best model by validation NDCG@100) and the evaluation report use them,
and those two layers do not import each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

RECALL_KS: tuple[int, ...] = (20, 50)
NDCG_KS: tuple[int, ...] = (100,)


def _tensor(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))


def top_k(
    scores: torch.Tensor | np.ndarray, k: int, exclude: torch.Tensor | np.ndarray | None = None
) -> torch.Tensor:
    """The indices (B, min(k, D)) of the ``k`` highest scores of each row, best first, never an excluded item
    while others remain.

    Parameters
    ----------
    scores
        (B, D) scores of the items (higher is better).
    k
        How many; at most D are returned.
    exclude
        (B, D) booleans (or 0/1): the items each row must not get (those the user already has).
    """
    s = _tensor(scores).float()
    if exclude is not None:
        s = s.masked_fill(_tensor(exclude).bool(), -math.inf)
    return torch.topk(s, min(k, s.shape[1]), dim=1, sorted=True).indices


def _hits(top: torch.Tensor, heldout: torch.Tensor) -> torch.Tensor:
    """(B, K) 1.0 where the item at each rank is held out."""
    return heldout.gather(1, top).float()


def recall_at_k(top: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """Recall@k of each user (B,), normalised by min(k, held out); NaN for users with nothing held out.

    ``top`` (B, >= k) ranked item indices (:func:`top_k`), ``heldout`` (B, D) booleans."""
    n_heldout = heldout.sum(1).float()  # (B,)
    hits = _hits(top[:, :k], heldout).sum(1)
    return hits / torch.clamp(n_heldout, max=k).where(n_heldout > 0, torch.tensor(math.nan))


def ndcg_at_k(top: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@k of each user (B,) with binary relevance; NaN for users with nothing held out.

    ``top`` (B, >= k) ranked item indices (:func:`top_k`), ``heldout`` (B, D) booleans."""
    k = min(k, top.shape[1])
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32))  # (k,) 1 / log2(r + 1)
    dcg = (_hits(top[:, :k], heldout) * discounts).sum(1)
    ideal_counts = heldout.sum(1).clamp(max=k).long()  # (B,)
    ideal = torch.cat([torch.zeros(1), discounts.cumsum(0)])[ideal_counts]  # IDCG: sum of the first n discounts
    return dcg / ideal.where(ideal_counts > 0, torch.tensor(math.nan))


def user_metrics(
    scores: torch.Tensor | np.ndarray,
    heldout: torch.Tensor | np.ndarray,
    exclude: torch.Tensor | np.ndarray | None = None,
    recall_ks: Sequence[int] = RECALL_KS,
    ndcg_ks: Sequence[int] = NDCG_KS,
) -> dict[str, torch.Tensor]:
    """Recall@k and NDCG@k of each user.

    Parameters
    ----------
    scores
        (B, D) item scores.
    heldout
        (B, D) booleans (or 0/1 counts): the held-out items.
    exclude
        (B, D) booleans: the folded-in items, left out of the ranking.

    Returns
    -------
    dict
        ``recall@k`` and ``ndcg@k`` -> (B,) float32 per user (NaN where nothing is held out).
    """
    relevant = _tensor(heldout) > 0
    top = top_k(scores, max([*recall_ks, *ndcg_ks]), exclude)
    metrics = {f"recall@{k}": recall_at_k(top, relevant, k) for k in recall_ks}
    metrics |= {f"ndcg@{k}": ndcg_at_k(top, relevant, k) for k in ndcg_ks}
    return metrics


def mean_metrics(per_user: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Means over users (batches of :func:`user_metrics` concatenated) that have held-out items, with ``users``,
    their count."""
    if not per_user:
        return {"users": 0}
    joined = {name: torch.cat([batch[name] for batch in per_user]) for name in per_user[0]}
    valid = ~torch.isnan(next(iter(joined.values())))
    result: dict[str, float] = {name: float(values[valid].double().mean()) if valid.any() else math.nan
                                for name, values in joined.items()}
    result["users"] = int(valid.sum())
    return result
