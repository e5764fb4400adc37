"""``NatsBlobs`` on a real object store: small and chunked objects, and reads racing a rewrite."""

from __future__ import annotations

import asyncio
import hashlib

import nats
import pytest
from nats.aio.msg import Msg

from labelloop.stores import NatsBlobs
from labelloop.testing import wait_until

pytestmark = pytest.mark.integration


async def _blobs(nats_url: str, namespace: str) -> tuple[object, NatsBlobs]:
    nc = await nats.connect(nats_url)
    store = await nc.jetstream().create_object_store(f"{namespace}_blobs")
    return nc, NatsBlobs(store)


async def test_objects_of_every_size_read_back_exactly(nats_url: str, namespace: str) -> None:
    nc, blobs = await _blobs(nats_url, namespace)
    try:
        sizes = {"empty": 0, "one-chunk": 1000, "chunk-sized": 128 * 1024, "chunked": 700_000}
        for name, size in sizes.items():
            data = hashlib.sha256(name.encode()).digest() * (size // 32) + b"x" * (size % 32)
            await blobs.put(name, data)
            assert await blobs.get(name) == data, name
        assert await blobs.get("never-written") is None
        await blobs.delete("one-chunk")
        assert await blobs.get("one-chunk") is None
        assert await blobs.list("chunk") == ["chunk-sized", "chunked"]
    finally:
        await nc.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [1000, 600_000], ids=["one-chunk", "chunked"])
async def test_a_read_racing_rewrites_returns_one_whole_version(
    nats_url: str, namespace: str, size: int
) -> None:
    """A writer replaces the object over and over while readers read it: every read returns
    one of the versions, whole, and none hangs (nats-py's own get can wait forever here)."""
    nc, blobs = await _blobs(nats_url, namespace)
    versions = [bytes([v]) * size for v in range(8)]
    try:
        await blobs.put("state", versions[0])
        stop = asyncio.Event()

        async def rewrite() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                await blobs.put("state", versions[n % len(versions)])

        writer = asyncio.create_task(rewrite())
        reads = await asyncio.wait_for(
            asyncio.gather(*(blobs.get("state") for _ in range(30))), timeout=120
        )
        stop.set()
        await writer
        assert all(r in versions for r in reads)
    finally:
        await nc.close()  # type: ignore[attr-defined]


async def test_keys_and_listings_are_complete_under_concurrent_readers(
    nats_url: str, namespace: str
) -> None:
    """Listing keys while other listings run: every one sees every key (nats-py's watch-based
    ``keys()`` could end before the keys on their way and return none); deleted keys are
    not listed, and a prefix nobody used lists nothing."""
    from labelloop.stores import NatsKeyValue

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        kv = NatsKeyValue(await js.create_key_value(bucket=f"{namespace}_kv"))
        wanted = {f"p.chunk.{k:04d}" for k in range(300)}
        await asyncio.gather(*(kv.put(k, b"{}") for k in sorted(wanted)))
        await kv.put("p.chunk.gone", b"{}")
        await kv.delete("p.chunk.gone")
        await kv.put("other.key", b"{}")
        listings = await asyncio.wait_for(
            asyncio.gather(*(kv.keys("p.chunk.") for _ in range(40))), timeout=120
        )
        assert all(set(found) == wanted for found in listings)
        assert await kv.keys("nobody.") == []

        _, blobs = await _blobs(nats_url, namespace)
        await asyncio.gather(*(blobs.put(f"obj/{k:03d}", b"x") for k in range(50)))
        await blobs.delete("obj/007")
        names = await asyncio.gather(*(blobs.list("obj/") for _ in range(20)))
        assert all(len(n) == 49 and "obj/007" not in n for n in names)
    finally:
        await nc.close()


async def test_the_last_change_under_a_prefix_is_one_request_and_sees_deletes(
    nats_url: str, namespace: str
) -> None:
    """What a catalog load asks before it lists the index: the latest write or delete under
    the project's prefix, from the server, whatever the number of keys; keys under other
    prefixes do not count."""
    from labelloop.stores import NatsKeyValue

    nc = await nats.connect(nats_url)
    try:
        kv = NatsKeyValue(await nc.jetstream().create_key_value(bucket=f"{namespace}_kv"))
        assert await kv.last_change("p.chunk.") is None
        first = await kv.put("p.chunk.a", b"{}")
        assert await kv.last_change("p.chunk.") == first
        await kv.put("p.chunkier", b"{}")
        await kv.put("q.chunk.a", b"{}")
        assert await kv.last_change("p.chunk.") == first
        await kv.delete("p.chunk.a")
        deleted = await kv.last_change("p.chunk.")
        assert deleted is not None
        assert deleted > first
        await asyncio.gather(*(kv.put(f"p.chunk.{k:03d}", b"{}") for k in range(200)))
        latest = await kv.put("p.chunk.last", b"{}")
        received = nc.stats["in_msgs"]
        assert await kv.last_change("p.chunk.") == latest
        assert nc.stats["in_msgs"] - received == 1
        with pytest.raises(ValueError, match="ends in"):
            await kv.last_change("p.chunk")
    finally:
        await nc.close()


async def test_reads_of_chunked_objects_leave_no_consumer_behind(
    nats_url: str, namespace: str
) -> None:
    """A sampler reads hundreds of catalog chunks in a cut: each read of a chunked object was an
    ordered consumer, left on the server until its inactivity threshold, and a few hundred reads
    reached the stream's consumer limit. Reads are requests now: no consumer is created."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        store = await js.create_object_store(f"{namespace}_blobs")
        blobs = NatsBlobs(store)
        data = hashlib.sha256(b"chunked").digest() * (400_000 // 32)
        await blobs.put("chunked", data)
        for _ in range(40):
            assert await blobs.get("chunked") == data
        info = await js.stream_info(f"OBJ_{namespace}_blobs")
        assert info.state.consumer_count == 0
    finally:
        await nc.close()


async def test_reads_are_direct_gets_and_a_store_without_them_is_read_from_its_leader(
    nats_url: str, namespace: str
) -> None:
    """A read asks for each chunk with a direct get (the bytes as stored, not base64 in a JSON
    reply); a bucket whose stream allows no direct gets is read with the stream API instead.
    (The metadata, which says which chunks are current, is read from the stream's leader.)"""
    nc = await nats.connect(nats_url)
    watcher = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        store = await js.create_object_store(f"{namespace}_blobs")
        blobs = NatsBlobs(store)
        small, large = b"small" * 100, hashlib.sha256(b"large").digest() * (300_000 // 32)
        await blobs.put("small", small)
        await blobs.put("large", large)
        seen: dict[str, int] = {"direct": 0, "api": 0}

        async def count(msg: Msg) -> None:
            # a chunk's subject is in the request's subject (direct) or its body (stream API);
            # the object's metadata is read from the leader either way
            if f"$O.{namespace}_blobs.C." in msg.subject + msg.data.decode():
                seen["direct" if ".DIRECT.GET." in msg.subject else "api"] += 1

        stream = f"OBJ_{namespace}_blobs"
        direct = [
            await watcher.subscribe(f"$JS.API.DIRECT.GET.{stream}.>", cb=count),
            await watcher.subscribe(f"$JS.API.DIRECT.GET.{stream}", cb=count),
        ]
        await watcher.subscribe(f"$JS.API.STREAM.MSG.GET.{stream}", cb=count)
        await watcher.flush()
        assert await blobs.get("small") == small
        assert await blobs.get("large") == large
        await nc.flush()
        chunks = 1 + -(-len(large) // (128 * 1024))
        await wait_until(lambda: seen["direct"] >= chunks, timeout=30.0)
        assert seen == {"direct": chunks, "api": 0}

        for sub in direct:  # (a listener would be taken for a server that answers them)
            await sub.unsubscribe()
        await watcher.flush()
        config = (await js.stream_info(stream)).config
        config.allow_direct = False
        await js.update_stream(config)
        assert await blobs.get("small") == small
        assert await blobs.get("large") == large
        await wait_until(lambda: seen["api"] >= chunks, timeout=30.0)
    finally:
        await watcher.close()
        await nc.close()


async def test_a_listing_by_prefix_reads_the_metadata_of_its_objects_only(
    nats_url: str, namespace: str
) -> None:
    """``list("mine/")`` on a bucket of 300 other objects: the messages the client receives
    follow the objects listed, not the bucket's size (it read every object's metadata)."""
    nc = await nats.connect(nats_url)
    try:
        store = await nc.jetstream().create_object_store(f"{namespace}_blobs")
        blobs = NatsBlobs(store)
        await asyncio.gather(*(blobs.put(f"others/{k:04d}", b"x") for k in range(300)))
        for name in ("mine/a", "mine/bb", "mine/ccc", "minefield"):
            await blobs.put(name, b"y")
        await blobs.delete("mine/bb")
        received = nc.stats["in_msgs"]
        assert await blobs.list("mine/") == ["mine/a", "mine/ccc"]
        assert await blobs.list("min") == ["mine/a", "mine/ccc", "minefield"]
        assert await blobs.list("nobody/") == []
        assert nc.stats["in_msgs"] - received < 30
        assert len(await blobs.list("")) == 303
    finally:
        await nc.close()
