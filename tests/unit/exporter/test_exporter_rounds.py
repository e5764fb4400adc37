"""Every round exported for training, a full version every ``export.every_n_labels`` labels.

The trainer's rows of round *n* are the last full version's labels with a delta per round after
it (``RoundExported``). What makes that right is one property: applied in order, the deltas give
the rows a full version of round *n* holds, row for row. The scenario below exercises what can
change a row: a later round relabeling an item, a label the export policy leaves out (low
confidence, a class outside the project's), a withdrawn item, and a gold item, which keeps its
split and its label.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from labelloop.catalog import Catalog, Chunk
from labelloop.events import (
    BudgetExhausted,
    ConsensusLabel,
    DatasetExported,
    DeadLetter,
    IngestedItem,
    LabelingConverged,
    LabelsReady,
    RequestExport,
    RoundDelta,
    RoundExported,
)
from labelloop.project import parse_project
from labelloop.rows import apply_deltas, removed_of
from labelloop.stores import MemoryStores
from labelloop.testing import InMemoryBus, in_memory
from labelloop_exporter import service as exporter_service
from labelloop_exporter.app import build_app
from labelloop_exporter.settings import ExporterSettings

PROJECT = "reviews"


def _config(every_n_labels: int) -> Any:
    return parse_project(
        {
            "name": PROJECT,
            "task_type": "text_classification",
            "labels": {"classes": ["pos", "neg"]},
            "data_fields": [{"name": "text", "kind": "text"}],
            "export": {"min_confidence": 0.5, "every_n_labels": every_n_labels},
        }
    )


async def _catalog(bus: InMemoryBus, n: int = 60) -> None:
    items = [IngestedItem(item_id=f"i{k:03d}", data={"text": f"text {k}"}) for k in range(n)]
    await Catalog(bus.stores.state, bus.stores.artifacts).write(PROJECT, "c1", Chunk(items))


def _label(k: int, label: str = "pos", confidence: float = 0.9, gold: bool = False) -> Any:
    return (k, label, confidence, gold)


def _round(
    number: int, labels: list[Any], withdrawn: list[int] | None = None, revision: int = 0
) -> LabelsReady:
    return LabelsReady(
        project=PROJECT,
        batch_id=f"b{number}",
        round=number,
        revision=revision,
        n_items=len(labels),
        withdrawn=[f"i{k:03d}" for k in withdrawn or []],
        labels=[
            ConsensusLabel(
                item_id=f"i{k:03d}",
                label=label,
                confidence=confidence,
                method="majority",
                n_annotations=3,
                is_gold=gold,
                annotators=["a1", "a2", "a3"],
                batch_id=f"b{number}",
            )
            for k, label, confidence, gold in labels
        ],
    )


ROUNDS = [
    _round(1, [_label(0), _label(1), _label(2, "neg"), _label(3, gold=True)]),
    _round(2, [_label(4), _label(5, confidence=0.2), _label(6, "neg")]),  # 5: left out
    _round(3, [_label(0, "neg"), _label(7), _label(8, "maybe")]),  # 0 relabeled; 8: no class
    _round(4, [_label(9), _label(5, confidence=0.95)], withdrawn=[1]),  # 5 back, 1 withdrawn
    _round(5, [_label(3, "neg"), _label(10), _label(11, "neg")]),  # the gold item relabeled
    _round(6, [_label(12)], withdrawn=[6, 40]),  # 40: never labeled
    _round(7, [_label(13), _label(0, confidence=0.1)]),  # 0's row goes (low confidence)
]


@contextlib.asynccontextmanager
async def _exporter(
    root: Path, every_n_labels: int, events: Sequence[Any] = (), stores: MemoryStores | None = None
) -> AsyncIterator[InMemoryBus]:
    """An exporter with the project and its catalog, after ``events``."""
    service = build_app(ExporterSettings(export_dir=root), stores=stores)
    async with in_memory(service) as bus:
        await bus.apply_project(_config(every_n_labels))
        await _catalog(bus)
        for event in events:
            await bus.publish(event)
        yield bus


async def _objects(bus: InMemoryBus) -> dict[str, bytes]:
    """The exporter's objects by name."""
    return {
        name: await bus.stores.artifacts.get(name) or b""
        for name in await bus.stores.artifacts.list(f"exporter/{PROJECT}/")
    }


async def _campaign(
    root: Path, every_n_labels: int, events: list[Any] | None = None
) -> tuple[list[RoundExported], list[DatasetExported], dict[str, bytes]]:
    """The rounds through one exporter: what it announced, and its objects by name."""
    async with _exporter(root, every_n_labels, events or ROUNDS) as bus:
        return bus.published(RoundExported), bus.published(DatasetExported), await _objects(bus)


def _rows(record: RoundExported, objects: dict[str, bytes]) -> list[dict[str, Any]]:
    base = objects[record.base_ref] if record.base_ref else None
    table = apply_deltas(base, [objects[d.ref] for d in record.deltas])
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _version_rows(objects: dict[str, bytes], version: str) -> list[dict[str, Any]]:
    raw = objects[f"exporter/{PROJECT}/datasets/{version}/labels.parquet"]
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(raw)).to_pylist()
    return rows


async def test_versions_come_every_n_labels_and_the_rounds_between_are_deltas(
    tmp_path: Path,
) -> None:
    records, versions, _ = await _campaign(tmp_path, every_n_labels=7)
    # labels per round: 4, 3, 3, 2, 3, 1, 2: a version when 7 have come since the last one
    assert [v.version for v in versions] == ["v0002", "v0005"]
    assert [r.round for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.version for r in records] == [None, "v0002", None, None, "v0005", None, None]
    assert [r.base_version for r in records] == [None, *["v0002"] * 3, *["v0005"] * 3]
    assert [[d.round for d in r.deltas] for r in records] == [[1], [], [3], [3, 4], [], [6], [6, 7]]
    assert [r.dataset_version for r in records][-2:] == ["v0005+r0006", "v0005+r0007"]
    assert sorted(p.name for p in (tmp_path / PROJECT).iterdir()) == ["v0002", "v0005"]


async def test_a_rounds_rows_are_the_rows_a_full_version_of_it_holds(tmp_path: Path) -> None:
    """The same rounds, once with a version every round (the reference) and once with versions
    every 7 labels: every round's base and deltas give the reference version's rows exactly."""
    reference, _, every_round = await _campaign(tmp_path / "every", every_n_labels=1)
    records, _, sparse = await _campaign(tmp_path / "sparse", every_n_labels=7)
    assert all(r.version == f"v{r.round:04d}" and not r.deltas for r in reference)
    assert any(r.deltas for r in records)
    for record, full in zip(records, reference, strict=True):
        expected = _version_rows(every_round, f"v{record.round:04d}")
        assert _rows(record, sparse) == expected, f"round {record.round}"
        assert record.n_rows == full.n_rows == len(expected)
    last = {row["item_id"]: row for row in _rows(records[-1], sparse)}
    assert {"i000", "i001", "i006", "i008"}.isdisjoint(last)
    assert last["i005"]["confidence"] == 0.95
    assert (last["i003"]["split"], last["i003"]["is_gold"]) == ("test", True)


async def test_a_delta_holds_its_rounds_rows_and_names_the_ones_gone(tmp_path: Path) -> None:
    records, _, objects = await _campaign(tmp_path, every_n_labels=1000)
    delta = records[3].deltas[-1]  # round 4: 9 and 5 labeled, 1 withdrawn
    table = pq.read_table(io.BytesIO(objects[delta.ref]))
    assert sorted(table.column("item_id").to_pylist()) == ["i005", "i009"]
    assert removed_of(table) == ["i001"]
    assert delta.n_labels == 2
    seventh = pq.read_table(io.BytesIO(objects[records[6].deltas[-1].ref]))
    assert seventh.column("item_id").to_pylist() == ["i013"]
    assert removed_of(seventh) == ["i000"]  # its new label is below min_confidence


def _spent(last_round: int | None, labels: int = 10) -> BudgetExhausted:
    return BudgetExhausted(
        project=PROJECT,
        labels_used=labels,
        annotations_used=3 * labels,
        reason=f"max_labels {labels} reached",
        last_round=last_round,
    )


async def test_a_stopped_campaigns_last_round_has_a_version(tmp_path: Path) -> None:
    """The sampler says which round was its last: that round gets a full version, whether
    the stop comes after it was exported or before; the rounds between are deltas."""
    async with _exporter(tmp_path, 1000, ROUNDS[:3]) as bus:
        assert bus.published(DatasetExported) == []
        await bus.publish(_spent(last_round=3))  # round 3 was exported: written now
        (last,) = bus.published(DatasetExported)
        assert (last.version, last.round) == ("v0003", 3)
        await bus.publish(_spent(last_round=3).model_copy(update={"event_id": "again"}))
        assert len(bus.published(DatasetExported)) == 1  # said again: nothing new
        # the budget raised: the rounds after the stop are exported as any others...
        await bus.publish(ROUNDS[3])
        assert bus.published(RoundExported)[-1].version is None
        # ...until the next stop, heard before its last round came
        await bus.publish(_spent(last_round=5, labels=20))
        assert [v.version for v in bus.published(DatasetExported)] == ["v0003"]
        await bus.publish(ROUNDS[4])
        assert [v.version for v in bus.published(DatasetExported)] == ["v0003", "v0005"]
        assert bus.published(RoundExported)[-1].version == "v0005"


async def test_a_stop_without_its_last_round_versions_every_round_after_it(
    tmp_path: Path,
) -> None:
    """An older sampler's stop does not say its last round: the latest round and every one
    after it get a version, so the last one has one."""
    async with _exporter(tmp_path, 1000, ROUNDS[:3]) as bus:
        await bus.publish(_spent(last_round=None))
        await bus.publish(ROUNDS[3])
        assert [v.version for v in bus.published(DatasetExported)] == ["v0003", "v0004"]
        # converged too: nothing new
        await bus.publish(LabelingConverged(project=PROJECT, model_version="m0004", reason="x"))
        assert [v.version for v in bus.published(DatasetExported)] == ["v0003", "v0004"]


async def test_converging_stops_the_campaign_as_a_spent_budget_does(tmp_path: Path) -> None:
    async with _exporter(tmp_path, 1000, ROUNDS[:2]) as bus:
        await bus.publish(LabelingConverged(project=PROJECT, model_version="m0002", reason="x"))
        assert [v.version for v in bus.published(DatasetExported)] == ["v0002"]
        # the rounds cut before the sampler heard: a version each
        await bus.publish(ROUNDS[2])
        assert [v.version for v in bus.published(DatasetExported)] == ["v0002", "v0003"]


async def test_an_export_request_writes_the_latest_rounds_version(tmp_path: Path) -> None:
    async with _exporter(tmp_path, 1000, ROUNDS[:4]) as bus:
        request = RequestExport(project=PROJECT)
        await bus.publish(request)
        written, answer = bus.published(DatasetExported)
        assert (written.version, written.request_id) == ("v0004", None)
        assert (answer.version, answer.request_id) == ("v0004", request.event_id)
        objects = await _objects(bus)
        assert _version_rows(objects, "v0004") == _rows(bus.published(RoundExported)[-1], objects)


async def test_a_revision_between_versions_makes_the_next_round_a_version(
    tmp_path: Path,
) -> None:
    """A delta adds a round to rows that did not change under it: after a revision of an
    earlier round the next round writes a full version, holding the revision."""
    revised_2 = _round(2, [_label(4, "neg"), _label(6, "neg")], withdrawn=[5], revision=1)
    events = [*ROUNDS[:3], revised_2, ROUNDS[3]]
    records, versions, objects = await _campaign(tmp_path, every_n_labels=1000, events=events)
    assert [r.version for r in records] == [None, None, None, "v0004"]
    assert records[-1].revisions == {"2": 1}
    assert [v.version for v in versions] == ["v0004"]
    rows = {row["item_id"]: row for row in _rows(records[-1], objects)}
    assert rows["i004"]["label"] == "neg"
    # the reference: the revised round in place of the first, a version every round
    reference = [ROUNDS[0], revised_2.model_copy(update={"revision": 0}), *ROUNDS[2:4]]
    _, _, every = await _campaign(tmp_path / "every", every_n_labels=1, events=reference)
    assert _rows(records[-1], objects) == _version_rows(every, "v0004")


async def test_the_deltas_after_a_version_are_at_most_max_deltas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter_service, "MAX_DELTAS", 2)
    records, versions, _ = await _campaign(tmp_path, every_n_labels=1000)
    assert [v.version for v in versions] == ["v0003", "v0006"]
    assert max(len(r.deltas) for r in records) == 2


def test_a_round_record_at_max_deltas_stays_a_small_message() -> None:
    """The record lists every delta since the last version: at MAX_DELTAS it must stay far
    under NATS' 1 MB message limit, with the longest project names."""
    name = "p" * 64
    deltas = [
        RoundDelta(
            round=k,
            revision=3,
            ref=f"exporter/{name}/deltas/{k:06d}-r3.parquet",
            sha256="f" * 64,
            n_labels=10_000,
        )
        for k in range(1, exporter_service.MAX_DELTAS + 1)
    ]
    record = RoundExported(
        project=name,
        round=10**6,
        n_rows=10**7,
        base_version="v999999",
        base_ref=f"exporter/{name}/datasets/v999999-r12/labels.parquet",
        base_sha256="f" * 64,
        deltas=deltas,
        revisions={str(k): 3 for k in range(1, 1000)},
    )
    assert len(record.model_dump_json()) < 128_000


async def test_another_process_continues_the_chain_and_a_redelivery_says_it_again(
    tmp_path: Path,
) -> None:
    """Rounds 1-3 in one process, 4-5 in a fresh one on the same stores: the same records as
    one process gives; a redelivered round announces its stored record again."""
    single, _, _ = await _campaign(tmp_path / "one", every_n_labels=1000, events=ROUNDS[:5])
    stores = MemoryStores()
    async with _exporter(tmp_path / "two", 1000, ROUNDS[:3], stores=stores) as bus:
        before = bus.published(RoundExported)
    second = build_app(ExporterSettings(export_dir=tmp_path / "two"), stores=stores)
    async with in_memory(second) as bus:
        for event in ROUNDS[3:5]:
            await bus.publish(event)
        after = bus.published(RoundExported)
        # round 5 exported, then a crash before the sequencer moved on: it comes again
        await stores.state.put(f"seq.exporter-rounds.{PROJECT}.next", b"5")
        await bus.publish(ROUNDS[4].model_copy(update={"event_id": "redelivered"}))
        assert bus.published(RoundExported) == after  # the same record, the same event id
        assert bus.published(DeadLetter) == []
        stored = await stores.artifacts.get(f"exporter/{PROJECT}/exported/000005.json")
        assert stored is not None
        assert RoundExported.model_validate_json(stored) == after[-1]
    fields = {"occurred_at"}
    assert [r.model_dump(exclude=fields) for r in [*before, *after]] == [
        r.model_dump(exclude=fields) for r in single
    ]
    assert [d.round for d in after[-1].deltas] == [1, 2, 3, 4, 5]


async def test_a_round_that_only_withdraws_is_a_delta_of_removals(tmp_path: Path) -> None:
    """No touched item keeps a label (a round that only withdraws, or an empty one): its delta
    has no rows and names the items gone; the rounds after it go on."""
    events = [*ROUNDS[:2], _round(3, [], withdrawn=[0, 4]), _round(4, []), ROUNDS[4]]
    records, _, objects = await _campaign(tmp_path, every_n_labels=1000, events=events)
    assert [r.round for r in records] == [1, 2, 3, 4, 5]
    table = pq.read_table(io.BytesIO(objects[records[2].deltas[-1].ref]))
    assert (table.num_rows, removed_of(table)) == (0, ["i000", "i004"])
    _, _, every = await _campaign(tmp_path / "every", every_n_labels=1, events=events)
    # rounds 3 and 4 released no label, so no version of theirs (every_n_labels counts labels)
    two = _version_rows(every, "v0002")
    gone = [row for row in two if row["item_id"] not in {"i000", "i004"}]
    assert _rows(records[2], objects) == _rows(records[3], objects) == gone
    assert _rows(records[4], objects) == _version_rows(every, "v0005")


async def test_a_round_under_other_export_settings_writes_a_version(tmp_path: Path) -> None:
    """A row depends on the project's classes and confidence policy too: when they change, the
    deltas built under the old ones would not give what a version holds now, so the next round
    writes one."""
    async with _exporter(tmp_path, 1000, ROUNDS[:3]) as bus:  # round 3's "maybe" is no class yet
        changed = _config(every_n_labels=1000).model_dump(mode="json")
        changed["labels"]["classes"] = ["pos", "neg", "maybe"]
        changed["export"]["min_confidence"] = 0.1
        await bus.apply_project(parse_project(changed))
        await bus.publish(ROUNDS[3])
        records = bus.published(RoundExported)
        assert [r.version for r in records] == [None, None, None, "v0004"]
        assert records[2].export_settings != records[3].export_settings
        await bus.publish(ROUNDS[4])  # the same settings again: a delta
        assert bus.published(RoundExported)[-1].version is None
        rows = {r["item_id"] for r in _version_rows(await _objects(bus), "v0004")}
        assert {"i005", "i008"} <= rows  # low confidence and "maybe" count now
