"""The exporter on a real nats-server: rounds that arrive out of order give versions in order;
a request for a dataset before any round is dead-lettered with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelloop.catalog import Catalog, Chunk
from labelloop.events import (
    ConsensusLabel,
    DatasetExported,
    DeadLetter,
    IngestedItem,
    LabelsReady,
    RequestExport,
    RoundExported,
)
from labelloop.project import parse_project
from labelloop.testing import EventCollector, apply_project, publish_events, started, writing_as
from labelloop_exporter.app import build_app
from labelloop_exporter.settings import ExporterSettings

pytestmark = pytest.mark.integration

PROJECT = "animals"
CONFIG = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["cat", "dog"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "export": {"every_n_labels": 1},  # a version per round: what this test is about
}


def _labels(number: int, values: dict[str, str]) -> LabelsReady:
    return LabelsReady(
        project=PROJECT,
        batch_id=f"b{number}",
        round=number,
        labels=[
            ConsensusLabel(item_id=i, label=v, confidence=0.9, method="majority", n_annotations=2)
            for i, v in values.items()
        ],
    )


async def test_rounds_out_of_order_give_versions_in_order(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    settings = ExporterSettings(nats_url=nats_url, namespace=namespace, export_dir=tmp_path)
    service = build_app(settings)
    exported = EventCollector(nats_url, namespace, DatasetExported)
    rounds = EventCollector(nats_url, namespace, RoundExported)
    dead = EventCollector(nats_url, namespace, DeadLetter)
    async with started(service), exported, rounds, dead:
        await apply_project(service.stores.projects, parse_project(CONFIG))
        await publish_events(nats_url, namespace, RequestExport(project=PROJECT))
        (letter,) = await dead.wait_for(1, timeout=30)
        assert "no labeling round has finished yet" in letter.reason
        items = [IngestedItem(item_id=f"i{k}", data={"text": f"animal {k}"}) for k in range(10)]
        await Catalog(service.state, writing_as(service, "catalog")).write(
            PROJECT, "c", Chunk(items)
        )
        await publish_events(
            nats_url,
            namespace,
            _labels(2, {"i6": "dog", "i7": "cat"}),
            _labels(1, {f"i{k}": ("cat", "dog")[k % 2] for k in range(6)}),
        )
        v1, v2 = await exported.wait_for(2, timeout=30)
        assert (v1.version, v1.n_rows, v2.version, v2.n_rows) == ("v0001", 6, "v0002", 8)
        assert (Path(v2.path) / "manifest.json").is_file()
        assert sorted(p.name for p in (tmp_path / PROJECT).iterdir()) == ["v0001", "v0002"]
        # the trainer's input, in round order too: each round's rows are its version's
        r1, r2 = await rounds.wait_for(2, timeout=30)
        assert [(r.round, r.version, r.n_rows, r.deltas) for r in (r1, r2)] == [
            (1, "v0001", 6, []),
            (2, "v0002", 8, []),
        ]
