"""The exporter on the in-memory bus: labels in, dataset versions on disk and events out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labelloop.events import (
    ConsensusLabel,
    DatasetExported,
    IngestedItem,
    ItemsIngested,
    LabelsReady,
    QAReport,
    RequestExport,
)
from labelloop.project import parse_project
from labelloop.testing import in_memory
from labelloop_exporter.app import build_app
from labelloop_exporter.settings import ExporterSettings

PROJECT = "reviews"
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "export": {"every_n_labels": 10, "min_confidence": 0.5},
}


def _items(n: int) -> ItemsIngested:
    return ItemsIngested(
        project=PROJECT,
        submission_id="s1",
        items=[IngestedItem(item_id=f"i{k:03d}", data={"text": f"text {k}"}) for k in range(n)],
    )


def _labels(batch: str, ids: range, label: str = "pos", confidence: float = 0.9) -> LabelsReady:
    return LabelsReady(
        project=PROJECT,
        batch_id=batch,
        labels=[
            ConsensusLabel(
                item_id=f"i{k:03d}",
                label=label,
                confidence=confidence,
                method="majority",
                n_annotations=3,
                annotators=["a1", "a2", "a3"],
            )
            for k in ids
        ],
    )


def _sample(service: Any, name: str, **labels: str) -> float:
    return service.registry.get_sample_value(name, labels) or 0.0


async def test_versions_follow_the_policy_and_requests(tmp_path: Path) -> None:
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await bus.publish(_items(40))
        await bus.publish(
            QAReport(
                project=PROJECT,
                batch_id="b1",
                n_items=10,
                n_annotations=30,
                consensus_method="majority",
                percent_agreement=0.8,
            )
        )
        first = _labels("b1", range(6))
        await bus.publish(first)
        assert bus.published(DatasetExported) == []  # 6 pending < every_n_labels
        await bus.publish(_labels("b2", range(6, 10), "neg"))
        (v1,) = bus.published(DatasetExported)
        assert v1.version == "v0001"
        assert v1.n_rows == v1.n_new_rows == 10
        assert v1.class_counts == {"pos": 6, "neg": 4}
        assert v1.parent_version is None
        path = Path(v1.path)
        assert path == (tmp_path / PROJECT / "v0001").resolve()
        manifest = json.loads((path / "manifest.json").read_bytes())
        assert manifest["mean_percent_agreement"] == 0.8
        assert {"dataset.jsonl", "dataset.csv", "dataset.parquet"} <= set(manifest["files"])

        # a redelivered message changes nothing and counts nothing
        await bus.publish(first)
        await bus.publish(_labels("b3", range(10, 19)))  # 9 new: under the policy
        assert len(bus.published(DatasetExported)) == 1

        await bus.publish(RequestExport(project=PROJECT, formats=["csv"]))
        v2 = bus.published(DatasetExported)[-1]
        assert (v2.version, v2.parent_version, v2.n_rows, v2.n_new_rows) == (
            "v0002",
            "v0001",
            19,
            9,
        )
        assert v2.formats == ["csv", "parquet"]

        # nothing new since v0002: a repeated request writes nothing
        await bus.publish(RequestExport(project=PROJECT))
        assert len(bus.published(DatasetExported)) == 2
        assert sorted(p.name for p in (tmp_path / PROJECT).iterdir()) == ["v0001", "v0002"]
        assert _sample(service, "labelloop_exporter_dataset_versions_total") == 2
        assert _sample(service, "labelloop_exporter_rows_exported_total") == 29
        assert _sample(service, "labelloop_exporter_exports_total", outcome="unchanged") == 1


async def test_invalid_labels_publish_nothing_and_say_why(tmp_path: Path) -> None:
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await bus.publish(_items(20))
        await bus.publish(_labels("b1", range(5)))
        await bus.publish(_labels("b2", range(5, 10), label="meh"))  # unknown class
        assert bus.published(DatasetExported) == []
        assert not (tmp_path / PROJECT).exists() or not any((tmp_path / PROJECT).iterdir())
        failure = await bus.stores.state.get(f"exporter.{PROJECT}.last_failure")
        assert failure is not None
        assert "unknown_class" in json.loads(failure.value)["reason"]
        assert (
            _sample(service, "labelloop_exporter_validation_failures_total", reason="unknown_class")
            == 1
        )
        # (a refused RequestExport goes to the dead letters: see the integration test)


async def test_low_confidence_labels_are_left_out(tmp_path: Path) -> None:
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await bus.publish(_items(20))
        await bus.publish(_labels("b1", range(8)))
        await bus.publish(_labels("b2", range(8, 12), confidence=0.3))
        (v1,) = bus.published(DatasetExported)
        assert v1.n_rows == 8
        manifest = json.loads((Path(v1.path) / "manifest.json").read_bytes())
        assert manifest["confidence"]["excluded"] == 4


async def test_labels_of_items_not_seen_yet_are_retried_not_refused(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from labelloop.stores import MemoryStores
    from labelloop_exporter.dataset_dir import DatasetDirectory
    from labelloop_exporter.exporting import Exporter, ItemsNotSeenYet
    from labelloop_exporter.metrics import ExporterMetrics

    stores = MemoryStores()
    sent: list[Any] = []

    async def publish(event: Any) -> None:
        sent.append(event)

    exporter = Exporter(
        state=lambda: stores.state,
        artifacts=lambda: stores.artifacts,
        publish=publish,
        datasets=DatasetDirectory(tmp_path),
        metrics=ExporterMetrics(CollectorRegistry()),
    )
    config = parse_project(CONFIG)
    await exporter.on_items(_items(5))
    with pytest.raises(ItemsNotSeenYet, match="missing_item_data"):
        await exporter.on_labels(_labels("b1", range(10)), config)  # items 5..9 not seen yet
    assert sent == []
    await exporter.on_items(_items(10))
    await exporter.on_labels(_labels("b1", range(10)), config)  # the redelivery succeeds
    assert [e.version for e in sent] == ["v0001"]
