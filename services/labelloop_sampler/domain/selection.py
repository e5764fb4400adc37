"""Which unlabeled items to label next: random, stratified, diversity, uncertainty and hybrid.

Every function works on arrays over the *candidates* (the available pool rows) and returns
positions into them. Everything is vectorised and seeded: the same inputs and ``random_state``
give the same selection, on any replica.

* ``least_confidence``, ``margin``, ``entropy``: the model's pool probabilities, most uncertain
  first (Settles 2009). A multi-label model's scores (each label's own probability,
  ``multilabel=True``) are uncertain label by label, each label a binary question
  (:func:`multilabel_uncertainty`). A sequence (NER) model's scores are already uncertainties
  per text, one column per measure (``sequences=True``, :func:`sequence_uncertainty`).
* ``diversity``: k-means on the feature vectors with ``k = n``, the item nearest to each
  centroid. It is also the cold start of every uncertainty strategy (no model yet).
* ``hybrid``: the ``prefilter_factor * n`` most uncertain items (10 times the batch by default),
  k-means weighted by uncertainty over those items only, the item nearest to each centroid
  (Zhdanov 2019, "Diverse mini-batch active learning").

k-means is scikit-learn's KMeans up to 4,000 points, its MiniBatchKMeans above, and a nested
k-means of our own for more than 200 clusters over more than 4,000 points (batches of several
hundred), where a flat k-means costs more than everything else together.

At scale the pool is only ever read, never copied: the uncertainty is computed a chunk of
probability rows at a time, and the feature matrix is indexed at the rows the clustering needs
(the prefiltered ones for hybrid, the subsample for diversity), so ``X`` may be a memory map,
or a :data:`FeatureRows` function that reads those rows only (the sampler service reads them
from the catalog). ``proba`` may be a model's whole score table, with ``proba_index`` saying
which of its rows belongs to each candidate: the candidates' rows are then never stacked either.
The picks are those of the plain whole-pool computation (``tests/unit/sampler`` holds it as a
reference and checks them, pick for pick).
"""

# ruff: noqa: N803  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from labelloop.project import SamplingStrategy

__all__ = [
    "UNCERTAINTY_STRATEGIES",
    "FeatureRows",
    "Selection",
    "multilabel_uncertainty",
    "select",
    "sequence_uncertainty",
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
"""Above this many points KMeans runs as MiniBatchKMeans (or nested, for many clusters)."""
_FLAT_MAX_CLUSTERS = 200
"""Above this many clusters (and ``_KMEANS_FULL_MAX`` points) k-means runs nested."""
_DIVERSITY_MAX_POINTS = 20_000
"""Diversity on a larger pool clusters a seeded random subsample of this size (or ``20 * n``):
all a cold start reads of the features, however large the pool."""
_DENSE_SUMS_MAX = 1 << 22
"""k-means sums clusters with a dense 0/1 matrix up to this many cells (16 MB), sparse above."""
SEQUENCE_COLUMNS = {
    SamplingStrategy.LEAST_CONFIDENCE: 0,
    SamplingStrategy.MARGIN: 1,
    SamplingStrategy.ENTROPY: 2,
    SamplingStrategy.HYBRID: 0,
}
"""Each strategy's column in a sequence model's scores (``labelloop.catalog.SEQUENCE_MEASURES``:
least confidence, margin, total token entropy)."""
_SEQUENCE_MEASURES = 3
_CHUNK_ROWS = 65_536
"""Pool-wide uncertainty runs over this many probability rows at a time (a few MB each)."""


FeatureRows = Callable[[NDArray[np.intp]], NDArray[np.floating]]
"""Features read on demand: the rows of the candidates at the given positions, in that order."""


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


def uncertainty(
    proba: NDArray[np.floating],
    method: SamplingStrategy,
    *,
    multilabel: bool = False,
    sequences: bool = False,
) -> NDArray[np.float64]:
    """Uncertainty per row of class probabilities, higher is more uncertain; NaN rows stay NaN.

    ``hybrid`` ranks by margin, which worked best on our reference runs. ``multilabel``: the
    columns are labels, each its own probability (:func:`multilabel_uncertainty`).
    """
    p = np.asarray(proba)
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-d, got shape {p.shape}")
    if sequences:
        return sequence_uncertainty(p, method)
    if multilabel:
        return multilabel_uncertainty(p, method)
    if p.shape[1] == 1:
        # a model that has seen one class is sure of it: nothing to rank by
        return np.where(np.isnan(p[:, 0]), np.nan, 0.0)
    if method is SamplingStrategy.LEAST_CONFIDENCE:
        top: NDArray[np.float64] = p.max(axis=1).astype(np.float64)
        return 1.0 - top
    if method in (SamplingStrategy.MARGIN, SamplingStrategy.HYBRID):
        return _margin(p)
    if method is SamplingStrategy.ENTROPY:
        p = p.astype(np.float64, copy=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
        ent = -(p * logs).sum(axis=1)
        return np.where(np.isnan(p).any(axis=1), np.nan, ent)
    raise ValueError(f"{method.value} is not an uncertainty strategy")


def multilabel_uncertainty(
    proba: NDArray[np.floating], method: SamplingStrategy
) -> NDArray[np.float64]:
    """Uncertainty of a multi-label model's scores (column *j*: the probability ``p_j`` that the
    item has label *j*), higher is more uncertain; a row with a NaN is NaN.

    Each label is a binary question; its uncertainty is aggregated over the labels:

    * ``least_confidence``: the mean over labels of ``min(p_j, 1 - p_j)``, one minus the
      confidence of each binary decision (the average aggregation of Esuli and Sebastiani 2009,
      "Active Learning Strategies for Multi-Label Text Classification", ECIR);
    * ``margin`` (and ``hybrid``): the mean over labels of ``1 - |2 p_j - 1|``, one minus the
      margin between a label's two answers (same source). For a binary question the margin is
      twice the least confidence, so the two rank items alike;
    * ``entropy``: the sum over labels of the binary entropies ``H(p_j)``, the entropy of the
      whole label set when labels are independent given the item, as the one-vs-rest model has
      them (Settles 2009, section 3.1, applied to the joint label vector).
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-d, got shape {p.shape}")
    if p.shape[1] == 0:
        return np.zeros(len(p))
    if method is SamplingStrategy.LEAST_CONFIDENCE:
        out: NDArray[np.float64] = np.minimum(p, 1.0 - p).mean(axis=1)
        return out
    if method in (SamplingStrategy.MARGIN, SamplingStrategy.HYBRID):
        margin: NDArray[np.float64] = (1.0 - np.abs(2.0 * p - 1.0)).mean(axis=1)
        return margin
    if method is SamplingStrategy.ENTROPY:
        with np.errstate(divide="ignore", invalid="ignore"):
            inside = (p > 0) & (p < 1)
            q = np.where(inside, p, 0.5)
            h = np.where(inside, -(q * np.log(q) + (1.0 - q) * np.log(1.0 - q)), 0.0)
        entropy: NDArray[np.float64] = h.sum(axis=1)
        return np.where(np.isnan(p).any(axis=1), np.nan, entropy)
    raise ValueError(f"{method.value} is not an uncertainty strategy")


def sequence_uncertainty(
    scores: NDArray[np.floating], method: SamplingStrategy
) -> NDArray[np.float64]:
    """A sequence model's uncertainty per text, higher is more uncertain; NaN rows stay NaN.

    The trainer scores each text from its CRF (Settles and Craven 2008, "An Analysis of Active
    Learning Strategies for Sequence Labeling Tasks"); the columns are
    ``labelloop.catalog.SEQUENCE_MEASURES``, and each strategy ranks by one:

    * ``least_confidence`` (and ``hybrid``): one minus the probability of the model's best tag
      sequence. ``hybrid`` weighs its clustering by it: it lies in [0, 1] like the margin the
      classifiers' hybrid uses, where the total token entropy is unbounded;
    * ``margin``: one minus the smallest gap between a token's two likeliest tags;
    * ``entropy``: the total token entropy, the sum of the tokens' tag entropies.
    """
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != _SEQUENCE_MEASURES:
        raise ValueError(f"a sequence model's scores have 3 columns, got shape {p.shape}")
    column = SEQUENCE_COLUMNS.get(method)
    if column is None:
        raise ValueError(f"{method.value} is not an uncertainty strategy")
    out: NDArray[np.float64] = p[:, column].copy()
    return out


def _margin(p: NDArray[np.floating]) -> NDArray[np.float64]:
    """``1 - (top1 - top2)`` per row, with the top two found column by column.

    Sorting each row costs far more than a running maximum and second maximum over a few
    columns; the two values are the same, so the margin is the same to the last bit. A row with
    a NaN comes out NaN here and is redone with the sort, which orders a NaN last.
    """
    first: NDArray[np.float64] = p[:, 0].astype(np.float64)
    second = np.full(len(p), -np.inf)
    for j in range(1, p.shape[1]):
        column = p[:, j].astype(np.float64, copy=False)
        np.maximum(second, np.minimum(first, column), out=second)
        np.maximum(first, column, out=first)
    out: NDArray[np.float64] = 1.0 - (first - second)
    odd = np.flatnonzero(np.isnan(out))
    if len(odd):
        top2 = -np.partition(-p[odd].astype(np.float64), 1, axis=1)[:, :2]
        out[odd] = 1.0 - (top2[:, 0] - top2[:, 1])
    return out


def _pool_uncertainty(
    proba: NDArray[np.floating],
    rows: NDArray[np.intp],
    method: SamplingStrategy,
    multilabel: bool = False,
    sequences: bool = False,
    index: NDArray[np.intp] | None = None,
) -> NDArray[np.float64]:
    """``uncertainty(proba[rows])`` a chunk of rows at a time: the pool is read, never copied.

    With ``index``, candidate ``r``'s probabilities are ``proba[index[r]]``, a NaN row where
    ``index[r]`` is negative (an item the model did not score), as ``pool.proba_rows`` builds them.
    """
    p = np.asarray(proba)
    contiguous = index is None and rows[-1] == len(rows) - 1  # rows 0, 1, ..., len - 1
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, len(rows))
        if index is not None:
            at = index[rows[start:stop]]
            known = at >= 0
            if known.all():
                chunk = p[at].astype(np.float64, copy=False)
            else:
                chunk = np.full((len(at), p.shape[1]), np.nan)
                chunk[known] = p[at[known]]
        else:
            chunk = p[start:stop] if contiguous else p[rows[start:stop]]
        out[start:stop] = uncertainty(chunk, method, multilabel=multilabel, sequences=sequences)
    return out


def _take(X: NDArray[np.floating] | FeatureRows, at: NDArray[np.intp]) -> NDArray[np.floating]:
    """The feature rows of the candidates at ``at``: indexed, or read on demand."""
    if not isinstance(X, np.ndarray) and callable(X):
        return np.asarray(X(at))
    return np.asarray(X)[at]


def select(
    strategy: SamplingStrategy,
    n: int,
    *,
    n_candidates: int,
    X: NDArray[np.floating] | FeatureRows | None = None,
    proba: NDArray[np.floating] | None = None,
    proba_index: NDArray[np.intp] | None = None,
    strata: NDArray[np.object_] | None = None,
    random_fraction: float = 0.0,
    prefilter_factor: int = 10,
    random_state: int = 0,
    multilabel: bool = False,
    sequences: bool = False,
) -> Selection:
    """Choose ``n`` of ``n_candidates`` items.

    ``X`` (features, one row per candidate, or a :data:`FeatureRows` reading the rows asked for)
    drives diversity; ``proba`` (the latest model's class probabilities, NaN rows for items it
    has not scored) drives the uncertainty strategies; with ``proba_index`` (one entry per
    candidate: its row of ``proba``, negative for an item the model did not score) ``proba`` is
    the model's whole table, and the picks are those of the candidates' rows stacked;
    ``strata`` (one value per candidate) drives the stratified strategy. A ``random_fraction`` of
    the ``n`` is drawn at random first, as a control slice. ``multilabel``: ``proba`` holds a
    multi-label model's per-label probabilities (:func:`multilabel_uncertainty`); ``sequences``:
    ``proba`` holds a sequence model's uncertainties (:func:`sequence_uncertainty`).
    """
    rng = np.random.default_rng(random_state)
    n = max(0, min(n, n_candidates))
    empty = Selection(np.empty(0, np.int64), np.empty(0, np.float64), strategy.value)
    if n == 0:
        return empty
    n_random = round(n * random_fraction)
    if strategy is SamplingStrategy.RANDOM and not n_random:
        # what the path below picks, without an index of every candidate (10M: 80 MB a cut)
        return _random(n_candidates, n, rng)
    random_part: NDArray[np.int64] = np.empty(0, np.int64)
    if n_random:
        random_part = rng.choice(n_candidates, size=n_random, replace=False).astype(np.int64)
        rest_mask = np.ones(n_candidates, dtype=bool)
        rest_mask[random_part] = False
        rest = np.flatnonzero(rest_mask)
    else:  # the same positions, without scanning a mask of the whole pool (10M: 0.1 s a cut)
        rest = np.arange(n_candidates, dtype=np.intp)
    sub = _select_core(
        strategy,
        n - n_random,
        rest,
        X=X,
        proba=proba,
        proba_index=proba_index,
        strata=strata,
        prefilter_factor=prefilter_factor,
        rng=rng,
        multilabel=multilabel,
        sequences=sequences,
    )
    indices = np.concatenate([random_part, rest[sub.indices]]).astype(np.int64)
    scores = np.concatenate([np.full(n_random, np.nan), sub.scores])
    return Selection(indices, scores, sub.strategy, n_random=n_random)


def _select_core(
    strategy: SamplingStrategy,
    n: int,
    rows: NDArray[np.intp],
    *,
    X: NDArray[np.floating] | FeatureRows | None,
    proba: NDArray[np.floating] | None,
    strata: NDArray[np.object_] | None,
    prefilter_factor: int,
    rng: np.random.Generator,
    multilabel: bool = False,
    sequences: bool = False,
    proba_index: NDArray[np.intp] | None = None,
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
        u = (
            np.empty(0)
            if proba is None
            else _pool_uncertainty(proba, rows, strategy, multilabel, sequences, proba_index)
        )
        unscored = np.isnan(u)
        if len(u) and not unscored.all():
            if unscored.any():
                # items ingested after the model ran count as averagely uncertain
                u[unscored] = float(np.nanmean(u))
            if strategy is SamplingStrategy.HYBRID and X is not None:
                return _hybrid(X, rows, u, n, prefilter_factor, rng)
            if strategy is SamplingStrategy.HYBRID:
                strategy = SamplingStrategy.MARGIN
            return _top(u, n, rng, strategy.value)
        # cold start: no model has scored these items yet
        strategy = SamplingStrategy.DIVERSITY
    if strategy is SamplingStrategy.DIVERSITY:
        if X is None:
            return _random(len(rows), n, rng)
        return _diversity(X, rows, n, rng)
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
    # key = -(u + jitter), built in one buffer: the pool's scores are not copied again
    key = rng.random(len(u))
    key *= 1e-12
    key += u
    np.negative(key, out=key)
    part = np.argpartition(key, n - 1)[:n] if n < len(u) else np.arange(len(u))
    idx = part[np.argsort(key[part], kind="stable")].astype(np.int64)
    return Selection(idx, u[idx].astype(np.float64), name)


def _diversity(
    X: NDArray[np.floating] | FeatureRows,
    rows: NDArray[np.intp],
    n: int,
    rng: np.random.Generator,
) -> Selection:
    sub: NDArray[np.intp] = np.arange(len(rows))
    limit = max(_DIVERSITY_MAX_POINTS, 20 * n)
    if len(rows) > limit:
        sub = np.sort(rng.choice(len(rows), size=limit, replace=False))
    picked, dist = _nearest_to_centroids(_take(X, rows[sub]), n, None, rng)
    return Selection(sub[picked].astype(np.int64), dist, SamplingStrategy.DIVERSITY.value)


def _hybrid(
    X: NDArray[np.floating] | FeatureRows,
    rows: NDArray[np.intp],
    u: NDArray[np.float64],
    n: int,
    prefilter_factor: int,
    rng: np.random.Generator,
) -> Selection:
    """Prefilter by uncertainty first; only the prefiltered rows of ``X`` are ever read."""
    m = min(len(u), max(n, prefilter_factor * n))
    top = _top(u, m, rng, "hybrid").indices
    weights = u[top] - u[top].min() + 1e-6
    picked, _ = _nearest_to_centroids(_take(X, rows[top]), n, weights, rng)
    idx = top[picked].astype(np.int64)
    return Selection(idx, u[idx].astype(np.float64), SamplingStrategy.HYBRID.value)


def _nearest_to_centroids(
    X: NDArray[np.floating],
    k: int,
    weights: NDArray[np.float64] | None,
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """k-means with ``k`` clusters; the point nearest to each centroid (distinct points).

    KMeans up to ``_KMEANS_FULL_MAX`` points; above, MiniBatchKMeans, or the nested k-means
    when there are also more than ``_FLAT_MAX_CLUSTERS`` clusters. Returns positions into ``X``
    and each pick's distance to its centroid. Empty clusters are made up with the heaviest (or
    random) points not picked yet.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans  # imported late: sklearn is slow to load
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    n_points = len(X)
    if k >= n_points:
        return np.arange(n_points, dtype=np.int64), np.zeros(n_points)
    data = np.ascontiguousarray(X, dtype=np.float32)
    seed = int(rng.integers(2**31 - 1))
    # One thread: these problems are small by construction, and OpenMP or BLAS workers spinning
    # against other processes on a busy 2-core host made them 3 to 50 times slower, not faster.
    # It also keeps the centres, to the last bit, independent of the host's cores.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # duplicate points leave fewer distinct clusters than asked: the gap is filled below
        warnings.simplefilter("ignore", ConvergenceWarning)
        if n_points > _KMEANS_FULL_MAX and k > _FLAT_MAX_CLUSTERS:
            ones = np.ones(n_points)
            centres, labels = _nested_kmeans(
                data, k, ones if weights is None else weights, np.random.default_rng(seed)
            )
        else:
            model: KMeans | MiniBatchKMeans
            if n_points > _KMEANS_FULL_MAX:
                model = MiniBatchKMeans(
                    n_clusters=k,
                    random_state=seed,
                    batch_size=max(1024, 3 * k),
                    n_init=1,
                    max_iter=20,
                    init="k-means++",
                )
            else:
                model = KMeans(n_clusters=k, n_init=1, max_iter=50, random_state=seed)
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


def _nested_kmeans(
    X: NDArray[np.float32], k: int, weights: NDArray[np.float64], rng: np.random.Generator
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Weighted k-means in two levels: ``ceil(sqrt(k))`` groups, then k-means inside each group
    with its share of the ``k`` clusters (by weight; at least one, at most one per point).

    Flat k-means compares every point with all ``k`` centres on every pass; here a point meets
    the ``sqrt(k)`` group centres, then the about ``sqrt(k)`` centres of its own group: for 1,000
    clusters, 63 comparisons instead of 1,000. Its picks cover the points as well as
    MiniBatchKMeans' did, within 1% on the benchmark's pool of noise and much better on
    clustered data (``bench/bench_sampler.py``, ``tests/unit/sampler``). Returns the centres
    and each point's cluster.
    """
    n_groups = math.isqrt(k - 1) + 1
    _, group = _weighted_lloyd(X, weights, n_groups, rng)
    size = np.bincount(group, minlength=n_groups)
    mass = np.bincount(group, weights=weights, minlength=n_groups).astype(np.float64)
    share = _apportion(mass, size, k)
    members = np.argsort(group, kind="stable")
    bounds = np.r_[0, np.cumsum(size)]
    centres = np.empty((k, X.shape[1]), dtype=np.float32)
    labels = np.empty(len(X), dtype=np.int64)
    first = 0
    for g in np.flatnonzero(share):
        rows = members[bounds[g] : bounds[g + 1]]
        n_g = int(share[g])
        if n_g == len(rows):
            centres[first : first + n_g], labels[rows] = X[rows], first + np.arange(n_g)
        else:
            inner, inner_labels = _weighted_lloyd(X[rows], weights[rows], n_g, rng)
            centres[first : first + n_g], labels[rows] = inner, first + inner_labels
        first += n_g
    return centres, labels


def _apportion(mass: NDArray[np.float64], size: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    """``k`` seats over groups in proportion to ``mass``: one per non-empty group, at most
    ``size``; the remainders go to the largest fractions (needs ``size.sum() >= k``)."""
    share = (size > 0).astype(np.int64)
    while (left := k - int(share.sum())) > 0:
        quota = np.where(share < size, mass, 0.0)
        quota *= left / quota.sum()
        add = np.floor(quota).astype(np.int64)
        if not add.any():
            add[np.argsort(-quota, kind="stable")[:left]] = 1
        share += np.minimum(add, size - share)
    return share


def _weighted_lloyd(
    X: NDArray[np.float32],
    weights: NDArray[np.float64],
    k: int,
    rng: np.random.Generator,
    max_iter: int = 20,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Lloyd's k-means with sample weights, started by k-means++: the centres and each point's
    cluster (a cluster left empty keeps its centre)."""
    centres = X[_kmeans_plus_plus(X, weights, k, rng)]
    weighted = X * weights[:, None].astype(np.float32)
    labels = _closest(X, centres)
    for _ in range(max_iter):
        mass = np.bincount(labels, weights=weights, minlength=k)
        kept = mass > 0
        centres[kept] = _cluster_sums(weighted, labels, k)[kept] / mass[kept, None]
        moved = _closest(X, centres)
        if np.array_equal(moved, labels):
            break
        labels = moved
    return centres, labels


def _cluster_sums(
    rows: NDArray[np.float32], labels: NDArray[np.int64], k: int
) -> NDArray[np.float32]:
    """The sum of each cluster's rows, as a product with the 0/1 cluster-by-point matrix: dense
    while it is small (the groups of the nested k-means), sparse above."""
    n = len(labels)
    if k * n <= _DENSE_SUMS_MAX:
        members = np.zeros((k, n), dtype=np.float32)
        members[labels, np.arange(n)] = 1.0
        return members @ rows
    from scipy.sparse import csc_array

    ones = np.ones(n, dtype=np.float32)
    return np.asarray(csc_array((ones, labels, np.arange(n + 1)), shape=(k, n)) @ rows)


def _kmeans_plus_plus(
    X: NDArray[np.float32], weights: NDArray[np.float64], k: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """``k`` starting points, each drawn with probability weight times squared distance to the
    nearest point drawn before (Arthur and Vassilvitskii 2007); by weight alone at first, or
    when only duplicates of drawn points are left."""
    chosen = np.empty(k, dtype=np.int64)
    norms = np.einsum("ij,ij->i", X, X)
    gap = np.full(len(X), np.inf)
    mass = weights
    for i in range(k):
        cumulative = np.cumsum(mass)
        if not cumulative[-1] > 0:
            cumulative = np.cumsum(weights)
        at = np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")
        chosen[i] = min(int(at), len(X) - 1)
        point = X[chosen[i]]
        np.minimum(gap, np.maximum(norms - 2.0 * (X @ point) + norms[chosen[i]], 0.0), out=gap)
        gap[chosen[i]] = 0.0  # not left to float32 rounding
        mass = weights * gap
    return chosen


def _closest(X: NDArray[np.float32], centres: NDArray[np.float32]) -> NDArray[np.int64]:
    """Each point's nearest centre: ``|x - c|^2`` less ``|x|^2``, which is the same for all c."""
    d = X @ centres.T
    d *= -2.0
    d += np.einsum("ij,ij->i", centres, centres)
    return np.asarray(d.argmin(axis=1), dtype=np.int64)
