"""A training round on real data: digits and a small text set."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from labelloop_trainer.domain.estimators import InputKind, make_pipeline
from labelloop_trainer.domain.training import (
    LabeledData,
    NotEnoughClasses,
    RoundResult,
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


def _first_round(
    data: LabeledData, classes: list[str], *, kind: InputKind = "vectors", **kw: Any
) -> RoundResult:
    """A logistic-regression round without a serving model (no tolerance comes into it)."""
    return train_round(
        make_pipeline(kind, "logistic_regression", 0),
        data,
        classes,
        current_model=None,
        fresh=None,
        tolerance=0.0,
        random_state=0,
        **kw,
    )


def test_a_round_fits_every_row_and_is_judged_out_of_sample() -> None:
    data, classes = _digits()
    some = data.where(np.arange(len(data.y)) < 400)
    result = _first_round(some, classes)
    assert result.evaluated_on == "out_of_sample"
    assert result.n_train == 400  # the test split is trained on too
    assert result.evaluation.n == 400
    assert result.evaluation.accuracy >= 0.85
    assert result.promoted
    assert result.oos_proba.shape == (400, 10)
    predicted = np.array(classes)[result.oos_proba.argmax(axis=1)]
    assert result.evaluation.accuracy == pytest.approx(np.mean(predicted == some.y))
    confusion = np.array(result.evaluation.confusion)
    assert confusion.shape == (10, 10)
    assert confusion.sum() == 400


def test_a_candidate_worse_on_the_rows_it_adds_is_not_promoted() -> None:
    data, classes = _digits()
    pipeline = make_pipeline("vectors", "logistic_regression", 0)
    serving = _first_round(data.where(np.arange(len(data.y)) < 600), classes)
    # the candidate's version adds 300 rows the serving model never saw, most labels scrambled
    rows = np.arange(len(data.y)) < 900
    rng = np.random.default_rng(0)
    y = data.y.copy()
    scrambled = np.flatnonzero(rows)[rng.random(int(rows.sum())) < 0.6]
    y[scrambled] = rng.choice(classes, size=len(scrambled))
    noisy = LabeledData(data.item_ids, data.x, y, data.split, data.weight).where(rows)
    fresh = np.arange(int(rows.sum())) >= 600
    candidate = train_round(
        pipeline,
        noisy,
        classes,
        current_model=serving.model,
        fresh=fresh,
        tolerance=0.01,
        random_state=0,
    )
    assert candidate.current_evaluation is not None
    assert candidate.current_evaluation.n == 300  # judged on the fresh rows only
    assert not candidate.promoted
    # the same labels, clean, and the candidate is promoted
    clean = train_round(
        pipeline,
        data.where(rows),
        classes,
        current_model=serving.model,
        fresh=fresh,
        tolerance=0.01,
        random_state=0,
    )
    assert clean.promoted


def test_one_class_cannot_train() -> None:
    data = LabeledData(
        np.array(["a", "b", "c"]),
        np.ones((3, 2)),
        np.array(["x", "x", "x"]),
        np.array(["train", "train", "test"]),
        np.ones(3),
    )
    with pytest.raises(NotEnoughClasses):
        _first_round(data, ["x", "y"])


def test_text_rounds_are_judged_out_of_sample() -> None:
    texts = np.array(["good great", "great fine", "bad awful", "awful bad"] * 4, dtype=object)
    y = np.array(["pos", "pos", "neg", "neg"] * 4)
    data = LabeledData(
        np.array([f"t{k}" for k in range(16)]), texts, y, np.array(["train"] * 16), np.ones(16)
    )
    result = _first_round(data, ["pos", "neg", "neu"], kind="text")
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


def test_tuning_keeps_the_regularization_cross_validation_prefers() -> None:
    """Of a crippling C (the model can only guess the prior) and a sane one, the sane one wins;
    the round reports the choice and its out-of-sample figures are the chosen candidate's."""
    from labelloop_trainer.domain.training import tune

    data, classes = _digits()
    some = data.where(np.arange(len(data.y)) < 300)
    pipeline = make_pipeline("vectors", "logistic_regression", 0)
    grid = [{"clf__C": 1e-6}, {"clf__C": 0.1}]
    chosen, oos, params = tune(pipeline, some, classes, grid, random_state=0)
    assert params == {"clf__C": 0.1}
    assert chosen.get_params()["clf__C"] == 0.1
    alone = out_of_sample_proba(pipeline.set_params(clf__C=0.1), some, classes, random_state=0)
    np.testing.assert_allclose(oos, alone)
    result = _first_round(some, classes, grid=grid)
    assert result.params == {"clf__C": 0.1}
    assert result.model.get_params()["clf__C"] == 0.1
    untuned = _first_round(some, classes)
    assert untuned.params == {}
    assert untuned.model.get_params()["clf__C"] == 1.0


def test_every_estimator_has_a_grid_its_pipeline_accepts() -> None:
    from typing import get_args

    from labelloop.project import TrainingConfig
    from labelloop_trainer.domain.estimators import Estimator, regularization_grid

    for estimator in get_args(Estimator):
        training = TrainingConfig(estimator=estimator)  # type: ignore[arg-type]
        for kind in ("vectors", "text"):
            pipeline = make_pipeline(kind, estimator, 0)  # type: ignore[arg-type]
            for params in regularization_grid(training, kind):  # type: ignore[arg-type]
                pipeline.set_params(**params)
        off = TrainingConfig(estimator=estimator, tune_regularization=False)  # type: ignore[arg-type]
        assert regularization_grid(off) == [{}]
