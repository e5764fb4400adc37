"""The trainer on the in-memory bus: a training round per dataset version, in round order."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from dataset_support import after, delta, exported
from sklearn.datasets import load_digits

from labelloop.catalog import Catalog, Chunk, decode_table
from labelloop.events import (
    DatasetExported,
    IngestedItem,
    LabelingConverged,
    ModelTrained,
    RequestTraining,
    RoundExported,
)
from labelloop.project import parse_project
from labelloop.rows import delta_bytes
from labelloop.stores import MemoryStores
from labelloop.testing import in_memory
from labelloop_trainer.app import build_app
from labelloop_trainer.service import _round_input
from labelloop_trainer.settings import TrainerSettings
from labelloop_trainer.store import TrainerStore

PROJECT = "digits"
CLASSES = [str(c) for c in range(10)]


def _config(**training: Any) -> Any:
    """The handlers' behaviour, not the tuning (``test_trainer_training`` covers it): one
    regularization candidate keeps each round to one cross-validation."""
    training = {"tune_regularization": False, **training}
    return parse_project(
        {
            "name": PROJECT,
            "task_type": "image_classification",
            "labels": {"classes": CLASSES},
            "data_fields": [{"name": "image", "kind": "image"}],
            "training": training,
        }
    )


def _split(item_id: str) -> str:
    u = int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 16**8
    return "train" if u < 0.7 else "validation" if u < 0.85 else "test"


def _digits() -> tuple[list[str], np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return [f"d{k:04d}" for k in range(len(y))], x, y.astype(str)


async def _ingest(bus: Any, ids: list[str], x: np.ndarray) -> None:
    """What the ingester does: the items and their features in the catalog."""
    catalog = Catalog(bus.stores.state, bus.stores.artifacts)
    for start in range(0, len(ids), 600):
        chunk = ids[start : start + 600]
        items = [IngestedItem(item_id=i, data={"image": f"img/{i}.png"}) for i in chunk]
        block = x[start : start + 600].astype(np.float32)
        await catalog.write(PROJECT, f"s-{start:04d}", Chunk(items, "producer-64", block))


def _rows(ids: list[str], y: np.ndarray) -> pd.DataFrame:
    """Label rows as the exporter writes them (only the columns the trainer reads)."""
    return pd.DataFrame(
        {
            "item_id": ids,
            "split": [_split(i) for i in ids],
            "label": [str(v) for v in y],
            "weight": 1.0,
            "image": [f"img/{i}.png" for i in ids],
        }
    )


async def _dataset(bus: Any, number: int, ids: list[str], y: np.ndarray, n: int) -> RoundExported:
    """Round ``number`` writing full version ``v<number>`` of the first ``n`` labels."""
    return await exported(bus.stores.artifacts, PROJECT, number, _rows(ids[:n], y[:n]))


def _store(bus: Any) -> TrainerStore:
    """The trainer's own records (models, train sets) in the bus's stores."""
    return TrainerStore(lambda: bus.stores.state, lambda: bus.stores.artifacts)


def _outcome(bus: Any, number: int) -> ModelTrained:
    (found,) = [m for m in bus.published(ModelTrained) if m.round == number]
    return found  # type: ignore[no-any-return]


async def test_a_round_trains_on_every_label_and_scores_the_pool() -> None:
    ids, x, y = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config(min_new_labels=50, min_growth=0.5))
        await _ingest(bus, ids, x)
        await bus.publish(await _dataset(bus, 1, ids, y, 400))
        model = _outcome(bus, 1)
        assert (model.model_version, model.dataset_version, model.round) == ("m0001", "v0001", 1)
        assert model.promoted
        assert (model.serving_model_version, model.serving_scores_ref) == (
            "m0001",
            model.scores_ref,
        )
        assert model.classes == CLASSES
        assert model.metrics["accuracy"] > 0.85  # out of sample
        assert model.metrics["evaluated_out_of_sample"] == 1.0
        assert model.n_train == 400  # every label, the test split too
        raw = await bus.stores.artifacts.get(model.scores_ref or "")
        assert raw is not None
        scores = decode_table(raw)
        assert scores.item_ids == ids[400:]  # the unlabeled pool
        assert scores.proba.shape == (len(ids) - 400, 10)
        assert scores.classes == CLASSES
        assert np.allclose(scores.proba.sum(axis=1), 1.0, atol=1e-4)

        # 20 more labels: under min_new_labels (50) and min_growth (50 %): no model this round,
        # and the round says which model still serves
        await bus.publish(await _dataset(bus, 2, ids, y, 420))
        skipped = _outcome(bus, 2)
        assert skipped.model_ref is None
        assert not skipped.promoted
        assert skipped.skipped is not None
        assert "min_new_labels" in skipped.skipped
        assert skipped.serving_model_version == "m0001"
        assert skipped.serving_scores_ref == model.scores_ref
        value = service.registry.get_sample_value(
            "labelloop_trainer_retrains_total", {"project": PROJECT, "outcome": "skipped"}
        )
        assert value == 1
        # an operator's request announces the round's outcome again
        await bus.publish(RequestTraining(project=PROJECT, dataset_version="v0001"))
        again = bus.published(ModelTrained)[-1]
        assert (again.round, again.model_version) == (1, "m0001")
        assert again.event_id != model.event_id
        # a revised round's rewrite (v0002-r1) holds round 2, not round 21
        await bus.publish(RequestTraining(project=PROJECT, dataset_version="v0002-r1"))
        revised = bus.published(ModelTrained)[-1]
        assert (revised.round, revised.serving_model_version) == (2, "m0001")


async def test_every_replica_reports_the_serving_model_not_its_own_last() -> None:
    """With two trainer replicas, each set the accuracy gauges of the model it trained last, so
    Prometheus saw two serving models per project. The gauges now come from the shared state on
    every replica alike."""
    ids, x, y = _digits()
    stores = MemoryStores()
    first = build_app(TrainerSettings(), stores=stores)
    second = build_app(TrainerSettings(), stores=stores)

    def accuracy(svc: Any, model: str) -> float | None:
        return svc.registry.get_sample_value(
            "labelloop_trainer_model_accuracy_ratio", {"project": PROJECT, "model": model}
        )

    async with in_memory(first) as bus_1, in_memory(second) as bus_2:
        await bus_1.apply_project(_config(min_new_labels=50, min_growth=0.2))
        await _ingest(bus_1, ids, x)
        await bus_1.publish(await _dataset(bus_1, 1, ids, y, 200))
        assert accuracy(second, "serving") is None  # it has trained nothing
        await bus_2.publish(await _dataset(bus_2, 2, ids, y, 600))
        latest = _outcome(bus_2, 2)
        assert latest.promoted
        assert accuracy(second, "serving") == latest.metrics["accuracy"]
        assert accuracy(first, "serving") != latest.metrics["accuracy"]  # what it trained
        await first.run_periodic()
        for svc in (first, second):
            assert accuracy(svc, "serving") == latest.metrics["accuracy"]
            assert accuracy(svc, "candidate") == latest.metrics["accuracy"]
            pool = svc.registry.get_sample_value(
                "labelloop_trainer_pool_scored_items", {"project": PROJECT}
            )
            assert pool == len(ids) - 600


async def test_versions_are_trained_in_round_order_whatever_their_arrival() -> None:
    ids, x, y = _digits()

    async def rounds(order: list[int]) -> list[tuple[int, str | None, float]]:
        service = build_app(TrainerSettings())
        async with in_memory(service) as bus:
            await bus.apply_project(_config(min_new_labels=1))
            await _ingest(bus, ids, x)
            events = {
                k: await _dataset(bus, k, ids, y, n) for k, n in ((1, 150), (2, 300), (3, 450))
            }
            for number in order:
                await bus.publish(events[number])
            return [
                (m.round, m.serving_model_version, m.metrics.get("accuracy", 0.0))
                for m in bus.published(ModelTrained)
            ]

    in_order = await rounds([1, 2, 3])
    assert await rounds([3, 1, 2]) == in_order
    assert [r for r, _, _ in in_order] == [1, 2, 3]


async def test_redelivered_dataset_republishes_the_same_outcome() -> None:
    ids, x, y = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config())
        await _ingest(bus, ids, x)
        event = await _dataset(bus, 1, ids, y, 300)
        await bus.publish(event)
        await bus.publish(event)
        assert len(bus.published(ModelTrained)) == 1  # the copy had the same event id


async def test_convergence_is_announced_once_and_carried_by_the_round() -> None:
    ids, x, y = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(
            _config(min_new_labels=1, convergence_rounds=2, convergence_agreement=0.9)
        )
        await _ingest(bus, ids, x)
        for k, n in enumerate(range(600, 1100, 100), start=1):
            await bus.publish(await _dataset(bus, k, ids, y, n))
        models = bus.published(ModelTrained)
        assert len(models) == 5
        (done,) = bus.published(LabelingConverged)
        assert "stabilising predictions" in done.reason
        said = [m.round for m in models if m.converged]
        assert said
        assert said == list(range(said[0], 6))


async def test_cold_start_with_one_class_trains_nothing_and_says_so() -> None:
    ids, x, _ = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config())
        await _ingest(bus, ids, x)
        await bus.publish(await _dataset(bus, 1, ids, np.array(["3"] * len(ids)), 50))
        outcome = _outcome(bus, 1)
        assert outcome.model_ref is None
        assert outcome.serving_model_version is None
        assert outcome.skipped is not None
        assert "at least two" in outcome.skipped


async def test_forged_dataset_versions_neither_wedge_nor_replace_the_real_ones() -> None:
    """2026-12-01: a forged ``DatasetExported`` with version ``v9999`` made the trainer refuse
    every real version as stale, for good. Forged here (as ``RoundExported``, what the trainer
    consumes now): a far-future round, and the next round pointing at nothing in the object
    store; both arrive first. The real rounds train in order all the same."""
    from labelloop.events import DeadLetter

    ids, x, y = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config(min_new_labels=1))
        await _ingest(bus, ids, x)
        real = [await _dataset(bus, k, ids, y, n) for k, n in ((1, 150), (2, 300))]
        future = real[0].model_copy(
            update={"event_id": "forged-1", "version": "v9999", "round": 9999}
        )
        nowhere = real[0].model_copy(
            update={
                "event_id": "forged-2",
                "version": "v9999",
                "base_version": "v9999",
                "base_ref": f"exporter/{PROJECT}/datasets/nowhere/labels.parquet",
            }
        )
        for event in (future, nowhere, *real):
            await bus.publish(event)
        trained = [(m.round, m.dataset_version) for m in bus.published(ModelTrained)]
        letters = list(bus.published(DeadLetter))
    assert trained == [(1, "v0001"), (2, "v0002")]
    # the one pointing at nothing is a dead letter with its reason; the far-future one waits
    # parked for a round 9999 that never comes, and holds up nothing
    (letter,) = letters
    assert "forged-2" in base64.b64decode(letter.payload_b64).decode()
    assert "missing" in letter.reason


async def test_a_round_of_a_version_and_deltas_trains_on_exactly_the_folded_rows() -> None:
    """Between full versions a round is the last version's labels with a delta per round since
    (``labelloop.rows``): round 2's delta adds 150 labels and removes one item of the version
    (withdrawn), round 3's adds 150 more and gives an item of the version a new row. Each round
    trains on the folded rows: the removed item is not trained on (it is back in the pool), the
    replaced one counts once."""
    ids, x, y = _digits()
    removed, replaced = ids[10], ids[20]
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config(min_new_labels=1))
        await _ingest(bus, ids, x)
        blobs = bus.stores.artifacts
        base = await _dataset(bus, 1, ids, y, 300)
        second = await delta(blobs, PROJECT, 2, _rows(ids[300:450], y[300:450]), removed=[removed])
        third = await delta(
            blobs, PROJECT, 3, _rows([*ids[450:600], replaced], [*y[450:600], y[20]])
        )
        for event in (
            base,
            after(base, 2, [second], n_rows=449),
            after(base, 3, [second, third], n_rows=599),
        ):
            await bus.publish(event)
        models = bus.published(ModelTrained)
        assert [(m.round, m.dataset_version, m.n_train) for m in models] == [
            (1, "v0001", 300),
            (2, "v0001+r0002", 449),
            (3, "v0001+r0003", 599),
        ]
        assert all(m.skipped is None for m in models)
        store = _store(bus)
        folded = {*ids[:600]} - {removed}
        assert await store.load_train_set(PROJECT, "m0003") == folded
        assert await store.load_train_set(PROJECT, "m0002") == {*ids[:450]} - {removed}
        last = models[-1]
        assert last.promoted
        raw = await blobs.get(last.scores_ref or "")
        assert raw is not None
        pool = decode_table(raw).item_ids
        assert removed in pool  # unlabeled again: scored, not trained on
        assert pool == sorted(set(ids) - folded)
        # an operator may ask for such a round by its name
        await bus.publish(RequestTraining(project=PROJECT, dataset_version="v0001+r0002"))
        again = bus.published(ModelTrained)[-1]
        assert (again.round, again.model_version) == (2, "m0002")


@pytest.mark.parametrize("replaced", ["delta", "base"])
async def test_a_file_replaced_in_the_object_store_is_never_trained_on(replaced: str) -> None:
    """The exporter's files in the object store are as writable as a model: round 2 is
    announced (version 1's labels and round 2's delta), then one of the two files has its
    labels swapped (every ``3`` becomes an ``8``). The trainer refuses the file (its sha256 is
    not the one the event carries), skips the round and says why, counts it, and the serving
    model stays; the next round, a new version, trains."""
    ids, x, y = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config(min_new_labels=1))
        await _ingest(bus, ids, x)
        blobs = bus.stores.artifacts
        base = await _dataset(bus, 1, ids, y, 300)
        await bus.publish(base)
        first = _outcome(bus, 1)
        assert first.promoted
        second = await delta(blobs, PROJECT, 2, _rows(ids[300:450], y[300:450]))
        round_2 = after(base, 2, [second], n_rows=450)
        name, announced = (
            (second.ref, second.sha256)
            if replaced == "delta"
            else (base.base_ref or "", base.base_sha256 or "")
        )
        genuine = await blobs.get(name)
        assert genuine is not None
        frame = pd.read_parquet(io.BytesIO(genuine))
        assert (frame["label"] == "3").any()
        frame["label"] = frame["label"].replace({"3": "8"})
        forged = frame.to_parquet(index=False)
        if replaced == "delta":
            forged = delta_bytes(pa.Table.from_pandas(frame, preserve_index=False), [])
        await blobs.put(name, forged)

        await bus.publish(round_2)
        refused = _outcome(bus, 2)
        assert refused.model_ref is None
        assert not refused.promoted
        assert refused.n_train == 0
        assert refused.skipped is not None
        assert "not trained on" in refused.skipped
        assert announced in refused.skipped
        assert hashlib.sha256(forged).hexdigest() in refused.skipped
        assert refused.serving_model_version == "m0001"
        assert refused.serving_scores_ref == first.scores_ref
        counted = service.registry.get_sample_value(
            "labelloop_trainer_untrusted_datasets_total", {"project": PROJECT}
        )
        assert counted == 1

        await bus.publish(await _dataset(bus, 3, ids, y, 600))
        third = _outcome(bus, 3)
        assert third.skipped is None
        assert third.model_ref is not None
        assert third.n_train == 600


async def test_a_version_of_an_exporter_of_before_is_its_rounds_rows() -> None:
    """A campaign running through the upgrade: round 1 as the exporter of before announced it
    (``DatasetExported``, its labels in the object store, parked too), round 2 as the new one
    does; both are trained, and an operator's announcement again is no round. The same version
    as a round's ``RoundExported`` and ``DatasetExported`` trains once."""
    ids, x, y = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config(min_new_labels=50, min_growth=0.5))
        await _ingest(bus, ids, x)
        first = await _dataset(bus, 1, ids, y, 300)
        second = await _dataset(bus, 2, ids, y, 600)
        versions = {
            e.round: DatasetExported(
                project=PROJECT,
                version=e.version or "",
                round=e.round,
                path=f"/exports/{PROJECT}/{e.version}",
                n_rows=e.n_rows,
                n_new_rows=e.n_rows,
                split_sizes={},
                class_counts={},
                formats=["parquet"],
                manifest_sha256="0" * 64,
                dataset_ref=(e.base_ref or "").removesuffix("labels.parquet"),
                labels_sha256=e.base_sha256,
            )
            for e in (first, second)
        }
        again = versions[2].model_copy(update={"event_id": "asked", "request_id": "asked"})
        await bus.publish(again)  # an operator's: no round
        assert bus.published(ModelTrained) == []
        await bus.publish(versions[2])  # parked: round 1 is not trained yet
        await bus.publish(versions[1])
        assert [(m.round, m.dataset_version, m.n_train) for m in bus.published(ModelTrained)] == [
            (1, "v0001", 300),
            (2, "v0002", 600),
        ]
        await bus.publish(second)  # the same round's RoundExported: done already
        assert len(bus.published(ModelTrained)) == 2
    # a round a trainer of before parked holds the DatasetExported itself: read as its rows
    parked = _round_input(versions[1].model_dump_json().encode())
    assert (parked.base_ref, parked.base_sha256, parked.n_rows) == (
        first.base_ref,
        first.base_sha256,
        300,
    )
