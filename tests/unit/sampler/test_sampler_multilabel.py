"""Uncertainty over labels: a multi-label model's scores drive every uncertainty strategy, and
its predicted labels travel with the tasks as pre-annotations."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from labelloop.catalog import (
    Catalog,
    Chunk,
    ProbabilityTable,
    decode_table,
    encode_table,
)
from labelloop.events import (
    AnnotatorScore,
    BatchCreated,
    IngestedItem,
    ItemsIngested,
    ModelTrained,
    QAReport,
    RequestSampling,
)
from labelloop.project import SamplingStrategy as S
from labelloop.stores import MemoryStores
from labelloop.testing import InMemoryBus, in_memory
from labelloop_sampler.app import build_app
from labelloop_sampler.domain.selection import multilabel_uncertainty, select, uncertainty
from labelloop_sampler.settings import SamplerSettings

P = np.array(
    [
        [0.5, 0.5, 0.5],  # unsure of every label
        [0.99, 0.01, 0.02],  # sure of every label
        [0.6, 0.1, 0.9],
        [np.nan, np.nan, np.nan],  # not scored
        [1.0, 0.0, 1.0],  # certain
    ]
)


def test_least_confidence_and_margin_average_each_labels_binary_uncertainty() -> None:
    lc = multilabel_uncertainty(P, S.LEAST_CONFIDENCE)
    margin = multilabel_uncertainty(P, S.MARGIN)
    assert lc[0] == pytest.approx(0.5)
    assert lc[2] == pytest.approx((0.4 + 0.1 + 0.1) / 3)
    assert margin[2] == pytest.approx(np.mean([1 - 0.2, 1 - 0.8, 1 - 0.8]))
    assert np.allclose(margin[[0, 1, 2, 4]], 2 * lc[[0, 1, 2, 4]])  # binary: the same ranking
    assert np.array_equal(multilabel_uncertainty(P, S.HYBRID), margin, equal_nan=True)
    assert lc[4] == margin[4] == 0.0
    assert np.isnan(lc[3])
    assert np.isnan(margin[3])
    assert list(np.argsort(-lc[[0, 1, 2, 4]])) == [0, 2, 1, 3]


def test_entropy_sums_each_labels_binary_entropy() -> None:
    h = multilabel_uncertainty(P, S.ENTROPY)
    assert h[0] == pytest.approx(3 * np.log(2))  # the most a label set of three can hold

    def binary(p: float) -> float:
        return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)))

    assert h[2] == pytest.approx(binary(0.6) + binary(0.1) + binary(0.9))
    assert h[4] == 0.0
    assert np.isnan(h[3])


def test_a_multilabel_flag_changes_the_reading_of_the_same_scores() -> None:
    # as class probabilities the second row is certain; as labels it is unsure of both
    p = np.array([[0.5, 0.5], [0.01, 0.99]])
    assert uncertainty(p, S.MARGIN)[0] > uncertainty(p, S.MARGIN)[1]
    assert np.array_equal(
        uncertainty(p, S.MARGIN, multilabel=True), multilabel_uncertainty(p, S.MARGIN)
    )
    one = np.array([[0.5], [0.99]])  # one label: a real question, not one certain class
    assert uncertainty(one, S.MARGIN, multilabel=True)[0] > 0.9
    assert uncertainty(one, S.MARGIN)[0] == 0.0


@pytest.mark.parametrize("strategy", [S.LEAST_CONFIDENCE, S.MARGIN, S.ENTROPY, S.HYBRID])
def test_uncertainty_strategies_take_the_labels_most_uncertain_items(strategy: S) -> None:
    rng = np.random.default_rng(0)
    proba = rng.choice([0.02, 0.98], size=(400, 4))
    unsure = rng.choice(400, size=15, replace=False)
    proba[unsure] = rng.uniform(0.4, 0.6, size=(15, 4))
    x = rng.normal(size=(400, 3))
    chosen = select(strategy, 15, n_candidates=400, X=x, proba=proba, multilabel=True)
    assert chosen.strategy == strategy.value
    assert set(chosen.indices.tolist()) == set(unsure.tolist())


def test_a_cold_start_is_diversity_for_multilabel_too() -> None:
    x = np.random.default_rng(1).normal(size=(100, 3))
    chosen = select(S.HYBRID, 10, n_candidates=100, X=x, proba=None, multilabel=True)
    assert chosen.strategy == "diversity"


def test_a_table_says_whether_it_holds_labels_or_classes() -> None:
    labels = ProbabilityTable(["a", "b"], np.array([[0.9, 0.8], [0.1, 0.3]]), ["x", "y"], True)
    assert decode_table(encode_table(labels)).multilabel
    classes = ProbabilityTable(["a"], np.array([[0.25, 0.75]]), ["x", "y"])
    assert not decode_table(encode_table(classes)).multilabel


# ---------------------------------------------------------------------- the service


PROJECT = "tags"
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "text_multilabel",
    "labels": {"classes": ["red", "green", "blue"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "sampling": {"strategy": "margin", "batch_size": 10, "start": "on_command", "seed": 3},
    "quality": {"gold_fraction": 0.0, "overlap_fraction": 0.0, "max_rechecks_per_round": 0},
    "training": {"multilabel_threshold": 0.6},
}


async def _setup(bus: InMemoryBus, n: int = 60) -> list[str]:
    await bus.stores.projects.put(PROJECT, json.dumps(CONFIG).encode())
    items = [IngestedItem(item_id=f"item-{k:03d}", data={"text": f"text {k}"}) for k in range(n)]
    catalog = Catalog(bus.stores.state, bus.stores.artifacts)
    features = np.random.default_rng(0).random((n, 4)).astype(np.float32)
    ref = await catalog.write(PROJECT, "c1", Chunk(items, "text-hash-4", features))
    await bus.publish(ItemsIngested(project=PROJECT, items=items, chunk_ref=ref, submission_id="s"))
    return [i.item_id for i in items]


async def _model(bus: InMemoryBus, item_ids: list[str]) -> npt.NDArray[Any]:
    """Round 1's multi-label model: sure of most items, unsure of every fifth."""
    rng = np.random.default_rng(2)
    proba = rng.choice([0.03, 0.97], size=(len(item_ids), 3))
    proba[::5] = rng.uniform(0.45, 0.75, size=(len(proba[::5]), 3))
    table = ProbabilityTable(item_ids, proba, ["red", "green", "blue"], multilabel=True)
    ref = f"trainer/{PROJECT}/scores/m0001.npz"
    await bus.stores.artifacts.put(ref, encode_table(table))
    await bus.publish(
        ModelTrained(
            project=PROJECT,
            model_version="m0001",
            dataset_version="v0001",
            round=1,
            promoted=True,
            metrics={},
            n_train=10,
            scores_ref=ref,
            serving_model_version="m0001",
            serving_scores_ref=ref,
        )
    )
    return proba


async def test_the_sampler_ranks_by_label_uncertainty_and_predicts_label_sets() -> None:
    svc = build_app(SamplerSettings(), stores=MemoryStores())
    async with in_memory(svc) as bus:
        ids = await _setup(bus)
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        (first,) = [b for b in bus.published(BatchCreated) if b.round == 1]
        assert first.strategy == "diversity"
        taken = {t.item_id for t in first.tasks}
        pool = [i for i in ids if i not in taken]
        proba = await _model(bus, pool)
        await bus.publish(
            QAReport(
                project=PROJECT,
                batch_id=first.batch_id,
                round=1,
                n_items=10,
                n_annotations=10,
                consensus_method="majority",
                annotators=[AnnotatorScore(annotator_id="ann-a", n_annotations=10)],
            )
        )
        (second,) = [b for b in bus.published(BatchCreated) if b.round == 2]
        assert second.strategy == "margin"
        assert second.model_version == "m0001"
        row = {item: k for k, item in enumerate(pool)}
        unsure = {pool[k] for k in range(0, len(pool), 5)}
        assert {t.item_id for t in second.tasks} == unsure  # the labels' doubts, not classes'
        for task in second.tasks:
            p = proba[row[task.item_id]]
            assert task.prediction is not None
            wanted = [c for c, q in zip(["red", "green", "blue"], p, strict=True) if q >= 0.6]
            assert task.prediction.label == wanted  # the threshold of the project
            assert task.prediction.model_version == "m0001"
            exact = np.prod(np.where(p >= 0.6, p, 1 - p))
            assert task.prediction.score == pytest.approx(exact, abs=1e-5)
