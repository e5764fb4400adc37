"""A training round on real data: digits and a small text set."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from labelloop_trainer.domain.estimators import make_pipeline
from labelloop_trainer.domain.training import (
    LabeledData,
    NotEnoughClasses,
    out_of_sample_proba,
    train_round,
)


def _hash_split(ids: np.ndarray) -> np.ndarray:
    # the exporter's scheme in miniature: 70/15/15 by a hash of the id
    import hashlib

    buckets = [int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) / 16**8 for i in ids]
    return np.array(["train" if b < 0.7 else "validation" if b < 0.85 else "test" for b in buckets])


def _digits() -> tuple[LabeledData, list[str]]:
    x, y = load_digits(return_X_y=True)
    ids = np.array([f"digit-{k}" for k in range(len(y))])
    labels = y.astype(str)
    data = LabeledData(ids, x.astype(float), labels, _hash_split(ids), np.ones(len(y)))
    return data, [str(c) for c in range(10)]


def test_digits_with_all_labels_reach_95_percent() -> None:
    data, classes = _digits()
    result = train_round(
        make_pipeline("vectors", "logistic_regression", 0),
        data,
        classes,
        current_model=None,
        current_macro_f1=None,
        tolerance=0.01,
        random_state=0,
    )
    assert result.evaluated_on == "test"
    assert result.evaluation.n == int((data.split == "test").sum())
    assert result.evaluation.accuracy >= 0.95
    assert result.evaluation.macro_f1 >= 0.95
    assert result.promoted
    assert result.oos_proba.shape == (len(data.y), 10)
    oos_accuracy = np.mean(np.array(classes)[result.oos_proba.argmax(axis=1)] == data.y)
    assert oos_accuracy >= 0.93
    confusion = np.array(result.evaluation.confusion)
    assert confusion.shape == (10, 10)
    assert confusion.sum() == result.evaluation.n


def test_a_worse_model_is_not_promoted() -> None:
    data, classes = _digits()
    pipeline = make_pipeline("vectors", "logistic_regression", 0)
    good = train_round(
        pipeline,
        data,
        classes,
        current_model=None,
        current_macro_f1=None,
        tolerance=0.0,
        random_state=0,
    )
    few = data.where(np.isin(np.arange(len(data.y)), np.r_[0:40]) | (data.split == "test"))
    weak = train_round(
        pipeline,
        few,
        classes,
        current_model=good.model,
        current_macro_f1=good.evaluation.macro_f1,
        tolerance=0.01,
        random_state=0,
    )
    assert weak.current_evaluation is not None
    assert weak.current_evaluation.n == weak.evaluation.n  # compared on the same rows
    assert weak.evaluation.macro_f1 < weak.current_evaluation.macro_f1 - 0.01
    assert not weak.promoted


def test_one_class_cannot_train() -> None:
    data = LabeledData(
        np.array(["a", "b", "c"]),
        np.ones((3, 2)),
        np.array(["x", "x", "y"]),
        np.array(["train", "train", "test"]),
        np.ones(3),
    )
    with pytest.raises(NotEnoughClasses):
        train_round(
            make_pipeline("vectors", "logistic_regression", 0),
            data,
            ["x", "y"],
            current_model=None,
            current_macro_f1=None,
            tolerance=0.0,
            random_state=0,
        )


def test_without_test_rows_evaluation_is_out_of_sample() -> None:
    texts = np.array(["good great", "great fine", "bad awful", "awful bad"] * 4, dtype=object)
    y = np.array(["pos", "pos", "neg", "neg"] * 4)
    data = LabeledData(
        np.array([f"t{k}" for k in range(16)]), texts, y, np.array(["train"] * 16), np.ones(16)
    )
    result = train_round(
        make_pipeline("text", "logistic_regression", 0),
        data,
        ["pos", "neg", "neu"],
        current_model=None,
        current_macro_f1=None,
        tolerance=0.0,
        random_state=0,
    )
    assert result.evaluated_on == "out_of_sample"
    assert result.evaluation.accuracy == 1.0
    assert np.all(result.oos_proba[:, 2] == 0.0)


def test_out_of_sample_handles_a_class_with_one_row() -> None:
    x = np.vstack([np.zeros((10, 2)), np.ones((10, 2)), [[5.0, 5.0]]])
    y = np.array(["a"] * 10 + ["b"] * 10 + ["c"])
    data = LabeledData(np.arange(21).astype(str), x, y, np.array(["train"] * 21), np.ones(21))
    proba = out_of_sample_proba(
        make_pipeline("vectors", "logistic_regression", 0), data, ["a", "b", "c"], random_state=0
    )
    assert proba.shape == (21, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
