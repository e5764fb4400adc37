"""The reorder buffer: rounds applied in their order, whatever order they arrive in."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from labelloop.sequencing import RoundSequencer
from labelloop.stores import MemoryBlobs, MemoryKeyValue


def _sequencer(
    kv: MemoryKeyValue, blobs: MemoryBlobs, applied: list[tuple[str, int, bytes]]
) -> RoundSequencer:
    async def apply(project: str, number: int, payload: bytes) -> None:
        await asyncio.sleep(0)  # a real apply awaits stores: let others interleave
        applied.append((project, number, payload))

    return RoundSequencer("test", lambda: kv, lambda: blobs, apply, area="qa")


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2, 3, 4])))
async def test_rounds_are_applied_in_order_whatever_the_arrival(order: tuple[int, ...]) -> None:
    applied: list[tuple[str, int, bytes]] = []
    seq = _sequencer(MemoryKeyValue(), MemoryBlobs(), applied)
    outcomes = [await seq.offer("p", n, f"r{n}".encode()) for n in order]
    assert [n for _, n, _ in applied] == [1, 2, 3, 4]
    assert [payload for _, _, payload in applied] == [b"r1", b"r2", b"r3", b"r4"]
    assert outcomes[order.index(1)] == "applied"
    assert await seq.next_round("p") == 5
    assert await seq.queued("p") == []


async def test_a_round_seen_again_is_done_and_projects_are_apart() -> None:
    applied: list[tuple[str, int, bytes]] = []
    seq = _sequencer(MemoryKeyValue(), MemoryBlobs(), applied)
    assert await seq.offer("p", 1, b"a") == "applied"
    assert await seq.offer("p", 1, b"a") == "done"
    assert await seq.offer("q", 2, b"b") == "queued"
    assert await seq.queued("q") == [2]
    assert [(p, n) for p, n, _ in applied] == [("p", 1)]


async def test_replicas_sharing_the_stores_hand_rounds_over() -> None:
    kv, blobs = MemoryKeyValue(), MemoryBlobs()
    applied: list[tuple[str, int, bytes]] = []
    a, b = _sequencer(kv, blobs, applied), _sequencer(kv, blobs, applied)
    numbers = list(range(1, 21))
    # each replica gets every other round, all at once and in reverse
    await asyncio.gather(
        *(a.offer("p", n, b"x") for n in reversed(numbers[::2])),
        *(b.offer("p", n, b"x") for n in reversed(numbers[1::2])),
    )
    await a.sweep()
    firsts = sorted({n for _, n, _ in applied})
    assert firsts == numbers
    # a round may be applied twice (that is why apply must be idempotent), never out of order
    order = [n for _, n, _ in applied]
    assert all(x <= y for x, y in itertools.pairwise(dict.fromkeys(order)))
    assert await a.next_round("p") == 21


async def test_a_large_parked_payload_goes_to_the_object_store() -> None:
    kv, blobs = MemoryKeyValue(), MemoryBlobs()
    applied: list[tuple[str, int, bytes]] = []
    seq = _sequencer(kv, blobs, applied)
    big = b"x" * (300 * 1024)
    await seq.offer("p", 2, big)
    assert await blobs.list("qa/seq/test/p/") == ["qa/seq/test/p/00000002.json"]
    await seq.offer("p", 1, b"small")
    assert applied[1][2] == big
    assert await blobs.list("qa/seq/test/p/") == []


async def test_the_sweep_applies_what_a_lost_hand_over_left_parked() -> None:
    kv, blobs = MemoryKeyValue(), MemoryBlobs()
    applied: list[tuple[str, int, bytes]] = []
    seq = _sequencer(kv, blobs, applied)
    await seq.offer("p", 2, b"two")
    # a replica applied round 1 and moved the cursor, then died before looking for round 2
    await kv.put("seq.test.p.next", b"2")
    assert await seq.sweep() == 1
    assert [n for _, n, _ in applied] == [2]
