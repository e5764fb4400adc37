"""The exporter on a real nats-server: a revised round gives a new version with the corrected
labels and the withdrawn rows gone; the revision replayed writes nothing more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labelloop.catalog import Catalog, Chunk
from labelloop.events import ConsensusLabel, DatasetExported, IngestedItem, LabelsReady
from labelloop.project import parse_project
from labelloop.testing import (
    EventCollector,
    apply_project,
    publish_events,
    started,
    wait_until,
    writing_as,
)
from labelloop_exporter.app import build_app
from labelloop_exporter.settings import ExporterSettings

pytestmark = pytest.mark.integration

PROJECT = "animals-rev"
CONFIG = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["cat", "dog"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "export": {"every_n_labels": 1},  # a version per round: what this test is about
}


def _handled(service: Any) -> float:
    labels = {"event": "LabelsReady", "outcome": "ok"}
    return service.registry.get_sample_value("labelloop_runtime_messages_total", labels) or 0.0


def _labels(
    number: int, values: dict[str, str], revision: int = 0, withdrawn: tuple[str, ...] = ()
) -> LabelsReady:
    return LabelsReady(
        event_id=f"labels-{number}-{revision}",
        project=PROJECT,
        batch_id=f"b{number}",
        round=number,
        revision=revision,
        withdrawn=list(withdrawn),
        labels=[
            ConsensusLabel(item_id=i, label=v, confidence=0.9, method="majority", n_annotations=2)
            for i, v in values.items()
        ],
    )


async def test_a_revised_round_gives_a_corrected_version(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    settings = ExporterSettings(nats_url=nats_url, namespace=namespace, export_dir=tmp_path)
    service = build_app(settings)
    async with started(service), EventCollector(nats_url, namespace, DatasetExported) as exported:
        await apply_project(service.stores.projects, parse_project(CONFIG))
        items = [IngestedItem(item_id=f"i{k}", data={"text": f"animal {k}"}) for k in range(8)]
        await Catalog(service.state, writing_as(service, "catalog")).write(
            PROJECT, "c", Chunk(items)
        )
        round_1 = {f"i{k}": ("cat", "dog")[k % 2] for k in range(4)}
        revision = _labels(1, {"i0": "dog", "i1": "dog", "i2": "cat"}, 1, withdrawn=("i3",))
        await publish_events(
            nats_url, namespace, _labels(1, round_1), _labels(2, {"i4": "cat", "i5": "dog"})
        )
        await exported.wait_for(2, timeout=60)
        await publish_events(nats_url, namespace, revision)
        *_, v3 = await exported.wait_for(3, timeout=60)
        # replayed under another id (after the duplicate window): nothing new
        await publish_events(
            nats_url, namespace, revision.model_copy(update={"event_id": "replayed"})
        )
        await wait_until(lambda: _handled(service) >= 4, timeout=60)
        # announced again at most, under the same id: the stream dropped it
        assert len(exported.events) == 3
    assert (v3.version, v3.round, v3.parent_version, v3.revisions) == (
        "v0002-r1",
        2,
        "v0002",
        {"1": 1},
    )
    rows = {
        r["item_id"]: r["label"]
        for r in map(json.loads, (Path(v3.path) / "dataset.jsonl").read_text().splitlines())
    }
    assert rows == {"i0": "dog", "i1": "dog", "i2": "cat", "i4": "cat", "i5": "dog"}
    assert sorted(p.name for p in (tmp_path / PROJECT).iterdir()) == ["v0001", "v0002", "v0002-r1"]
    # and its labels are where a trainer without the volume reads them
    assert v3.dataset_ref == f"exporter/{PROJECT}/datasets/v0002-r1/"
