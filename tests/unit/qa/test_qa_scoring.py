"""``score_batch``: the whole QA decision for one batch, as a pure function."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from labelloop.project import ProjectConfig, parse_project
from labelloop_qa.domain import agreement as ag
from labelloop_qa.domain.aggregation import aggregate
from labelloop_qa.domain.annotators import Tally
from labelloop_qa.domain.crowd import simulate_crew
from labelloop_qa.domain.ratings import Ratings
from labelloop_qa.domain.review import model_contradictions
from labelloop_qa.domain.scoring import Rating, TaskInfo, score_batch


def project(task_type: str = "text_classification", **quality: Any) -> ProjectConfig:
    return parse_project(
        {
            "name": "demo",
            "task_type": task_type,
            "labels": {"classes": ["pos", "neg", "neu"]},
            "data_fields": [{"name": "text", "kind": "text"}],
            "quality": {"consensus": "majority", **quality},
        }
    )


def crew_ratings(n_items: int = 30, seed: int = 0) -> list[Rating]:
    crew = simulate_crew(
        n_items=n_items,
        n_classes=3,
        behaviours=["good"] * 4,
        accuracies=[0.9] * 4,
        labels_per_item=3,
        random_state=seed,
    )
    names = ["pos", "neg", "neu"]
    r = crew.ratings
    return [
        Rating(str(r.item_ids[i]), str(r.annotator_ids[a]), names[lab], lead_time_seconds=5.0)
        for i, a, lab in zip(r.item, r.annotator, r.label, strict=True)
    ]


def test_report_numbers_equal_the_pure_functions() -> None:
    ratings = crew_ratings()
    tasks = [TaskInfo(x.item_id) for x in ratings]
    out = score_batch("b1", ratings, tasks, project(), n_boot=100)
    r = Ratings.from_records(
        [x.item_id for x in ratings],
        [x.annotator_id for x in ratings],
        [x.value for x in ratings],
        classes=["pos", "neg", "neu"],
    )
    s = ag.summarize(r, n_boot=100)
    rep = out.report
    assert rep["krippendorff_alpha"] == s.krippendorff_alpha
    assert rep["fleiss_kappa"] == s.fleiss_kappa
    assert rep["cohen_kappa_mean"] == s.cohen_kappa_mean
    assert rep["gwet_ac1"] == s.gwet_ac1
    assert rep["percent_agreement"] == s.percent_agreement
    assert rep["krippendorff_alpha_ci"] == s.krippendorff_alpha_ci
    assert rep["n_annotations"] == 90
    assert rep["n_items"] == 30
    assert rep["consensus_method"] == "majority"
    mv = aggregate(r, "majority")
    released = {lab.item_id: lab for lab in out.labels}
    flagged = {item.item_id for item in out.review}
    assert len(released) + len(flagged) == 30
    for i, item in enumerate(r.item_ids.tolist()):
        if item in released:
            assert released[item].label == r.classes[mv.label[i]]
            assert released[item].confidence == pytest.approx(mv.confidence[i])
            assert released[item].n_annotations == 3
    assert rep["items_flagged"] == len(flagged)
    assert {a.annotator_id for a in rep["annotators"]} == {f"ann-00{i}" for i in range(4)}
    assert all(a.mean_lead_time_seconds == 5.0 for a in rep["annotators"])
    # determinism
    again = score_batch("b1", ratings, tasks, project(), n_boot=100)
    assert again.report == out.report
    assert again.labels == out.labels


def test_disagreement_and_low_confidence_go_to_review() -> None:
    ratings = [
        Rating("split", "a", "pos"),
        Rating("split", "b", "neg"),
        Rating("split", "c", "neu"),
        Rating("clear", "a", "pos"),
        Rating("clear", "b", "pos"),
        Rating("clear", "c", "pos"),
        Rating("weak", "a", "neg"),
        Rating("weak", "b", "neg"),
        Rating("weak", "c", "pos"),
    ]
    tasks = [TaskInfo("split", data={"text": "hm"}), TaskInfo("clear"), TaskInfo("weak")]
    out = score_batch("b2", ratings, tasks, project(min_confidence=0.7), n_boot=0)
    reasons = {item.item_id: item.reason for item in out.review}
    assert reasons == {"split": "disagreement", "weak": "low_confidence"}
    split = next(item for item in out.review if item.item_id == "split")
    assert split.data == {"text": "hm"}
    assert split.candidate_label == "pos"
    assert [lab.item_id for lab in out.labels] == ["clear"]


def test_gold_and_expert_overrides() -> None:
    ratings = [
        Rating("g", "a", "neg"),
        Rating("g", "b", "neg"),
        Rating("x", "a", "pos"),
        Rating("x", "b", "neg"),
        Rating("x", "boss", "neu", is_expert=True),
        Rating("y", "a", "pos"),
        Rating("y", "b", "pos"),
    ]
    tasks = [TaskInfo("g", is_gold=True, gold_label="pos"), TaskInfo("x"), TaskInfo("y")]
    out = score_batch("b3", ratings, tasks, project(), n_boot=0)
    labels = {lab.item_id: lab for lab in out.labels}
    assert labels["g"].label == "pos"
    assert labels["g"].is_gold
    assert labels["g"].method == "gold"
    assert labels["x"].label == "neu"
    assert labels["x"].reviewed
    assert labels["x"].confidence == 1.0
    assert labels["y"].label == "pos"
    assert out.review == []
    assert out.report["gold_accuracy"] == 0.0
    assert "boss" not in {a.annotator_id for a in out.report["annotators"]}
    assert out.tallies["a"].gold_n == 1
    assert out.tallies["a"].gold_correct == 0


def test_alpha_gate_raises_an_alert() -> None:
    rng = np.random.default_rng(0)
    names = ["pos", "neg", "neu"]
    ratings = [
        Rating(f"i{i}", f"w{w}", names[rng.integers(3)]) for i in range(40) for w in range(3)
    ]
    out = score_batch("b4", ratings, [], project(min_alpha=0.6, consensus="auto"), n_boot=0)
    assert out.report["passed"] is False
    assert out.alert is not None
    assert out.alert["value"] == out.report["krippendorff_alpha"] < 0.6
    good = score_batch("b5", crew_ratings(), [], project(min_alpha=0.2), n_boot=0)
    assert good.report["passed"] is True
    assert good.alert is None


def test_history_flags_a_spammer_seen_before() -> None:
    history = {
        "ann-000": Tally(
            300,
            300,
            280,
            confusion={
                "pos": {"pos": 95.0},
                "neg": {"neg": 95.0},
                "neu": {"neu": 95.0, "pos": 5.0},
            },
        ),
        "ann-003": Tally(
            300,
            300,
            100,
            confusion={c: {"pos": 33.0, "neg": 33.0, "neu": 34.0} for c in ("pos", "neg", "neu")},
        ),
    }
    out = score_batch("b6", crew_ratings(9), [], project(consensus="auto"), history, n_boot=0)
    scores = {a.annotator_id: a for a in out.report["annotators"]}
    assert scores["ann-003"].flagged
    assert not scores["ann-000"].flagged
    assert scores["ann-003"].n_annotations > 300  # cumulative
    assert out.tallies["ann-003"].n_annotations < 30  # the batch's own contribution
    assert out.report["consensus_method"] == "shrunk-dawid-skene"  # a small batch


def test_invalid_and_unknown_labels_are_counted_not_fatal() -> None:
    ratings = [
        Rating("a", "x", "pos"),
        Rating("a", "y", "banana"),
        Rating("a", "z", ["pos", "neg"]),
    ]
    out = score_batch("b7", ratings, [], project(), n_boot=0)
    assert out.report["details"]["invalid_annotations"] == 2
    assert [lab.label for lab in out.labels] == ["pos"]


def test_no_project_config_infers_classes() -> None:
    out = score_batch("b8", crew_ratings(), [], None, n_boot=0)
    assert out.report["krippendorff_alpha"] is not None


def test_multilabel_scored_per_label() -> None:
    config = project("text_multilabel", consensus="majority")
    ratings = [
        Rating("m1", "a", ["pos", "neg"]),
        Rating("m1", "b", ["pos", "neg"]),
        Rating("m1", "c", ["pos"]),
        Rating("m2", "a", ["neu"]),
        Rating("m2", "b", ["neu"]),
        Rating("m2", "c", ["neu"]),
    ]
    out = score_batch("b9", ratings, [], config, n_boot=0)
    labels = {lab.item_id: lab.label for lab in out.labels}
    assert labels["m2"] == ["neu"]
    assert labels.get("m1", ["pos", "neg"]) == ["pos", "neg"]
    assert set(out.report["details"]["per_label"]) == {"pos", "neg", "neu"}
    assert out.report["consensus_method"] == "per-label"


def test_spans_and_boxes_by_matching() -> None:
    config = parse_project(
        {
            "name": "ner",
            "task_type": "ner",
            "labels": {"classes": ["PER", "ORG"]},
            "data_fields": [{"name": "text", "kind": "text"}],
        }
    )
    span = {"start": 0, "end": 4, "labels": ["PER"]}
    other = {"value": {"start": 10, "end": 13, "labels": ["ORG"]}}
    ratings = [
        Rating("t1", "a", [span, other]),
        Rating("t1", "b", [span]),
        Rating("t1", "c", [span, other]),
        Rating("t2", "a", [span]),
        Rating("t2", "b", [other]),
    ]
    out = score_batch("b10", ratings, [], config, n_boot=0)
    labels = {lab.item_id: lab for lab in out.labels}
    assert [r["label"] for r in labels["t1"].label] == ["PER", "ORG"]  # type: ignore[index]
    assert [item.item_id for item in out.review] == ["t2"]
    # t1: pairs a-b 2/3, a-c 1, b-c 2/3; t2: 0
    assert out.report["percent_agreement"] == pytest.approx(((2 / 3 + 1 + 2 / 3) / 3 + 0) / 2)
    from labelloop_qa.domain.regions import consensus_regions, pair_f1, parse_regions

    boxes = [
        parse_regions([{"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["car"]}]),
        parse_regions([{"x": 11, "y": 10, "width": 20, "height": 21, "rectanglelabels": ["car"]}]),
        parse_regions([{"x": 60, "y": 60, "width": 5, "height": 5, "rectanglelabels": ["car"]}]),
    ]
    assert pair_f1(boxes[0], boxes[1]) == 1.0
    assert pair_f1(boxes[0], boxes[2]) == 0.0
    kept, confidence = consensus_regions(boxes)
    assert len(kept) == 1
    assert confidence == pytest.approx(2 / 3)
    assert kept[0].span[0] == pytest.approx(10.5)


def test_model_contradictions() -> None:
    proba = np.array([[0.95, 0.05], [0.5, 0.5], [0.02, 0.98], [0.99, 0.01]])
    found = model_contradictions(
        ["a", "b", "c", "d"],
        ["neg", "neg", "neg", "unknown"],
        proba,
        ["pos", "neg"],
        threshold=0.9,
    )
    assert [(c.item_id, c.model_label) for c in found] == [("a", "pos")]
    assert found[0].model_probability == pytest.approx(0.95)
    with pytest.raises(ValueError, match="items x classes"):
        model_contradictions(["a"], ["pos"], proba, ["pos", "neg"], threshold=0.9)


def test_a_task_nobody_answered_usably_goes_to_review() -> None:
    from labelloop.project import parse_project
    from labelloop_qa.domain.scoring import Rating, TaskInfo, score_batch

    config = parse_project(
        {
            "name": "p",
            "task_type": "text_classification",
            "labels": {"classes": ["a", "b"]},
            "data_fields": [{"name": "text", "kind": "text"}],
        }
    )
    tasks = [TaskInfo("i1", data={"text": "x"}), TaskInfo("i2"), TaskInfo("g", is_gold=True)]
    ratings = [Rating(item_id="i1", annotator_id="ann", value="a")]
    outcome = score_batch("b1", ratings, tasks, config)
    assert [label.item_id for label in outcome.labels] == ["i1"]
    unanswered = [r for r in outcome.review if r.reason == "no_usable_answer"]
    assert [r.item_id for r in unanswered] == ["i2"]  # i2 skipped by all; gold is never reviewed


def test_a_consensus_box_keeps_its_image_size_for_coco() -> None:
    """Label Studio sends each box with its image's size beside the value; the consensus box
    keeps it, or the exporter's COCO (pixel boxes) would leave the row out."""
    from labelloop_exporter.domain.validation import _missing_sizes

    config = parse_project(
        {
            "name": "cars",
            "task_type": "bounding_boxes",
            "labels": {"classes": ["car"]},
            "data_fields": [{"name": "image", "kind": "image"}],
        }
    )

    def box(x: float) -> dict[str, object]:
        value = {"x": x, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["car"]}
        return {"value": value, "original_width": 640, "original_height": 480}

    ratings = [Rating("t1", "a", [box(10)]), Rating("t1", "b", [box(11)])]
    (label,) = score_batch("b1", ratings, [], config, n_boot=0).labels
    assert isinstance(label.label, list)
    (region,) = label.label
    assert isinstance(region, dict)
    assert (region["original_width"], region["original_height"]) == (640, 480)
    assert region["x"] == pytest.approx(10.5)
    assert not _missing_sizes(label.label)
