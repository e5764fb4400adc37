"""Selection strategies: deterministic with a seed, each doing what its name says.

The fast ``select`` gives the plain whole-pool computation's picks (``selection_reference.py``),
pick for pick, on pools built to hit every branch: ties, unscored rows, a control slice, float32
probabilities, KMeans, MiniBatchKMeans and the nested k-means, more rows than one chunk.
"""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest
from selection_reference import reference_select, reference_uncertainty

from labelloop.project import SamplingStrategy as S
from labelloop_sampler.domain.selection import (
    _apportion,
    _cluster_sums,
    _nested_kmeans,
    select,
    uncertainty,
)


def _blobs(n_per: int = 50, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(k, 4))
    X = np.concatenate([c + rng.normal(size=(n_per, 4)) for c in centres])
    return X.astype(np.float32), np.repeat(np.arange(k), n_per)


def _proba(n: int, seed: int = 0) -> np.ndarray:
    raw = np.random.default_rng(seed).random((n, 3)) ** 3
    return raw / raw.sum(axis=1, keepdims=True)


def test_uncertainty_measures_rank_as_expected() -> None:
    p = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [1 / 3, 1 / 3, 1 / 3], [np.nan] * 3])
    for method in (S.LEAST_CONFIDENCE, S.MARGIN, S.ENTROPY):
        u = uncertainty(p, method)
        assert u[0] < u[1] < u[2]
        assert np.isnan(u[3])
    assert uncertainty(p, S.MARGIN)[2] == pytest.approx(1.0)
    assert uncertainty(p, S.ENTROPY)[2] == pytest.approx(np.log(3))


@pytest.mark.parametrize("strategy", list(S))
def test_every_strategy_is_deterministic_distinct_and_sized(strategy: S) -> None:
    X, groups = _blobs()
    proba = _proba(len(X))
    kwargs = {
        "n_candidates": len(X),
        "X": X,
        "proba": proba,
        "strata": groups.astype(object),
        "random_state": 7,
    }
    a = select(strategy, 20, **kwargs)  # type: ignore[arg-type]
    b = select(strategy, 20, **kwargs)  # type: ignore[arg-type]
    assert np.array_equal(a.indices, b.indices)
    assert len(a.indices) == 20
    assert len(set(a.indices.tolist())) == 20
    assert a.indices.min() >= 0
    assert a.indices.max() < len(X)
    assert len(a.scores) == 20
    c = select(strategy, 20, **{**kwargs, "random_state": 8})  # type: ignore[arg-type]
    if strategy in (S.RANDOM, S.STRATIFIED):
        assert not np.array_equal(a.indices, c.indices)


def test_uncertainty_strategies_take_the_most_uncertain() -> None:
    proba = _proba(500)
    for method in (S.LEAST_CONFIDENCE, S.MARGIN, S.ENTROPY):
        sel = select(method, 10, n_candidates=500, proba=proba, random_state=0)
        u = uncertainty(proba, method)
        assert set(sel.indices.tolist()) == set(np.argsort(-u)[:10].tolist())
        assert np.all(np.diff(sel.scores) <= 0)


def test_cold_start_falls_back_to_diversity() -> None:
    X, groups = _blobs()
    for strategy in (S.MARGIN, S.HYBRID):
        sel = select(strategy, 5, n_candidates=len(X), X=X, proba=None, random_state=0)
        assert sel.strategy == "diversity"
        # one item from each of the five well-separated blobs
        assert sorted(groups[sel.indices].tolist()) == [0, 1, 2, 3, 4]


def test_unscored_items_count_as_averagely_uncertain() -> None:
    proba = _proba(100)
    proba[:50] = np.nan
    sel = select(S.MARGIN, 10, n_candidates=100, proba=proba, random_state=0)
    assert sel.strategy == "margin"
    assert len(sel.indices) == 10


def test_stratified_balances_rare_strata() -> None:
    strata = np.array(["common"] * 950 + ["rare"] * 30 + ["tiny"] * 20, dtype=object)
    sel = select(S.STRATIFIED, 30, n_candidates=1000, strata=strata, random_state=3)
    values, counts = np.unique(strata[sel.indices].astype(str), return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {
        "common": 10,
        "rare": 10,
        "tiny": 10,
    }


def test_hybrid_is_uncertain_and_diverse() -> None:
    X, groups = _blobs(n_per=200, k=5)
    proba = _proba(len(X), seed=1)
    sel = select(S.HYBRID, 10, n_candidates=len(X), X=X, proba=proba, random_state=0)
    u = uncertainty(proba, S.MARGIN)
    assert sel.strategy == "hybrid"
    # every pick comes from the uncertain pre-filter (top 10 * n) ...
    threshold = np.sort(u)[-100]
    assert (u[sel.indices] >= threshold - 1e-12).all()
    # ... and they spread over the clusters rather than piling into one
    assert len(set(groups[sel.indices].tolist())) >= 4


def test_random_fraction_is_a_random_control_slice() -> None:
    proba = _proba(1000)
    sel = select(S.MARGIN, 20, n_candidates=1000, proba=proba, random_fraction=0.25, random_state=0)
    assert sel.n_random == 5
    assert np.isnan(sel.scores[:5]).all()
    assert not np.isnan(sel.scores[5:]).any()
    assert len(set(sel.indices.tolist())) == 20


def test_asking_for_more_than_the_pool_returns_the_pool() -> None:
    X, _ = _blobs(n_per=2, k=3)
    sel = select(S.DIVERSITY, 50, n_candidates=len(X), X=X, random_state=0)
    assert sorted(sel.indices.tolist()) == list(range(len(X)))
    assert len(select(S.RANDOM, 5, n_candidates=0).indices) == 0


def test_large_pool_uses_bounded_work() -> None:
    """200k candidates, 500 picked with hybrid: vectorised (not timed here; see bench/)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200_000, 16)).astype(np.float32)
    proba = _proba(200_000)
    sel = select(S.HYBRID, 500, n_candidates=len(X), X=X, proba=proba, random_state=0)
    assert len(set(sel.indices.tolist())) == 500


def _awkward_proba(n: int, classes: int, seed: int) -> np.ndarray:
    """Probabilities with exact ties, one-hot rows, unscored (NaN) rows and half-NaN rows."""
    rng = np.random.default_rng(seed)
    raw = rng.random((n, classes)) ** 3
    p = raw / raw.sum(axis=1, keepdims=True)
    p[::7] = np.round(p[::7], 1)  # ties in the margin, and rows with two equal top classes
    p[3::11] = np.eye(classes)[rng.integers(classes, size=len(p[3::11]))]
    p[5::13] = np.nan  # items the model has not scored
    p[6::17, 0] = np.nan  # not produced by the trainer, but the margin must not care
    return p


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", [S.LEAST_CONFIDENCE, S.MARGIN, S.ENTROPY, S.HYBRID])
def test_uncertainty_equals_the_plain_computation_exactly(method: S, dtype: type) -> None:
    for classes in (1, 2, 5):
        p = _awkward_proba(3_000, classes, seed=classes).astype(dtype)
        np.testing.assert_array_equal(uncertainty(p, method), reference_uncertainty(p, method))


_POOLS: dict[str, dict[str, Any]] = {
    # name: pool size, picks, and optionally the features' dimension, the classes, select's options
    "small pool, KMeans": {"size": 400, "n": 12},
    "random control slice": {"size": 400, "n": 20, "random_fraction": 0.25},
    "pool smaller than the prefilter": {"size": 60, "n": 10},
    "float32 probabilities, float64 features": {"size": 500, "n": 15, "f32": True},
    "a model that knows one class": {"size": 300, "n": 10, "classes": 1},
    "cold start": {"size": 500, "n": 12, "cold": True},
    # larger pools, for the branches only they reach (one seed, the strategies that reach them)
    "prefilter above 4,000 with 200 clusters: MiniBatchKMeans": {
        "size": 6_000,
        "n": 200,
        "prefilter_factor": 25,
    },
    "prefilter above 4,000 with more clusters: nested k-means": {"size": 6_000, "n": 410},
    "more rows than one chunk, with a control slice": {
        "size": 70_000,
        "n": 30,
        "dim": 8,
        "random_fraction": 0.1,
    },
    "cold start on a pool above the diversity subsample": {"size": 25_000, "n": 8, "cold": True},
}
_SMALL = list(_POOLS)[:6]
_EVERY = (S.HYBRID, S.MARGIN, S.LEAST_CONFIDENCE, S.ENTROPY, S.DIVERSITY)
_CASES = [
    *((pool, strategy) for pool in _SMALL for strategy in _EVERY),
    ("prefilter above 4,000 with 200 clusters: MiniBatchKMeans", S.HYBRID),
    ("prefilter above 4,000 with more clusters: nested k-means", S.HYBRID),
    *(
        ("more rows than one chunk, with a control slice", strategy)
        for strategy in (S.HYBRID, S.MARGIN, S.LEAST_CONFIDENCE, S.ENTROPY)
    ),
    ("cold start on a pool above the diversity subsample", S.HYBRID),
]


@pytest.mark.parametrize(("pool", "strategy"), _CASES)
def test_select_gives_the_plain_computations_picks(pool: str, strategy: S) -> None:
    spec = dict(_POOLS[pool])
    size, n = spec.pop("size"), spec.pop("n")
    rng = np.random.default_rng(size)
    X = rng.normal(size=(size, spec.pop("dim", 4))).astype(np.float32)
    proba = _awkward_proba(size, spec.pop("classes", 3), seed=n)
    if spec.pop("f32", False):
        proba, X = proba.astype(np.float32), X.astype(np.float64)
    if spec.pop("cold", False):
        proba[:] = np.nan
    for seed in (0, 1) if pool in _SMALL else (0,):
        for features in (X, None):
            kwargs = {"n_candidates": size, "X": features, "proba": proba, **spec}
            fast = select(strategy, n, random_state=seed, **kwargs)
            expected = reference_select(strategy, n, random_state=seed, **kwargs)
            np.testing.assert_array_equal(fast.indices, expected)


def test_hybrid_reads_the_pool_without_copying_it() -> None:
    """The features are indexed at the prefiltered rows only: a copy of the pool's features
    (or a float64 copy of its probabilities) would show in the peak. Memory, not time."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200_000, 64), dtype=np.float32)  # 51 MB
    proba = _proba(200_000, seed=2)  # 4.8 MB
    kwargs = {"n_candidates": len(X), "X": X, "proba": proba, "random_state": 0}
    select(S.HYBRID, 200, **kwargs)  # loads scikit-learn, which the peak should not count
    tracemalloc.start()
    try:
        sel = select(S.HYBRID, 200, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sel.strategy == "hybrid"
    assert peak < X.nbytes / 4


def test_apportion_shares_clusters_by_weight_within_group_sizes() -> None:
    mass = np.array([1.0, 1.0, 2.0, 0.0, 0.01])
    size = np.array([100, 100, 100, 0, 50])
    assert _apportion(mass, size, 9).tolist() == [2, 2, 4, 0, 1]
    # a group can hold no more clusters than points; what it cannot take goes elsewhere
    assert _apportion(np.array([10.0, 1.0]), np.array([3, 100]), 20).tolist() == [3, 17]
    assert _apportion(np.array([1.0, 1.0, 1.0]), np.array([5, 5, 5]), 4).sum() == 4


@pytest.mark.parametrize(("n", "k"), [(300, 20), (50_000, 100)])  # dense, then sparse
def test_cluster_sums_add_up_each_clusters_rows(n: int, k: int) -> None:
    rng = np.random.default_rng(n)
    rows = rng.normal(size=(n, 8)).astype(np.float32)
    labels = rng.integers(k - 1, size=n)  # the last cluster stays empty
    expected = np.zeros((k, 8))
    np.add.at(expected, labels, rows.astype(np.float64))
    np.testing.assert_allclose(_cluster_sums(rows, labels, k), expected, rtol=1e-4, atol=1e-3)


def test_nested_kmeans_centres_are_their_clusters_weighted_means() -> None:
    """k clusters, each centre the weighted mean of its points (Lloyd's fixed point), and the
    same clustering again from the same seed."""
    X, _ = _blobs(n_per=60, k=40, seed=3)  # 2,400 points
    w = np.random.default_rng(3).random(len(X)) + 0.1
    centres, labels = _nested_kmeans(X, 300, w, np.random.default_rng(0))
    assert centres.shape == (300, X.shape[1])
    used = np.unique(labels)
    for c in used:
        members = labels == c
        mean = (X[members] * w[members, None]).sum(axis=0) / w[members].sum()
        np.testing.assert_allclose(centres[c], mean, rtol=1e-4, atol=1e-4)
    again = _nested_kmeans(X, 300, w, np.random.default_rng(0))
    np.testing.assert_array_equal(labels, again[1])


def test_diversity_with_many_clusters_spreads_over_the_pool() -> None:
    """300 picks from 300 tight, well-separated blobs of 20 (the nested k-means' branch: more
    than 200 clusters over more than 4,000 points): nearly every blob gets its pick, where 300
    random picks would leave over a third of the blobs out (MiniBatchKMeans, which this branch
    replaced, left a fifth out)."""
    rng = np.random.default_rng(5)
    centres = rng.normal(scale=10, size=(300, 16))
    X = (np.repeat(centres, 20, axis=0) + rng.normal(scale=0.5, size=(6_000, 16))).astype(
        np.float32
    )
    blob = np.repeat(np.arange(300), 20)
    sel = select(S.DIVERSITY, 300, n_candidates=len(X), X=X, random_state=0)
    assert len(set(sel.indices.tolist())) == 300
    assert len(set(blob[sel.indices].tolist())) >= 0.95 * 300
