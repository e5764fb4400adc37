"""Which unlabeled items to label next: random, stratified, diversity, uncertainty and hybrid.

Every function works on arrays over the *candidates* (the available pool rows) and returns
positions into them. Everything is vectorised and seeded: the same inputs and ``random_state``
give the same selection, on any replica.

* ``least_confidence``, ``margin``, ``entropy``: the model's pool probabilities, most uncertain
  first (Settles 2009).
* ``diversity``: KMeans on the feature vectors with ``k = n``, the item nearest to each centroid.
  It is also the cold start of every uncertainty strategy (no model yet).
* ``hybrid``: the ``prefilter_factor * n`` most uncertain items, KMeans weighted by uncertainty,
  the item nearest to each centroid (Zhdanov 2019, "Diverse mini-batch active learning").
"""

# ruff: noqa: N803  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from labelloop.project import SamplingStrategy

__all__ = [
    "UNCERTAINTY_STRATEGIES",
    "Selection",
    "select",
    "uncertainty",
]

UNCERTAINTY_STRATEGIES = frozenset(
    {
        SamplingStrategy.LEAST_CONFIDENCE,
        SamplingStrategy.MARGIN,
        SamplingStrategy.ENTROPY,
        SamplingStrategy.HYBRID,
    }
)

_KMEANS_FULL_MAX = 4_000
"""Above this many points KMeans runs as MiniBatchKMeans."""
_DIVERSITY_MAX_POINTS = 20_000
"""Diversity on a larger pool clusters a random subsample of this size (or ``20 * n``)."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Positions into the candidate arrays, the score that chose each, and the strategy used."""

    indices: NDArray[np.int64]
    scores: NDArray[np.float64]
    """Uncertainty (higher is more uncertain) or distance to the centroid; NaN for random picks."""
    strategy: str
    """The strategy that ran (``diversity`` for an uncertainty strategy on a cold start)."""
    n_random: int = 0
    """How many of ``indices`` (the first ones) are the random control slice."""


def uncertainty(proba: NDArray[np.floating], method: SamplingStrategy) -> NDArray[np.float64]:
    """Uncertainty per row of class probabilities, higher is more uncertain; NaN rows stay NaN.

    ``hybrid`` ranks by margin, which worked best on our reference runs.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-d, got shape {p.shape}")
    if p.shape[1] == 1:
        # a model that has seen one class is sure of it: nothing to rank by
        return np.where(np.isnan(p[:, 0]), np.nan, 0.0)
    if method is SamplingStrategy.LEAST_CONFIDENCE:
        return np.asarray(1.0 - p.max(axis=1), dtype=np.float64)
    if method in (SamplingStrategy.MARGIN, SamplingStrategy.HYBRID):
        top2 = -np.partition(-p, 1, axis=1)[:, :2]
        return 1.0 - (top2[:, 0] - top2[:, 1])
    if method is SamplingStrategy.ENTROPY:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
        ent = -(p * logs).sum(axis=1)
        return np.where(np.isnan(p).any(axis=1), np.nan, ent)
    raise ValueError(f"{method.value} is not an uncertainty strategy")


def select(
    strategy: SamplingStrategy,
    n: int,
    *,
    n_candidates: int,
    X: NDArray[np.floating] | None = None,
    proba: NDArray[np.floating] | None = None,
    strata: NDArray[np.object_] | None = None,
    random_fraction: float = 0.0,
    prefilter_factor: int = 10,
    random_state: int = 0,
) -> Selection:
    """Choose ``n`` of ``n_candidates`` items.

    ``X`` (features, one row per candidate) drives diversity; ``proba`` (the latest model's class
    probabilities, NaN rows for items it has not scored) drives the uncertainty strategies;
    ``strata`` (one value per candidate) drives the stratified strategy. A ``random_fraction`` of
    the ``n`` is drawn at random first, as a control slice.
    """
    rng = np.random.default_rng(random_state)
    n = max(0, min(n, n_candidates))
    empty = Selection(np.empty(0, np.int64), np.empty(0, np.float64), strategy.value)
    if n == 0:
        return empty
    n_random = round(n * random_fraction)
    rest_mask = np.ones(n_candidates, dtype=bool)
    random_part: NDArray[np.int64] = np.empty(0, np.int64)
    if n_random:
        random_part = rng.choice(n_candidates, size=n_random, replace=False).astype(np.int64)
        rest_mask[random_part] = False
    rest = np.flatnonzero(rest_mask)
    sub = _select_core(
        strategy,
        n - n_random,
        rest,
        X=X,
        proba=proba,
        strata=strata,
        prefilter_factor=prefilter_factor,
        rng=rng,
    )
    indices = np.concatenate([random_part, rest[sub.indices]]).astype(np.int64)
    scores = np.concatenate([np.full(n_random, np.nan), sub.scores])
    return Selection(indices, scores, sub.strategy, n_random=n_random)


def _select_core(
    strategy: SamplingStrategy,
    n: int,
    rows: NDArray[np.intp],
    *,
    X: NDArray[np.floating] | None,
    proba: NDArray[np.floating] | None,
    strata: NDArray[np.object_] | None,
    prefilter_factor: int,
    rng: np.random.Generator,
) -> Selection:
    """Select ``n`` positions into ``rows`` (which index the candidate arrays)."""
    if n <= 0 or len(rows) == 0:
        return Selection(np.empty(0, np.int64), np.empty(0, np.float64), strategy.value)
    if strategy is SamplingStrategy.RANDOM:
        return _random(len(rows), n, rng)
    if strategy is SamplingStrategy.STRATIFIED:
        if strata is None:
            return _random(len(rows), n, rng)
        return _stratified(strata[rows], n, rng)
    if strategy in UNCERTAINTY_STRATEGIES:
        u = None if proba is None else uncertainty(np.asarray(proba)[rows], strategy)
        if u is None or bool(np.isnan(u).all()):
            # cold start: no model has scored these items yet
            strategy = SamplingStrategy.DIVERSITY
        else:
            # items ingested after the model ran count as averagely uncertain
            u = np.where(np.isnan(u), float(np.nanmean(u)), u)
            if strategy is SamplingStrategy.HYBRID and X is not None:
                return _hybrid(np.asarray(X)[rows], u, n, prefilter_factor, rng)
            if strategy is SamplingStrategy.HYBRID:
                strategy = SamplingStrategy.MARGIN
            return _top(u, n, rng, strategy.value)
    if strategy is SamplingStrategy.DIVERSITY:
        if X is None:
            return _random(len(rows), n, rng)
        return _diversity(np.asarray(X)[rows], n, rng)
    raise ValueError(f"unknown strategy {strategy!r}")


def _random(n_rows: int, n: int, rng: np.random.Generator) -> Selection:
    idx = rng.choice(n_rows, size=min(n, n_rows), replace=False).astype(np.int64)
    return Selection(idx, np.full(len(idx), np.nan), SamplingStrategy.RANDOM.value)


def _stratified(strata: NDArray[np.object_], n: int, rng: np.random.Generator) -> Selection:
    """Round-robin over the strata in random order: rare strata get as many picks as common ones."""
    perm = rng.permutation(len(strata))
    keys = np.asarray([str(s) for s in strata[perm]], dtype=object)
    _, codes = np.unique(keys.astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, len(sorted_codes)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    # inside one round, strata come in a random (seeded) order
    stratum_order = rng.permutation(len(starts))[sorted_codes]
    pick = np.lexsort((stratum_order, rank))[:n]
    idx = perm[order[pick]].astype(np.int64)
    return Selection(idx, np.full(len(idx), np.nan), SamplingStrategy.STRATIFIED.value)


def _top(u: NDArray[np.float64], n: int, rng: np.random.Generator, name: str) -> Selection:
    """The ``n`` highest scores, ties broken at random (seeded)."""
    n = min(n, len(u))
    jitter = rng.random(len(u)) * 1e-12
    key = u + jitter
    part = np.argpartition(-key, n - 1)[:n] if n < len(u) else np.arange(len(u))
    idx = part[np.argsort(-key[part], kind="stable")].astype(np.int64)
    return Selection(idx, u[idx].astype(np.float64), name)


def _diversity(X: NDArray[np.floating], n: int, rng: np.random.Generator) -> Selection:
    rows: NDArray[np.intp] = np.arange(len(X))
    limit = max(_DIVERSITY_MAX_POINTS, 20 * n)
    if len(X) > limit:
        rows = np.sort(rng.choice(len(X), size=limit, replace=False))
    picked, dist = _nearest_to_centroids(np.asarray(X)[rows], n, None, rng)
    return Selection(rows[picked].astype(np.int64), dist, SamplingStrategy.DIVERSITY.value)


def _hybrid(
    X: NDArray[np.floating],
    u: NDArray[np.float64],
    n: int,
    prefilter_factor: int,
    rng: np.random.Generator,
) -> Selection:
    m = min(len(u), max(n, prefilter_factor * n))
    top = _top(u, m, rng, "hybrid").indices
    weights = u[top] - u[top].min() + 1e-6
    picked, _ = _nearest_to_centroids(np.asarray(X)[top], n, weights, rng)
    idx = top[picked].astype(np.int64)
    return Selection(idx, u[idx].astype(np.float64), SamplingStrategy.HYBRID.value)


def _nearest_to_centroids(
    X: NDArray[np.floating],
    k: int,
    weights: NDArray[np.float64] | None,
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """KMeans with ``k`` clusters; the point nearest to each centroid (distinct points).

    Returns positions into ``X`` and each pick's distance to its centroid. Empty clusters are
    made up with the heaviest (or random) points not picked yet.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans  # imported late: sklearn is slow to load
    from sklearn.exceptions import ConvergenceWarning

    n_points = len(X)
    if k >= n_points:
        return np.arange(n_points, dtype=np.int64), np.zeros(n_points)
    data = np.ascontiguousarray(X, dtype=np.float32)
    seed = int(rng.integers(2**31 - 1))
    model: KMeans | MiniBatchKMeans
    if n_points > _KMEANS_FULL_MAX:
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
    with warnings.catch_warnings():
        # duplicate points leave fewer distinct clusters than asked: the gap is filled below
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = model.fit_predict(data, sample_weight=weights)
    centres = model.cluster_centers_.astype(np.float32)
    dist = np.sqrt(np.maximum(((data - centres[labels]) ** 2).sum(axis=1), 0.0))
    order = np.lexsort((dist, labels))
    first = order[np.r_[True, labels[order][1:] != labels[order][:-1]]]
    picked = first.astype(np.int64)
    if len(picked) < k:
        rest_mask = np.ones(n_points, dtype=bool)
        rest_mask[picked] = False
        rest = np.flatnonzero(rest_mask)
        key = weights[rest] if weights is not None else rng.random(len(rest))
        extra = rest[np.argsort(-key, kind="stable")[: k - len(picked)]]
        picked = np.concatenate([picked, extra]).astype(np.int64)
    return picked, dist[picked].astype(np.float64)
