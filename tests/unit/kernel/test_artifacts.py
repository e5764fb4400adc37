"""Artefact areas: a name's first segment picks the bucket, and a writer writes only its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from labelloop.artifacts import AREAS, Artifacts, ForeignArea, area_of
from labelloop.services import service_specs
from labelloop.stores import Blobs, MemoryBlobs


def _areas() -> tuple[Callable[[str], Awaitable[Blobs]], dict[str, MemoryBlobs]]:
    """An in-memory bucket per area, opened on demand, and the buckets opened so far."""
    buckets: dict[str, MemoryBlobs] = {}

    async def open_area(area: str) -> Blobs:
        return buckets.setdefault(area, MemoryBlobs())

    return open_area, buckets


async def test_each_area_is_its_own_bucket_and_reads_cross_areas() -> None:
    open_area, buckets = _areas()
    trainer = Artifacts(open_area, home="trainer")
    await trainer.put("trainer/p/models/m0001.skops", b"model")
    assert await buckets["trainer"].get("trainer/p/models/m0001.skops") == b"model"
    exporter = Artifacts(open_area, home="exporter")
    await exporter.put("exporter/p/datasets/v0001/labels.parquet", b"labels")
    # everyone reads every area; the name says where
    assert await trainer.get("exporter/p/datasets/v0001/labels.parquet") == b"labels"
    assert await exporter.get("trainer/p/models/m0001.skops") == b"model"
    assert await trainer.list("") == [
        "exporter/p/datasets/v0001/labels.parquet",
        "trainer/p/models/m0001.skops",
    ]
    assert await trainer.list("trainer/p/") == ["trainer/p/models/m0001.skops"]
    assert await trainer.list("ex") == ["exporter/p/datasets/v0001/labels.parquet"]


async def test_a_writer_may_not_write_or_delete_another_area() -> None:
    open_area, _ = _areas()
    trainer = Artifacts(open_area, home="trainer")
    exporter = Artifacts(open_area, home="exporter")
    await exporter.put("exporter/p/datasets/v0001/labels.parquet", b"labels")
    with pytest.raises(ForeignArea, match="'exporter' area, and this client writes only 'trainer'"):
        await trainer.put("exporter/p/datasets/v0001/labels.parquet", b"forged")
    with pytest.raises(ForeignArea):
        await trainer.delete("exporter/p/datasets/v0001/labels.parquet")
    assert await exporter.get("exporter/p/datasets/v0001/labels.parquet") == b"labels"
    with pytest.raises(ForeignArea, match="names no area"):
        await trainer.put("payloads/x.json", b"{}")


async def test_a_name_in_no_area_is_not_found() -> None:
    open_area, buckets = _areas()
    anyone = Artifacts(open_area, home=None)
    await anyone.put("qa/p/rounds/000001.json", b"{}")  # no home: the operator writes anywhere
    assert await anyone.get("../qa/p/rounds/000001.json") is None
    assert await anyone.get("nosuch/p/x") is None
    assert set(buckets) == {"qa"}  # nothing was opened for the unknown names


def test_every_service_writes_a_known_area_of_its_own() -> None:
    areas = {name: spec.artifacts for name, spec in service_specs().items()}
    assert all(area in AREAS for area in areas.values()), areas
    assert len(set(areas.values())) == len(areas), f"two services share an area: {areas}"
    assert area_of("catalog/p/c1.npz") == "catalog"
    with pytest.raises(ValueError, match="unknown artefact area"):
        Artifacts(_areas()[0], home="nosuch")
