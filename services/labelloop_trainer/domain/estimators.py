"""The scikit-learn pipeline per kind of input, and class-aligned probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.base import ClassifierMixin, clone
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from labelloop.project import TrainingConfig

Array = npt.NDArray[Any]

__all__ = ["InputKind", "aligned_proba", "fit_pipeline", "make_pipeline", "regularization_grid"]

InputKind = Literal["text", "vectors"]
Estimator = Literal["logistic_regression", "linear_svm", "random_forest"]


def _estimator(name: Estimator, random_state: int) -> ClassifierMixin:
    if name == "logistic_regression":
        return LogisticRegression(max_iter=2000, random_state=random_state)
    if name == "linear_svm":
        # a linear SVM with the modified Huber loss, which (unlike LinearSVC) gives probabilities
        return SGDClassifier(loss="modified_huber", max_iter=2000, random_state=random_state)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=200, random_state=random_state, n_jobs=1)
    raise ValueError(f"unknown estimator {name!r}")


def regularization_grid(training: TrainingConfig) -> list[dict[str, float]]:
    """Candidate regularization strengths of the project's estimator, strongest first (pipeline
    params); one candidate, the defaults, when tuning is off.

    Logistic regression's ``C`` from 0.01 to 3 (scikit-learn's default, 1, is in the middle), the
    linear SVM's ``alpha`` around its default 1e-4; the random forest is not tuned."""
    estimator = training.estimator
    if not training.tune_regularization:
        return [{}]
    if estimator == "logistic_regression":
        return [{"clf__C": c} for c in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)]
    if estimator == "linear_svm":
        return [{"clf__alpha": a} for a in (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5)]
    return [{}]


def make_pipeline(kind: InputKind, estimator: Estimator, random_state: int) -> Pipeline:
    """TF-IDF for text, standard scaling for vectors (features, embeddings), then ``clf``."""
    first: tuple[str, Any]
    if kind == "text":
        first = ("tfidf", TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1))
    else:
        first = ("scale", StandardScaler())
    return Pipeline([first, ("clf", _estimator(estimator, random_state))])


def fit_pipeline(
    pipeline: Pipeline, x: Array, y: Array, sample_weight: Array | None = None
) -> Pipeline:
    """Fit a clone; a training set with a single class gets a constant (prior) classifier."""
    model = clone(pipeline)
    if len(np.unique(y)) < 2:
        model.steps[-1] = ("clf", DummyClassifier(strategy="prior"))
    if sample_weight is not None:
        model.fit(x, y, clf__sample_weight=sample_weight)
    else:
        model.fit(x, y)
    return model


def aligned_proba(model: Any, x: Array, classes: Sequence[str]) -> Array:
    """``predict_proba`` with one column per project class, in the project's order.

    Columns are placed by ``model.classes_``: a model that never saw a class (a cold start, a fold
    without it) gives that class probability zero instead of shifting every column after it.
    """
    proba = np.asarray(model.predict_proba(x), dtype=np.float64)
    out = np.zeros((proba.shape[0], len(classes)), dtype=np.float64)
    index = {c: i for i, c in enumerate(classes)}
    for j, cls in enumerate(model.classes_):
        key = str(cls)
        if key not in index:
            raise ValueError(f"the model knows a class the project does not: {key!r}")
        out[:, index[key]] = proba[:, j]
    return out
