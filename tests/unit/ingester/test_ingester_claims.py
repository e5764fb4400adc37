"""Deduplication by a claim log: one append per message (or per group of messages), the first
claim of an id wins, stale replicas and restarted processes agree."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from labelloop.stores import Entry, MemoryKeyValue
from labelloop_ingester.domain.claims import Claim, ClaimIndex, decode_segment, encode_segment
from labelloop_ingester.metrics import IngesterMetrics
from labelloop_ingester.store import ItemClaims


def _ids(*ns: int) -> list[str]:
    return [f"{n:032x}" for n in ns]


def test_a_decision_claims_what_nobody_holds_and_the_first_ask_wins() -> None:
    index = ClaimIndex()
    index.add([Claim("a", _ids(1, 2))])
    answers, claims = index.decide([(_ids(2, 3, 4), "b"), (_ids(4, 5, 1), "c")])
    assert answers == [[False, True, True], [False, True, False]]
    assert claims == [Claim("b", _ids(3, 4)), Claim("c", _ids(5))]
    # nothing is held until the claims are appended: deciding again gives the same
    assert index.decide([(_ids(3), "c")]) == ([[True]], [Claim("c", _ids(3))])
    index.add(claims)
    assert (index.segments, len(index)) == (2, 5)
    assert [index.owner(i) for i in _ids(1, 3, 5, 9)] == ["a", "b", "c", None]
    # an owner asking again (a redelivered message) holds what it claimed: nothing to append
    assert index.decide([(_ids(3, 4, 1), "b")]) == ([[True, True, False]], [])


def test_the_first_claim_in_log_order_stands() -> None:
    index = ClaimIndex()
    index.adopt("old", _ids(7))  # a claim of the first version (one key per item)
    index.add([Claim("a", _ids(7, 8)), Claim("b", _ids(8, 9))])
    assert [index.owner(i) for i in _ids(7, 8, 9)] == ["old", "a", "b"]


def test_segments_round_trip() -> None:
    claims = [Claim("sub-1", _ids(1, 2)), Claim("sub-2", [])]
    assert decode_segment(encode_segment(claims)) == claims


async def test_one_append_per_message_and_a_redelivery_finds_its_claims() -> None:
    kv = MemoryKeyValue()
    claims = ItemClaims(kv)
    assert await claims.claim("p", _ids(1, 2, 3), owner="s1") == [True, True, True]
    assert await claims.claim("p", _ids(3, 4), owner="s2") == [False, True]
    assert await kv.keys("ingester.p.") == ["ingester.p.claims.1", "ingester.p.claims.2"]
    # nothing new: nothing appended
    assert await claims.claim("p", _ids(1, 4), owner="s3") == [False, False]
    assert len(await kv.keys("ingester.p.")) == 2
    # another process (a restart, another replica) reads the log and agrees
    again = ItemClaims(kv)
    assert await again.claim("p", _ids(1, 2, 3, 5), owner="s1") == [True, True, True, True]
    assert await again.claim("p", _ids(4), owner="s2") == [True]
    # projects have logs of their own
    assert await again.claim("q", _ids(1), owner="s9") == [True]


async def test_a_stale_replica_loses_the_race_reads_the_winner_and_decides_again() -> None:
    kv = MemoryKeyValue()
    registry = CollectorRegistry()
    first, second = ItemClaims(kv, metrics=IngesterMetrics(registry)), ItemClaims(kv)
    await first.claim("p", _ids(1), owner="s1")
    await second.claim("p", _ids(2), owner="s2")  # second has read segment 1, appended 2
    # first has not read segment 2: its append at 2 fails, it reads 2 and appends 3
    assert await first.claim("p", _ids(2, 3), owner="s3") == [False, True]
    assert await second.claim("p", _ids(3, 4), owner="s4") == [False, True]
    owners = {}
    for key in await kv.keys("ingester.p.claims."):
        entry = await kv.get(key)
        assert entry is not None
        for claim in decode_segment(entry.value):
            for item in claim.items:
                assert item not in owners, f"{item} claimed twice"
                owners[item] = claim.owner
    assert owners == dict(zip(_ids(1, 2, 3, 4), ["s1", "s2", "s3", "s4"], strict=True))
    assert registry.get_sample_value("labelloop_ingester_claim_appends_total") == 2
    assert registry.get_sample_value("labelloop_ingester_claim_conflicts_total") == 1


class _SlowCreates(MemoryKeyValue):
    """Creates that yield to other tasks before they land (as a round trip does), counted."""

    def __init__(self) -> None:
        super().__init__()
        self.creates = 0

    async def create(self, key: str, value: bytes) -> int | None:
        self.creates += 1
        await asyncio.sleep(0)  # a yield, not a wait
        return await super().create(key, value)


async def test_messages_asking_at_once_share_one_append() -> None:
    kv = _SlowCreates()
    claims = ItemClaims(kv)
    asks = [claims.claim("p", _ids(k, k + 1), owner=f"s{k}") for k in range(10)]
    answers = await asyncio.gather(*asks)
    # the first ask appends alone; the nine that came meanwhile go together in the next
    assert kv.creates == 2
    assert answers[0] == [True, True]
    assert all(a == [False, True] for a in answers[1:])


class _Broken(MemoryKeyValue):
    async def create(self, key: str, value: bytes) -> int | None:
        raise ConnectionError("the bus is down")


async def test_a_failed_append_fails_every_message_it_carried_and_claims_nothing() -> None:
    claims = ItemClaims(_Broken())
    results = await asyncio.gather(
        *(claims.claim("p", _ids(k), owner=f"s{k}") for k in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_claims_of_the_first_version_are_read_once_per_process() -> None:
    kv = MemoryKeyValue()
    await kv.put("ingester.p.item." + _ids(1)[0], b"old-submission")
    claims = ItemClaims(kv)
    assert await claims.claim("p", _ids(1, 2), owner="new") == [False, True]
    assert await claims.claim("p", _ids(1), owner="old-submission") == [True]


async def test_segments_are_read_past_a_window() -> None:
    kv = MemoryKeyValue()
    writer = ItemClaims(kv)
    for k in range(10):
        await writer.claim("p", _ids(k), owner=f"s{k}")
    reader = ItemClaims(kv, read_ahead=3)
    assert await reader.claim("p", _ids(*range(11)), owner="s9") == [False] * 9 + [True, True]
    entry = await kv.get("ingester.p.claims.11")
    assert isinstance(entry, Entry)
    assert decode_segment(entry.value) == [Claim("s9", _ids(10))]


@pytest.mark.parametrize("shuffle", [False, True])
async def test_concurrent_replicas_claim_each_id_exactly_once(shuffle: bool) -> None:
    kv = _SlowCreates()
    replicas = [ItemClaims(kv) for _ in range(3)]
    # 30 messages over 3 replicas, each message 20 ids out of 100: lots of overlap
    messages = [[(m * 7 + k * 3) % 100 for k in range(20)] for m in range(30)]
    if shuffle:
        messages.reverse()
    answers = await asyncio.gather(
        *(replicas[m % 3].claim("p", _ids(*ids), owner=f"s{m}") for m, ids in enumerate(messages))
    )
    won: dict[str, list[str]] = {}
    for m, (ids, mine) in enumerate(zip(messages, answers, strict=True)):
        for item, held in zip(_ids(*ids), mine, strict=True):
            if held:
                won.setdefault(item, []).append(f"s{m}")
    every = {i for ids in messages for i in _ids(*ids)}
    assert set(won) == every  # none lost
    assert all(len(owners) == 1 for owners in won.values())  # none twice


def test_only_owners_of_claims_are_remembered() -> None:
    index = ClaimIndex()
    index.add([Claim("a", _ids(1))])
    # a message of nothing but duplicates leaves no trace in the index
    assert index.decide([(_ids(1), "b")]) == ([[False]], [])
    # the same submission twice in one decision (delivered twice at once) holds its ids twice
    answers, claims = index.decide([(_ids(2), "c"), (_ids(2), "c")])
    assert (answers, claims) == ([[True], [True]], [Claim("c", _ids(2))])
    index.add(claims)
    assert index.owners() == ["a", "c"]


def test_a_large_index_holds_ids_compactly_and_answers_as_a_dict_would() -> None:
    """Ids move from the recent dict into the sorted array as the index grows; odd ids (not
    32 lowercase hex characters) stay apart; every owner is answered as a plain dict says."""
    rng = np.random.default_rng(7)
    index = ClaimIndex(merge_at=1_000)
    truth: dict[str, str] = {}
    odd = ["ABCDEF" * 5 + "00", "short", "00 11" + "0" * 27, "g" * 32]
    for segment in range(40):
        halves = rng.integers(0, 2**63, size=(500, 2))
        halves[::3, 0] = segment % 4  # some upper halves equal, to be told apart by the lower
        ids = [f"{high:016x}{low:016x}" for high, low in halves.tolist()]
        ids += [odd[segment % len(odd)], ids[0]]
        owner = f"sub-{segment}"
        answers, claims = index.decide([(ids, owner)])
        index.add(claims)
        for item, mine in zip(ids, answers[0], strict=True):
            assert mine == (truth.setdefault(item, owner) == owner)
    assert len(index) == len(truth)
    assert index.nbytes <= 20 * len(truth)  # 16 bytes of id and 4 of owner, nothing per object
    probe = [*list(truth)[::37], *odd, f"{2**63:032x}", "0" * 32]
    assert [index.owner(i) for i in probe] == [truth.get(i) for i in probe]
    assert index.decide([(probe, "sub-3")])[0][0] == [
        truth.get(i, "sub-3") == "sub-3" for i in probe
    ]


async def test_claims_beyond_a_segment_go_to_the_next_segments() -> None:
    """A segment never outgrows NATS's message limit: many messages at once, or one huge one,
    are appended in several segments, and every id is still claimed once, by its first ask."""
    kv = MemoryKeyValue()
    claims = ItemClaims(kv, segment_ids=100)
    answers = await asyncio.gather(
        claims.claim("p", _ids(*range(250)), owner="big"),
        claims.claim("p", _ids(*range(200, 330)), owner="late"),
    )
    assert answers[0] == [True] * 250
    assert answers[1] == [False] * 50 + [True] * 80
    keys = await kv.keys("ingester.p.claims.")
    segments = [decode_segment((await kv.get(k)).value) for k in keys]  # type: ignore[union-attr]
    assert all(sum(len(c.items) for c in segment) <= 100 for segment in segments)
    assert sorted(i for s in segments for c in s for i in c.items) == sorted(_ids(*range(330)))
    # a fresh process reads the same owners back
    again = ItemClaims(kv)
    assert await again.claim("p", _ids(0, 249, 250, 329), owner="late") == [
        False,
        False,
        True,
        True,
    ]
