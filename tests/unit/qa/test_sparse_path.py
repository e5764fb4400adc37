"""Past ``DENSE_CELLS`` the agreement kernels and Dawid-Skene run on scipy.sparse matrices: the
same figures as the dense path (forced here on a small crew by lowering the threshold)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from labelloop_qa.domain import agreement, ratings
from labelloop_qa.domain.aggregation import aggregate
from labelloop_qa.domain.crowd import simulate_crew


def _figures() -> tuple[object, ...]:
    crew = simulate_crew(
        n_items=300,
        n_classes=4,
        behaviours=["good"] * 5 + ["spammer"],
        accuracies=[0.9, 0.85, 0.8, 0.7, 0.6, 0.5],
        labels_per_item=3,
        random_state=3,
    )
    r = crew.ratings
    consensus = aggregate(r, "dawid-skene")
    return (
        r.response_matrix(),
        {level: agreement.krippendorff_alpha(r, level) for level in ("nominal", "ordinal")},
        agreement.fleiss_kappa(r),
        consensus.label.tolist(),
        np.round(consensus.confidence, 9).tolist(),
    )


def test_the_sparse_path_gives_the_dense_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    dense = _figures()
    monkeypatch.setattr(ratings, "DENSE_CELLS", 0)
    monkeypatch.setattr(agreement, "DENSE_CELLS", 0)
    sparse = _figures()
    assert scipy.sparse.issparse(sparse[0])
    assert not scipy.sparse.issparse(dense[0])
    assert np.array_equal(sparse[0].toarray(), dense[0])  # type: ignore[union-attr]
    for got, want in zip(sparse[1:], dense[1:], strict=True):
        assert got == pytest.approx(want)
