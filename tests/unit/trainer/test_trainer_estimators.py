"""Probability columns follow the project's classes, whatever the model saw."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop_trainer.domain.estimators import aligned_proba, fit_pipeline, make_pipeline

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


@pytest.mark.parametrize("estimator", ["logistic_regression", "linear_svm", "random_forest"])
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
