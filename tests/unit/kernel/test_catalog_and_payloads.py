"""The item catalog's encodings, and events that travel by reference."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.catalog import (
    Catalog,
    Chunk,
    ProbabilityTable,
    decode_chunk,
    decode_table,
    encode_chunk,
    encode_table,
)
from labelloop.events import IngestedItem, ItemIn, ItemsSubmitted
from labelloop.payloads import PAYLOAD_HEADER, PayloadMissing, resolve, wire_form
from labelloop.stores import MemoryBlobs, MemoryKeyValue


def _items(n: int, start: int = 0) -> list[IngestedItem]:
    return [
        IngestedItem(item_id=f"i{k:03d}", data={"text": f"item {k}"}, metadata={"k": k})
        for k in range(start, start + n)
    ]


def test_chunks_and_tables_round_trip() -> None:
    chunk = Chunk(_items(3), "producer-2", np.arange(6, dtype=np.float32).reshape(3, 2))
    back = decode_chunk(encode_chunk(chunk))
    assert back.items == chunk.items
    assert back.space == "producer-2"
    assert back.X is not None
    assert back.X.tolist() == chunk.X.tolist()  # type: ignore[union-attr]
    bare = decode_chunk(encode_chunk(Chunk(_items(2))))
    assert (bare.space, bare.X) == (None, None)
    with pytest.raises(ValueError, match="feature rows"):
        encode_chunk(Chunk(_items(2), "s", np.zeros((3, 2), dtype=np.float32)))
    table = ProbabilityTable(["a", "b"], np.array([[0.25, 0.75], [1.0, 0.0]]), ["x", "y"])
    again = decode_table(encode_table(table))
    assert again.item_ids == ["a", "b"]
    assert again.classes == ["x", "y"]
    assert again.rows() == {"a": 0, "b": 1}
    assert np.allclose(again.proba, table.proba)


def test_tables_keep_any_item_id_and_tables_of_the_first_format_are_still_read() -> None:
    import io

    ids = ["plain", "ünï", 'quote"d', "new\nline", "x" * 300]
    table = ProbabilityTable(ids, np.eye(5)[:, :2], ["a", "b"])
    assert decode_table(encode_table(table)).item_ids == ids
    buf = io.BytesIO()
    np.savez_compressed(  # what the trainer wrote before the ids were one JSON list
        buf,
        item_ids=np.asarray(ids, dtype=np.str_),
        proba=np.asarray(table.proba, dtype=np.float32),
        classes=np.asarray(["a", "b"], dtype=np.str_),
        kind=np.asarray("classes"),
    )
    old = decode_table(buf.getvalue())
    assert old.item_ids == ids
    assert np.allclose(old.proba, table.proba)


def test_chunks_of_the_first_format_are_still_read() -> None:
    import io

    items = _items(3)
    buf = io.BytesIO()
    np.savez_compressed(  # what the catalog wrote before its records were one JSON list
        buf,
        item_ids=np.asarray([i.item_id for i in items], dtype=np.str_),
        records=np.asarray("\n".join(i.model_dump_json() for i in items), dtype=np.str_),
        X=np.ones((3, 2), dtype=np.float32),
        space=np.asarray("producer-2"),
    )
    back = decode_chunk(buf.getvalue())
    assert back.items == items
    assert back.space == "producer-2"
    assert back.X is not None
    assert back.X.shape == (3, 2)


def _tricky(n: int) -> list[IngestedItem]:
    """Records whose bytes could mislead a reader that looked for one record in the JSON list:
    quotes, backslashes, brackets, non-ASCII ids and text, an ``item_id`` key in the metadata."""
    return [
        IngestedItem(
            item_id=f"ïd-{k}" if k % 2 else f"i{k:03d}",
            data={"text": f'say "{k}" \\ ],{{"item_id":"i000"}} é'},
            metadata={"item_id": "i000", "nested": [{"k": k}]},
            known_label="a" if k % 3 == 0 else None,
        )
        for k in range(n)
    ]


async def test_one_record_of_a_chunk_is_read_without_the_others() -> None:
    """The sampler's read of a batch's data: of a chunk it wants one or two records of
    thousands; each is found by the chunk's offsets and parsed alone, and equals the record a
    whole decode gives."""
    kv, blobs = MemoryKeyValue(), MemoryBlobs()
    items = _tricky(9)
    await Catalog(kv, blobs).write("p", "c1", Chunk(items, "s", np.ones((9, 2), np.float32)))
    reader = Catalog(kv, blobs, keep_data=False)
    loaded = await reader.load("p")
    assert [loaded.records[i.item_id].metadata for i in items] == [i.metadata for i in items]
    for item in items:
        assert await reader.data_of("p", loaded, [item.item_id]) == {item.item_id: item.data}
    assert await reader.data_of("p", loaded, [i.item_id for i in items]) == {
        i.item_id: i.data for i in items
    }


async def test_chunks_written_before_records_had_offsets_are_still_read() -> None:
    """A catalog written by an earlier ingester: its records one JSON list with no offsets."""
    import io
    import json
    import zipfile

    kv, blobs = MemoryKeyValue(), MemoryBlobs()
    items = _tricky(4)
    buf = io.BytesIO()
    listed = json.dumps([i.model_dump(mode="json") for i in items]).encode()
    with (
        zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as npz,
        npz.open("items.npy", "w") as member,
    ):
        np.lib.format.write_array(member, np.frombuffer(listed, dtype=np.uint8))
    await blobs.put("catalog/p/old.npz", buf.getvalue())
    await kv.put("catalog.p.chunk.old", b'{"ref": "catalog/p/old.npz", "n": 4, "space": null}')
    reader = Catalog(kv, blobs, keep_data=False)
    loaded = await reader.load("p")
    assert await reader.data_of("p", loaded, [i.item_id for i in items]) == {
        i.item_id: i.data for i in items
    }


async def test_a_load_keeps_each_chunk_as_bytes_and_an_item_costs_under_250_bytes() -> None:
    """At ten million items a parsed record (a pydantic object and its dicts) cost 1.5 kB an
    item in every reader: the catalog keeps each chunk's records as deflated bytes, parses one
    when asked for, and an item costs its id, its place and its record's deflated bytes."""
    import tracemalloc

    kv, blobs = MemoryKeyValue(), MemoryBlobs()
    writer = Catalog(kv, blobs)
    n = 20_000
    for c in range(n // 500):
        chunk = [
            IngestedItem(
                item_id=f"{c:04d}{k:028x}",
                data={"image": f"s3://bucket/images/{c}/{k}.png"},
                metadata={"source": "camera-3"},
                known_label="cat" if k == 7 else None,
            )
            for k in range(500)
        ]
        features = np.ones((500, 4), dtype=np.float32)
        await writer.write("p", f"c{c:04d}", Chunk(chunk, "producer-4", features))
    for keep_data, most in ((False, 250), (True, 250)):
        tracemalloc.start()
        items = await Catalog(kv, blobs, keep_data=keep_data).load("p")
        held, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(items) == n
        features_bytes = n * 4 * 4
        assert (held - features_bytes) / n < most, (keep_data, held / n)
        assert len(items.gold) == n // 500
        some = f"{3:04d}{7:028x}"
        assert some in items.gold
        assert items.records[some].metadata == {"source": "camera-3"}
        assert items.records[some].data == (
            {"image": "s3://bucket/images/3/7.png"} if keep_data else {}
        )


def test_items_are_where_their_first_chunk_put_them() -> None:
    from labelloop.catalog import ProjectItems, _read

    first = Chunk(_items(3), "producer-2", np.zeros((3, 2), dtype=np.float32))
    again = [i.model_copy(update={"known_label": "x"}) for i in _items(2, start=2)]
    second = Chunk(again, "producer-2", np.ones((2, 2), dtype=np.float32))
    items = ProjectItems()
    for name, chunk in (("a", first), ("b", second)):
        items.add(*_read(encode_chunk(chunk), name, bare=False))
    assert len(items) == 4
    assert items.chunk_of["i002"] == "a"  # read from both: the first chunk's
    assert items.records["i002"].known_label is None
    assert items.gold == {"i003"}
    X, has = items.rows_of(["i003", "nobody", "i002"], "producer-2")  # noqa: N806
    assert X.tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert has.tolist() == [True, False, True]
    assert len(items.spaces["producer-2"].rows) == 4
    assert items.data(["i003", "nobody", "i000"]) == {
        "i003": {"text": "item 3"},
        "i000": {"text": "item 0"},
    }


async def test_the_catalog_reads_each_chunk_once_and_merges_spaces() -> None:
    kv, blobs = MemoryKeyValue(), MemoryBlobs()
    writer = Catalog(kv, blobs)
    await writer.write("p", "c1", Chunk(_items(3), "producer-2", np.ones((3, 2), np.float32)))
    await writer.write("p", "c2", Chunk(_items(2, start=3)))
    await writer.write("q", "c1", Chunk(_items(1, start=9)))
    reader = Catalog(kv, blobs)
    items = await reader.load("p")
    assert items.item_ids() == ["i000", "i001", "i002", "i003", "i004"]
    assert items.best_space() == "producer-2"
    found = items.matrix(["i004", "i001"])
    assert found is not None
    matrix, has = found
    assert has.tolist() == [False, True]
    assert matrix.tolist() == [[1.0, 1.0], [1.0, 1.0]]  # missing rows get the mean row
    await writer.write("p", "c3", Chunk(_items(1, start=20)))
    assert len(await reader.load("p")) == 6
    assert len(await reader.load("q")) == 1


async def test_a_load_lists_the_index_only_when_a_chunk_was_indexed_or_removed_since() -> None:
    """Every cut and every version loads the catalog: listing 420 index keys each time (1M
    items) cost a consumer and 420 messages. A load asks whether anything under the project's
    index changed since its last listing, and lists only then."""

    class Counting(MemoryKeyValue):
        listings = 0

        async def keys(self, prefix: str = "") -> list[str]:
            Counting.listings += 1
            return await super().keys(prefix)

    kv, blobs = Counting(), MemoryBlobs()
    writer = Catalog(kv, blobs)
    reader = Catalog(kv, blobs)
    assert len(await reader.load("p")) == 0
    assert Counting.listings == 0  # nothing indexed yet: nothing to list
    await writer.write("p", "c1", Chunk(_items(2)))
    assert len(await reader.load("p")) == 2
    assert Counting.listings == 1
    await kv.put("q.unrelated", b"{}")
    await writer.write("q", "c1", Chunk(_items(1, start=9)))
    for _ in range(3):
        assert len(await reader.load("p")) == 2
    assert Counting.listings == 1
    await writer.write("p", "c2", Chunk(_items(3, start=2)))
    assert len(await reader.load("p")) == 5
    assert Counting.listings == 2
    await kv.delete("catalog.p.chunk.c2")  # an operator removes a chunk from the index
    await reader.load("p")
    assert Counting.listings == 3


async def test_a_large_event_travels_by_reference() -> None:
    blobs = MemoryBlobs()
    small = ItemsSubmitted(project="p", items=[ItemIn(data={"text": "hi"})])
    body, headers = await wire_form(small, blobs, area="operator", limit=4096)
    assert headers == {}
    assert await resolve(body, headers, blobs) == body
    big = ItemsSubmitted(project="p", items=[ItemIn(data={"text": "x" * 10_000})])
    body, headers = await wire_form(big, blobs, area="operator", limit=4096)
    assert len(body) < 1024
    assert headers[PAYLOAD_HEADER] == f"operator/payloads/items.submitted/p/{big.event_id}.json"
    assert ItemsSubmitted.model_validate_json(await resolve(body, headers, blobs)) == big
    await blobs.delete(headers[PAYLOAD_HEADER])
    with pytest.raises(PayloadMissing, match="not in the object store"):
        await resolve(body, headers, blobs)


async def test_a_catalog_without_the_data_reads_it_for_the_items_asked_for_only() -> None:
    """The sampler's catalog: every record without its data (a data URI may be kilobytes), the
    data of a batch's items read from their chunks (side by side, in windows), a bounded number
    of chunks kept decoded."""
    kv, blobs = MemoryKeyValue(), MemoryBlobs()
    writer = Catalog(kv, blobs)
    for c in range(40):  # more chunks than data_of reads at once
        chunk = [
            IngestedItem(item_id=f"i{c:02d}-{k}", data={"image": f"data:{c}-{k}" + "x" * 2000})
            for k in range(5)
        ]
        await writer.write("p", f"c{c:02d}", Chunk(chunk))
    reader = Catalog(kv, blobs, keep_data=False, chunk_cache=3)
    items = await reader.load("p")
    assert len(items) == 200
    assert all(record.data == {} for record in items.records.values())
    assert reader.decoded_chunks() == 0
    wanted = [f"i{c:02d}-1" for c in range(40)] + ["nobody"]
    data = await reader.data_of("p", items, wanted)
    assert sorted(data) == wanted[:-1]
    assert all(str(data[f"i{c:02d}-1"]["image"]).startswith(f"data:{c}-1") for c in range(40))
    assert reader.decoded_chunks() == 3
    # the default catalog keeps the data, and answers from its records
    full = Catalog(kv, blobs)
    assert (await full.data_of("p", await full.load("p"), wanted)) == data
    assert full.decoded_chunks() == 0


def test_item_ids_stay_sorted_as_chunks_arrive() -> None:
    """The sorted ids are merged with each chunk's new ids, not sorted again from scratch;
    whatever the order of arrival and the repeats, they are the sorted distinct ids."""
    import random

    from labelloop.catalog import ProjectItems, _read

    rng = random.Random(1)
    items, seen = ProjectItems(), set()
    for c in range(30):
        ids = [f"{rng.randrange(2_000):05d}" for _ in range(50)]  # repeats within and across
        chunk = Chunk([IngestedItem(item_id=i, data={"t": i}) for i in ids])
        items.add(*_read(encode_chunk(chunk), f"c{c}", bare=False))
        seen |= set(ids)
        if c % 7 == 0 or c == 29:
            assert items.item_ids() == sorted(seen)
    assert len(items) == len(seen)


async def test_a_chunk_that_is_not_an_npz_fails_its_load_loudly_and_the_others_stay() -> None:
    """A chunk object overwritten with junk (an operator, a bad copy): the load says what is
    wrong and adds nothing of it; what was loaded before is kept, and nothing is unpickled."""
    kv, blobs = MemoryKeyValue(), MemoryBlobs()
    await Catalog(kv, blobs).write("p", "c1", Chunk(_items(2)))
    reader = Catalog(kv, blobs)
    items = await reader.load("p")
    assert len(items) == 2
    await kv.put("catalog.p.chunk.c9", b'{"ref": "catalog/p/c9.npz", "n": 1, "space": null}')
    await blobs.put("catalog/p/c9.npz", b"not an npz")
    with pytest.raises(ValueError, match="pickled"):
        await reader.load("p")
    assert len(items) == 2  # the same object the next load returns
    assert "c9" not in items.chunks
