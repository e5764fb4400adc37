"""``LabelFold``: the exporter's compact labels, checked against the plain fold of the same
rounds into a dict (``fold_round``), through relabels, withdrawals, gold items and compactions."""

from __future__ import annotations

import random

import pytest

from labelloop.events import ConsensusLabel, LabelsReady
from labelloop.project import ProjectConfig, parse_project
from labelloop_exporter.domain import fold as fold_module
from labelloop_exporter.domain.dataset import prepare
from labelloop_exporter.domain.fold import LabelFold, fold_table
from labelloop_exporter.domain.labels import CurrentLabel, fold_round
from labelloop_exporter.domain.table import ItemData


def config_for() -> ProjectConfig:
    return parse_project(
        {
            "name": "p",
            "task_type": "text_classification",
            "labels": {"classes": ["cat", "dog"]},
            "data_fields": [{"name": "text", "kind": "text"}],
            "export": {"formats": ["jsonl", "csv", "parquet"]},
        }
    )


UNIVERSE = [f"item-{k:03d}" for k in range(80)]
VALUES: list[object] = ["cat", "dog", ["cat", "dog"], [{"start": 0, "end": 3, "labels": ["PER"]}]]


def _round(rng: random.Random, number: int) -> LabelsReady:
    touched = rng.sample(UNIVERSE, rng.randint(1, 12))
    withdrawn = [i for i in touched if rng.random() < 0.2]
    labels = [
        ConsensusLabel(
            item_id=i,
            label=rng.choice(VALUES),  # type: ignore[arg-type]
            confidence=round(rng.random(), 3),
            method=rng.choice(["majority", "dawid_skene", "expert"]),
            n_annotations=rng.randint(1, 5),
            is_gold=rng.random() < 0.1,
            reviewed=rng.random() < 0.3,
            annotators=rng.sample(["a3", "a1", "a2", "e1"], rng.randint(0, 3)),
            batch_id=rng.choice([None, f"b{number}-x"]),
        )
        for i in touched
        if i not in withdrawn
    ]
    return LabelsReady(
        project="p",
        batch_id=f"b{number}",
        round=number,
        n_items=len(touched),
        labels=labels,
        withdrawn=withdrawn,
    )


def _plain(labels: dict[str, CurrentLabel]) -> dict[str, tuple[object, ...]]:
    """What a dataset row takes from a label."""
    return {
        i: (
            c.label.label,
            c.label.confidence,
            c.label.method,
            c.label.n_annotations,
            c.is_gold,
            c.label.reviewed,
            sorted(c.label.annotators),
            c.batch_id,
            c.round,
        )
        for i, c in labels.items()
    }


@pytest.mark.parametrize("seed", range(30))
def test_a_fold_holds_what_the_plain_fold_holds(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fold_module, "COMPACT_AT", random.Random(seed).choice([1, 5, 40, 10_000]))
    rng = random.Random(seed)
    expected: dict[str, CurrentLabel] = {}
    fold = LabelFold()
    for number in range(1, rng.randint(2, 30)):
        event = _round(rng, number)
        before = dict(fold.items())
        then = fold.then(event)
        fold_round(expected, event)
        assert _plain(dict(fold.items())) == _plain(before)  # the earlier fold is unchanged
        fold = then
        assert len(fold) == len(expected)
        assert sorted(fold) == sorted(expected)
        assert _plain(dict(fold.items())) == _plain(expected)
        for i in rng.sample(UNIVERSE, 5):
            assert (i in fold) == (i in expected)
    assert fold.table().to_pylist() == fold_table(expected).to_pylist()


def test_a_gold_item_keeps_its_label_when_a_round_withdraws_it() -> None:
    gold = ConsensusLabel(
        item_id="g", label="cat", confidence=1.0, method="gold", n_annotations=1, is_gold=True
    )
    fold = LabelFold().then(
        LabelsReady(project="p", batch_id="b1", round=1, n_items=1, labels=[gold])
    )
    fold = fold.compacted().then(
        LabelsReady(project="p", batch_id="b2", round=2, n_items=1, labels=[], withdrawn=["g"])
    )
    assert fold["g"].is_gold
    assert fold["g"].label.label == "cat"


def test_an_item_keeps_its_data_through_relabels_and_compactions() -> None:
    def labeled(number: int, label: str) -> LabelsReady:
        value = ConsensusLabel(
            item_id="i", label=label, confidence=0.9, method="majority", n_annotations=3
        )
        return LabelsReady(
            project="p", batch_id=f"b{number}", round=number, n_items=1, labels=[value]
        )

    fold = LabelFold().then(labeled(1, "cat"))
    assert fold.without_data() == ["i"]
    fold = fold.with_data({"i": ItemData({"text": "a cat"}, {"source": "s"})})
    assert fold.without_data() == []
    fold = fold.then(labeled(2, "dog")).compacted()
    assert fold.without_data() == []
    assert fold["i"].label.label == "dog"
    config = config_for()
    prepared = prepare(fold, None, config, salt="s")
    row = prepared.validation.rows.iloc[0]
    assert (row["label"], row[config.primary_field.name]) == ("dog", "a cat")


def test_a_version_from_a_fold_is_the_version_from_the_same_labels_as_a_dict() -> None:
    rng = random.Random(7)
    expected: dict[str, CurrentLabel] = {}
    fold = LabelFold()
    for number in range(1, 15):
        event = _round(rng, number)
        fold_round(expected, event)
        fold = fold.then(event)
    items = {i: ItemData({"text": f"text of {i}"}, {"n": k}) for k, i in enumerate(UNIVERSE)}
    config = config_for()
    from_dict = prepare(expected, items, config, salt="s")
    from_fold = prepare(fold.with_data(items), None, config, salt="s")
    assert from_fold.content_sha256 == from_dict.content_sha256
    assert from_fold.jsonl == from_dict.jsonl
