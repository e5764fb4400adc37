"""One multi-label training round: fit, evaluate out of sample, compare with the serving model.

The same round as :func:`labelloop_trainer.domain.training.train_round`, for items that carry a
set of labels: ``LabeledData.y`` is a 0/1 matrix with one column per project label, the model
one binary model per label (one-vs-rest, ``estimators.fit_multilabel``), its scores each label's
own probability. A label is *predicted* when its probability reaches ``threshold``
(``training.multilabel_threshold``, 0.5).

Metrics (Tsoumakas, Katakis and Vlahavas 2010, "Mining Multi-label Data"; scikit-learn's
definitions): micro-F1 pools every (item, label) decision, macro-F1 averages the labels, subset
accuracy counts items with every label right, Hamming loss is the share of wrong decisions.

**Promotion metric: micro-F1.** A candidate is promoted unless its micro-F1 on the fresh rows
(labeled since the serving model was trained) is lower than the serving model's by more than
``training.promotion_tolerance`` *and* the drop is significant: in a paired sign test over the
fresh rows, the serving model gets more of a row's label decisions right than the candidate
more often than chance (one-sided exact binomial, 5%; the multi-label form of the McNemar test
single-label promotion uses). Micro-F1 because a round's fresh rows are few: macro-F1 swings
with one row of a rare label, subset accuracy with one decision of any label, and Hamming loss
rewards predicting no label at all when label sets are sparse; micro-F1 weighs every positive
decision once and ignores the true negatives that dominate a sparse label matrix.

Tuning chooses the regularization with the best out-of-sample micro-F1 (then the lower mean
binary log-loss over labels; then the most regularized), as single-label tuning uses accuracy.
Folds are shuffled K-fold: label sets rarely repeat enough for stratified folds, and a label a
fold's training rows lack gets a constant model there (probability 0), as a missing class does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import clone
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline

from labelloop_trainer.domain.estimators import (
    fit_features,
    fit_multilabel,
    fit_one_vs_rest,
    label_proba,
)
from labelloop_trainer.domain.evaluation import Evaluation, evaluate_multilabel
from labelloop_trainer.domain.promotion import should_promote
from labelloop_trainer.domain.training import LabeledData, NotEnoughClasses, RoundResult

Array = npt.NDArray[Any]

__all__ = [
    "indicator",
    "label_sets",
    "out_of_sample_label_proba",
    "predicted_sets",
    "train_multilabel_round",
    "tune_multilabel",
]

_FOLDS = 5


def indicator(sets: Sequence[Sequence[str]], labels: Sequence[str]) -> Array:
    """Label sets as a 0/1 matrix, one column per label (names the project lacks are left out)."""
    index = {c: j for j, c in enumerate(labels)}
    out = np.zeros((len(sets), len(labels)), dtype=np.int8)
    for i, chosen in enumerate(sets):
        for name in chosen:
            j = index.get(str(name))
            if j is not None:
                out[i, j] = 1
    return out


def label_sets(y: Array, labels: Sequence[str]) -> list[list[str]]:
    """A 0/1 matrix back as label sets (in the project's label order)."""
    return [[labels[j] for j in np.flatnonzero(row)] for row in np.asarray(y)]


def predicted_sets(model: Any, x: Array, labels: Sequence[str], threshold: float) -> Array:
    """Each item's predicted labels as a 0/1 matrix: the labels whose probability reaches
    ``threshold``."""
    return (label_proba(model, x, labels) >= threshold).astype(np.int8)


def out_of_sample_label_proba(
    pipeline: Pipeline,
    data: LabeledData,
    labels: Sequence[str],
    *,
    random_state: int,
    folds: int = _FOLDS,
) -> Array:
    """K-fold out-of-sample per-label probabilities for every row (shuffled folds)."""
    (oos,) = _out_of_sample(pipeline, data, labels, [{}], random_state=random_state, folds=folds)
    return oos


def _out_of_sample(
    pipeline: Pipeline,
    data: LabeledData,
    labels: Sequence[str],
    grid: Sequence[dict[str, float]],
    *,
    random_state: int,
    folds: int,
) -> list[Array]:
    """Out-of-sample probabilities of each candidate of ``grid`` (classifier parameters), on the
    same folds. A fold's features (TF-IDF, scaling, kernel) do not depend on the candidate: they
    are fitted once per fold, and only the classifiers once per candidate."""
    n = len(data.y)
    outs: list[Array] = [np.zeros((n, len(labels)), dtype=np.float64) for _ in grid]
    if n < 2:
        return outs
    clfs = []
    for params in grid:
        if any(not key.startswith("clf__") for key in params):
            raise ValueError(f"tuning sets the classifier's parameters only, not {params}")
        clf = clone(pipeline.steps[-1][1])
        clfs.append(clf.set_params(**{k.removeprefix("clf__"): v for k, v in params.items()}))
    splitter = KFold(n_splits=min(folds, n), shuffle=True, random_state=random_state)
    for train_idx, test_idx in splitter.split(data.x):
        fitted, features = fit_features(pipeline, data.x[train_idx])
        held_out = fitted[:-1].transform(data.x[test_idx]) if len(fitted) > 1 else data.x[test_idx]
        for out, clf in zip(outs, clfs, strict=True):
            model = fit_one_vs_rest(
                clf, features, data.y[train_idx], labels, data.weight[train_idx]
            )
            out[test_idx] = label_proba(model, held_out, labels)
    return outs


def _log_loss(truth: Array, proba: Array) -> float:
    """Mean binary cross-entropy over every (item, label) decision."""
    p = np.clip(proba, 1e-12, 1.0 - 1e-12)
    return float(-np.mean(truth * np.log(p) + (1 - truth) * np.log(1.0 - p)))


def tune_multilabel(
    pipeline: Pipeline,
    data: LabeledData,
    labels: Sequence[str],
    grid: Sequence[dict[str, float]],
    *,
    threshold: float,
    random_state: int,
    folds: int = _FOLDS,
) -> tuple[Pipeline, Array, dict[str, float]]:
    """The candidate of ``grid`` with the best out-of-sample micro-F1 (then log-loss; then the
    first, the most regularized), with its out-of-sample probabilities; the same folds for all."""
    truth = np.asarray(data.y, dtype=np.int64)
    candidates = list(grid) or [{}]
    outs = _out_of_sample(
        pipeline, data, labels, candidates, random_state=random_state, folds=folds
    )
    best: tuple[float, float] | None = None
    chosen: tuple[Pipeline, Array, dict[str, float]] | None = None
    for params, oos in zip(candidates, outs, strict=True):
        candidate = clone(pipeline).set_params(**params)
        score = evaluate_multilabel(truth, oos >= threshold, labels).micro_f1 or 0.0
        key = (score, -_log_loss(truth, oos))
        if best is None or key > best:
            best, chosen = key, (candidate, oos, dict(params))
    assert chosen is not None
    return chosen


def train_multilabel_round(
    pipeline: Pipeline,
    data: LabeledData,
    labels: Sequence[str],
    *,
    current_model: Any | None,
    fresh: Array | None,
    tolerance: float,
    threshold: float,
    random_state: int,
    folds: int = _FOLDS,
    grid: Sequence[dict[str, float]] = ({},),
) -> RoundResult:
    """Fit on every labeled row, judge by cross-validation, decide promotion on fresh rows by
    micro-F1 (the module docstring says why and how)."""
    truth = np.asarray(data.y, dtype=np.int64)
    if len(truth) == 0 or not (truth.any(axis=0) & ~truth.all(axis=0)).any():
        raise NotEnoughClasses(
            "no label is present on some labeled rows and absent on others: nothing to learn"
        )
    pipeline, oos, params = tune_multilabel(
        pipeline, data, labels, grid, threshold=threshold, random_state=random_state, folds=folds
    )
    model = fit_multilabel(pipeline, data.x, truth, labels, data.weight)
    predicted = (oos >= threshold).astype(np.int64)
    evaluation = evaluate_multilabel(truth, predicted, labels)
    current_eval: Evaluation | None = None
    promoted = True
    mask = np.zeros(len(truth), dtype=bool) if fresh is None else np.asarray(fresh, dtype=bool)
    if current_model is not None and mask.any():
        fresh_truth = truth[mask]
        current_predicted = predicted_sets(current_model, data.x[mask], labels, threshold)
        current_eval = evaluate_multilabel(fresh_truth, current_predicted, labels)
        candidate_eval = evaluate_multilabel(fresh_truth, predicted[mask], labels)
        new_hits = (predicted[mask] == fresh_truth).sum(axis=1)
        current_hits = (current_predicted == fresh_truth).sum(axis=1)
        promoted = should_promote(
            candidate_eval.promotion_score,
            current_eval.promotion_score,
            tolerance,
            # the paired sign test: rows where one model gets more label decisions right
            new_correct=new_hits > current_hits,
            current_correct=current_hits > new_hits,
        )
    return RoundResult(
        model=model,
        evaluation=evaluation,
        evaluated_on="out_of_sample",
        current_evaluation=current_eval,
        promoted=promoted,
        oos_proba=oos,
        n_train=len(truth),
        params=params,
    )
