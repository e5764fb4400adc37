"""One training round: fit, evaluate out of sample, compare with the serving model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from labelloop_trainer.domain.estimators import aligned_proba, fit_pipeline
from labelloop_trainer.domain.evaluation import Evaluation, evaluate
from labelloop_trainer.domain.promotion import should_promote

Array = npt.NDArray[Any]

__all__ = [
    "LabeledData",
    "NotEnoughClasses",
    "RoundResult",
    "out_of_sample_proba",
    "predict_labels",
    "train_round",
    "tune",
]

_FOLDS = 5


class NotEnoughClasses(ValueError):
    """Training needs at least two classes among the labeled rows."""


@dataclass(frozen=True, slots=True)
class LabeledData:
    """Labeled rows aligned by position; ``x`` is a 1-D array of texts or a 2-D float matrix;
    ``y`` the class names, or for a multi-label project a 0/1 matrix with one column per label
    (:mod:`labelloop_trainer.domain.multilabel`)."""

    item_ids: Array
    x: Array
    y: Array
    split: Array
    weight: Array

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if not (len(self.x) == len(self.y) == len(self.split) == len(self.weight) == n):
            raise ValueError("labeled data columns differ in length")

    def where(self, mask: Array) -> LabeledData:
        return LabeledData(
            self.item_ids[mask], self.x[mask], self.y[mask], self.split[mask], self.weight[mask]
        )


@dataclass(frozen=True, slots=True)
class RoundResult:
    model: Any
    """A fitted pipeline, or a NER project's ``CrfTagger``."""
    evaluation: Evaluation
    evaluated_on: str
    """``out_of_sample``: K-fold cross-validated predictions of every labeled row."""
    current_evaluation: Evaluation | None
    """The serving model on the fresh rows (``None``: no serving model or no fresh rows)."""
    promoted: bool
    oos_proba: Array
    """Out-of-sample class probabilities for every labeled row (project class order; a
    multi-label model's: each label's own probability)."""
    n_train: int
    params: dict[str, float]
    """The regularization chosen by cross-validation (empty: the estimator's defaults)."""


def predict_labels(model: Any, x: Array, classes: Sequence[str]) -> Array:
    """Predicted class names, taken from the aligned probabilities (argmax, first class on ties)."""
    proba = aligned_proba(model, x, classes)
    names: Array = np.asarray(classes, dtype=object)
    return names[np.argmax(proba, axis=1)]  # type: ignore[no-any-return]


def out_of_sample_proba(
    pipeline: Pipeline,
    data: LabeledData,
    classes: Sequence[str],
    *,
    random_state: int,
    folds: int = _FOLDS,
) -> Array:
    """K-fold out-of-sample probabilities (``cross_val_predict``'s scheme) for every row.

    Written out rather than calling ``cross_val_predict`` so that each fold's columns are aligned to
    the full class list by ``classes_``: a fold that lacks a rare class must not shift the columns.
    Stratified folds when every class has enough rows, plain shuffled folds otherwise.
    """
    n = len(data.y)
    out = np.zeros((n, len(classes)), dtype=np.float64)
    if n < 2:
        return out
    _, counts = np.unique(data.y, return_counts=True)
    k = min(folds, int(counts.min())) if len(counts) > 1 else 0
    splitter: KFold | StratifiedKFold
    if k >= 2:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=random_state)
    else:
        splitter = KFold(n_splits=min(folds, n), shuffle=True, random_state=random_state)
    for train_idx, test_idx in splitter.split(data.x, data.y):
        model = fit_pipeline(pipeline, data.x[train_idx], data.y[train_idx], data.weight[train_idx])
        out[test_idx] = aligned_proba(model, data.x[test_idx], classes)
    return out


def tune(
    pipeline: Pipeline,
    data: LabeledData,
    classes: Sequence[str],
    grid: Sequence[dict[str, float]],
    *,
    random_state: int,
    folds: int = _FOLDS,
) -> tuple[Pipeline, Array, dict[str, float]]:
    """The candidate of ``grid`` with the best out-of-sample accuracy (then log-loss; then the
    first, i.e. the most regularized), with its out-of-sample probabilities.

    The same folds serve every candidate, so they are compared on the same rows. The winner's
    out-of-sample figures are what the round reports: chosen among a handful of candidates they
    are slightly optimistic, by much less than the noise of a few hundred labels."""
    index = {c: i for i, c in enumerate(classes)}
    truth = np.asarray([index[str(v)] for v in data.y])
    best: tuple[float, float] | None = None
    chosen: tuple[Pipeline, Array, dict[str, float]] | None = None
    for params in grid or [{}]:
        candidate = clone(pipeline).set_params(**params)
        oos = out_of_sample_proba(candidate, data, classes, random_state=random_state, folds=folds)
        accuracy = float(np.mean(np.argmax(oos, axis=1) == truth)) if len(truth) else 0.0
        picked = np.clip(oos[np.arange(len(truth)), truth], 1e-12, 1.0)
        log_loss = float(-np.mean(np.log(picked))) if len(truth) else 0.0
        key = (accuracy, -log_loss)
        if best is None or key > best:
            best, chosen = key, (candidate, oos, dict(params))
    assert chosen is not None
    return chosen


def train_round(
    pipeline: Pipeline,
    data: LabeledData,
    classes: Sequence[str],
    *,
    current_model: Any | None,
    fresh: Array | None,
    tolerance: float,
    random_state: int,
    folds: int = _FOLDS,
    grid: Sequence[dict[str, float]] = ({},),
) -> RoundResult:
    """Fit on every labeled row, judge by cross-validation, decide promotion on fresh rows.

    The loop's model learns from every label it has: holding rows back as a test split costs a
    campaign of a few hundred labels points of accuracy (``bench/README.md``). It is judged out of
    sample instead: K-fold predictions of every row (``out_of_sample_proba``). Promotion compares
    like with like on the *fresh* rows (labeled since the serving model was trained, so unseen by
    it): the serving model's predictions against the candidate's out-of-sample ones, paired.
    Without a serving model, or without fresh rows, the candidate is promoted. With a ``grid`` of
    regularization strengths the candidate is the one cross-validation prefers (:func:`tune`).
    """
    if len(np.unique(data.y)) < 2:
        raise NotEnoughClasses(
            f"labeled rows hold {len(np.unique(data.y))} class(es); at least two are needed"
        )
    pipeline, oos, params = tune(
        pipeline, data, classes, grid, random_state=random_state, folds=folds
    )
    model = fit_pipeline(pipeline, data.x, data.y, data.weight)
    names = np.asarray(classes, dtype=object)
    predicted = names[np.argmax(oos, axis=1)]
    evaluation = evaluate(data.y, predicted, classes)
    current_eval: Evaluation | None = None
    promoted = True
    mask = np.zeros(len(data.y), dtype=bool) if fresh is None else np.asarray(fresh, dtype=bool)
    if current_model is not None and mask.any():
        truth = data.y[mask]
        current_predicted = predict_labels(current_model, data.x[mask], classes)
        current_eval = evaluate(truth, current_predicted, classes)
        candidate_eval = evaluate(truth, predicted[mask], classes)
        promoted = should_promote(
            candidate_eval.macro_f1,
            current_eval.macro_f1,
            tolerance,
            new_correct=predicted[mask] == truth,
            current_correct=current_predicted == truth,
        )
    return RoundResult(
        model=model,
        evaluation=evaluation,
        evaluated_on="out_of_sample",
        current_evaluation=current_eval,
        promoted=promoted,
        oos_proba=oos,
        n_train=len(data.y),
        params=params,
    )
