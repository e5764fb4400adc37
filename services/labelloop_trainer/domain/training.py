"""One training round: fit, evaluate on the test split, compare with the current model, score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
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
]

_FOLDS = 5


class NotEnoughClasses(ValueError):
    """Training needs at least two classes among the labeled rows."""


@dataclass(frozen=True, slots=True)
class LabeledData:
    """Labeled rows aligned by position; ``x`` is a 1-D array of texts or a 2-D float matrix."""

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
    model: Pipeline
    evaluation: Evaluation
    evaluated_on: str
    """``test`` (the test split) or ``out_of_sample`` (cross-validation, when test is empty)."""
    current_evaluation: Evaluation | None
    promoted: bool
    oos_proba: Array
    """Out-of-sample class probabilities for every labeled row (project class order)."""
    n_train: int


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


def train_round(
    pipeline: Pipeline,
    data: LabeledData,
    classes: Sequence[str],
    *,
    current_model: Any | None,
    current_macro_f1: float | None,
    tolerance: float,
    random_state: int,
    folds: int = _FOLDS,
) -> RoundResult:
    """Fit on train + validation, evaluate on test, and decide promotion against the current model.

    Nothing is tuned, so the validation split joins the training data. The current model is
    re-scored on the same test rows, so the comparison is like for like; without test rows, the new
    model is judged out-of-sample and compared with the current model's recorded score.
    """
    fit_mask = data.split != "test"
    train = data.where(fit_mask)
    if len(np.unique(train.y)) < 2:
        raise NotEnoughClasses(
            f"training rows hold {len(np.unique(train.y))} class(es); at least two are needed"
        )
    model = fit_pipeline(pipeline, train.x, train.y, train.weight)
    oos = out_of_sample_proba(pipeline, data, classes, random_state=random_state, folds=folds)
    test = data.where(~fit_mask)
    new_correct: Array | None = None
    current_correct: Array | None = None
    if len(test.y):
        predicted = predict_labels(model, test.x, classes)
        evaluation = evaluate(test.y, predicted, classes)
        evaluated_on = "test"
        new_correct = predicted == test.y
        current_eval = None
        if current_model is not None:
            current_predicted = predict_labels(current_model, test.x, classes)
            current_eval = evaluate(test.y, current_predicted, classes)
            current_correct = current_predicted == test.y
        baseline = current_eval.macro_f1 if current_eval is not None else current_macro_f1
    else:
        predicted = np.asarray(classes, dtype=object)[np.argmax(oos, axis=1)]
        evaluation = evaluate(data.y, predicted, classes)
        evaluated_on = "out_of_sample"
        current_eval = None
        baseline = current_macro_f1
    return RoundResult(
        model=model,
        evaluation=evaluation,
        evaluated_on=evaluated_on,
        current_evaluation=current_eval,
        promoted=should_promote(
            evaluation.macro_f1,
            baseline,
            tolerance,
            new_correct=new_correct,
            current_correct=current_correct,
        ),
        oos_proba=oos,
        n_train=len(train.y),
    )
