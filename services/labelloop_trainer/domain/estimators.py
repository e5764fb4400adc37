"""The scikit-learn pipeline per kind of input, and class-aligned probabilities.

A multi-label project's pipeline ends in a one-vs-rest classifier (binary relevance: one binary
model of the same estimator per label, on the same features), fitted on a 0/1 indicator matrix
with one column per label (:func:`fit_multilabel`); its ``predict_proba`` gives each label's own
probability (rows need not sum to 1), columns named by ``classes_`` like a classifier's."""

from __future__ import annotations

import warnings
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
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from labelloop.project import TrainingConfig

Array = npt.NDArray[Any]

__all__ = [
    "KERNEL_COMPONENTS",
    "Estimator",
    "InputKind",
    "aligned_proba",
    "fit_features",
    "fit_multilabel",
    "fit_one_vs_rest",
    "fit_pipeline",
    "label_proba",
    "make_pipeline",
    "regularization_grid",
    "widened",
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


def _estimator(
    name: Estimator, random_state: int, kind: InputKind, multilabel: bool = False
) -> ClassifierMixin:
    if multilabel:
        # one binary question per label, its two answers weighed equally: a label is mostly
        # absent, and unweighted models seldom give it the probability it needs to be
        # predicted (on the news digests, two splits: micro-F1 0.63 -> 0.76 at 60 labels,
        # 0.81 -> 0.85 at 200)
        binary = _estimator(name, random_state, kind)
        if name == "logistic_regression" and kind == "text":
            # liblinear: 1.7 to 1.9 times less CPU than Newton-CG for the same micro-F1 on the
            # digests' binary questions
            binary.set_params(solver="liblinear")
        return binary.set_params(class_weight="balanced")
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
    training: TrainingConfig, kind: InputKind = "vectors", *, multilabel: bool = False
) -> list[dict[str, float]]:
    """Candidate regularization strengths of the project's estimator, strongest first (pipeline
    params); one candidate, the defaults, when tuning is off.

    Logistic regression's ``C`` from 0.01 to 3 on standardized vectors (scikit-learn's default,
    1, is in the middle), 1 to 100 on TF-IDF rows (unit length and sparse, they need far weaker
    regularization: on BBC news with 100 random labels C = 1 gives 0.78, C = 100 gives 0.92); on
    RBF features 1, 10 and 100 (a kernel model needs less regularization: on the digits
    cross-validation picks 10 to 100, and a finer grid of six gave the same campaign curve at
    twice the training time); the linear SVM's ``alpha`` around its default
    1e-4; the random forest is not tuned. ``multilabel``: the same strengths for every label's
    binary model (``clf__estimator__C``: one strength for all labels, chosen on all of them)."""
    grid = _grid(training, kind)
    if not multilabel:
        return grid
    return [{k.replace("clf__", "clf__estimator__", 1): v for k, v in c.items()} for c in grid]


def _grid(training: TrainingConfig, kind: InputKind) -> list[dict[str, float]]:
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


def make_pipeline(
    kind: InputKind, estimator: Estimator, random_state: int, *, multilabel: bool = False
) -> Pipeline:
    """TF-IDF for text, standard scaling for vectors (features, embeddings), then ``clf``
    (``multilabel``: a one-vs-rest classifier of the estimator, fitted by :func:`fit_multilabel`,
    on word unigrams: on the news digests, one to three articles each, bigrams cost 3 to 4 times
    the training time and 6 to 10 times the model file, for 4 to 12 points less micro-F1 at 60
    to 200 labels).

    The kernel estimator is a logistic regression on RBF kernel features (``kernel``, Nystroem
    landmarks, see :data:`KERNEL_COMPONENTS`): a non-linear model that keeps calibrated
    probabilities for the sampler and QA. Its vectors are not standardized: the RBF width is
    scikit-learn's ``"scale"`` rule of the SVM, ``1 / (n_features * x.var())``, set from the
    training rows when the pipeline is fitted (:func:`fit_pipeline`), so features keep their
    relative scales (standardizing the digits' near-constant border pixels costs 2 points at
    180 labels). Text keeps TF-IDF, with the width :data:`TEXT_GAMMA`."""
    steps: list[tuple[str, Any]] = []
    if kind == "text":
        grams = (1, 1) if multilabel else (1, 2)
        steps.append(("tfidf", TfidfVectorizer(sublinear_tf=True, ngram_range=grams, min_df=1)))
    elif estimator != "kernel_logistic_regression":
        steps.append(("scale", StandardScaler()))
    if estimator == "kernel_logistic_regression":
        gamma = TEXT_GAMMA if kind == "text" else None
        kernel = Nystroem(gamma=gamma, n_components=KERNEL_COMPONENTS, random_state=random_state)
        steps.append(("kernel", kernel))
    clf = _estimator(estimator, random_state, kind, multilabel)
    steps.append(("clf", OneVsRestClassifier(clf) if multilabel else clf))
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
        out[rows, columns] = np.asarray(model.predict_proba(widened(x[rows])), dtype=np.float64)
    return out


def widened(x: Array) -> Array:
    """Feature rows as float64, as models are fitted on them (float32 widens exactly; other
    inputs, texts, pass as they are)."""
    return x.astype(np.float64) if x.dtype == np.float32 else x


def fit_multilabel(
    pipeline: Pipeline,
    x: Array,
    y: Array,
    labels: Sequence[str],
    sample_weight: Array | None = None,
) -> Pipeline:
    """Fit a clone of a multi-label pipeline on ``y``, a 0/1 matrix with one column per label
    (``labels``, in order); ``classes_`` of the fitted classifier names them
    (:func:`fit_one_vs_rest`)."""
    model, features = fit_features(pipeline, x)
    model.steps[-1] = (
        "clf",
        fit_one_vs_rest(model.steps[-1][1], features, y, labels, sample_weight),
    )
    return model


def fit_features(pipeline: Pipeline, x: Array) -> tuple[Pipeline, Any]:
    """A clone of ``pipeline`` whose steps before ``clf`` are fitted on ``x``, and ``x`` through
    them (``clf`` left unfitted): rows to fit classifiers on, one or several."""
    model = clone(pipeline)
    _size_kernel(model, x)
    features = model[:-1].fit_transform(x) if len(model.steps) > 1 else x
    return model, features


def fit_one_vs_rest(
    clf: Any,
    features: Any,
    y: Array,
    labels: Sequence[str],
    sample_weight: Array | None = None,
) -> OneVsRestClassifier:
    """A clone of a one-vs-rest classifier fitted on ``features`` and the 0/1 matrix ``y``.

    A label every row has, or no row has (a cold start, a fold without it), gets a constant
    model: its share among the rows (0 or 1), as :func:`fit_pipeline` gives a single class.
    scikit-learn's one-vs-rest puts a private constant predictor there; it is replaced with a
    prior :class:`~sklearn.dummy.DummyClassifier` of the same answer, a type the model file
    format trusts. Sample weights reach each label's binary model directly (one-vs-rest passes
    them on only through scikit-learn's metadata routing, whose request objects do not
    serialise)."""
    if not isinstance(clf, OneVsRestClassifier):
        raise TypeError("a multi-label pipeline ends in a OneVsRestClassifier")
    y = np.asarray(y, dtype=np.int64).reshape(len(y), -1)
    if y.shape[1] != len(labels):
        raise ValueError(f"{y.shape[1]} label columns for {len(labels)} labels")
    fitted = clone(clf)
    target = y if y.shape[1] > 1 else y[:, 0]  # one label: a binary problem
    with warnings.catch_warnings():
        # a label present in every row, or in none: replaced below
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        fitted.fit(features, target)
    weighted = sample_weight is not None and not np.all(sample_weight == 1.0)
    n_features = features.shape[1]
    for j in range(y.shape[1]):
        column = y[:, j]
        if column.min() == column.max():
            fitted.estimators_[j] = _constant(int(column[0]), n_features)
        elif weighted:
            fitted.estimators_[j] = clone(fitted.estimator).fit(
                features, column, sample_weight=sample_weight
            )
    fitted.classes_ = np.asarray([str(label) for label in labels])
    return fitted


def _constant(value: int, n_features: int) -> DummyClassifier:
    """A binary model that gives the label probability ``value`` (0 or 1) whatever the input."""
    return DummyClassifier(strategy="prior").fit(
        np.zeros((2, n_features)), np.array([0, 1]), sample_weight=np.array([1.0 - value, value])
    )


def label_proba(model: Any, x: Array, labels: Sequence[str]) -> Array:
    """Per-label probabilities of a multi-label model: one column per project label, in the
    project's order, each the probability that the item has that label.

    Columns are placed by the model's ``classes_`` (the labels it was fitted on): a label the
    project added since gets probability zero; a label the project lacks is an error, as in
    :func:`aligned_proba`."""
    index = {c: i for i, c in enumerate(labels)}
    known = [str(c) for c in model.classes_]
    for key in known:
        if key not in index:
            raise ValueError(f"the model knows a label the project does not: {key!r}")
    columns = [index[key] for key in known]
    out = np.zeros((x.shape[0], len(labels)), dtype=np.float64)
    for start in range(0, x.shape[0], _PROBA_CHUNK):
        rows = slice(start, start + _PROBA_CHUNK)
        p = np.asarray(model.predict_proba(widened(x[rows])), dtype=np.float64)
        if p.shape[1] == len(known) + 1:  # a one-label model answers [absent, present]
            p = p[:, 1:]
        out[rows, columns] = p
    return out
