"""Revised rounds: a new, immutable dataset version with the corrected labels (issue 16)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from labelloop.catalog import Catalog, Chunk
from labelloop.events import ConsensusLabel, DatasetExported, IngestedItem, LabelsReady
from labelloop.project import parse_project
from labelloop.stores import MemoryStores
from labelloop.testing import InMemoryBus, in_memory
from labelloop_exporter.app import build_app
from labelloop_exporter.domain.versions import format_revision, parse_revision
from labelloop_exporter.settings import ExporterSettings
from labelloop_exporter.store import DatasetDirectory

PROJECT = "reviews"
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "export": {"min_confidence": 0.5, "every_n_labels": 1},
}
"""A full version every round, as these tests were written for; ``test_exporter_rounds`` has a
revision between versions."""


async def _catalog(bus: InMemoryBus, n: int = 20) -> None:
    items = [IngestedItem(item_id=f"i{k:03d}", data={"text": f"text {k}"}) for k in range(n)]
    await Catalog(bus.stores.state, bus.stores.artifacts).write(PROJECT, "c1", Chunk(items))


def _labels(
    number: int,
    labels: dict[int, str],
    *,
    revision: int = 0,
    withdrawn: tuple[int, ...] = (),
) -> LabelsReady:
    return LabelsReady(
        event_id=f"labels-{number}-{revision}",
        project=PROJECT,
        batch_id=f"b{number}",
        round=number,
        revision=revision,
        percent_agreement=0.8,
        krippendorff_alpha=0.7,
        n_items=len(labels),
        withdrawn=[f"i{k:03d}" for k in withdrawn],
        labels=[
            ConsensusLabel(
                item_id=f"i{k:03d}",
                label=label,
                confidence=0.9,
                method="majority",
                n_annotations=3,
                annotators=["a1", "a2", "a3"],
                batch_id=f"b{number}",
            )
            for k, label in labels.items()
        ],
    )


ROUND_1 = {0: "pos", 1: "pos", 2: "neg", 3: "neg"}
ROUND_2 = {4: "pos", 5: "neg", 6: "neg"}
# round 1 revised: i000 corrected to neg, i003's answers all deleted
REVISED_1 = _labels(1, {0: "neg", 1: "pos", 2: "neg"}, revision=1, withdrawn=(3,))


def _rows(event: DatasetExported) -> dict[str, dict[str, Any]]:
    lines = (Path(event.path) / "dataset.jsonl").read_text().splitlines()
    return {row["item_id"]: row for row in map(json.loads, lines)}


def _digests(path: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }


async def test_a_revised_round_gives_a_new_version_with_the_corrected_labels(
    tmp_path: Path,
) -> None:
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await _catalog(bus)
        await bus.publish(_labels(1, ROUND_1))
        await bus.publish(_labels(2, ROUND_2))
        _, v2 = bus.published(DatasetExported)
        before = _digests(Path(v2.path))
        await bus.publish(REVISED_1)
        _, v2, v3 = bus.published(DatasetExported)
    assert (v3.version, v3.round, v3.parent_version) == ("v0002-r1", 2, "v0002")
    assert v3.revisions == {"1": 1}
    rows = _rows(v3)
    assert rows["i000"]["label"] == "neg"
    assert "i003" not in rows  # withdrawn: the row is gone
    assert set(rows) == {"i000", "i001", "i002", "i004", "i005", "i006"}
    manifest = json.loads((Path(v3.path) / "manifest.json").read_bytes())
    assert manifest["revisions"] == {"1": 1}
    assert (manifest["n_changed_rows"], manifest["n_removed_rows"]) == (1, 1)
    # the versions written before stay as they were
    assert _digests(Path(v2.path)) == before
    assert _rows(v2)["i000"]["label"] == "pos"
    assert DatasetDirectory(tmp_path).versions(PROJECT) == ["v0001", "v0002", "v0002-r1"]


async def test_the_next_round_keeps_the_correction(tmp_path: Path) -> None:
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await _catalog(bus)
        await bus.publish(_labels(1, ROUND_1))
        await bus.publish(REVISED_1)
        await bus.publish(_labels(2, ROUND_2))
        versions = bus.published(DatasetExported)
    assert [v.version for v in versions] == ["v0001", "v0001-r1", "v0002"]
    rows = _rows(versions[-1])
    assert rows["i000"]["label"] == "neg"
    assert "i003" not in rows
    assert versions[-1].revisions == {"1": 1}


async def test_a_revision_of_a_round_not_exported_yet_is_in_its_version(tmp_path: Path) -> None:
    """Round 2 waits for round 1; its revision arrives meanwhile: v0002 holds it, no rewrite."""
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await _catalog(bus)
        await bus.publish(_labels(2, ROUND_2))
        await bus.publish(_labels(2, {4: "neg", 5: "neg", 6: "neg"}, revision=1))
        assert bus.published(DatasetExported) == []
        await bus.publish(_labels(1, ROUND_1))
        versions = bus.published(DatasetExported)
    assert [v.version for v in versions] == ["v0001", "v0002"]
    assert _rows(versions[-1])["i004"]["label"] == "neg"
    assert versions[-1].revisions == {"2": 1}


async def test_a_redelivered_revision_writes_and_publishes_nothing_new(tmp_path: Path) -> None:
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await _catalog(bus)
        await bus.publish(_labels(1, ROUND_1))
        await bus.publish(REVISED_1)
        await bus.publish(REVISED_1)
        # and an older revision arriving after a newer one changes nothing either
        await bus.publish(_labels(1, {0: "neg", 1: "pos", 2: "neg", 3: "pos"}, revision=2))
        await bus.publish(REVISED_1)
        versions = bus.published(DatasetExported)
    assert [v.version for v in versions] == ["v0001", "v0001-r1", "v0001-r2"]
    assert DatasetDirectory(tmp_path).versions(PROJECT) == ["v0001", "v0001-r1", "v0001-r2"]
    assert _rows(versions[-1])["i003"]["label"] == "pos"


async def test_the_same_events_give_the_same_bytes(tmp_path: Path) -> None:
    events = [_labels(1, ROUND_1), _labels(2, ROUND_2), REVISED_1]

    async def export(root: Path) -> dict[str, dict[str, str]]:
        service = build_app(ExporterSettings(export_dir=root))
        async with in_memory(service) as bus:
            await bus.apply_project(parse_project(CONFIG))
            await _catalog(bus)
            for event in events:
                await bus.publish(event)
        base = root / PROJECT
        return {v: _digests(base / v) for v in DatasetDirectory(root).versions(PROJECT)}

    first, second = await export(tmp_path / "a"), await export(tmp_path / "b")
    assert list(first) == ["v0001", "v0002", "v0002-r1"]
    assert first == second


async def test_a_replica_that_folded_before_the_revision_folds_again(tmp_path: Path) -> None:
    """Two replicas share the state and the volume: the one that writes round 3 had folded
    rounds 1-2 before another replica took round 1's revision."""
    stores = MemoryStores()
    first = build_app(ExporterSettings(export_dir=tmp_path), stores=stores)
    second = build_app(ExporterSettings(export_dir=tmp_path), stores=stores)
    async with in_memory(first) as bus_1, in_memory(second) as bus_2:
        await bus_1.apply_project(parse_project(CONFIG))
        await _catalog(bus_1)
        await bus_1.publish(_labels(1, ROUND_1))
        await bus_1.publish(_labels(2, ROUND_2))
        await bus_2.publish(REVISED_1)
        await bus_1.publish(_labels(3, {7: "pos"}))
        (v3,) = [e for e in bus_1.published(DatasetExported) if e.version == "v0003"]
    assert _rows(v3)["i000"]["label"] == "neg"
    assert "i003" not in _rows(v3)


def test_version_names_order_rewrites_after_their_version() -> None:
    names = ["v0002", "v0001-r10", "v0001", "v0001-r2"]
    assert sorted(names, key=lambda n: parse_revision(n) or (0, 0)) == [
        "v0001",
        "v0001-r2",
        "v0001-r10",
        "v0002",
    ]
    assert format_revision(6, 1) == "v0006-r1"
    assert parse_revision("v0006") == (6, 0)
    assert parse_revision(".tmp-v0006-r1-abc") is None
