"""The sampler's selection written plainly, the whole pool at once: the oracle for ``select``.

This is how ``labelloop_sampler.domain.selection`` chose items before it learnt to work at scale:
it copies the candidates' probability rows and feature rows, scores them in float64 with a sort
per row, adds a seeded jitter to break ties and takes the top of the pool, then clusters with
scikit-learn (KMeans up to 4,000 points, MiniBatchKMeans above). The fast ``select`` must give
the very same picks for the same inputs and ``random_state`` (``test_sampler_selection.py``, and
``bench/bench_sampler.py`` before it prints a ratio).

One step is defined anew, not merely made faster: more than 200 clusters over more than 4,000
points are found by the nested k-means of ``selection._nested_kmeans`` (the reference calls it:
its own tests are in ``test_sampler_selection.py``) where MiniBatchKMeans with random centres
used to run. ``nested=False`` gives the earlier clustering, which the benchmark compares with.
The clustering runs on one thread, as in the sampler (``nested=False``, the earlier sampler,
runs on scikit-learn's default threads, as it did): on the default threads the centres depend,
in the last bits, on how the work was split, and on a busy 2-core machine that changed picks
(``bench_sampler.py --quick``, 2026-12-08, beside a soak). Only the strategies that read
probabilities or features are here: random and stratified selection never changed.
"""

# ruff: noqa: N803, N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import NDArray

from labelloop.project import SamplingStrategy as S
from labelloop_sampler.domain.selection import _nested_kmeans

__all__ = ["reference_select", "reference_uncertainty"]


def reference_uncertainty(proba: NDArray[np.floating], method: S) -> NDArray[np.float64]:
    p = np.asarray(proba, dtype=np.float64)
    if p.shape[1] == 1:
        return np.where(np.isnan(p[:, 0]), np.nan, 0.0)
    if method is S.LEAST_CONFIDENCE:
        return 1.0 - p.max(axis=1)
    if method in (S.MARGIN, S.HYBRID):
        top2 = -np.partition(-p, 1, axis=1)[:, :2]
        return 1.0 - (top2[:, 0] - top2[:, 1])
    assert method is S.ENTROPY
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
    ent = -(p * logs).sum(axis=1)
    return np.where(np.isnan(p).any(axis=1), np.nan, ent)


def reference_select(
    strategy: S,
    n: int,
    *,
    n_candidates: int,
    X: NDArray[np.floating] | None = None,
    proba: NDArray[np.floating] | None = None,
    random_fraction: float = 0.0,
    prefilter_factor: int = 10,
    random_state: int = 0,
    nested: bool = True,
) -> NDArray[np.int64]:
    """The positions ``select`` must return, for diversity and the uncertainty strategies."""
    rng = np.random.default_rng(random_state)
    n = max(0, min(n, n_candidates))
    if n == 0:
        return np.empty(0, np.int64)
    n_random = round(n * random_fraction)
    keep = np.ones(n_candidates, dtype=bool)
    random_part = np.empty(0, np.int64)
    if n_random:
        random_part = rng.choice(n_candidates, size=n_random, replace=False).astype(np.int64)
        keep[random_part] = False
    rows = np.flatnonzero(keep)
    n_rest = n - n_random
    if n_rest <= 0 or len(rows) == 0:
        return random_part
    X_rows = None if X is None else np.asarray(X)[rows]
    proba_rows = None if proba is None else np.asarray(proba)[rows]
    picked = _core(strategy, n_rest, len(rows), X_rows, proba_rows, prefilter_factor, rng, nested)
    return np.concatenate([random_part, rows[picked]]).astype(np.int64)


def _core(
    strategy: S,
    n: int,
    n_rows: int,
    X: NDArray[np.floating] | None,
    proba: NDArray[np.floating] | None,
    prefilter_factor: int,
    rng: np.random.Generator,
    nested: bool,
) -> NDArray[np.int64]:
    if strategy is not S.DIVERSITY:
        u = None if proba is None else reference_uncertainty(proba, strategy)
        if u is not None and not np.isnan(u).all():
            u = np.where(np.isnan(u), float(np.nanmean(u)), u)
            if strategy is S.HYBRID and X is not None:
                m = min(len(u), max(n, prefilter_factor * n))
                top = _top(u, m, rng)
                weights = u[top] - u[top].min() + 1e-6
                return top[_nearest_to_centroids(X[top], n, weights, rng, nested)]
            return _top(u, n, rng)
    # diversity, and the cold start of the uncertainty strategies
    if X is None:
        return rng.choice(n_rows, size=min(n, n_rows), replace=False).astype(np.int64)
    rows = np.arange(len(X))
    limit = max(20_000, 20 * n)
    if len(X) > limit:
        rows = np.sort(rng.choice(len(X), size=limit, replace=False))
    return rows[_nearest_to_centroids(X[rows], n, None, rng, nested)]


def _top(u: NDArray[np.float64], n: int, rng: np.random.Generator) -> NDArray[np.int64]:
    n = min(n, len(u))
    key = u + rng.random(len(u)) * 1e-12
    part = np.argpartition(-key, n - 1)[:n] if n < len(u) else np.arange(len(u))
    return part[np.argsort(-key[part], kind="stable")].astype(np.int64)


def _nearest_to_centroids(
    X: NDArray[np.floating],
    k: int,
    weights: NDArray[np.float64] | None,
    rng: np.random.Generator,
    nested: bool,
) -> NDArray[np.int64]:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    if k >= len(X):
        return np.arange(len(X), dtype=np.int64)
    data = np.ascontiguousarray(X, dtype=np.float32)
    seed = int(rng.integers(2**31 - 1))
    if nested and len(X) > 4_000 and k > 200:
        w = np.ones(len(X)) if weights is None else weights
        with threadpool_limits(limits=1):
            centres, labels = _nested_kmeans(data, k, w, np.random.default_rng(seed))
        return _nearest(data, centres, labels, k, weights, rng)
    model: KMeans | MiniBatchKMeans
    if len(X) > 4_000:
        model = MiniBatchKMeans(
            n_clusters=k,
            random_state=seed,
            batch_size=max(1024, 3 * k),
            n_init=1,
            max_iter=20,
            init="random" if k > 200 else "k-means++",
        )
    else:
        model = KMeans(n_clusters=k, n_init=1, max_iter=50, random_state=seed)
    # the earlier sampler (``nested=False``, timed by the benchmark) ran on the default threads
    with threadpool_limits(limits=1 if nested else None), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = model.fit_predict(data, sample_weight=weights)
    return _nearest(data, model.cluster_centers_.astype(np.float32), labels, k, weights, rng)


def _nearest(
    data: NDArray[np.float32],
    centres: NDArray[np.float32],
    labels: NDArray[np.intp],
    k: int,
    weights: NDArray[np.float64] | None,
    rng: np.random.Generator,
) -> NDArray[np.int64]:
    """The point nearest to each centre; empty clusters made up with the heaviest (or random)
    points not picked yet."""
    dist = np.sqrt(np.maximum(((data - centres[labels]) ** 2).sum(axis=1), 0.0))
    order = np.lexsort((dist, labels))
    picked = order[np.r_[True, labels[order][1:] != labels[order][:-1]]].astype(np.int64)
    if len(picked) < k:
        rest = np.setdiff1d(np.arange(len(data)), picked)
        key = weights[rest] if weights is not None else rng.random(len(rest))
        picked = np.concatenate([picked, rest[np.argsort(-key, kind="stable")[: k - len(picked)]]])
    return picked.astype(np.int64)
