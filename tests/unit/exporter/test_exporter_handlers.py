"""The exporter on the in-memory bus: a version per settled round, written in round order."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from labelloop.catalog import Catalog, Chunk
from labelloop.events import (
    ConsensusLabel,
    DatasetExported,
    DeadLetter,
    IngestedItem,
    LabelsReady,
    RequestExport,
)
from labelloop.project import parse_project
from labelloop.testing import InMemoryBus, in_memory
from labelloop_exporter.app import build_app
from labelloop_exporter.settings import ExporterSettings

PROJECT = "reviews"
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "export": {"min_confidence": 0.5, "every_n_labels": 1},
}
"""A full version every round (``every_n_labels`` 1): ``test_exporter_rounds`` has the deltas
between versions."""


async def _catalog(bus: InMemoryBus, n: int = 40) -> None:
    items = [IngestedItem(item_id=f"i{k:03d}", data={"text": f"text {k}"}) for k in range(n)]
    await Catalog(bus.stores.state, bus.stores.artifacts).write(PROJECT, "c1", Chunk(items))


def _labels(
    number: int,
    ids: range,
    label: str = "pos",
    confidence: float = 0.9,
    withdrawn: list[str] | None = None,
) -> LabelsReady:
    return LabelsReady(
        project=PROJECT,
        batch_id=f"b{number}",
        round=number,
        percent_agreement=0.8,
        krippendorff_alpha=0.7,
        n_items=len(ids),
        withdrawn=withdrawn or [],
        labels=[
            ConsensusLabel(
                item_id=f"i{k:03d}",
                label=label,
                confidence=confidence,
                method="majority",
                n_annotations=3,
                annotators=["a1", "a2", "a3"],
                batch_id=f"b{number}",
            )
            for k in ids
        ],
    )


def _sample(service: Any, name: str, **labels: str) -> float:
    return service.registry.get_sample_value(name, labels) or 0.0


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


async def test_each_round_is_a_version_holding_every_round_up_to_it(tmp_path: Path) -> None:
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await _catalog(bus)
        await bus.publish(_labels(1, range(6)))
        (v1,) = bus.published(DatasetExported)
        assert (v1.version, v1.round, v1.parent_version) == ("v0001", 1, None)
        assert v1.n_rows == v1.n_new_rows == 6
        path = Path(v1.path)
        assert path == (tmp_path / PROJECT / "v0001").resolve()
        manifest = json.loads((path / "manifest.json").read_bytes())
        assert manifest["round"] == 1
        assert manifest["mean_percent_agreement"] == 0.8
        assert {"dataset.jsonl", "dataset.csv", "dataset.parquet"} <= set(manifest["files"])
        # round 2 relabels i000 and withdraws i001
        await bus.publish(_labels(2, range(6, 10), "neg", withdrawn=["i001"]))
        await bus.publish(_labels(2, range(6, 10), "neg", withdrawn=["i001"]))  # redelivered
        v2 = bus.published(DatasetExported)[-1]
        assert (v2.version, v2.round, v2.parent_version) == ("v0002", 2, "v0001")
        assert (v2.n_rows, v2.n_new_rows) == (9, 4)
        assert v2.class_counts == {"pos": 5, "neg": 4}
        assert len(bus.published(DatasetExported)) == 2
        rows = [
            json.loads(line) for line in (Path(v2.path) / "dataset.jsonl").read_text().splitlines()
        ]
        assert {r["item_id"]: r["round"] for r in rows}["i006"] == 2
        assert "i001" not in {r["item_id"] for r in rows}
        assert _sample(service, "labelloop_exporter_dataset_versions_total", project=PROJECT) == 2


async def _export_rounds(root: Path, order: list[int]) -> dict[str, str]:
    service = build_app(ExporterSettings(export_dir=root))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await _catalog(bus)
        rounds = {
            1: _labels(1, range(8)),
            2: _labels(2, range(8, 16), "neg"),
            3: _labels(3, range(4, 12), "pos", withdrawn=["i015"]),
        }
        for number in order:
            await bus.publish(rounds[number])
        assert [e.round for e in bus.published(DatasetExported)] == [1, 2, 3]
    return _files(root)


async def test_versions_are_the_same_files_whatever_order_rounds_arrive_in(tmp_path: Path) -> None:
    in_order = await _export_rounds(tmp_path / "a", [1, 2, 3])
    reversed_ = await _export_rounds(tmp_path / "b", [3, 2, 1])
    assert in_order == reversed_
    assert len(in_order) == 9  # three versions, three data files each


async def test_a_bad_label_is_left_out_and_later_versions_still_come(tmp_path: Path) -> None:
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await _catalog(bus, n=10)
        bad = _labels(1, range(3)).model_copy(
            update={
                "labels": [
                    *_labels(1, range(3)).labels,
                    ConsensusLabel(
                        item_id="i004", label="cow", confidence=0.9, method="m", n_annotations=1
                    ),
                    ConsensusLabel(
                        item_id="forged", label="pos", confidence=0.9, method="m", n_annotations=1
                    ),
                ]
            }
        )
        await bus.publish(bad)
        (v1,) = bus.published(DatasetExported)
        assert v1.n_rows == 3
        manifest = json.loads((Path(v1.path) / "manifest.json").read_bytes())
        assert {e["reason"]: e["item_ids"] for e in manifest["excluded_rows"]} == {
            "unknown_class": ["i004"],
            "missing_item_data": ["forged"],
        }
        await bus.publish(_labels(2, range(5, 7)))
        assert [e.version for e in bus.published(DatasetExported)] == ["v0001", "v0002"]
        # the label stays bad: each version leaves it out again, and counts it
        reason = {"project": PROJECT, "reason": "unknown_class"}
        assert _sample(service, "labelloop_exporter_rows_left_out_total", **reason) == 2


async def test_low_confidence_labels_are_left_out(tmp_path: Path) -> None:
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await _catalog(bus)
        await bus.publish(_labels(1, range(12), confidence=0.3))
        await bus.publish(_labels(2, range(12, 22), confidence=0.9))
        first, second = bus.published(DatasetExported)
        assert (first.n_rows, second.n_rows) == (0, 10)
        manifest = json.loads((Path(second.path) / "manifest.json").read_bytes())
        assert manifest["confidence"]["excluded"] == 12


async def test_a_request_announces_the_latest_version_again(tmp_path: Path) -> None:
    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await _catalog(bus)
        await bus.publish(RequestExport(project=PROJECT))  # no round finished yet
        (letter,) = bus.published(DeadLetter)
        assert "no labeling round has finished yet" in letter.reason
        await bus.publish(_labels(1, range(4)))
        await bus.publish(RequestExport(project=PROJECT))
        first, again = bus.published(DatasetExported)
        assert (again.version, again.round) == (first.version, first.round)
        assert again.event_id != first.event_id  # the operator gets an answer of their own
        await bus.publish(RequestExport(project=PROJECT, formats=["coco"]))
        assert "add ['coco']" in bus.published(DeadLetter)[-1].reason


async def test_a_process_keeps_the_folded_labels_not_every_rounds_message(tmp_path: Path) -> None:
    """Version *n* folds round *n* into the labels of version *n - 1*: the process keeps no
    message per round (it kept all of them, for good), and a restarted exporter, folding the
    stored rounds again, writes the very same files."""
    import gc

    from labelloop.stores import MemoryStores

    rounds = 30
    stores = MemoryStores()
    service = build_app(ExporterSettings(export_dir=tmp_path / "a"), stores=stores)
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        await _catalog(bus, n=rounds * 2)
        sent: set[str] = set()  # event ids: other tests' messages may be alive in this process
        for number in range(1, rounds):
            message = _labels(number, range(2 * number - 2, 2 * number))
            sent.add(message.event_id)
            await bus.publish(message)
        del message
        gc.collect()
        alive = sum(
            1 for o in gc.get_objects() if isinstance(o, LabelsReady) and o.event_id in sent
        )
        assert alive < 5, f"{alive} LabelsReady messages kept after {rounds - 1} rounds"
        await bus.publish(_labels(rounds, range(3), label="neg"))
        versions = bus.published(DatasetExported)
    assert [v.round for v in versions] == list(range(1, rounds + 1))
    restarted = build_app(ExporterSettings(export_dir=tmp_path / "b"), stores=stores)
    async with in_memory(restarted) as bus:
        # this process has folded nothing: it reads rounds 1 to 29 back, then folds round 30
        (tmp_path / "b").mkdir()
        import shutil

        shutil.copytree(tmp_path / "a" / PROJECT, tmp_path / "b" / PROJECT)
        shutil.rmtree(tmp_path / "b" / PROJECT / f"v{rounds:04d}")
        await stores.state.delete(f"seq.exporter-rounds.{PROJECT}.next")
        await stores.state.put(f"seq.exporter-rounds.{PROJECT}.next", str(rounds).encode())
        await bus.publish(
            _labels(rounds, range(3), label="neg").model_copy(update={"event_id": "again"})
        )
        (again,) = [v for v in bus.published(DatasetExported) if v.round == rounds]
    assert again.n_rows == versions[-1].n_rows == rounds * 2 - 2
    version = f"{PROJECT}/v{rounds:04d}"
    assert _files(tmp_path / "a" / version) == _files(tmp_path / "b" / version)


async def test_the_exporter_keeps_the_data_of_labeled_items_not_of_the_catalog(
    tmp_path: Path,
) -> None:
    """A catalog of 500 items in 20 chunks, 10 of them labeled: the exporter joins the labeled
    items' data, read from their chunks, and keeps no copy of the other items' data."""
    import gc

    MARK = "catalog-data-check"  # noqa: N806

    service = build_app(ExporterSettings(export_dir=tmp_path))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        catalog = Catalog(bus.stores.state, bus.stores.artifacts)
        for c in range(20):
            chunk = [
                IngestedItem(item_id=f"i{25 * c + k:03d}", data={"text": f"{MARK} {25 * c + k}"})
                for k in range(25)
            ]
            await catalog.write(PROJECT, f"c{c:02d}", Chunk(chunk))
        del chunk, catalog
        await bus.publish(_labels(1, range(5)))
        await bus.publish(_labels(2, range(100, 105)))
        (_, v2) = bus.published(DatasetExported)
        gc.collect()
        # this test's items only: other tests' objects may still be alive in this process
        kept = [
            o
            for o in gc.get_objects()
            if isinstance(o, IngestedItem) and str(o.data.get("text", "")).startswith(MARK)
        ]
        assert len(kept) <= 4 * 25, f"{len(kept)} items' data kept"
    assert v2.n_rows == 10
    rows = (Path(v2.path) / "dataset.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["text"] for r in rows) == sorted(
        f"{MARK} {k}" for k in [*range(5), *range(100, 105)]
    )
