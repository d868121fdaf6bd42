"""The neighbour search behind AnomalyDetector's distance terms: exact, leave-one-out, chunked, any dimension."""

from __future__ import annotations

import numpy as np
import pytest

from vaekit.apps import neighbors
from vaekit.apps.neighbors import code_distances, distinct_points, neighbor_index, row_index


def _brute(points: np.ndarray, training: np.ndarray, k: int) -> np.ndarray:
    """Mean distance to the k nearest training points, one copy of a point equal to the row left out."""
    gaps = np.linalg.norm(points[:, None] - training[None], axis=-1)
    for row, own in enumerate(np.argmin(gaps, axis=1)):
        if gaps[row, own] <= 1e-9:
            gaps[row, own] = np.inf
    return np.sort(gaps, axis=1)[:, :k].mean(axis=1)


@pytest.mark.parametrize("dims", [3, 40])  # a k-d tree, and brute force above CODE_KD_TREE_DIMS
@pytest.mark.parametrize("k", [1, 3])
def test_distances_are_exact_and_leave_the_row_out_in_chunks(monkeypatch: pytest.MonkeyPatch, dims: int,
                                                             k: int) -> None:
    rng = np.random.default_rng(dims)
    training = rng.normal(size=(200, dims))
    training[150:] = training[:50]  # duplicates: each copy is the other's neighbour at distance 0
    new = np.concatenate([rng.normal(size=(30, dims)) * 2, training[[0, 60]]])
    reference, counts = distinct_points(training)
    assert len(reference) == 150 and counts.sum() == 200 and set(counts) == {1, 2}
    np.testing.assert_array_equal(reference, training[:150])  # in the order they first appear
    index = neighbor_index(reference)
    assert index._fit_method == ("kd_tree" if dims <= neighbors.CODE_KD_TREE_DIMS else "brute")
    rows = row_index(reference)  # rows: brute force from fewer dimensions on
    assert rows._fit_method == ("kd_tree" if dims <= neighbors.ROW_KD_TREE_DIMS else "brute")
    np.testing.assert_array_equal(code_distances(training, reference, counts, rows, k),
                                  code_distances(training, reference, counts, index, k))
    whole = code_distances(np.concatenate([training, new]), reference, counts, index, k)
    monkeypatch.setattr(neighbors, "DISTANCE_CELLS", 7 * (k + 1) * dims)  # chunks of 7 rows
    chunked = code_distances(np.concatenate([training, new]), reference, counts, index, k)
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_allclose(whole, _brute(np.concatenate([training, new]), training, k), rtol=1e-12, atol=1e-12)
    if k == 1:
        np.testing.assert_array_equal(whole[:50], 0.0)  # rows with a copy
        assert (whole[50:150] > 0).all()
