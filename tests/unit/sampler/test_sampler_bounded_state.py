"""The sampler's state stays bounded however many rounds a project runs: closed rounds leave the
ledger for archived segments, and a process keeps a bounded number of committed batches."""

from __future__ import annotations

from typing import Any

import numpy as np

from labelloop.catalog import Catalog, Chunk
from labelloop.events import (
    BatchCompleted,
    BatchCreated,
    BatchTask,
    DeadLetter,
    IngestedItem,
    ItemsIngested,
    ModelTrained,
    QAReport,
    RequestSampling,
    ReviewItem,
    ReviewRequested,
)
from labelloop.stores import MemoryStores
from labelloop.testing import InMemoryBus, in_memory
from labelloop_sampler.app import build_app
from labelloop_sampler.domain.ledger import SEGMENT_ROUNDS, Ledger, ReviewBatch, Round
from labelloop_sampler.settings import SamplerSettings
from labelloop_sampler.store import LedgerStore

PROJECT = "long"
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "image_classification",
    "labels": {"classes": ["a", "b"]},
    "data_fields": [{"name": "image", "kind": "image"}],
    "sampling": {
        "strategy": "random",
        "batch_size": 2,
        "max_open_tasks": 4,
        "max_model_lag": 1,
        "start": "on_command",
        "seed": 3,
    },
    "quality": {"gold_fraction": 0.0, "overlap_fraction": 0.0},
    "budget": {"max_labels": 100_000},
}
ROUNDS = 2 * SEGMENT_ROUNDS + 30


async def _setup(bus: InMemoryBus, n: int = 400, config: dict[str, Any] = CONFIG) -> None:
    import json

    await bus.stores.projects.put(PROJECT, json.dumps(config).encode())
    items = [IngestedItem(item_id=f"item-{k:04d}", data={"image": f"img-{k}"}) for k in range(n)]
    features = np.random.default_rng(0).random((n, 4)).astype(np.float32)
    ref = await Catalog(bus.stores.state, bus.stores.artifacts).write(
        PROJECT, "c1", Chunk(items, "producer-4", features)
    )
    await bus.publish(ItemsIngested(project=PROJECT, items=items, chunk_ref=ref, submission_id="s"))


async def _close_round(
    bus: InMemoryBus, batch: BatchCreated, *, flagged_items: int = 0, model: bool = True
) -> None:
    """What the crew, the trainer (unless ``model`` is false: it is far behind) and QA say once
    round ``batch.round`` is over."""
    number = batch.round
    await bus.publish(
        BatchCompleted(
            project=PROJECT,
            batch_id=batch.batch_id,
            round=number,
            n_tasks=len(batch.tasks),
            n_annotations=len(batch.tasks),
        )
    )
    if model:
        await bus.publish(_model_trained(number))
    await bus.publish(
        QAReport(
            project=PROJECT,
            batch_id=batch.batch_id,
            round=number,
            n_items=len(batch.tasks),
            n_annotations=len(batch.tasks),
            consensus_method="majority",
            items_flagged=flagged_items,
            lead_time_seconds=2.0,
            n_lead_times=2,
        )
    )


def _model_trained(number: int, converged: str | None = None) -> ModelTrained:
    return ModelTrained(
        project=PROJECT,
        model_version=f"m{number:04d}",
        dataset_version=f"v{number:04d}",
        round=number,
        promoted=False,
        metrics={},
        n_train=0,
        skipped="test",
        converged=converged,
    )


def _labeling(bus: InMemoryBus) -> dict[int, BatchCreated]:
    return {b.round: b for b in bus.published(BatchCreated) if b.kind == "labeling"}


async def _ledger(bus: InMemoryBus) -> tuple[Ledger, int]:
    entry = await bus.stores.state.get(f"sampler.{PROJECT}.ledger")
    assert entry is not None
    return Ledger.decode(entry.value), len(entry.value)


async def test_the_ledger_stays_small_over_many_rounds_and_a_new_replica_goes_on() -> None:
    stores = MemoryStores()
    sizes: list[int] = []
    async with in_memory(build_app(SamplerSettings(), stores=stores)) as bus:
        await _setup(bus)
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        for number in range(1, ROUNDS + 1):
            await _close_round(bus, _labeling(bus)[number])
            sizes.append((await _ledger(bus))[1])
        ledger, size = await _ledger(bus)
        # rounds before the next batch's basis left the ledger, a segment at a time
        assert ledger.closed.rounds == 2 * SEGMENT_ROUNDS
        assert min(ledger.rounds) == 2 * SEGMENT_ROUNDS + 1
        assert ledger.next_round == ROUNDS + 3
        assert ledger.labels_used == 2 * (ROUNDS + 2)
        assert ledger.mean_lead_seconds(ledger.next_round) == 1.0  # compacted rounds count
        # the ledger's size is bounded by a segment's worth of rounds, not by the rounds run
        assert max(sizes[-SEGMENT_ROUNDS:]) <= max(sizes[:SEGMENT_ROUNDS]) * 1.5
        assert size < 40_000
        first = await bus.stores.artifacts.get(f"sampler/{PROJECT}/ledger/segment-000001.json")
        assert first is not None
        # a review QA asked for long ago, of a compacted round, is not cut twice; a forged one
        # (another batch id) is still refused
        old = _labeling(bus)[5]
        item = old.tasks[0].item_id
        ok = ReviewRequested(
            project=PROJECT,
            batch_id=old.batch_id,
            round=5,
            items=[ReviewItem(item_id=item, reason="low_confidence")],
        )
        await bus.publish(ok)
        await bus.publish(ok.model_copy(update={"event_id": "forged", "batch_id": "nope"}))
        assert [b for b in bus.published(BatchCreated) if b.kind == "review"] == []
        assert len(bus.published(DeadLetter)) == 1
        cut = _labeling(bus)
    assert sorted(cut) == list(range(1, ROUNDS + 3))
    # a new replica (nothing in memory) learns the items taken from the segments
    async with in_memory(build_app(SamplerSettings(), stores=stores)) as bus:
        await _close_round(bus, cut[ROUNDS + 1])
        (new,) = _labeling(bus).values()
    assert new.round == ROUNDS + 3
    handed = [t.item_id for b in [*cut.values(), new] for t in b.tasks]
    assert len(handed) == len(set(handed)) == 2 * (ROUNDS + 3), "an item was handed out twice"
    reader = LedgerStore(lambda: stores.state, lambda: stores.artifacts)
    entry = await stores.state.get(f"sampler.{PROJECT}.ledger")
    assert entry is not None
    taken = await reader.taken(PROJECT, Ledger.decode(entry.value))
    assert taken.items == set(handed)
    assert taken.through == ROUNDS + 3


async def test_a_trainer_far_behind_holds_no_rounds_in_the_ledger_when_no_batch_waits_for_it() -> (
    None
):
    """Random picks without rechecks wait for no model: rounds whose model has not come leave the
    ledger as the others do, which keeps only the range of them still awaiting a model; a model
    that comes late for one of them still stops sampling when it says the curve has plateaued."""
    no_rechecks = {**CONFIG, "quality": {**CONFIG["quality"], "max_rechecks_per_round": 0}}
    async with in_memory(build_app(SamplerSettings(), stores=MemoryStores())) as bus:
        await _setup(bus, config=no_rechecks)
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        for number in range(1, ROUNDS + 1):
            await _close_round(bus, _labeling(bus)[number], model=False)
        ledger, size = await _ledger(bus)
        assert ledger.closed.rounds == 2 * SEGMENT_ROUNDS
        assert ledger.closed.awaiting_models == [(1, 2 * SEGMENT_ROUNDS)]
        assert size < 40_000
        assert ledger.next_round == ROUNDS + 3
        # the trainer catches up, in round order; its third model says the curve plateaued
        for number in (1, 2):
            await bus.publish(_model_trained(number))
        ledger, _ = await _ledger(bus)
        assert ledger.closed.awaiting_models == [(3, 2 * SEGMENT_ROUNDS)]
        assert ledger.converged(ledger.next_round) is None
        await bus.publish(_model_trained(3, converged="plateau"))
        await bus.publish(_model_trained(3, converged=None))  # a retrained copy: first word stands
        ledger, _ = await _ledger(bus)
        assert ledger.closed.awaiting_models == [(4, 2 * SEGMENT_ROUNDS)]
        assert (ledger.closed.converged, ledger.closed.converged_round) == ("plateau", 3)
        cut = len(_labeling(bus))
        for number in (ROUNDS + 1, ROUNDS + 2):
            await _close_round(bus, _labeling(bus)[number], model=False)
        assert len(_labeling(bus)) == cut, "a batch was cut after the curve plateaued"


async def test_a_round_whose_review_is_due_stays_until_its_review_is_closed() -> None:
    ledger = Ledger().with_started()
    for n in range(1, SEGMENT_ROUNDS + 1):
        r = Round(batch_id=f"b{n}", nonce="x", tasks=2, labels=2, annotations=2)
        ledger = ledger.with_round(n, r).with_announced("labeling", n).with_completed(f"b{n}")
        ledger = ledger.with_model(n, model_version=None, scores_ref=None, converged=None)
        ledger = ledger.with_qa(
            n, flagged=[], lead_seconds=1.0, lead_count=1, review_due=n == SEGMENT_ROUNDS // 2
        )
    keep_from = SEGMENT_ROUNDS + 5
    assert ledger.compacted(keep_from) is None  # the review QA asked for is not cut yet
    ledger = ledger.with_review(
        SEGMENT_ROUNDS // 2, ReviewBatch(batch_id="r", nonce="y", tasks=1)
    ).with_announced("review", SEGMENT_ROUNDS // 2)
    assert ledger.compacted(keep_from) is None  # cut, announced, not completed
    ledger = ledger.with_completed("r")
    found = ledger.compacted(keep_from)
    assert found is not None
    kept, segment = found
    assert (segment.first, segment.last) == (1, SEGMENT_ROUNDS)
    assert list(segment.reviews) == [SEGMENT_ROUNDS // 2]
    assert kept.rounds == {}
    assert kept.outcomes == {}
    assert kept.reviews == {}
    assert kept.next_round == ledger.next_round
    assert kept.mean_lead_seconds(kept.next_round) == ledger.mean_lead_seconds(ledger.next_round)
    # late or repeated words about a compacted round change nothing
    assert kept.with_qa(3, flagged=["x"], lead_seconds=9, lead_count=9) == kept
    assert kept.with_model(3, model_version="m", scores_ref="s", converged="yes") == kept
    assert kept.with_completed("b3") == kept


def test_a_ledger_written_before_compaction_reads_and_compacts() -> None:
    """A ledger as the sampler stored it before it compacted (no ``closed``, no
    ``review_due``): it reads as it was, and its closed rounds compact."""
    old: dict[str, Any] = {"started": True, "paused": False, "labels_used": 0}
    old["rounds"] = {
        str(n): {
            "batch_id": f"b{n}",
            "nonce": "n",
            "tasks": 2,
            "labels": 2,
            "annotations": 2,
            "done": 2,
            "completed": True,
            "announced": True,
            "rechecks": [f"item-{n}"] if n == 7 else [],
        }
        for n in range(1, SEGMENT_ROUNDS + 3)
    }
    old["outcomes"] = {
        str(n): {"model_known": True, "qa_known": True, "lead_seconds": 4.0, "lead_count": 2}
        for n in range(1, SEGMENT_ROUNDS + 3)
    }
    old["outcomes"]["9"]["converged"] = "plateau"
    import json

    ledger = Ledger.decode(json.dumps(old).encode())
    assert ledger.next_round == SEGMENT_ROUNDS + 3
    assert ledger.converged(SEGMENT_ROUNDS) == "plateau"
    found = ledger.compacted(keep_from=SEGMENT_ROUNDS + 2)
    assert found is not None
    kept, segment = found
    assert kept.next_round == SEGMENT_ROUNDS + 3
    assert kept.converged(SEGMENT_ROUNDS) == "plateau"
    assert kept.mean_lead_seconds(kept.next_round) == 2.0
    assert segment.rechecked == ["item-7"]
    assert sorted(kept.rounds) == [SEGMENT_ROUNDS + 1, SEGMENT_ROUNDS + 2]


async def test_a_process_keeps_a_bounded_number_of_committed_batches() -> None:
    stores = MemoryStores()
    store = LedgerStore(lambda: stores.state, lambda: stores.artifacts, batch_cache=8)
    for n in range(1, 41):
        batch = BatchCreated(
            project=PROJECT,
            batch_id=f"b{n}",
            round=n,
            tasks=[BatchTask(item_id=f"i{n}", data={"image": "x"}, annotations_required=1)],
            strategy="random",
            seed=0,
        )
        await store.save_batch(batch, "nonce")
        assert store.cached_batches() <= 8
    again = await store.batch(PROJECT, "labeling", 1, "nonce")  # read back from the store
    assert again.tasks[0].item_id == "i1"
    assert store.cached_batches() == 8


async def test_the_sampler_keeps_no_items_data_only_the_batches_tasks_carry_it() -> None:
    """Items' data (here a 2 kB data URI each) stays in the catalog's chunks: the sampler reads
    it for the tasks of a batch, and keeps the data of at most its last four chunks read."""
    import gc
    import json

    async with in_memory(build_app(SamplerSettings(), stores=MemoryStores())) as bus:
        await bus.stores.projects.put(PROJECT, json.dumps(CONFIG).encode())
        catalog = Catalog(bus.stores.state, bus.stores.artifacts)
        for c in range(10):
            chunk = [
                IngestedItem(item_id=f"kept-{c}-{k:03d}", data={"image": "data:" + "x" * 2000})
                for k in range(100)
            ]
            ref = await catalog.write(PROJECT, f"c{c}", Chunk(chunk))
            await bus.publish(
                ItemsIngested(project=PROJECT, items=chunk[:1], chunk_ref=ref, submission_id="s")
            )
        del chunk, catalog
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        cut = _labeling(bus)
        assert sorted(cut) == [1, 2]
        assert all(t.data == {"image": "data:" + "x" * 2000} for b in cut.values() for t in b.tasks)
        gc.collect()
        # this test's items only (other tests' objects may still be alive in this process)
        with_data = [
            o
            for o in gc.get_objects()
            if isinstance(o, IngestedItem) and o.item_id.startswith("kept-") and o.data
        ]
        assert len(with_data) <= 4 * 100, f"{len(with_data)} items' data kept in memory"


async def test_a_random_batch_does_not_stack_the_pools_features() -> None:
    """Random picks read no features: cutting a batch from 20,000 items with 128 features each
    (a 10 MB matrix, were the pool's rows stacked) allocates far less than that."""
    import json
    import tracemalloc

    n, dim = 20_000, 128
    async with in_memory(build_app(SamplerSettings(), stores=MemoryStores())) as bus:
        await bus.stores.projects.put(PROJECT, json.dumps(CONFIG).encode())
        items = [IngestedItem(item_id=f"item-{k:05d}", data={"image": "x"}) for k in range(n)]
        features = np.random.default_rng(0).random((n, dim)).astype(np.float32)
        ref = await Catalog(bus.stores.state, bus.stores.artifacts).write(
            PROJECT, "c1", Chunk(items, "producer-128", features)
        )
        await bus.publish(
            ItemsIngested(project=PROJECT, items=items[:1], chunk_ref=ref, submission_id="s")
        )
        del items, features
        await bus.publish(RequestSampling(project=PROJECT, action="start"))  # loads the catalog
        tracemalloc.start()
        try:
            await _close_round(bus, _labeling(bus)[1])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert 3 in _labeling(bus)
    assert peak < n * dim * 4 // 2, f"{peak / 1e6:.1f} MB allocated to cut one batch"


async def test_a_ledger_read_again_unchanged_is_not_decoded_again_and_a_replicas_change_is_seen(
    monkeypatch: Any,
) -> None:
    """Each handler reads the ledger, then changes it by compare-and-swap: decoding it every
    time took a third of the sampler's CPU at 10M items. A process keeps the last ledger it
    decoded or wrote, and decodes only bytes it has not seen (a replica's change)."""
    stores = MemoryStores()
    mine = LedgerStore(lambda: stores.state, lambda: stores.artifacts)
    replica = LedgerStore(lambda: stores.state, lambda: stores.artifacts)
    decoded: list[int] = []
    decode = Ledger.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Ledger], raw: bytes | None) -> Ledger:
        decoded.append(1)
        return decode(cls, raw)  # type: ignore[no-any-return]

    monkeypatch.setattr(Ledger, "decode", classmethod(counting))
    started = await mine.change("p", lambda ledger: ledger.with_started())
    assert started.started
    first, revision = await mine.read("p")
    again, same = await mine.read("p")
    assert first is again is started
    assert revision == same
    assert decoded == []  # what it wrote, it knows
    await replica.change("p", lambda ledger: ledger.with_paused())
    paused, newer = await mine.read("p")
    assert paused.paused
    assert newer != revision
    assert len(decoded) == 2  # the replica decoded the start, this process the pause
    assert (await mine.read("p"))[0] is paused
    assert len(decoded) == 2


def test_models_of_compacted_rounds_come_in_any_order_and_the_first_verdict_stands() -> None:
    """A round compacted without its model is awaited until its model comes, in whatever order
    models come; the earliest round's convergence verdict is the one kept."""
    ledger = Ledger().with_started()
    for n in range(1, 2 * SEGMENT_ROUNDS + 1):
        r = Round(batch_id=f"b{n}", nonce="x", tasks=2, labels=2, annotations=2)
        ledger = ledger.with_round(n, r).with_announced("labeling", n).with_completed(f"b{n}")
        ledger = ledger.with_qa(n, flagged=[], lead_seconds=1.0, lead_count=1, review_due=False)
    ledger = ledger.with_model(7, model_version=None, scores_ref=None, converged=None)
    keep_from = 2 * SEGMENT_ROUNDS + 1
    assert ledger.compacted(keep_from) is None  # models awaited: the rounds stay
    for _ in range(2):
        found = ledger.compacted(keep_from, needs_model=False)
        assert found is not None
        ledger = found[0]
    last = 2 * SEGMENT_ROUNDS
    assert ledger.closed.awaiting_models == [(1, 6), (8, last)]
    assert ledger.rounds == {}
    assert ledger.outcomes == {}

    def model(led: Ledger, n: int, converged: str | None = None) -> Ledger:
        return led.with_model(n, model_version=f"m{n}", scores_ref=None, converged=converged)

    ledger = model(ledger, 70, "plateau")
    assert ledger.closed.awaiting_models == [(1, 6), (8, 69), (71, last)]
    assert (ledger.closed.converged, ledger.closed.converged_round) == ("plateau", 70)
    assert ledger.converged(69) is None
    assert ledger.converged(70) == "plateau"
    ledger = model(ledger, 30, "stable")  # an earlier round's verdict comes later: it is first
    ledger = model(ledger, 90, "later")
    assert (ledger.closed.converged, ledger.closed.converged_round) == ("stable", 30)
    for n in (1, 6, 8, 69, 71, last):
        ledger = model(ledger, n)
    assert ledger.closed.awaiting_models == [(2, 5), (9, 29), (31, 68), (72, 89), (91, last - 1)]
    assert model(ledger, 7, "again") == ledger  # known before it was compacted: nothing changes
    assert model(ledger, 30, "again") == ledger  # its model came already
