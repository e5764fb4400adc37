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
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from labelloop.project import TrainingConfig

Array = npt.NDArray[Any]

__all__ = [
    "KERNEL_COMPONENTS",
    "Estimator",
    "InputKind",
    "aligned_proba",
    "fit_pipeline",
    "make_pipeline",
    "regularization_grid",
]

InputKind = Literal["text", "vectors"]
Estimator = Literal[
    "logistic_regression", "kernel_logistic_regression", "linear_svm", "random_forest"
]

KERNEL_COMPONENTS = 1000
"""Landmarks of the kernel estimator's RBF features: every labeled row up to this many (the exact
kernel of a campaign of a few hundred labels), a random subset beyond, so a project of 100k labels
costs 1,000 features per row, not 100k."""
TEXT_GAMMA = 1.0
"""The RBF width on TF-IDF rows: they have unit length, so squared distances lie in [0, 2]."""
_PROBA_CHUNK = 20_000


def _estimator(name: Estimator, random_state: int, kind: InputKind) -> ClassifierMixin:
    if name == "logistic_regression" and kind == "text":
        # on sparse TF-IDF rows Newton-CG reaches the same optimum as L-BFGS in a few steps: 0.1 s
        # against 1.8 s on 120 news articles (6,000 features, five classes)
        return LogisticRegression(max_iter=2000, random_state=random_state, solver="newton-cg")
    if name == "logistic_regression":
        return LogisticRegression(max_iter=2000, random_state=random_state)
    if name == "kernel_logistic_regression":
        return LogisticRegression(max_iter=3000, random_state=random_state)
    if name == "linear_svm":
        # a linear SVM with the modified Huber loss, which (unlike LinearSVC) gives probabilities
        return SGDClassifier(loss="modified_huber", max_iter=2000, random_state=random_state)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=200, random_state=random_state, n_jobs=1)
    raise ValueError(f"unknown estimator {name!r}")


def regularization_grid(
    training: TrainingConfig, kind: InputKind = "vectors"
) -> list[dict[str, float]]:
    """Candidate regularization strengths of the project's estimator, strongest first (pipeline
    params); one candidate, the defaults, when tuning is off.

    Logistic regression's ``C`` from 0.01 to 3 on standardized vectors (scikit-learn's default,
    1, is in the middle), 1 to 100 on TF-IDF rows (unit length and sparse, they need far weaker
    regularization: on BBC news with 100 random labels C = 1 gives 0.78, C = 100 gives 0.92); on
    RBF features 1, 10 and 100 (a kernel model needs less regularization: on the digits
    cross-validation picks 10 to 100, and a finer grid of six gave the same campaign curve at
    twice the training time); the linear SVM's ``alpha`` around its default
    1e-4; the random forest is not tuned."""
    estimator = training.estimator
    if not training.tune_regularization:
        return [{}]
    if estimator == "logistic_regression" and kind == "text":
        return [{"clf__C": c} for c in (1.0, 3.0, 10.0, 30.0, 100.0)]
    if estimator == "logistic_regression":
        return [{"clf__C": c} for c in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)]
    if estimator == "kernel_logistic_regression":
        return [{"clf__C": c} for c in (1.0, 10.0, 100.0)]
    if estimator == "linear_svm":
        return [{"clf__alpha": a} for a in (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5)]
    return [{}]


def make_pipeline(kind: InputKind, estimator: Estimator, random_state: int) -> Pipeline:
    """TF-IDF for text, standard scaling for vectors (features, embeddings), then ``clf``.

    The kernel estimator is a logistic regression on RBF kernel features (``kernel``, Nystroem
    landmarks, see :data:`KERNEL_COMPONENTS`): a non-linear model that keeps calibrated
    probabilities for the sampler and QA. Its vectors are not standardized: the RBF width is
    scikit-learn's ``"scale"`` rule of the SVM, ``1 / (n_features * x.var())``, set from the
    training rows when the pipeline is fitted (:func:`fit_pipeline`), so features keep their
    relative scales (standardizing the digits' near-constant border pixels costs 2 points at
    180 labels). Text keeps TF-IDF, with the width :data:`TEXT_GAMMA`."""
    steps: list[tuple[str, Any]] = []
    if kind == "text":
        steps.append(("tfidf", TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)))
    elif estimator != "kernel_logistic_regression":
        steps.append(("scale", StandardScaler()))
    if estimator == "kernel_logistic_regression":
        gamma = TEXT_GAMMA if kind == "text" else None
        kernel = Nystroem(gamma=gamma, n_components=KERNEL_COMPONENTS, random_state=random_state)
        steps.append(("kernel", kernel))
    steps.append(("clf", _estimator(estimator, random_state, kind)))
    return Pipeline(steps)


def _size_kernel(model: Pipeline, x: Array) -> None:
    """The RBF width and landmark count of a ``kernel`` step, from the rows it is fitted on."""
    kernel = model.named_steps.get("kernel")
    if not isinstance(kernel, Nystroem):
        return
    n = x.shape[0]
    params: dict[str, Any] = {"kernel__n_components": min(KERNEL_COMPONENTS, max(n, 1))}
    if "tfidf" not in model.named_steps:
        variance = float(np.var(np.asarray(x, dtype=np.float64)))
        width = x.shape[1] * variance if x.ndim == 2 else 0.0
        params["kernel__gamma"] = 1.0 / width if width > 0 else 1.0
    model.set_params(**params)


def fit_pipeline(
    pipeline: Pipeline, x: Array, y: Array, sample_weight: Array | None = None
) -> Pipeline:
    """Fit a clone; a training set with a single class gets a constant (prior) classifier."""
    model = clone(pipeline)
    _size_kernel(model, x)
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
    index = {c: i for i, c in enumerate(classes)}
    columns = []
    for cls in model.classes_:
        key = str(cls)
        if key not in index:
            raise ValueError(f"the model knows a class the project does not: {key!r}")
        columns.append(index[key])
    out = np.zeros((x.shape[0], len(classes)), dtype=np.float64)
    # in chunks: a kernel model's features of a 1M-item pool would be 1M x 1,000 at once
    for start in range(0, x.shape[0], _PROBA_CHUNK):
        rows = slice(start, start + _PROBA_CHUNK)
        out[rows, columns] = np.asarray(model.predict_proba(x[rows]), dtype=np.float64)
    return out
