"""Consensus labels from redundant annotations: majority vote and Dawid-Skene family.

Every method returns a ``Consensus``: a posterior over classes for each item, its argmax and the
posterior confidence, plus what the method learned about the annotators.

* **Majority vote.** Confidence is the winning vote share. *Tie rule (deterministic):* among the
  tied classes the one with the most votes over the whole input wins (the better supported
  class); if still tied, the one listed first in ``classes``. The posterior splits evenly among
  the tied classes.
* **Dawid-Skene** (1979): EM over one full confusion matrix per annotator, vectorised as two
  products per iteration with the item x (annotator, class) count matrix. Initialised from
  per-item vote shares. *Stopping rule:* EM stops when the log-likelihood of the ratings changes
  by at most ``tol`` (1e-7) times its size in one iteration. crowd-kit stops on an absolute
  change of 1e-5 in the lower bound per rating (about 6e-6 relative): a looser rule. A relative
  rule does not tighten with the number of ratings as the parameter rule below does (a sum over
  every cell of every confusion matrix): on the benchmark's million ratings it stops after 17
  iterations where that one takes 82, with the same labels on 99.998% of the items.
  ``stop="parameters"`` stops when the class marginals and error rates move less than ``tol``
  (1e-5, summed absolute change), the reference implementation's rule (dallascard/dawid_skene):
  it reproduces that implementation's iteration count on the 1979 anaesthesia data. Where EM
  converges slowly (hundreds of iterations, both rules stop short of the fixed point) the two
  rules can stop at different labels.
  ``prior_counts`` adds Dirichlet pseudo-counts to the confusion matrices: the service passes
  each annotator's cumulative history there, so a batch of 20 items is scored with everything
  known about its annotators.
* **One-coin Dawid-Skene**: one accuracy per annotator, errors spread evenly over other classes.
  Fewer parameters: better with few labels per annotator and with uniform spammers.
* **Shrunk Dawid-Skene**: full confusion matrices with a Dirichlet prior centred on each
  annotator's own one-coin profile (their accuracy on the diagonal, errors spread evenly), worth
  ``shrink`` pseudo-ratings per true class. With few ratings an annotator looks one-coin; with
  many, their systematic confusions show. It is what keeps a handful of gold items from turning
  a unanimous crew's answer around: full matrices fitted to four ratings would.
* **Gold-aware**: items with a known answer keep a one-hot posterior throughout EM, which anchors
  every annotator's confusion matrix (and so resolves label switching).
* ``auto`` picks one of these by held-out likelihood where the data allow (see
  ``choose_method``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from labelloop_qa.domain.ratings import FloatArray, IntArray, Ratings

if TYPE_CHECKING:
    import scipy.sparse as sp

__all__ = [
    "METHODS",
    "Consensus",
    "Method",
    "aggregate",
    "choose_method",
    "dawid_skene",
    "held_out_log_likelihood",
    "majority_vote",
    "one_coin_dawid_skene",
]

Method = Literal[
    "majority", "dawid-skene", "shrunk-dawid-skene", "one-coin", "gold-dawid-skene", "auto"
]
METHODS: tuple[str, ...] = (
    "majority",
    "dawid-skene",
    "shrunk-dawid-skene",
    "one-coin",
    "gold-dawid-skene",
    "auto",
)
SHRINK = 5.0
"""Pseudo-ratings per true class that pull a shrunk Dawid-Skene matrix to its one-coin profile
(chosen on the consensus benchmark's crews: confusers lose at 20, spammers gain up to 50)."""
_TINY = 1e-300
_DENSE_RESPONSE = 1 << 16
"""Response matrices of up to this many cells (512 KB) are dense in EM, larger ones sparse."""
_SAFE = 1e-280
"""Below this a row's sum of exponentials is redone with its maximum subtracted."""
Stop = Literal["likelihood", "parameters"]
TOLERANCE: dict[str, float] = {"likelihood": 1e-7, "parameters": 1e-5}
"""Default ``tol`` of each stopping rule (see ``dawid_skene``)."""


@dataclass(frozen=True, eq=False)
class Consensus:
    """Consensus over ``Ratings.item_ids`` (items without ratings get label -1, NaN posterior)."""

    method: str
    posterior: FloatArray
    """Items x classes, rows sum to 1."""
    label: IntArray
    confidence: FloatArray
    class_marginals: FloatArray
    confusion: FloatArray | None = None
    """Annotators x true class x given class, rows sum to 1 (Dawid-Skene family)."""
    accuracy: FloatArray | None = None
    """Estimated probability that each annotator is right (under the class marginals)."""
    n_iter: int = 0
    converged: bool = True
    log_likelihood: float | None = None


def _known_array(r: Ratings, known: IntArray | None) -> IntArray:
    if known is None:
        return np.full(r.n_items, -1, dtype=np.int64)
    k = np.asarray(known, dtype=np.int64)
    if k.shape != (r.n_items,):
        raise ValueError("known labels must have one entry per item (-1 where unknown)")
    if (k >= r.n_classes).any():
        raise ValueError("a known label is outside the class domain")
    return k


def _finish(
    method: str, r: Ratings, post: FloatArray, rated: NDArray[np.bool_], **extra: object
) -> Consensus:
    full = np.full((r.n_items, r.n_classes), np.nan)
    full[rated] = post
    label = np.full(r.n_items, -1, dtype=np.int64)
    conf = np.full(r.n_items, np.nan)
    label[rated] = _argmax_first(post)
    conf[rated] = post[np.arange(len(post)), label[rated]]
    marg = extra.pop("class_marginals", None)
    if marg is None:
        marg = post.mean(axis=0) if len(post) else np.full(r.n_classes, 1.0 / max(r.n_classes, 1))
    return Consensus(method, full, label, conf, np.asarray(marg), **extra)  # type: ignore[arg-type]


def _empty(r: Ratings, method: str) -> Consensus:
    """No ratings at all: every item unlabelled."""
    k = r.n_classes
    return Consensus(
        method,
        np.full((r.n_items, k), np.nan),
        np.full(r.n_items, -1, dtype=np.int64),
        np.full(r.n_items, np.nan),
        np.full(k, 1.0 / k) if k else np.zeros(0),
    )


def _argmax_first(p: FloatArray) -> IntArray:
    """Argmax that resolves (near-)exact ties to the lowest index, reproducibly."""
    if p.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    top = p.max(axis=1, keepdims=True)
    winner: IntArray = np.argmax(p >= top - 1e-12, axis=1).astype(np.int64)
    return winner


# --------------------------------------------------------------------------- majority vote


def majority_vote(r: Ratings, known: IntArray | None = None) -> Consensus:
    """Majority vote with the documented tie rule; known (gold) items keep their answer."""
    if r.n_ratings == 0:
        return _empty(r, "majority")
    counts = r.item_counts().astype(np.float64)
    totals = counts.sum(axis=1)
    rated = totals > 0
    c = counts[rated]
    top = c.max(axis=1, keepdims=True)
    tied = c == top
    post = tied / tied.sum(axis=1, keepdims=True)
    prevalence = counts.sum(axis=0)
    # rank classes: more total votes first, then declared order; winner = best-ranked tied class
    rank = np.lexsort((np.arange(r.n_classes), -prevalence))
    order = np.empty(r.n_classes, dtype=np.int64)
    order[rank] = np.arange(r.n_classes)
    masked = np.where(tied, order[None, :], r.n_classes)
    winner = np.argmin(masked, axis=1)
    share = top[:, 0] / totals[rated]
    k = _known_array(r, known)[rated]
    gold = k >= 0
    post[gold] = np.eye(r.n_classes)[k[gold]]
    winner[gold] = k[gold]
    share[gold] = 1.0
    full = np.full((r.n_items, r.n_classes), np.nan)
    full[rated] = post
    label = np.full(r.n_items, -1, dtype=np.int64)
    label[rated] = winner
    conf = np.full(r.n_items, np.nan)
    conf[rated] = share
    marg = prevalence / prevalence.sum() if prevalence.sum() else prevalence
    return Consensus("majority", full, label, conf, marg)


# --------------------------------------------------------------------------- Dawid-Skene


def _log(x: FloatArray) -> FloatArray:
    out: FloatArray = np.log(np.maximum(x, _TINY))
    return out


def _softmax_rows(logp: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Row-wise softmax of log-probabilities (all <= 0) and each row's log normaliser.

    No per-row maximum is subtracted: with a handful of classes numpy's reductions along rows
    cost more than all the arithmetic, and ``exp`` of a log-probability cannot overflow. Rows
    whose every class underflows (ratings the model finds all but impossible) are redone with
    their maximum subtracted.
    """
    post: FloatArray = np.exp(logp)
    total: FloatArray = np.einsum("ij->i", post)  # not BLAS: threads are no help at this size
    low = np.flatnonzero(total < _SAFE)
    if len(low):
        top = logp[low].max(axis=1, keepdims=True)
        shifted = np.exp(logp[low] - top)
        post[low] = shifted
        total[low] = shifted.sum(axis=1)
    post /= total[:, None]
    norm = np.log(total)
    if len(low):
        norm[low] += top[:, 0]
    return post, norm


def _stopped(
    stop: str,
    tol: float,
    loglik: float,
    previous: float | None,
    params: tuple[FloatArray, FloatArray],
    old: tuple[FloatArray, FloatArray] | None,
) -> bool:
    """Whether EM has converged by the chosen rule (described in ``dawid_skene``)."""
    if stop == "likelihood":
        return previous is not None and abs(loglik - previous) <= tol * abs(loglik)
    return (
        old is not None
        and float(np.abs(params[0] - old[0]).sum()) < tol
        and float(np.abs(params[1] - old[1]).sum()) < tol
    )


def _tolerance(stop: str, tol: float | None) -> float:
    """The rule's default ``tol`` unless one is given; an unknown rule is refused."""
    if stop not in TOLERANCE:
        raise ValueError(f"unknown stopping rule {stop!r}: use 'likelihood' or 'parameters'")
    return TOLERANCE[stop] if tol is None else tol


@dataclass(frozen=True)
class _Fit:
    post: FloatArray
    class_marginals: FloatArray
    confusion: FloatArray
    params: FloatArray
    log_likelihood: float
    n_iter: int
    converged: bool


def _em(
    resp: sp.csr_matrix | FloatArray,
    post: FloatArray,
    gold: tuple[IntArray, FloatArray] | None,
    m_step: Callable[[FloatArray], tuple[FloatArray, FloatArray]],
    *,
    max_iter: int,
    tol: float,
    stop: Stop,
) -> _Fit:
    """EM over the item x (annotator, class) response matrix, from an initial posterior.

    ``m_step`` maps the expected counts (annotators x true x given) to the confusion matrices
    and the parameters the ``parameters`` rule watches. ``gold`` (rows, one-hot posteriors)
    is clamped after every E-step. Both steps are one product with the response matrix each.
    """
    if max_iter < 1:
        raise ValueError("max_iter must be at least 1")
    n, k = post.shape
    a = resp.shape[1] // k
    resp_t = resp.T  # a transposed view: scattering into a small result beats a CSR copy
    previous: float | None = None
    old: tuple[FloatArray, FloatArray] | None = None
    for n_iter in range(1, max_iter + 1):
        # M-step: class marginals and error rates confusion[a, true, given]
        marg: FloatArray = np.einsum("ij->j", post) / n
        soft = np.asarray(resp_t @ post).reshape(a, k, k).transpose(0, 2, 1)
        confusion, params = m_step(soft)
        # E-step
        log_err = _log(confusion).transpose(0, 2, 1).reshape(a * k, k)
        logp = np.asarray(resp @ log_err)
        logp += _log(marg)
        post, norm = _softmax_rows(logp)
        if gold is not None:
            post[gold[0]] = gold[1]
        loglik = float(norm.sum())
        if _stopped(stop, tol, loglik, previous, (marg, params), old):
            return _Fit(post, marg, confusion, params, loglik, n_iter, True)
        previous, old = loglik, (marg, params)
    return _Fit(post, marg, confusion, params, loglik, max_iter, False)


def _response(r: Ratings) -> sp.csr_matrix | FloatArray:
    """The item x (annotator, class) counts EM multiplies by, twice per iteration.

    Dense only for a batch (up to ``_DENSE_RESPONSE`` cells), where numpy's products take
    microseconds and scipy.sparse's bookkeeping ten times that. Beyond, a dense matrix is
    mostly zeros (each item has a few of the annotators' columns) and its products go to a
    threaded BLAS: at 10,000 ratings a sparse product takes 0.03 ms, the dense one 0.5 ms on
    one core and up to 16 ms when the cores are busy.
    """
    cells = r.n_items * r.n_annotators * r.n_classes
    if cells <= _DENSE_RESPONSE:
        return r.response_matrix()
    import scipy.sparse as sp  # only past a batch: 70-100 ms to import

    shape = (r.n_items, r.n_annotators * r.n_classes)
    cols = r.annotator * r.n_classes + r.label
    m = sp.csr_matrix((np.ones(r.n_ratings), (r.item, cols)), shape=shape)
    m.sum_duplicates()
    return m


def _start(
    r: Ratings, known: IntArray | None
) -> tuple[
    NDArray[np.bool_], sp.csr_matrix | FloatArray, FloatArray, tuple[IntArray, FloatArray] | None
]:
    """Rated items, their response matrix, vote shares (EM's start) and the clamped gold rows."""
    k_known = _known_array(r, known)
    rated = r.item_totals() > 0
    resp = _response(r)
    counts = r.item_counts()
    kk = k_known
    if not rated.all():
        resp, counts, kk = resp[rated], counts[rated], k_known[rated]
    post = counts.astype(np.float64)
    post /= post.sum(axis=1, keepdims=True)
    rows = np.flatnonzero(kk >= 0)
    gold = None
    if len(rows):
        gold = (rows, np.eye(r.n_classes)[kk[rows]])
        post[rows] = gold[1]
    return rated, resp, post, gold


def dawid_skene(
    r: Ratings,
    *,
    known: IntArray | None = None,
    prior_counts: FloatArray | None = None,
    smoothing: float = 0.0,
    shrink: float = 0.0,
    max_iter: int = 100,
    tol: float | None = None,
    stop: Stop = "likelihood",
) -> Consensus:
    """Dawid-Skene EM. ``known`` (-1 = unknown) anchors gold items (the gold-aware variant).

    ``prior_counts`` (annotators x true x given) and ``smoothing`` (added to every cell) are
    Dirichlet pseudo-counts on the confusion matrices; with neither, this is the plain MLE.
    ``shrink`` adds, per true class, that many pseudo-ratings shaped like the annotator's
    one-coin profile (re-estimated each step): the shrunk variant.

    Stopping rules: ``likelihood`` (the default) stops when the log-likelihood of the ratings
    changes by at most ``tol`` times its size between two iterations; ``parameters`` when the
    class marginals and the error rates each move less than ``tol`` (summed absolute change),
    the reference implementation's rule. A negative ``tol`` runs ``max_iter`` iterations.
    """
    if r.n_ratings == 0:
        return _empty(r, "dawid-skene")
    a, k = r.n_annotators, r.n_classes
    eye = np.eye(k)
    pseudo: FloatArray = np.full((a, k, k), float(smoothing))
    if prior_counts is not None:
        if prior_counts.shape != (a, k, k):
            raise ValueError(f"prior_counts must have shape {(a, k, k)}")
        pseudo = pseudo + prior_counts
    rated, resp, post, gold = _start(r, known)

    def m_step(soft: FloatArray) -> tuple[FloatArray, FloatArray]:
        soft = soft + pseudo
        if shrink > 0:
            total = soft.sum(axis=(1, 2))
            right = np.divide(
                np.einsum("ajj->a", soft), total, out=np.full(a, 1.0 / k), where=total > 0
            )
            off = (1 - right) / max(k - 1, 1)
            soft = soft + shrink * (right[:, None, None] * eye + off[:, None, None] * (1 - eye))
        sums = soft.sum(axis=2, keepdims=True)
        err = np.divide(soft, sums, out=np.zeros_like(soft), where=sums > 0)
        return err, err

    tol = _tolerance(stop, tol)
    fit = _em(resp, post, gold, m_step, max_iter=max_iter, tol=tol, stop=stop)
    accuracy = np.einsum("j,ajj->a", fit.class_marginals, fit.confusion)
    method = "gold-dawid-skene" if gold is not None else "dawid-skene"
    if shrink > 0:
        method = "shrunk-dawid-skene"
    return _finish(
        method,
        r,
        fit.post,
        rated,
        class_marginals=fit.class_marginals,
        confusion=fit.confusion,
        accuracy=accuracy,
        n_iter=fit.n_iter,
        converged=fit.converged,
        log_likelihood=fit.log_likelihood,
    )


def one_coin_dawid_skene(
    r: Ratings,
    *,
    known: IntArray | None = None,
    prior_correct: FloatArray | None = None,
    prior_total: FloatArray | None = None,
    smoothing: float = 0.0,
    max_iter: int = 100,
    tol: float | None = None,
    stop: Stop = "likelihood",
) -> Consensus:
    """One-coin Dawid-Skene: annotator ``a`` is right with probability ``p_a``, else uniform.

    ``prior_correct``/``prior_total`` are pseudo-counts per annotator (Beta prior on ``p_a``);
    ``smoothing`` adds ``smoothing`` correct out of ``smoothing * K`` to everyone. Stopping
    rules as in ``dawid_skene`` (``parameters`` watches the marginals and the accuracies).
    """
    if r.n_ratings == 0:
        return _empty(r, "one-coin")
    a, k = r.n_annotators, r.n_classes
    if k < 2:
        return majority_vote(r, known)
    eye = np.eye(k)
    n_per = np.bincount(r.annotator, minlength=a).astype(np.float64)
    pc = np.zeros(a) if prior_correct is None else np.asarray(prior_correct, dtype=np.float64)
    pt = np.zeros(a) if prior_total is None else np.asarray(prior_total, dtype=np.float64)
    pc, pt = pc + smoothing, pt + smoothing * k
    rated, resp, post, gold = _start(r, known)

    def m_step(soft: FloatArray) -> tuple[FloatArray, FloatArray]:
        hit = np.einsum("ajj->a", soft)
        skill = np.divide(hit + pc, n_per + pt, out=np.full(a, 1.0 / k), where=(n_per + pt) > 0)
        skill = np.clip(skill, 1e-9, 1 - 1e-9)
        off = (1 - skill) / (k - 1)
        confusion = off[:, None, None] * (1 - eye)[None] + skill[:, None, None] * eye[None]
        return confusion, skill

    tol = _tolerance(stop, tol)
    fit = _em(resp, post, gold, m_step, max_iter=max_iter, tol=tol, stop=stop)
    return _finish(
        "one-coin",
        r,
        fit.post,
        rated,
        class_marginals=fit.class_marginals,
        confusion=fit.confusion,
        accuracy=fit.params,
        n_iter=fit.n_iter,
        converged=fit.converged,
        log_likelihood=fit.log_likelihood,
    )


# --------------------------------------------------------------------------- choice


MIN_RATINGS_TO_CHOOSE = 200
"""Below this many ratings a held-out comparison is noise: ``auto`` takes the shrunk model."""


def choose_method(
    r: Ratings,
    known: IntArray | None = None,
    *,
    prior_counts: FloatArray | None = None,
    random_state: int = 0,
) -> tuple[str, str]:
    """The method ``auto`` uses for these data, and why.

    * no item has two ratings (and no history): ``majority`` (nothing to learn annotators from);
    * enough ratings: the candidate (one-coin, shrunk Dawid-Skene) whose annotator model best
      predicts ratings it did not see: 3-fold held-out log-likelihood
      (``held_out_log_likelihood``). One-coin wins for uniform spammers, the shrunk matrices for
      systematic confusions;
    * otherwise (a small batch): ``shrunk-dawid-skene``, which falls back on one-coin matrices
      where the evidence is thin and uses the annotators' history where there is some.
    """
    totals = r.item_totals()
    if r.n_classes < 2 or (not (totals >= 2).any() and prior_counts is None):
        return "majority", "no item has two or more ratings"
    if r.n_ratings < MIN_RATINGS_TO_CHOOSE or int((totals >= 2).sum()) < 2 * r.n_classes:
        return "shrunk-dawid-skene", f"{r.n_ratings} ratings: too few to compare models on"
    scores = {
        m: held_out_log_likelihood(
            r, m, known=known, prior_counts=prior_counts, random_state=random_state
        )
        for m in ("one-coin", "shrunk-dawid-skene")
    }
    best = max(scores, key=lambda m: scores[m])
    detail = ", ".join(f"{m} {v:.1f}" for m, v in scores.items())
    return best, f"held-out log-likelihood: {detail}"


def held_out_log_likelihood(
    r: Ratings,
    method: str,
    *,
    known: IntArray | None = None,
    prior_counts: FloatArray | None = None,
    folds: int = 3,
    random_state: int = 0,
) -> float:
    """How well a method's annotator model predicts ratings it was not fitted on.

    The ratings are split in ``folds``; for each fold the method is fitted on the rest, and each
    held-out rating (item, annotator, label) gets the probability the fit gives it: the item's
    posterior from its other ratings times the annotator's confusion row. The sum of the logs.
    """
    rng = np.random.default_rng(random_state)
    fold = rng.integers(0, folds, size=r.n_ratings)
    total = 0.0
    a, k = r.n_annotators, r.n_classes
    for f in range(folds):
        train = fold != f
        part = Ratings(
            r.item[train],
            r.annotator[train],
            r.label[train],
            r.item_ids,
            r.annotator_ids,
            r.classes,
        )
        c = aggregate(part, method, known=known, prior_counts=prior_counts)
        if c.confusion is None:
            return -np.inf
        err = c.confusion
        resp = _response(part)
        logp = _log(c.class_marginals)[None, :] + np.asarray(
            resp @ _log(err).transpose(0, 2, 1).reshape(a * k, k)
        )
        post, _ = _softmax_rows(logp)
        held = ~train
        p = (post[r.item[held]] * err[r.annotator[held], :, r.label[held]]).sum(axis=1)
        total += float(np.log(np.maximum(p, _TINY)).sum())
    return total


def aggregate(
    r: Ratings,
    method: str = "auto",
    *,
    known: IntArray | None = None,
    prior_counts: FloatArray | None = None,
    smoothing: float = 0.01,
    max_iter: int = 100,
    tol: float | None = None,
    stop: Stop = "likelihood",
) -> Consensus:
    """Run one consensus method by name (``METHODS``); ``auto`` picks with ``choose_method``.

    ``prior_counts`` (annotators x true x given pseudo-counts, e.g. cumulative history) feeds
    Dawid-Skene directly and one-coin through its trace. Gold answers are anchored in every method.
    """
    if method == "auto":
        method, _ = choose_method(r, known, prior_counts=prior_counts)
    if method == "majority":
        return majority_vote(r, known)
    if method == "shrunk-dawid-skene":
        return dawid_skene(
            r,
            known=known,
            prior_counts=prior_counts,
            smoothing=smoothing,
            shrink=SHRINK,
            max_iter=max_iter,
            tol=tol,
            stop=stop,
        )
    if method in ("dawid-skene", "gold-dawid-skene"):
        result = dawid_skene(
            r,
            known=known,
            prior_counts=prior_counts,
            smoothing=smoothing,
            max_iter=max_iter,
            tol=tol,
            stop=stop,
        )
        name = "gold-dawid-skene" if result.method == "gold-dawid-skene" else "dawid-skene"
        return _renamed(result, name)
    if method == "one-coin":
        pc = pt = None
        if prior_counts is not None:
            pc = np.trace(prior_counts, axis1=1, axis2=2)
            pt = prior_counts.sum(axis=(1, 2))
        return one_coin_dawid_skene(
            r,
            known=known,
            prior_correct=pc,
            prior_total=pt,
            smoothing=smoothing,
            max_iter=max_iter,
            tol=tol,
            stop=stop,
        )
    raise ValueError(f"unknown consensus method {method!r}; choose from {', '.join(METHODS)}")


def _renamed(c: Consensus, name: str) -> Consensus:
    if c.method == name:
        return c
    return Consensus(
        name,
        c.posterior,
        c.label,
        c.confidence,
        c.class_marginals,
        c.confusion,
        c.accuracy,
        c.n_iter,
        c.converged,
        c.log_likelihood,
    )
