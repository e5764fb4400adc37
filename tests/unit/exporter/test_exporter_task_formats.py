"""Whole versions for box and span projects: COCO/YOLO and CoNLL beside the tabular files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from labelloop.events import ConsensusLabel, LabelsReady
from labelloop.project import parse_project
from labelloop_exporter.domain.dataset import prepare, render
from labelloop_exporter.domain.labels import current_labels
from labelloop_exporter.domain.table import ItemData

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _version(config: dict[str, Any], labels: dict[str, Any], data: dict[str, Any]) -> Any:
    project = parse_project(config)
    event = LabelsReady(
        project=project.name,
        batch_id="b1",
        round=1,
        occurred_at=T0,
        labels=[
            ConsensusLabel(item_id=i, label=v, confidence=1.0, method="expert", n_annotations=1)
            for i, v in labels.items()
        ],
    )
    items = {i: ItemData(data=d) for i, d in data.items()}
    prepared = prepare(current_labels([event]), items, project, salt="s")
    assert prepared.ok, prepared.reason()
    return render(
        prepared,
        project,
        version="v0001",
        parent_version=None,
        parent_labels=None,
        created_at=T0,
        salt="s",
        agreement={},
    )


def test_bounding_box_project_writes_coco_and_yolo() -> None:
    box = {
        "x": 50.0,
        "y": 50.0,
        "width": 10.0,
        "height": 20.0,
        "rectanglelabels": ["car"],
        "original_width": 100,
        "original_height": 100,
    }
    out = _version(
        {
            "name": "street",
            "task_type": "bounding_boxes",
            "labels": {"classes": ["person", "car"]},
            "data_fields": [{"name": "image", "kind": "image"}],
            "export": {"formats": ["parquet", "coco", "yolo"]},
        },
        {f"img{k}": [box] for k in range(20)},
        {f"img{k}": {"image": f"s3://bucket/{k}.jpg"} for k in range(20)},
    )
    files = out.files
    coco = [json.loads(v) for k, v in files.items() if k.startswith("coco/")]
    assert sum(len(doc["images"]) for doc in coco) == 20
    assert {a["category_id"] for doc in coco for a in doc["annotations"]} == {1}
    labels = [v for k, v in files.items() if k.startswith("yolo/labels/")]
    assert len(labels) == 20
    assert labels[0] == b"1 0.550000 0.600000 0.100000 0.200000\n"
    assert out.manifest["class_counts"] == {"person": 0, "car": 20}
    assert set(out.manifest["files"]) == set(files) - {"manifest.json"}


def test_ner_project_writes_conll() -> None:
    out = _version(
        {
            "name": "news",
            "task_type": "ner",
            "labels": {"classes": ["PER", "LOC"]},
            "data_fields": [{"name": "text", "kind": "text"}],
            "export": {"formats": ["jsonl", "conll"]},
        },
        {
            "n1": [{"start": 0, "end": 3, "labels": ["PER"]}],
            "n2": [],  # no entities: a valid answer
        },
        {"n1": {"text": "Ada lives in Paris"}, "n2": {"text": "nothing here"}},
    )
    conll = b"".join(v for k, v in out.files.items() if k.startswith("conll/")).decode()
    assert "Ada -X- _ B-PER\n" in conll
    assert "nothing -X- _ O\n" in conll
    assert out.manifest["n_rows"] == 2
