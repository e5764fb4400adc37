"""The exporter on a real nats-server: a refused export request is dead-lettered with its reason."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from labelloop.events import (
    ConsensusLabel,
    DatasetExported,
    DeadLetter,
    IngestedItem,
    ItemsIngested,
    LabelsReady,
    RequestExport,
)
from labelloop.project import parse_project
from labelloop.testing import EventCollector, apply_project, publish_events, started
from labelloop_exporter.app import build_app
from labelloop_exporter.settings import ExporterSettings

pytestmark = pytest.mark.integration

PROJECT = "animals"
CONFIG = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["cat", "dog"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "export": {"every_n_labels": 1000},
}


def _labels(batch: str, values: dict[str, str]) -> LabelsReady:
    return LabelsReady(
        project=PROJECT,
        batch_id=batch,
        labels=[
            ConsensusLabel(item_id=i, label=v, confidence=0.9, method="majority", n_annotations=2)
            for i, v in values.items()
        ],
    )


async def test_request_export_writes_then_refuses_bad_labels(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    settings = ExporterSettings(nats_url=nats_url, namespace=namespace, export_dir=tmp_path)
    service = build_app(settings)
    exported = EventCollector(nats_url, namespace, DatasetExported)
    dead = EventCollector(nats_url, namespace, DeadLetter)
    async with started(service), exported, dead:
        await apply_project(service.stores.projects, parse_project(CONFIG))
        items = [IngestedItem(item_id=f"i{k}", data={"text": f"animal {k}"}) for k in range(10)]
        await publish_events(
            nats_url,
            namespace,
            ItemsIngested(project=PROJECT, submission_id="s", items=items),
            _labels("b1", {f"i{k}": ("cat", "dog")[k % 2] for k in range(6)}),
        )
        deadline = time.monotonic() + 30
        while len(await service.artifacts.list(f"exporter/{PROJECT}/labels/")) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await publish_events(nats_url, namespace, RequestExport(project=PROJECT))
        (v1,) = await exported.wait_for(1, timeout=30)
        assert v1.version == "v0001"
        assert (Path(v1.path) / "manifest.json").is_file()
        await publish_events(nats_url, namespace, _labels("b2", {"i7": "cow"}))
        deadline = time.monotonic() + 30
        while len(await service.artifacts.list(f"exporter/{PROJECT}/labels/")) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await publish_events(nats_url, namespace, RequestExport(project=PROJECT))
        (letter,) = await dead.wait_for(1, timeout=30)
        assert "unknown_class" in letter.reason
        assert "cow" in letter.reason
        assert len(exported.events) == 1
        assert [p.name for p in (tmp_path / PROJECT).iterdir()] == ["v0001"]
