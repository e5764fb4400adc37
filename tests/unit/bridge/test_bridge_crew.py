"""The simulated crew: deterministic by seed, and each behaviour measurably what it claims."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from labelloop.events import BatchTask
from labelloop.project import SimulationConfig, TaskType
from labelloop_bridge.domain.crew import answer_batch, simulation_truth

CLASSES = ["a", "b", "c", "d"]


def _tasks(n: int, required: int = 1, seed: int = 0, truth_key: bool = True) -> list[BatchTask]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        truth = CLASSES[int(rng.integers(len(CLASSES)))]
        meta: dict[str, Any] = {"simulation_truth": truth} if truth_key else {}
        out.append(
            BatchTask(
                item_id=f"item-{i}",
                data={"text": str(i)},
                annotations_required=required,
                metadata=meta,
            )
        )
    return out


def _crew(*annotators: dict[str, Any], seed: int = 7) -> SimulationConfig:
    return SimulationConfig.model_validate({"seed": seed, "annotators": list(annotators)})


def _answers(crew: SimulationConfig, tasks: list[BatchTask], **kw: Any) -> list[Any]:
    plan = answer_batch(
        tasks,
        crew,
        batch_id=kw.pop("batch_id", "b1"),
        task_type=kw.pop("task_type", TaskType.TEXT_CLASSIFICATION),
        classes=CLASSES,
        **kw,
    )
    return plan.answers


def test_same_seed_same_answers_whatever_the_task_order() -> None:
    crew = _crew(
        {"id": "g", "accuracy": 0.7},
        {"id": "s", "behaviour": "spammer"},
        {"id": "c", "behaviour": "confuser", "accuracy": 0.6},
    )
    tasks = _tasks(60, required=2)
    forward = {(a.item_id, a.annotator_id): a for a in _answers(crew, tasks)}
    backward = {(a.item_id, a.annotator_id): a for a in _answers(crew, tasks[::-1])}
    assert forward == backward
    # a batch split in two gets the same answers as the whole batch
    split = _answers(crew, tasks[:30]) + _answers(crew, tasks[30:])
    assert {(a.item_id, a.annotator_id): a for a in split} == forward


def test_another_seed_or_batch_gives_other_answers() -> None:
    tasks = _tasks(80)
    one = _answers(_crew({"id": "s", "behaviour": "spammer"}, seed=1), tasks)
    two = _answers(_crew({"id": "s", "behaviour": "spammer"}, seed=2), tasks)
    other_batch = _answers(_crew({"id": "s", "behaviour": "spammer"}, seed=1), tasks, batch_id="b2")
    assert [a.value for a in one] != [a.value for a in two]
    assert [a.value for a in one] != [a.value for a in other_batch]


def test_required_distinct_annotators_per_task_and_experts_for_review() -> None:
    crew = _crew({"id": "a1"}, {"id": "a2"}, {"id": "a3"}, {"id": "x", "role": "expert"})
    answers = _answers(crew, _tasks(30, required=3))
    per_item: dict[str, list[str]] = {}
    for a in answers:
        per_item.setdefault(a.item_id, []).append(a.annotator_id)
    assert all(sorted(v) == ["a1", "a2", "a3"] for v in per_item.values())
    review = answer_batch(
        _tasks(5, required=1),
        crew,
        batch_id="r",
        review=True,
        task_type=TaskType.TEXT_CLASSIFICATION,
        classes=CLASSES,
    )
    assert {a.annotator_id for a in review.answers} == {"x"}
    assert all(a.is_expert for a in review.answers)


def test_short_handed_tasks_get_everyone_and_are_reported() -> None:
    plan = answer_batch(
        _tasks(4, required=5),
        _crew({"id": "a"}, {"id": "b"}),
        batch_id="b",
        task_type=TaskType.TEXT_CLASSIFICATION,
        classes=CLASSES,
    )
    assert plan.short_handed == 4
    assert len(plan.answers) == 8


N = 4000


def _accuracy_and_confusions(
    behaviour: str, accuracy: float
) -> tuple[float, Counter[tuple[str, str]]]:
    tasks = _tasks(N, seed=3)
    answers = _answers(_crew({"id": "w", "behaviour": behaviour, "accuracy": accuracy}), tasks)
    truth = {t.item_id: t.metadata["simulation_truth"] for t in tasks}
    pairs = Counter((str(truth[a.item_id]), str(a.value)) for a in answers)
    correct = sum(n for (t, v), n in pairs.items() if t == v)
    return correct / N, pairs


def _tolerance(p: float) -> float:
    return 4 * float(np.sqrt(p * (1 - p) / N))  # four standard errors


@pytest.mark.parametrize("accuracy", [0.9, 0.6])
def test_good_annotator_hits_its_accuracy_and_errs_uniformly(accuracy: float) -> None:
    acc, pairs = _accuracy_and_confusions("good", accuracy)
    assert abs(acc - accuracy) < _tolerance(accuracy)
    wrong_given_a = [pairs[("a", c)] for c in CLASSES if c != "a"]
    # errors spread evenly over the three wrong classes (chi-square, 2 dof, p ~ 0.001)
    expected = sum(wrong_given_a) / 3
    chi2 = sum((o - expected) ** 2 / expected for o in wrong_given_a)
    assert chi2 < 13.8


def test_confuser_errs_always_to_the_neighbour_class() -> None:
    acc, pairs = _accuracy_and_confusions("confuser", 0.7)
    assert abs(acc - 0.7) < _tolerance(0.7)
    wrong = {(t, v) for (t, v), n in pairs.items() if t != v and n}
    assert wrong == {("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")}


def test_uniform_spammer_ignores_the_truth() -> None:
    acc, pairs = _accuracy_and_confusions("spammer", 0.99)
    assert abs(acc - 0.25) < _tolerance(0.25)
    answered = Counter()
    for (_, v), n in pairs.items():
        answered[v] += n
    assert all(abs(answered[c] / N - 0.25) < _tolerance(0.25) for c in CLASSES)


def test_constant_labeler_answers_one_class() -> None:
    _, pairs = _accuracy_and_confusions("constant", 0.9)
    assert len({v for (_, v) in pairs}) == 1


def test_adversary_is_never_right_but_consistent() -> None:
    acc, pairs = _accuracy_and_confusions("adversary", 0.9)
    assert acc == 0.0
    assert {(t, v) for (t, v), n in pairs.items() if n} == {
        ("a", "b"),
        ("b", "c"),
        ("c", "d"),
        ("d", "a"),
    }


def test_spammers_are_faster_and_lead_times_centre_on_the_mean() -> None:
    tasks = _tasks(2000)
    crew = _crew(
        {"id": "g", "mean_lead_time_seconds": 20.0},
        {"id": "s", "behaviour": "spammer", "mean_lead_time_seconds": 20.0},
    )
    answers = answer_batch(
        tasks, crew, batch_id="b", task_type=TaskType.TEXT_CLASSIFICATION, classes=CLASSES
    ).answers
    good = [a.lead_time_seconds for a in answers if a.annotator_id == "g"]
    spam = [a.lead_time_seconds for a in answers if a.annotator_id == "s"]
    assert abs(np.mean(good) - 20.0) < 1.5
    assert abs(np.mean(spam) - 5.0) < 0.5


def test_truth_comes_from_metadata_then_gold_and_missing_truth_is_counted() -> None:
    gold = BatchTask(item_id="g", data={}, annotations_required=1, is_gold=True, gold_label="c")
    plain = BatchTask(item_id="p", data={}, annotations_required=1)
    assert simulation_truth(gold) == "c"
    assert simulation_truth(plain) is None
    plan = answer_batch(
        [gold, plain],
        _crew({"id": "g", "accuracy": 1.0}),
        batch_id="b",
        task_type=TaskType.TEXT_CLASSIFICATION,
        classes=CLASSES,
    )
    assert plan.missing_truth == 1
    assert next(a.value for a in plan.answers if a.item_id == "g") == "c"


def test_multilabel_and_regions() -> None:
    crew = _crew({"id": "perfect", "accuracy": 1.0}, {"id": "adv", "behaviour": "adversary"})
    task = BatchTask(
        item_id="m", data={}, annotations_required=2, metadata={"simulation_truth": ["a", "c"]}
    )
    answers = {
        a.annotator_id: a.value
        for a in answer_batch(
            [task], crew, batch_id="b", task_type=TaskType.TEXT_MULTILABEL, classes=CLASSES
        ).answers
    }
    assert answers == {"perfect": ["a", "c"], "adv": ["b", "d"]}
    spans = [{"start": 0, "end": 3, "text": "Bob", "label": "a"}]
    ner = BatchTask(
        item_id="n", data={}, annotations_required=2, metadata={"simulation_truth": spans}
    )
    answers = {
        a.annotator_id: a.value
        for a in answer_batch(
            [ner], crew, batch_id="b", task_type=TaskType.NER, classes=CLASSES
        ).answers
    }
    assert answers["perfect"] == spans
    assert answers["adv"] == [{**spans[0], "label": "b"}]
