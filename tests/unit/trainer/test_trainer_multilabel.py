"""Multi-label training: one binary model per label, per-label probabilities aligned to the
project's labels, multi-label metrics, promotion by micro-F1, models stored as trusted data."""

from __future__ import annotations

from typing import Any, get_args

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, hamming_loss

from labelloop.model_format import digest_of, dump_model, load_model
from labelloop.project import TrainingConfig
from labelloop_trainer.domain.estimators import (
    Estimator,
    fit_features,
    fit_multilabel,
    label_proba,
    make_pipeline,
    regularization_grid,
)
from labelloop_trainer.domain.evaluation import evaluate_multilabel
from labelloop_trainer.domain.multilabel import (
    indicator,
    label_sets,
    out_of_sample_label_proba,
    predicted_sets,
    train_multilabel_round,
)
from labelloop_trainer.domain.training import LabeledData, NotEnoughClasses

Array = npt.NDArray[Any]
LABELS = ["red", "green", "blue"]
WORDS = {"red": "cherry ruby brick", "green": "leaf moss fern", "blue": "sky sea navy"}


def _texts(n: int, seed: int = 0) -> tuple[Array, Array]:
    """Texts whose words say their labels (one to three), with noise words; and the 0/1 truth."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, len(LABELS)), dtype=np.int8)
    texts = []
    for i in range(n):
        y[i] = rng.random(len(LABELS)) < 0.45
        if not y[i].any():
            y[i, rng.integers(len(LABELS))] = 1
        words = [w for j, c in enumerate(LABELS) if y[i, j] for w in WORDS[c].split()]
        words += [f"noise{int(k)}" for k in rng.integers(0, 40, size=6)]
        rng.shuffle(words)
        texts.append(" ".join(words))
    return np.asarray(texts, dtype=object), y


def _data(x: Array, y: Array, weight: Array | None = None) -> LabeledData:
    n = len(y)
    return LabeledData(
        np.asarray([f"i{k:04d}" for k in range(n)]),
        x,
        y,
        np.asarray(["train"] * n),
        np.ones(n) if weight is None else weight,
    )


def test_each_label_gets_its_own_probability_named_by_the_project() -> None:
    x, y = _texts(120)
    model = fit_multilabel(
        make_pipeline("text", "logistic_regression", 0, multilabel=True), x, y, LABELS
    )
    assert list(model.classes_) == LABELS
    order = ["blue", "purple", "red", "green"]  # another order, and a label added since
    proba = label_proba(model, np.array(["sky sea", "leaf cherry ruby"], dtype=object), order)
    assert proba.shape == (2, 4)
    assert np.all(proba[:, order.index("purple")] == 0.0)
    assert proba[0, order.index("blue")] > 0.5 > proba[0, order.index("red")]
    assert proba[1, order.index("red")] > 0.5
    assert proba[1, order.index("green")] > 0.5
    # per-label probabilities: a row need not sum to one
    assert not np.allclose(proba.sum(axis=1), 1.0)


def test_a_label_the_project_lacks_is_an_error() -> None:
    x, y = _texts(40)
    model = fit_multilabel(
        make_pipeline("text", "logistic_regression", 0, multilabel=True), x, y, LABELS
    )
    with pytest.raises(ValueError, match="green"):
        label_proba(model, x[:1], ["red", "blue"])


def test_a_label_never_or_always_seen_is_constant_and_the_model_is_trusted_data() -> None:
    x, y = _texts(60)
    y[:, LABELS.index("green")] = 0  # nobody has it yet (a cold start)
    y[:, LABELS.index("blue")] = 1  # everybody has it
    model = fit_multilabel(
        make_pipeline("text", "logistic_regression", 0, multilabel=True), x, y, LABELS
    )
    proba = label_proba(model, x[:5], LABELS)
    assert np.all(proba[:, LABELS.index("green")] == 0.0)
    assert np.all(proba[:, LABELS.index("blue")] == 1.0)
    raw = dump_model(model)  # skops: scikit-learn's and numpy's types only
    again = load_model(raw, digest=digest_of(raw))
    assert np.array_equal(label_proba(again, x[:5], LABELS), proba)


@pytest.mark.parametrize("estimator", get_args(Estimator))
def test_every_estimator_learns_labels_on_text_and_vectors(estimator: str) -> None:
    x, y = _texts(150)
    model = fit_multilabel(
        make_pipeline("text", estimator, 0, multilabel=True),  # type: ignore[arg-type]
        x,
        y,
        LABELS,
    )
    chosen = predicted_sets(
        model, np.array(["ruby cherry brick sky sea navy noise3"], dtype=object), LABELS, 0.5
    )
    assert label_sets(chosen, LABELS) == [["red", "blue"]]
    rng = np.random.default_rng(1)
    vectors = y * 3.0 + rng.normal(size=y.shape)
    model = fit_multilabel(
        make_pipeline("vectors", estimator, 0, multilabel=True),  # type: ignore[arg-type]
        vectors,
        y,
        LABELS,
    )
    predicted = predicted_sets(model, vectors, LABELS, 0.5)
    assert np.mean(predicted == y) > 0.85
    raw = dump_model(model)
    assert np.array_equal(
        label_proba(load_model(raw, digest=digest_of(raw)), vectors, LABELS),
        label_proba(model, vectors, LABELS),
    )


def test_sample_weights_reach_every_labels_model() -> None:
    _, y = _texts(80)
    weight = np.linspace(0.2, 1.0, len(y))
    pipeline = make_pipeline("vectors", "logistic_regression", 0, multilabel=True)
    vectors = y + np.random.default_rng(2).normal(scale=0.8, size=y.shape)
    model = fit_multilabel(pipeline, vectors, y, LABELS, weight)
    _, features = fit_features(pipeline, vectors)
    for j in range(len(LABELS)):
        direct = LogisticRegression(max_iter=2000, random_state=0, class_weight="balanced").fit(
            features, y[:, j], sample_weight=weight
        )
        assert np.allclose(model.named_steps["clf"].estimators_[j].coef_, direct.coef_)
    unweighted = fit_multilabel(pipeline, vectors, y, LABELS)
    assert not np.allclose(
        label_proba(model, vectors, LABELS), label_proba(unweighted, vectors, LABELS)
    )


def test_one_label_is_a_binary_question() -> None:
    x, y = _texts(60)
    one = y[:, :1]
    model = fit_multilabel(
        make_pipeline("text", "logistic_regression", 0, multilabel=True), x, one, ["red"]
    )
    proba = label_proba(model, np.array(["ruby", "moss"], dtype=object), ["red"])
    assert proba.shape == (2, 1)
    assert proba[0, 0] > 0.5 > proba[1, 0]


def test_multilabel_metrics_are_scikit_learns() -> None:
    rng = np.random.default_rng(3)
    truth = (rng.random((50, 4)) < 0.4).astype(int)
    guess = np.where(rng.random((50, 4)) < 0.8, truth, 1 - truth)
    truth[:, 3] = 0
    guess[:, 3] = 0  # a label nobody has and nobody predicted
    ev = evaluate_multilabel(truth, guess, ["a", "b", "c", "d"])
    assert ev.micro_f1 == pytest.approx(f1_score(truth, guess, average="micro"))
    assert ev.macro_f1 == pytest.approx(f1_score(truth[:, :3], guess[:, :3], average="macro"))
    assert ev.accuracy == pytest.approx(accuracy_score(truth, guess))  # subset accuracy
    assert ev.hamming_loss == pytest.approx(hamming_loss(truth, guess))
    assert ev.per_class["d"]["support"] == 0.0
    metrics = ev.metrics()
    assert metrics["subset_accuracy"] == metrics["accuracy"] == ev.accuracy
    assert {"micro_f1", "macro_f1", "hamming_loss", "f1.a"} <= set(metrics)
    assert (ev.promotion_metric, ev.promotion_score) == ("micro_f1", ev.micro_f1)


def test_one_label_metrics_count_the_label_not_both_answers() -> None:
    truth = np.array([[1], [0], [1], [0]])
    guess = np.array([[1], [1], [0], [0]])
    ev = evaluate_multilabel(truth, guess, ["x"])
    assert ev.micro_f1 == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert ev.per_class["x"]["support"] == 2.0


def test_label_sets_and_their_matrix() -> None:
    matrix = indicator([["blue", "red"], [], ["green", "unknown"]], LABELS)
    assert matrix.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert label_sets(matrix, LABELS) == [["red", "blue"], [], ["green"]]


def test_the_grid_tunes_every_labels_model_at_once() -> None:
    for kind in ("text", "vectors"):
        grid = regularization_grid(TrainingConfig(), kind, multilabel=True)  # type: ignore[arg-type]
        assert grid == [
            {k.replace("clf__", "clf__estimator__"): v for k, v in c.items()}
            for c in regularization_grid(TrainingConfig(), kind)  # type: ignore[arg-type]
        ]
    assert regularization_grid(TrainingConfig(), "text", multilabel=True)[0] == {
        "clf__estimator__C": 1.0
    }
    off = TrainingConfig(tune_regularization=False)
    assert regularization_grid(off, "text", multilabel=True) == [{}]


def test_out_of_sample_probabilities_never_saw_their_row() -> None:
    x, y = _texts(50)
    pipeline = make_pipeline("text", "logistic_regression", 0, multilabel=True)
    oos = out_of_sample_label_proba(pipeline, _data(x, y), LABELS, random_state=0)
    full = label_proba(fit_multilabel(pipeline, x, y, LABELS), x, LABELS)
    assert oos.shape == full.shape
    # in sample the model is surer of its own rows' labels than out of sample
    truth = y.astype(bool)
    assert np.mean(np.where(truth, full, 1 - full)) > np.mean(np.where(truth, oos, 1 - oos))


def _round(data: LabeledData, **kwargs: Any) -> Any:
    defaults: dict[str, Any] = {
        "current_model": None,
        "fresh": None,
        "tolerance": 0.01,
        "threshold": 0.5,
        "random_state": 0,
        "grid": regularization_grid(TrainingConfig(), "text", multilabel=True),
    }
    return train_multilabel_round(
        make_pipeline("text", "logistic_regression", 0, multilabel=True),
        data,
        LABELS,
        **{**defaults, **kwargs},
    )


def test_a_round_is_judged_out_of_sample_by_multilabel_metrics() -> None:
    x, y = _texts(120)
    result = _round(_data(x, y))
    assert result.promoted  # nothing serves yet
    assert result.evaluated_on == "out_of_sample"
    assert result.evaluation.micro_f1 is not None
    assert result.evaluation.micro_f1 > 0.9
    assert result.oos_proba.shape == (120, 3)
    assert set(result.params) == {"clf__estimator__C"}
    assert result.n_train == 120


def test_promotion_compares_micro_f1_on_the_fresh_rows() -> None:
    x, y = _texts(160)
    fresh = np.arange(160) >= 100
    noisy = y.copy()
    flip = np.random.default_rng(4).random(noisy.shape) < 0.4
    noisy[flip] = 1 - noisy[flip]
    # a serving model that saw the fresh rows' labels (it learnt them by heart): far better
    # there than a candidate judged out of sample
    pipeline = make_pipeline("text", "logistic_regression", 0, multilabel=True)
    by_heart = fit_multilabel(pipeline.set_params(clf__estimator__C=1e4), x, noisy, LABELS)
    worse = _round(_data(x, noisy), current_model=by_heart, fresh=fresh)
    assert worse.current_evaluation is not None
    assert worse.current_evaluation.micro_f1 is not None
    assert worse.evaluation.micro_f1 is not None
    assert worse.current_evaluation.micro_f1 > worse.evaluation.micro_f1 + 0.1
    assert not worse.promoted
    # a serving model trained on few rows, against a candidate trained on all of them
    early = fit_multilabel(
        make_pipeline("text", "logistic_regression", 0, multilabel=True), x[:20], y[:20], LABELS
    )
    better = _round(_data(x, y), current_model=early, fresh=fresh)
    assert better.promoted


def test_a_round_needs_a_label_some_rows_have_and_others_lack() -> None:
    x, _ = _texts(30)
    with pytest.raises(NotEnoughClasses):
        _round(_data(x, np.ones((30, 3), dtype=np.int8)))
