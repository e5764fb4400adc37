"""Inter-annotator agreement coefficients, vectorised over integer-coded ratings.

Conventions (each one is a choice other tools make differently; they are tested):

* **Percent agreement** is the mean, over items with at least two ratings, of the share of rating
  pairs that agree (Fleiss' ``P_i``). The share of unanimous items is reported beside it.
* **Cohen's kappa** is computed for every annotator pair on the items both rated; the mean is the
  unweighted mean over pairs with at least ``min_common`` shared items (Light's kappa). Weighted
  kappa (``linear``/``quadratic``) measures distance either on the **declared** scale (the class
  list in order: category 5 sits between 4 and 6 even if nobody used it) or, with
  ``scale="observed"``, by rank among the categories the pair actually used, as R ``irr`` and
  scikit-learn do. The service uses the declared scale; the reference tests use both.
* **Fleiss' kappa** and **Gwet's AC1** for a varying number of raters per item follow Gwet's
  ``irrCAC``: observed agreement over items with two or more ratings; chance agreement from the
  class shares averaged over items with at least one rating. With a constant number of raters this
  is exactly Fleiss (1971) / statsmodels.
* **Brennan-Prediger**, **Conger's kappa** and **Gwet's AC2** follow Gwet (2014), *Handbook of
  Inter-Rater Reliability*, 4th ed., ch. 2-3, and his ``irrCAC`` (tested case for case against the
  Python port): observed agreement ``p_a`` is the mean over items with two or more ratings of
  ``sum_k n_ik (n*_ik - 1) / (n_i (n_i - 1))`` with ``n*_ik = sum_l w_kl n_il`` (Fleiss' ``P_i``
  when unweighted); they differ in chance agreement. Brennan & Prediger (1981, Educ. Psychol.
  Meas. 41): ``sum(w) / q^2`` (``1/q`` unweighted: Randolph's 2005 free-marginal kappa). Conger
  (1980, Psychol. Bull. 88): the mean over ordered pairs of different annotators of
  ``sum_kl w_kl p_gk p_hl``, each annotator's class shares taken over the items they rated. AC2
  (Gwet 2008, Br. J. Math. Stat. Psychol. 61, weighted): ``sum(w) / (q (q - 1)) *
  sum_k pi_k (1 - pi_k)`` with the class shares ``pi`` of Fleiss (AC1 when unweighted).
  Agreement weights are ``w = 1 - d / max(d)`` with ``d`` the distance of weighted Cohen on the
  declared scale (``linear``: ``1 - |k-l|/(q-1)``, ``quadratic``: ``1 - (k-l)^2/(q-1)^2`` by
  position; irrCAC's weights of the same names measure numeric categories by value, which is the
  same for categories 1..q). ``q`` is the declared scale's size. With two annotators and no
  missing rating, Conger's kappa is Cohen's, weighted or not.
* **Krippendorff's alpha** uses the coincidence-matrix formulation with the nominal, ordinal,
  interval and ratio distance functions; missing values are simply absent ratings; the value
  domain is the class list (ordinal ranks come from its order). Its confidence interval is a
  percentile bootstrap over items.
* A coefficient with no defined value (one class only, no item rated twice) raises
  ``AgreementUndefined`` with the reason instead of returning NaN; ``summarize`` turns that into
  ``None`` plus the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from labelloop_qa.domain.ratings import (
    DENSE_CELLS,
    AgreementUndefined,
    FloatArray,
    IntArray,
    Ratings,
)

if TYPE_CHECKING:
    import scipy.sparse as sp

__all__ = [
    "AgreementSummary",
    "AgreementUndefined",
    "Level",
    "PairwiseKappa",
    "Weights",
    "brennan_prediger",
    "cohen_kappa",
    "cohen_kappa_pairs",
    "cohen_kappa_table",
    "conger_kappa",
    "fleiss_kappa",
    "gwet_ac1",
    "gwet_ac2",
    "krippendorff_alpha",
    "krippendorff_alpha_ci",
    "per_class_agreement",
    "percent_agreement",
    "rating_pairs",
    "summarize",
    "unanimous_share",
]

Level = Literal["nominal", "ordinal", "interval", "ratio"]
Weights = Literal["linear", "quadratic"] | None
_MAX_PAIR_CELLS = 50_000_000
"""Cap on annotator-pair x class x class cells held at once by ``cohen_kappa_pairs``."""
_DENSE_VALUES = 4
"""Alpha's item x value counts are dense up to this many times ``DENSE_CELLS`` (every other
coefficient takes the dense item x class counts anyway): 1M ratings of 5 classes in 10 MB."""
_GRAM_CELLS = 1 << 22
"""Up to this many (annotator, class)^2 cells (32 MB of counts: 400 annotators x 5 classes),
``cohen_kappa_pairs`` counts every pair's table in one dense array."""


def _counts(data: Ratings | ArrayLike) -> FloatArray:
    if isinstance(data, Ratings):
        return data.item_counts().astype(np.float64)
    counts = np.asarray(data, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError("expected an item x class count table")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    return counts


def _pairable(counts: FloatArray) -> tuple[FloatArray, FloatArray]:
    # einsum for sums along rows: numpy's axis-1 reductions over a handful of classes cost
    # several times more (here and below)
    totals: FloatArray = np.einsum("ij->i", counts)
    keep = totals >= 2
    if not keep.any():
        raise AgreementUndefined("no item has two or more ratings")
    return counts[keep], totals[keep]


def _item_agreement(counts: FloatArray) -> FloatArray:
    """Fleiss' P_i: the share of agreeing rating pairs on each (pairable) item."""
    c, n = _pairable(counts)
    result: FloatArray = (np.einsum("ij,ij->i", c, c) - n) / (n * (n - 1))
    return result


# --------------------------------------------------------------------------- raw agreement


def percent_agreement(data: Ratings | ArrayLike) -> float:
    """Mean share of agreeing rating pairs per item (items with two or more ratings)."""
    return float(_item_agreement(_counts(data)).mean())


def unanimous_share(data: Ratings | ArrayLike) -> float:
    """Share of items (with two or more ratings) on which every rating is the same."""
    c, n = _pairable(_counts(data))
    return float((c.max(axis=1) == n).mean())


def per_class_agreement(data: Ratings | ArrayLike) -> FloatArray:
    """Specific agreement per class: P(another rating is k | one rating is k); NaN if unused.

    ``sum_i n_ik (n_ik - 1) / sum_i n_ik (n_i - 1)`` over items with two or more ratings
    (Uebersax's specific agreement generalised to many raters).
    """
    c, n = _pairable(_counts(data))
    num = (c * (c - 1)).sum(axis=0)
    den = (c * (n - 1)[:, None]).sum(axis=0)
    out = np.full(c.shape[1], np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


# --------------------------------------------------------------------------- chance-corrected


def _class_shares(counts: FloatArray) -> FloatArray:
    totals = np.einsum("ij->i", counts)
    rated = totals > 0
    shares: FloatArray = np.einsum("ij,i->j", counts[rated], 1.0 / totals[rated])
    shares /= rated.sum()
    return shares


def fleiss_kappa(data: Ratings | ArrayLike) -> float:
    """Fleiss' kappa, generalised to a varying number of raters per item (see module notes)."""
    counts = _counts(data)
    p_a = float(_item_agreement(counts).mean())
    p_e = float((_class_shares(counts) ** 2).sum())
    if np.isclose(p_e, 1.0):
        raise AgreementUndefined("every rating is the same class: chance agreement is 1")
    return (p_a - p_e) / (1.0 - p_e)


def gwet_ac1(data: Ratings | ArrayLike, n_classes: int | None = None) -> float:
    """Gwet's AC1. ``n_classes`` is the size of the rating scale (default: the table's width)."""
    counts = _counts(data)
    q = counts.shape[1] if n_classes is None else n_classes
    if q < 2:
        raise AgreementUndefined("AC1 needs a scale of at least two classes")
    p_a = float(_item_agreement(counts).mean())
    pi = _class_shares(counts)
    p_e = float((pi * (1.0 - pi)).sum() / (q - 1))
    return (p_a - p_e) / (1.0 - p_e)


# --------------------------------------------------------------------------- Cohen


def _kappa_weights(k: int, weights: Weights) -> FloatArray:
    idx = np.arange(k, dtype=np.float64)
    diff = np.abs(idx[:, None] - idx[None, :])
    if weights is None:
        return (diff > 0).astype(np.float64)
    if weights == "linear":
        return diff
    if weights == "quadratic":
        return diff**2
    raise ValueError(f"unknown weights {weights!r}: use None, 'linear' or 'quadratic'")


def _kappa_from_tables(tables: FloatArray, w: FloatArray) -> FloatArray:
    """Kappa of a stack of P x K x K confusion tables; NaN where chance disagreement is 0."""
    n = tables.sum(axis=(1, 2))
    obs = tables / np.where(n > 0, n, 1.0)[:, None, None]
    exp = obs.sum(axis=2)[:, :, None] * obs.sum(axis=1)[:, None, :]
    w3 = np.broadcast_to(w, tables.shape)
    num = (w3 * obs).sum(axis=(1, 2))
    den = (w3 * exp).sum(axis=(1, 2))
    out = np.full(len(tables), np.nan)
    ok = (den > 1e-12) & (n > 0)
    out[ok] = 1.0 - num[ok] / den[ok]
    return out


def cohen_kappa_table(table: ArrayLike, weights: Weights = None) -> float:
    """Cohen's kappa of one confusion table (rows rater A, columns rater B; order = scale)."""
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError("expected a square confusion table")
    value = _kappa_from_tables(t[None], _kappa_weights(t.shape[0], weights))[0]
    if np.isnan(value):
        raise AgreementUndefined("both raters used a single, identical class: kappa is 0/0")
    return float(value)


def cohen_kappa(
    labels_a: ArrayLike,
    labels_b: ArrayLike,
    weights: Weights = None,
    classes: list[object] | None = None,
) -> float:
    """Cohen's kappa of two aligned label sequences.

    Without ``classes`` the scale is the sorted set of labels either rater used (scikit-learn's
    and R irr's convention for weights); with ``classes`` it is that declared order.
    """
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("the two label sequences must be 1-D and the same length")
    if len(a) == 0:
        raise AgreementUndefined("no item was rated by both")
    both = np.concatenate([a, b])
    if classes is None:
        domain, codes = np.unique(both, return_inverse=True)
        k = len(domain)
    else:
        r = Ratings.from_records(np.arange(2 * len(a)), np.zeros(2 * len(a)), both, classes=classes)
        codes, k = r.label, r.n_classes
    ca, cb = codes[: len(a)], codes[len(a) :]
    table = np.bincount(ca * k + cb, minlength=k * k).reshape(k, k)
    return cohen_kappa_table(table, weights)


@dataclass(frozen=True)
class PairwiseKappa:
    """Cohen's kappa of every annotator pair that shares items."""

    first: IntArray
    """Annotator index of the pair's first member (``first < second``)."""
    second: IntArray
    n_common: IntArray
    kappa: FloatArray
    """NaN where undefined (a single shared class)."""
    mean: float | None
    """Unweighted mean over defined pairs with at least ``min_common`` shared items."""

    def of_annotator(self, n_annotators: int) -> FloatArray:
        """Mean kappa of each annotator with the others (NaN if none defined)."""
        ok = ~np.isnan(self.kappa)
        idx = np.concatenate([self.first[ok], self.second[ok]])
        val = np.concatenate([self.kappa[ok], self.kappa[ok]])
        s = np.bincount(idx, weights=val, minlength=n_annotators)
        c = np.bincount(idx, minlength=n_annotators)
        out = np.full(n_annotators, np.nan)
        np.divide(s, c, out=out, where=c > 0)
        return out


def _grouped(r: Ratings) -> tuple[IntArray, IntArray, IntArray]:
    """Items, annotators and labels with each item's ratings next to each other."""
    # stable: linear on a file already grouped by item, as exports are
    order = np.argsort(r.item, kind="stable")
    return r.item[order], r.annotator[order], r.label[order]


def _offsets(item: IntArray) -> range:
    """Within-item offsets that can pair two ratings (1 to the most ratings of an item - 1)."""
    return range(1, int(np.bincount(item).max()) if len(item) else 0)


def rating_pairs(r: Ratings) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Every pair of ratings of the same item by two different annotators.

    Returns ``(annotator_1, label_1, annotator_2, label_2)`` with ``annotator_1 < annotator_2``.
    Loops over the within-item offset (at most the largest number of ratings on one item), never
    over ratings.
    """
    it, an, lb = _grouped(r)
    parts: list[tuple[IntArray, IntArray, IntArray, IntArray]] = []
    for d in _offsets(it):
        same = np.flatnonzero((it[:-d] == it[d:]) & (an[:-d] != an[d:]))
        a1, a2, l1, l2 = an[same], an[same + d], lb[same], lb[same + d]
        swap = a1 > a2
        parts.append(
            (
                np.where(swap, a2, a1),
                np.where(swap, l2, l1),
                np.where(swap, a1, a2),
                np.where(swap, l1, l2),
            )
        )
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        np.concatenate([p[3] for p in parts]),
    )


def _pair_tables(r: Ratings) -> tuple[IntArray, IntArray, FloatArray]:
    """Each annotator pair sharing items: ``first < second`` and their K x K confusion table.

    Up to ``_GRAM_CELLS``, one count per (annotator, label) x (annotator, label) cell, the
    response matrix's Gram matrix without its diagonal blocks: a bincount per within-item
    offset, no sort of the rating pairs. Beyond (thousands of annotators), the pairs that occur
    are numbered with ``np.unique``.
    """
    a, k = r.n_annotators, r.n_classes
    if (a * k) ** 2 <= _GRAM_CELLS:
        it, an, lb = _grouped(r)
        cell = an * k + lb
        gram = np.zeros((a * k) ** 2, dtype=np.int64)
        for d in _offsets(it):
            same = np.flatnonzero((it[:-d] == it[d:]) & (an[:-d] != an[d:]))
            gram += np.bincount(cell[same] * (a * k) + cell[same + d], minlength=(a * k) ** 2)
        half = gram.reshape(a * k, a * k)
        square = half + half.T  # each pair was counted in the order it came in
        blocks = square.reshape(a, k, a, k).transpose(0, 2, 1, 3)
        first, second = np.triu_indices(a, 1)
        tables = blocks[first, second]
        shared = tables.sum(axis=(1, 2)) > 0
        return (
            first[shared].astype(np.int64),
            second[shared].astype(np.int64),
            tables[shared].astype(np.float64),
        )
    a1, l1, a2, l2 = rating_pairs(r)
    uniq, inv = np.unique(a1 * a + a2, return_inverse=True)
    p = len(uniq)
    if p * k * k > _MAX_PAIR_CELLS:
        raise ValueError(
            f"{p} annotator pairs x {k}^2 classes exceed the pairwise table budget; "
            "use Fleiss' kappa or Krippendorff's alpha for this many annotators"
        )
    flat = np.bincount((inv * k + l1) * k + l2, minlength=p * k * k)
    return uniq // a, uniq % a, flat.reshape(p, k, k).astype(np.float64)


def cohen_kappa_pairs(
    r: Ratings,
    weights: Weights = None,
    *,
    scale: Literal["declared", "observed"] = "declared",
    min_common: int = 2,
) -> PairwiseKappa:
    """Cohen's kappa for every annotator pair, and their mean (Light's kappa).

    An annotator who rated an item twice contributes no pair with themself.
    """
    first, second, tables = _pair_tables(r)
    k = r.n_classes
    if scale == "observed" and weights is not None:
        used = (tables.sum(axis=2) + tables.sum(axis=1)) > 0
        rank = np.cumsum(used, axis=1).astype(np.float64)
        diff = np.abs(rank[:, :, None] - rank[:, None, :])
        w = diff if weights == "linear" else diff**2
        kappa = _kappa_from_tables(tables, w)
    else:
        kappa = _kappa_from_tables(tables, _kappa_weights(k, weights))
    n_common = tables.sum(axis=(1, 2)).astype(np.int64)
    ok = ~np.isnan(kappa) & (n_common >= min_common)
    mean = float(kappa[ok].mean()) if ok.any() else None
    return PairwiseKappa(first, second, n_common, kappa, mean)


# --------------------------------------------------------------------------- Gwet's framework


def _agreement_weights(k: int, weights: Weights) -> FloatArray:
    """Agreement weights on the declared scale: 1 for the same class, 0 between the extremes."""
    d = _kappa_weights(k, weights)
    top = float(d.max()) if d.size else 0.0
    if top == 0.0:  # a one-class (or empty) scale: every pair agrees
        return np.ones((k, k))
    w: FloatArray = 1.0 - d / top
    return w


def _weighted_agreement(counts: FloatArray, w: FloatArray) -> float:
    """Gwet's weighted ``p_a`` over items with two or more ratings (Fleiss' ``P_i`` for w = I)."""
    c, n = _pairable(counts)
    star = c @ w.T  # n*_ik = sum_l w_kl n_il: the ratings of item i that agree with class k
    return float(((c * (star - 1.0)).sum(axis=1) / (n * (n - 1.0))).mean())


def _chance_corrected(p_a: float, p_e: float, name: str) -> float:
    if np.isclose(p_e, 1.0):
        raise AgreementUndefined(f"chance agreement is 1: {name} is 0/0")
    return (p_a - p_e) / (1.0 - p_e)


def brennan_prediger(data: Ratings | ArrayLike, weights: Weights = None) -> float:
    """Brennan-Prediger's free-marginal kappa for any number of raters (Randolph's when unweighted).

    Chance agreement is that of raters choosing uniformly among the ``q`` classes of the scale
    (the table's columns: a ``Ratings``' declared classes, used or not).
    """
    counts = _counts(data)
    q = counts.shape[1]
    if q < 2:
        raise AgreementUndefined("Brennan-Prediger needs a scale of at least two classes")
    w = _agreement_weights(q, weights)
    p_e = float(w.sum()) / q**2
    return _chance_corrected(_weighted_agreement(counts, w), p_e, "Brennan-Prediger")


def gwet_ac2(data: Ratings | ArrayLike, weights: Weights) -> float:
    """Gwet's AC2: AC1 with agreement weights on the declared scale (``None``: AC1 itself)."""
    counts = _counts(data)
    q = counts.shape[1]
    if q < 2:
        raise AgreementUndefined("AC2 needs a scale of at least two classes")
    w = _agreement_weights(q, weights)
    pi = _class_shares(counts)
    p_e = float(w.sum()) / (q * (q - 1)) * float((pi * (1.0 - pi)).sum())
    return _chance_corrected(_weighted_agreement(counts, w), p_e, "AC2")


def conger_kappa(r: Ratings, weights: Weights = None) -> float:
    """Conger's kappa: Fleiss' observed agreement, Cohen-type chance agreement per annotator pair.

    Each annotator's class shares are taken over the items they rated, so missing ratings are
    allowed; an annotator with no rating takes no part.
    """
    k = r.n_classes
    w = _agreement_weights(k, weights)
    p_a = _weighted_agreement(r.item_counts().astype(np.float64), w)
    flat = np.bincount(r.annotator * k + r.label, minlength=r.n_annotators * k)
    per_annotator = flat.reshape(r.n_annotators, k).astype(np.float64)
    n_rated = per_annotator.sum(axis=1)
    shares = per_annotator[n_rated > 0] / n_rated[n_rated > 0, None]
    m = len(shares)
    if m < 2:
        raise AgreementUndefined("Conger's kappa needs two or more annotators")
    # sum over ordered pairs g != h of p_g W p_h: all pairs minus each annotator with themself
    total = shares.sum(axis=0)
    pairs = float(total @ w @ total) - float(((shares @ w) * shares).sum())
    return _chance_corrected(p_a, pairs / (m * (m - 1)), "Conger's kappa")


# --------------------------------------------------------------------------- Krippendorff


def _delta(level: Level, r: Ratings, totals: FloatArray) -> FloatArray:
    k = r.n_classes
    if level == "nominal":
        return 1.0 - np.eye(k)
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(totals)])
        lo = np.minimum.outer(np.arange(k), np.arange(k))
        hi = np.maximum.outer(np.arange(k), np.arange(k))
        between = cum[hi + 1] - cum[lo]
        d: FloatArray = (between - (totals[:, None] + totals[None, :]) / 2.0) ** 2
        np.fill_diagonal(d, 0.0)
        return d
    values = r.numeric_classes()
    if level == "interval":
        return np.subtract.outer(values, values) ** 2
    if level == "ratio":
        if (values < 0).any():
            raise ValueError("ratio level needs non-negative values")
        s = np.add.outer(values, values)
        diff = np.subtract.outer(values, values)
        out = np.zeros_like(s)
        np.divide(diff, s, out=out, where=s != 0)
        return out**2
    raise ValueError(f"unknown level {level!r}: use nominal, ordinal, interval or ratio")


def _alpha_parts(
    r: Ratings, level: Level
) -> tuple[sp.csr_matrix | FloatArray, FloatArray, FloatArray]:
    """Pairable item x value counts (dense up to ``_DENSE_VALUES`` cells), each item's
    disagreement term, and the distance matrix."""
    m: sp.csr_matrix | FloatArray
    if r.n_items * r.n_classes <= _DENSE_VALUES * DENSE_CELLS:
        # einsum, not axis-1 sums or BLAS: with a handful of values those cost several times more
        totals = r.item_totals()
        pairable = totals >= 2
        m = r.item_counts()[pairable].astype(np.float64)
        per_item = totals[pairable].astype(np.float64)
        value_totals = np.einsum("ij->j", m)
    else:
        import scipy.sparse as sp  # only past DENSE_CELLS: 70-100 ms to import

        m = sp.csr_matrix((np.ones(r.n_ratings), (r.item, r.label)), shape=(r.n_items, r.n_classes))
        m.sum_duplicates()
        m = m[np.asarray(m.sum(axis=1)).ravel() >= 2]
        per_item = np.asarray(m.sum(axis=1)).ravel()
        value_totals = np.asarray(m.sum(axis=0)).ravel()
    if m.shape[0] == 0:
        raise AgreementUndefined("no item has two or more ratings")
    delta = _delta(level, r, value_totals)
    if isinstance(m, np.ndarray):
        within = np.einsum("ij,ij->i", np.einsum("ij,jk->ik", m, delta), m)
    else:
        within = np.asarray(m.multiply(m @ delta).sum(axis=1)).ravel()
    d_item = within / (per_item - 1.0)
    return m, d_item, delta


def _alpha(d_obs: FloatArray, value_totals: FloatArray, delta: FloatArray) -> FloatArray:
    n = value_totals.sum(axis=-1)
    d_exp = np.einsum("...i,ij,...j->...", value_totals, delta, value_totals)
    out = np.full(np.shape(n), np.nan)
    ok = d_exp > 1e-12
    out[ok] = 1.0 - (n[ok] - 1.0) * d_obs[ok] / d_exp[ok]
    return out


def krippendorff_alpha(r: Ratings, level: Level = "nominal") -> float:
    """Krippendorff's alpha at the given level of measurement, with missing values."""
    m, d_item, delta = _alpha_parts(r, level)
    totals = np.einsum("ij->j", m) if isinstance(m, np.ndarray) else np.asarray(m.sum(axis=0))
    value = _alpha(np.asarray(d_item.sum()), totals.ravel(), delta)
    if np.isnan(value):
        raise AgreementUndefined("only one value occurs among items rated twice: alpha is 0/0")
    return float(value)


def krippendorff_alpha_ci(
    r: Ratings,
    level: Level = "nominal",
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for alpha, resampling items with replacement.

    Resamples in chunks so that memory stays near 4M weights whatever the number of items.
    Replicates where alpha is undefined (one value left) are dropped; if all are, raises.
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    m, d_item, delta = _alpha_parts(r, level)
    u = m.shape[0]
    # few values (classes): a dense item x value matrix makes each replicate one BLAS product
    values = m if isinstance(m, np.ndarray) else (m.toarray() if m.shape[1] <= 64 else m)
    rng = np.random.default_rng(random_state)
    chunk = max(1, min(n_boot, 4_000_000 // u))
    alphas: list[FloatArray] = []
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, u, size=(b, u))
        flat = (idx + (np.arange(b) * u)[:, None]).ravel()
        w = np.bincount(flat, minlength=b * u).reshape(b, u).astype(np.float64)
        d_obs = w @ d_item
        if isinstance(values, np.ndarray):
            totals = w @ values
        else:
            import scipy.sparse as sp  # only past DENSE_CELLS: 70-100 ms to import

            totals = np.asarray((sp.csr_matrix(w) @ values).todense())
        alphas.append(_alpha(d_obs, totals, delta))
        done += b
    values = np.concatenate(alphas)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        raise AgreementUndefined("alpha is undefined in every bootstrap replicate")
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class AgreementSummary:
    """Every coefficient for one set of ratings; ``None`` where undefined (reason in ``notes``)."""

    n_items: int
    n_annotators: int
    n_annotations: int
    n_items_multiply_rated: int
    percent_agreement: float | None
    unanimous_share: float | None
    cohen_kappa_mean: float | None
    fleiss_kappa: float | None
    krippendorff_alpha: float | None
    krippendorff_alpha_ci: tuple[float, float] | None
    gwet_ac1: float | None
    per_class_agreement: dict[str, float | None]
    level: Level
    notes: dict[str, str] = field(default_factory=dict)
    brennan_prediger: float | None = None
    conger_kappa: float | None = None
    gwet_ac2: float | None = None
    weights: Weights = None
    """The weights of the weighted coefficients (Cohen, Conger, Brennan-Prediger, AC2)."""


_T = TypeVar("_T")


def _attempt(notes: dict[str, str], name: str, fn: Callable[[], _T]) -> _T | None:
    try:
        return fn()
    except AgreementUndefined as exc:
        notes[name] = str(exc)
        return None


def summarize(
    r: Ratings,
    level: Level = "nominal",
    *,
    n_boot: int = 200,
    random_state: int = 0,
) -> AgreementSummary:
    """All coefficients at once. Undefined ones are ``None`` with the reason in ``notes``.

    Cohen's and Conger's kappa, Brennan-Prediger and Gwet's AC2 are weighted (``quadratic`` for
    interval/ratio, ``linear`` for ordinal) on the declared scale when the level is not nominal;
    at the nominal level they are unweighted and AC2 is AC1. Fleiss' kappa and AC1 are always
    the nominal coefficients. ``n_boot=0`` skips the alpha interval.
    """
    notes: dict[str, str] = {}
    counts = r.item_counts().astype(np.float64)
    weights: Weights = None
    if level == "ordinal":
        weights = "linear"
    elif level in ("interval", "ratio"):
        weights = "quadratic"
    kappas = _attempt(notes, "cohen_kappa_mean", lambda: cohen_kappa_pairs(r, weights))
    if kappas is not None and kappas.mean is None:
        notes["cohen_kappa_mean"] = "no annotator pair shares two or more items"
    specific = _attempt(notes, "per_class_agreement", lambda: per_class_agreement(counts))
    per_class: dict[str, float | None] = {}
    if specific is not None:
        per_class = {
            str(c): (None if np.isnan(v) else float(v))
            for c, v in zip(r.classes.tolist(), specific.tolist(), strict=True)
        }
    ci = None
    if n_boot > 0:
        ci = _attempt(
            notes,
            "krippendorff_alpha_ci",
            lambda: krippendorff_alpha_ci(r, level, n_boot=n_boot, random_state=random_state),
        )
    totals = r.item_totals()
    return AgreementSummary(
        n_items=int((totals > 0).sum()),
        n_annotators=len(np.unique(r.annotator)),
        n_annotations=r.n_ratings,
        n_items_multiply_rated=int((totals >= 2).sum()),
        percent_agreement=_attempt(notes, "percent_agreement", lambda: percent_agreement(counts)),
        unanimous_share=_attempt(notes, "unanimous_share", lambda: unanimous_share(counts)),
        cohen_kappa_mean=None if kappas is None else kappas.mean,
        fleiss_kappa=_attempt(notes, "fleiss_kappa", lambda: fleiss_kappa(counts)),
        krippendorff_alpha=_attempt(notes, "alpha", lambda: krippendorff_alpha(r, level)),
        krippendorff_alpha_ci=ci,
        gwet_ac1=_attempt(notes, "gwet_ac1", lambda: gwet_ac1(counts, r.n_classes)),
        per_class_agreement=per_class,
        level=level,
        notes=notes,
        brennan_prediger=_attempt(
            notes, "brennan_prediger", lambda: brennan_prediger(counts, weights)
        ),
        conger_kappa=_attempt(notes, "conger_kappa", lambda: conger_kappa(r, weights)),
        gwet_ac2=_attempt(notes, "gwet_ac2", lambda: gwet_ac2(counts, weights)),
        weights=weights,
    )
