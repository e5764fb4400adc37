"""Probability columns follow the project's classes, whatever the model saw."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest

from labelloop_trainer.domain.estimators import (
    Estimator,
    aligned_proba,
    fit_pipeline,
    make_pipeline,
)

CLASSES = ["zebra", "ant", "moose", "cat", "bee"]  # deliberately not sorted


def test_cold_start_puts_zeros_under_unseen_classes() -> None:
    rng = np.random.default_rng(0)
    centres = {"moose": 0.0, "bee": 5.0, "ant": 10.0}
    y = np.array([c for c in centres for _ in range(20)])
    x = np.array([[centres[c] + rng.normal(), rng.normal()] for c in y])
    model = fit_pipeline(make_pipeline("vectors", "logistic_regression", 0), x, y)
    proba = aligned_proba(model, np.array([[10.0, 0.0], [0.0, 0.0], [5.0, 0.0]]), CLASSES)
    assert proba.shape == (3, 5)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.all(proba[:, CLASSES.index("zebra")] == 0.0)
    assert np.all(proba[:, CLASSES.index("cat")] == 0.0)
    assert [CLASSES[i] for i in proba.argmax(axis=1)] == ["ant", "moose", "bee"]


@pytest.mark.parametrize("estimator", get_args(Estimator))
def test_every_estimator_gives_aligned_probabilities_for_text(estimator: str) -> None:
    texts = np.array(
        ["good great fine", "great good", "bad awful", "awful terrible bad"] * 5, dtype=object
    )
    y = np.array(["cat", "cat", "bee", "bee"] * 5)
    model = fit_pipeline(make_pipeline("text", estimator, 0), texts, y)  # type: ignore[arg-type]
    proba = aligned_proba(model, np.array(["good", "awful"], dtype=object), CLASSES)
    assert [CLASSES[i] for i in proba.argmax(axis=1)] == ["cat", "bee"]
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_a_single_class_gets_a_constant_model() -> None:
    model = fit_pipeline(
        make_pipeline("vectors", "logistic_regression", 0), np.ones((3, 2)), np.array(["cat"] * 3)
    )
    proba = aligned_proba(model, np.zeros((2, 2)), CLASSES)
    assert np.all(proba[:, CLASSES.index("cat")] == 1.0)


def test_a_class_the_project_lacks_is_an_error() -> None:
    y = np.array(["cat", "dog"] * 5)
    model = fit_pipeline(
        make_pipeline("vectors", "logistic_regression", 0), np.arange(20.0).reshape(10, 2), y
    )
    with pytest.raises(ValueError, match="dog"):
        aligned_proba(model, np.zeros((1, 2)), CLASSES)


def _rings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric rings: no straight line separates them."""
    rng = np.random.default_rng(seed)
    radius = np.where(np.arange(n) % 2 == 0, 1.0, 3.0) + rng.normal(0, 0.2, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    x = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
    return x, np.where(np.arange(n) % 2 == 0, "cat", "bee")


def test_the_kernel_estimator_learns_what_a_line_cannot() -> None:
    x, y = _rings(200, 0)
    test_x, test_y = _rings(200, 1)
    scores = {}
    for estimator in ("logistic_regression", "kernel_logistic_regression"):
        model = fit_pipeline(make_pipeline("vectors", estimator, 0), x, y)  # type: ignore[arg-type]
        scores[estimator] = float(np.mean(model.predict(test_x) == test_y))
    assert scores["logistic_regression"] < 0.7
    assert scores["kernel_logistic_regression"] > 0.95


def test_the_kernel_is_sized_by_the_rows_it_is_fitted_on() -> None:
    from labelloop_trainer.domain.estimators import KERNEL_COMPONENTS

    x, y = _rings(60, 0)
    kernel = fit_pipeline(make_pipeline("vectors", "kernel_logistic_regression", 0), x, y)["kernel"]
    # scikit-learn's "scale" width of the RBF SVM, on the rows as they are (not standardized)
    assert kernel.gamma == pytest.approx(1.0 / (x.shape[1] * x.var()))
    assert kernel.n_components == 60  # every row a landmark, never more landmarks than rows
    big_x, big_y = _rings(KERNEL_COMPONENTS + 200, 2)
    big = fit_pipeline(make_pipeline("vectors", "kernel_logistic_regression", 0), big_x, big_y)
    assert big["kernel"].n_components == KERNEL_COMPONENTS


def test_probabilities_in_chunks_equal_them_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelloop_trainer.domain import estimators

    x, y = _rings(100, 0)
    model = fit_pipeline(make_pipeline("vectors", "kernel_logistic_regression", 0), x, y)
    whole = aligned_proba(model, x, CLASSES)
    monkeypatch.setattr(estimators, "_PROBA_CHUNK", 7)
    assert np.allclose(aligned_proba(model, x, CLASSES), whole, rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["vectors", "text"])
def test_every_estimator_is_a_model_file_the_trainer_may_load(kind: str) -> None:
    """A pipeline type outside the trusted list would be refused as untrusted when the trainer
    reads its own serving model back (the demo evaluating it too)."""
    from labelloop.model_format import dump_model, load_model

    if kind == "text":
        x: np.ndarray = np.array(["good great", "great fine", "bad awful", "awful poor"] * 5)
        x = x.astype(object)
    else:
        x = _rings(40, 0)[0]
    y = np.array(["cat", "cat", "bee", "bee"] * (len(x) // 4))
    for estimator in get_args(Estimator):
        model = fit_pipeline(make_pipeline(kind, estimator, 0), x, y)  # type: ignore[arg-type]
        loaded = load_model(dump_model(model), digest=None)
        assert np.array_equal(aligned_proba(loaded, x, CLASSES), aligned_proba(model, x, CLASSES))


@pytest.mark.parametrize("estimator", get_args(Estimator))
def test_a_pool_kept_as_float32_scores_exactly_as_its_float64_copy(estimator: str) -> None:
    # the trainer keeps the pool's rows as the catalog does (float32) and widens them chunk by
    # chunk: the scores must be the ones a float64 copy of the whole pool gave
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = np.array(["cat", "bee", "ant"] * 40)
    model = fit_pipeline(
        make_pipeline("vectors", estimator, 0),  # type: ignore[arg-type]
        x.astype(np.float64),
        y,
    )
    pool = rng.normal(size=(50_000, 4)).astype(np.float32)  # more than one chunk
    assert np.array_equal(
        aligned_proba(model, pool, CLASSES), aligned_proba(model, pool.astype(np.float64), CLASSES)
    )
