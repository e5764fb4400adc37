"""The sampler on the in-memory bus: numbered batches, cut when the round they build on is known."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from labelloop.catalog import Catalog, Chunk, ProbabilityTable, encode_table
from labelloop.events import (
    AnnotatorScore,
    BatchCompleted,
    BatchCreated,
    BudgetExhausted,
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
from labelloop_sampler.settings import SamplerSettings

PROJECT = "pool"
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "image_classification",
    "labels": {"classes": ["a", "b"]},
    "data_fields": [{"name": "image", "kind": "image"}],
    "sampling": {
        "strategy": "hybrid",
        "batch_size": 10,
        "max_open_tasks": 100,
        "max_model_lag": 1,
        "start": "on_command",
        "seed": 5,
    },
    "quality": {"gold_fraction": 0.1, "overlap_fraction": 0.2},
    "budget": {"max_labels": 27},
}


async def _setup(bus: InMemoryBus, n: int = 200, config: dict[str, Any] = CONFIG) -> list[str]:
    """Apply the project and put ``n`` items (5 of them gold) into the catalog, announced."""
    await bus.stores.projects.put(PROJECT, json.dumps(config).encode())
    rng = np.random.default_rng(0)
    items = [
        IngestedItem(
            item_id=f"item-{k:03d}",
            data={"image": f"img-{k}"},
            known_label=("a" if k % 2 else "b") if k < 5 else None,
            metadata={"k": k},
        )
        for k in range(n)
    ]
    catalog = Catalog(bus.stores.state, bus.stores.artifacts)
    ref = await catalog.write(
        PROJECT, "c1", Chunk(items, "producer-4", rng.random((n, 4)).astype(np.float32))
    )
    await bus.publish(
        ItemsIngested(project=PROJECT, items=items, chunk_ref=ref, submission_id="s1")
    )
    return [i.item_id for i in items]


def _report(number: int, flagged: list[str] | None = None) -> QAReport:
    return QAReport(
        project=PROJECT,
        batch_id=f"b{number}",
        round=number,
        n_items=10,
        n_annotations=12,
        consensus_method="majority",
        annotators=[
            AnnotatorScore(annotator_id=who, n_annotations=5, flagged=who in (flagged or []))
            for who in ("ann-a", "ann-eve")
        ],
        lead_time_seconds=120.0,
        n_lead_times=12,
    )


async def _model(bus: InMemoryBus, number: int, item_ids: list[str]) -> None:
    proba = np.tile([0.5, 0.5], (len(item_ids), 1))
    proba[: len(item_ids) // 2] = [0.95, 0.05]
    table = ProbabilityTable(item_ids, proba, ["a", "b"])
    ref = f"trainer/{PROJECT}/scores/m{number:04d}.npz"
    await bus.stores.artifacts.put(ref, encode_table(table))
    await bus.publish(
        ModelTrained(
            project=PROJECT,
            model_version=f"m{number:04d}",
            dataset_version=f"v{number:04d}",
            round=number,
            promoted=True,
            metrics={},
            n_train=10,
            scores_ref=ref,
            serving_model_version=f"m{number:04d}",
            serving_scores_ref=ref,
        )
    )


def _batches(bus: InMemoryBus, kind: str = "labeling") -> list[BatchCreated]:
    return sorted((b for b in bus.published(BatchCreated) if b.kind == kind), key=lambda b: b.round)


async def test_sampling_waits_for_its_start_then_cuts_up_to_the_lag() -> None:
    svc = build_app(SamplerSettings(), stores=MemoryStores())
    async with in_memory(svc) as bus:
        ids = await _setup(bus)
        assert _batches(bus) == []  # on_command: the pool is in, the campaign not started
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        first, second = _batches(bus)
        assert (first.round, second.round) == (1, 2)
        assert first.strategy == second.strategy == "diversity"  # no model yet: cold start
        assert first.model_version is None
        assert sum(t.is_gold for t in first.tasks) == 1
        regular = {t.item_id for b in (first, second) for t in b.tasks if not t.is_gold}
        assert len(regular) == 18  # no item twice
        # batch 3 needs round 1's model and QA verdict: the model alone is not enough
        await _model(bus, 1, [i for i in ids if i not in regular])
        assert len(_batches(bus)) == 2
        await bus.publish(_report(1, flagged=["ann-eve"]))
        third = _batches(bus)[2]
        assert third.round == 3
        assert third.model_version == "m0001"
        assert third.model_round == 1
        assert third.strategy == "hybrid"
        assert third.excluded_annotators == ["ann-eve"]
        # the budget (27 labels) trims the third batch and stops sampling
        assert sum(not t.is_gold for t in third.tasks) == 9
        predicted = [t for t in third.tasks if not t.is_gold and t.prediction is not None]
        assert predicted
        assert all(t.prediction.model_version == "m0001" for t in predicted)
        (exhausted,) = bus.published(BudgetExhausted)
        assert exhausted.labels_used == 27
        assert exhausted.last_round == 3  # the exporter writes that round's full version


async def _campaign(order: list[str]) -> list[BatchCreated]:
    """The same inputs delivered in ``order``: which arrives first must not matter."""
    config = {**CONFIG, "budget": {"max_labels": 100}}
    svc = build_app(SamplerSettings(), stores=MemoryStores())
    async with in_memory(svc) as bus:
        ids = await _setup(bus, config=config)
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        taken = {t.item_id for b in _batches(bus) for t in b.tasks}
        pool = [i for i in ids if i not in taken]
        steps = {
            "model": lambda: _model(bus, 1, pool),
            "qa": lambda: bus.publish(_report(1)),
            "done1": lambda: bus.publish(
                BatchCompleted(
                    project=PROJECT,
                    batch_id=_batches(bus)[0].batch_id,
                    round=1,
                    n_tasks=10,
                    n_annotations=12,
                )
            ),
        }
        for step in order:
            await steps[step]()
        return _batches(bus)


async def test_a_batch_does_not_depend_on_which_input_came_first() -> None:
    runs = [
        await _campaign(["model", "qa", "done1"]),
        await _campaign(["done1", "qa", "model"]),
        await _campaign(["qa", "done1", "model"]),
    ]
    fingerprints = [
        [(b.round, b.batch_id, [t.item_id for t in b.tasks], b.model_version) for b in run]
        for run in runs
    ]
    assert fingerprints[0] == fingerprints[1] == fingerprints[2]
    assert [b.round for b in runs[0]] == [1, 2, 3]


async def test_review_requests_become_one_review_batch_per_round() -> None:
    svc = build_app(SamplerSettings(), stores=MemoryStores())
    async with in_memory(svc) as bus:
        ids = await _setup(bus)
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        first = next(b for b in _batches(bus) if b.round == 1)
        request = ReviewRequested(
            project=PROJECT,
            batch_id=first.batch_id,
            round=1,
            items=[
                ReviewItem(
                    item_id=ids[10], reason="disagreement", candidate_label="a", confidence=0.4
                ),
                ReviewItem(item_id=ids[11], reason="low_confidence"),
                ReviewItem(item_id="zz-elsewhere", reason="low_confidence", data={"image": "x"}),
            ],
        )
        await bus.publish(request)
        await bus.publish(request)  # a redelivery: the same batch, once
        (review,) = _batches(bus, "review")
        (kept,) = [n for n in await bus.stores.artifacts.list("sampler/") if "review-" in n]
        stored = BatchCreated.model_validate_json(await bus.stores.artifacts.get(kept) or b"")
    assert review.round == 1
    assert [t.item_id for t in review.tasks] == [ids[10], ids[11], "zz-elsewhere"]
    assert review.tasks[2].data == {"image": "x"}  # from the request: the catalog lacks it
    # the artefact keeps only the data the catalog does not hold
    assert [t.data for t in stored.tasks] == [{}, {}, {"image": "x"}]
    assert all(t.is_review and t.annotations_required == 1 for t in review.tasks)
    assert review.tasks[0].data == {"image": "img-10"}  # from the catalog
    assert review.tasks[0].prediction is not None
    assert review.tasks[0].metadata["review_reason"] == "disagreement"


async def test_a_review_of_a_round_never_cut_or_of_an_unknown_item_is_a_dead_letter() -> None:
    """2026-12-01: one forged ``ReviewRequested`` (an item that does not exist) wedged a project:
    recorded as the round's review, it stood in for the real one for good."""
    from labelloop.events import DeadLetter

    svc = build_app(SamplerSettings(), stores=MemoryStores())
    async with in_memory(svc) as bus:
        ids = await _setup(bus)
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        first = next(b for b in _batches(bus) if b.round == 1)
        ghost = ReviewItem(item_id="ghost", reason="low_confidence")
        real = ReviewItem(item_id=ids[10], reason="low_confidence")
        forged = [
            ReviewRequested(project=PROJECT, batch_id="nope", round=1, items=[real]),
            ReviewRequested(project=PROJECT, batch_id="nope", round=7, items=[real]),
            ReviewRequested(project=PROJECT, batch_id=first.batch_id, round=1, items=[ghost]),
        ]
        for request in forged:
            await bus.publish(request)
        letters = bus.published(DeadLetter)
        assert len(letters) == 3
        assert "never cut" in letters[0].reason
        assert "never cut" in letters[1].reason
        assert "not in the catalog" in letters[2].reason
        assert _batches(bus, "review") == []
        # the real review of round 1 still gets its batch
        await bus.publish(
            ReviewRequested(project=PROJECT, batch_id=first.batch_id, round=1, items=[real])
        )
        (review,) = _batches(bus, "review")
    assert [t.item_id for t in review.tasks] == [ids[10]]


async def test_events_of_an_unknown_project_are_dead_letters() -> None:
    from labelloop.events import DeadLetter

    svc = build_app(SamplerSettings(), stores=MemoryStores())
    async with in_memory(svc) as bus:
        await bus.publish(RequestSampling(project="nosuch", action="start"))
        (letter,) = bus.published(DeadLetter)
    assert "unknown project 'nosuch'" in letter.reason
    assert await svc.state.keys("sampler.nosuch.") == []


async def test_a_batch_carries_the_doubts_of_the_model_it_builds_on_once() -> None:
    """The model of round 1 doubts three labels: batch 3 (built on round 1) carries them, capped
    by ``max_rechecks_per_round``, without spending label budget; a later model's doubt about an
    item already sent back is not sent again. A random-sampling project waits for the model
    too, so that which batch carries a doubt does not depend on timing."""
    from labelloop.events import SuspectLabel

    config = {
        **CONFIG,
        "sampling": {**CONFIG["sampling"], "strategy": "random"},
        "quality": {**CONFIG["quality"], "max_rechecks_per_round": 2},
        "budget": {"max_labels": 100},
    }
    svc = build_app(SamplerSettings(), stores=MemoryStores())
    async with in_memory(svc) as bus:
        ids = await _setup(bus, config=config)
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        assert len(_batches(bus)) == 2
        await bus.publish(_report(1))
        assert len(_batches(bus)) == 2  # random, but the batch would carry round 1's doubts

        def doubt(item: str, p: float) -> SuspectLabel:
            return SuspectLabel(item_id=item, label="a", model_label="b", probability=p)

        first_labels = [t.item_id for t in _batches(bus)[0].tasks if not t.is_gold]
        trained = ModelTrained(
            project=PROJECT,
            model_version="m0001",
            dataset_version="v0001",
            round=1,
            promoted=True,
            metrics={},
            n_train=9,
            suspect_labels=[
                doubt(first_labels[0], 0.99),
                doubt(first_labels[1], 0.95),
                doubt(first_labels[2], 0.91),
            ],
        )
        await bus.publish(trained)
        third = _batches(bus)[2]
        assert [s.item_id for s in third.rechecks] == first_labels[:2]
        assert sum(not t.is_gold for t in third.tasks) == 9  # rechecks are not tasks
        assert not {s.item_id for s in third.rechecks} & {t.item_id for t in third.tasks}
        await bus.publish(_report(2))
        again = trained.model_copy(
            update={
                "round": 2,
                "model_version": "m0002",
                "dataset_version": "v0002",
                "suspect_labels": [doubt(first_labels[0], 0.99)],
            }
        )
        await bus.publish(again)
        fourth = _batches(bus)[3]
        assert fourth.rechecks == []
    assert ids


async def test_a_batch_a_crash_left_unannounced_goes_out_again_whole() -> None:
    """The committed artefact holds no item data (the catalog does); the repair publishes the
    same batch, its tasks' data filled in from the catalog."""
    from labelloop.stores import kv_update
    from labelloop_sampler.domain.ledger import Ledger

    svc = build_app(SamplerSettings(), stores=MemoryStores())
    async with in_memory(svc) as bus:
        await _setup(bus)
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        first = _batches(bus)[0]
        names = await bus.stores.artifacts.list(f"sampler/{PROJECT}/batches/labeling-000001")
        (name,) = names
        stored = BatchCreated.model_validate_json(await bus.stores.artifacts.get(name) or b"")
        assert all(t.data == {} for t in stored.tasks)
        assert all(t.data for t in first.tasks)

        def unannounce(raw: bytes | None) -> bytes:
            ledger = Ledger.decode(raw)
            r = ledger.rounds[1].model_copy(update={"announced": False})
            return ledger.model_copy(update={"rounds": {**ledger.rounds, 1: r}}).encode()

        await kv_update(bus.stores.state, f"sampler.{PROJECT}.ledger", unannounce)
        # the crash: the publish never reached the server
        bus.transport.sent.remove(first)
        bus.transport._ids.discard(first.event_id)
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        again = [b for b in bus.published(BatchCreated) if b.round == 1 and b.kind == "labeling"]
        assert len(again) == 1
        assert again[0].model_dump(exclude={"occurred_at"}) == first.model_dump(
            exclude={"occurred_at"}
        )


async def test_every_replica_reports_the_ledgers_open_tasks_not_its_own_last() -> None:
    """2026-12-01: after a campaign with two sampler replicas, their open-tasks gauges said 8
    and 48 while the ledger said 0: each replica reported the ledger as it last handled it. The
    gauges are now set from the shared ledger on every replica alike."""
    stores = MemoryStores()
    first = build_app(SamplerSettings(), stores=stores)
    second = build_app(SamplerSettings(), stores=stores)

    def open_tasks(svc: Any) -> float | None:
        return svc.registry.get_sample_value("labelloop_sampler_open_tasks", {"project": PROJECT})

    async with in_memory(first) as bus_1, in_memory(second) as bus_2:
        await _setup(bus_1)
        await bus_1.publish(RequestSampling(project=PROJECT, action="start"))
        cut = _batches(bus_1)
        assert len(cut) == 2
        assert open_tasks(first) == sum(len(b.tasks) for b in cut)
        for batch in cut:  # the other replica hears that both are done
            await bus_2.publish(
                BatchCompleted(
                    project=PROJECT,
                    batch_id=batch.batch_id,
                    round=batch.round,
                    n_tasks=len(batch.tasks),
                    n_annotations=12,
                )
            )
        assert open_tasks(second) == 0
        assert open_tasks(first) == sum(len(b.tasks) for b in cut)  # what it last saw
        await first.run_periodic()
        assert open_tasks(first) == 0
