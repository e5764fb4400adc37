"""Uncertainty of a sequence model: a NER model's per-text uncertainties drive every uncertainty
strategy, and its predicted spans travel with the tasks as pre-annotations."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from labelloop.catalog import (
    SEQUENCE_MEASURES,
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
from labelloop_sampler.domain.selection import select, sequence_uncertainty, uncertainty
from labelloop_sampler.settings import SamplerSettings

U = np.array(
    [
        # least confidence, margin, total token entropy
        [0.9, 0.1, 0.5],
        [0.1, 0.9, 0.4],
        [0.2, 0.3, 7.5],  # a long text: little doubt per token, much in all
        [0.05, 0.05, 0.1],
    ]
)


@pytest.mark.parametrize(
    ("strategy", "column"),
    [(S.LEAST_CONFIDENCE, 0), (S.HYBRID, 0), (S.MARGIN, 1), (S.ENTROPY, 2)],
)
def test_each_strategy_ranks_by_its_own_measure(strategy: S, column: int) -> None:
    assert sequence_uncertainty(U, strategy).tolist() == U[:, column].tolist()
    assert uncertainty(U, strategy, sequences=True).tolist() == U[:, column].tolist()
    chosen = select(strategy, 1, n_candidates=4, proba=U, sequences=True)
    assert chosen.indices.tolist() == [int(np.argmax(U[:, column]))]


def test_the_same_scores_read_as_class_probabilities_rank_otherwise() -> None:
    as_classes = uncertainty(U, S.LEAST_CONFIDENCE)
    as_sequences = uncertainty(U, S.LEAST_CONFIDENCE, sequences=True)
    assert int(np.argmax(as_sequences)) == 0
    assert not np.allclose(as_classes, as_sequences)


def test_nan_rows_stay_nan_and_a_wrong_shape_is_refused() -> None:
    scores = U.copy()
    scores[1] = np.nan
    assert np.isnan(sequence_uncertainty(scores, S.ENTROPY)[1])
    with pytest.raises(ValueError, match="3 columns"):
        sequence_uncertainty(np.zeros((2, 2)), S.MARGIN)
    with pytest.raises(ValueError, match="not an uncertainty strategy"):
        sequence_uncertainty(U, S.RANDOM)


def test_a_table_says_it_holds_a_sequence_models_scores() -> None:
    spans = [json.dumps([{"start": 0, "end": 4, "label": "place", "text": "Oslo"}]), "[]"]
    table = ProbabilityTable(["a", "b"], U[:2], list(SEQUENCE_MEASURES), predictions=spans)
    back = decode_table(encode_table(table))
    assert back.sequences
    assert not back.multilabel
    assert back.predictions == spans
    assert back.classes == list(SEQUENCE_MEASURES)
    with pytest.raises(ValueError, match="one prediction per item"):
        encode_table(ProbabilityTable(["a"], U[:1], ["x", "y", "z"], predictions=["[]"]))
    plain = ProbabilityTable(["a"], np.array([[0.25, 0.75]]), ["x", "y"])
    assert not decode_table(encode_table(plain)).sequences


# ---------------------------------------------------------------------- the service


PROJECT = "entities"
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "ner",
    "labels": {"classes": ["person", "place"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "sampling": {"strategy": "entropy", "batch_size": 10, "start": "on_command", "seed": 3},
    "quality": {"gold_fraction": 0.0, "overlap_fraction": 0.0, "max_rechecks_per_round": 0},
}


def _text(k: int) -> str:
    return f"Oslo text {k}"


async def _setup(bus: InMemoryBus, n: int = 60) -> list[str]:
    await bus.stores.projects.put(PROJECT, json.dumps(CONFIG).encode())
    items = [IngestedItem(item_id=f"item-{k:03d}", data={"text": _text(k)}) for k in range(n)]
    catalog = Catalog(bus.stores.state, bus.stores.artifacts)
    features = np.random.default_rng(0).random((n, 4)).astype(np.float32)
    ref = await catalog.write(PROJECT, "c1", Chunk(items, "text-hash-4", features))
    await bus.publish(ItemsIngested(project=PROJECT, items=items, chunk_ref=ref, submission_id="s"))
    return [i.item_id for i in items]


async def _model(bus: InMemoryBus, item_ids: list[str]) -> npt.NDArray[Any]:
    """Round 1's NER model: sure of most texts; every fifth has a high total token entropy
    (and a low least confidence, so only the entropy strategy singles them out)."""
    rng = np.random.default_rng(2)
    scores = np.column_stack(
        [rng.uniform(0.3, 0.6, len(item_ids)), rng.uniform(0, 0.2, len(item_ids))]
    )
    entropy = rng.uniform(0.0, 0.5, len(item_ids))
    entropy[::5] = rng.uniform(3.0, 5.0, len(entropy[::5]))
    scores = np.column_stack([scores, entropy])
    scores[::5, 0] = 0.01
    spans = [
        json.dumps([{"start": 0, "end": 4, "text": "Oslo", "label": "place"}]) for _ in item_ids
    ]
    table = ProbabilityTable(item_ids, scores, list(SEQUENCE_MEASURES), predictions=spans)
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
    return scores


async def test_the_sampler_ranks_by_sequence_uncertainty_and_predicts_spans() -> None:
    svc = build_app(SamplerSettings(), stores=MemoryStores())
    async with in_memory(svc) as bus:
        ids = await _setup(bus)
        await bus.publish(RequestSampling(project=PROJECT, action="start"))
        (first,) = [b for b in bus.published(BatchCreated) if b.round == 1]
        assert first.strategy == "diversity"
        taken = {t.item_id for t in first.tasks}
        pool = [i for i in ids if i not in taken]
        scores = await _model(bus, pool)
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
        assert second.strategy == "entropy"
        assert second.model_version == "m0001"
        row = {item: k for k, item in enumerate(pool)}
        unsure = {pool[k] for k in range(0, len(pool), 5)}
        assert {t.item_id for t in second.tasks} == unsure  # total token entropy ranked them
        for task in second.tasks:
            assert task.prediction is not None
            assert task.prediction.label == [
                {"start": 0, "end": 4, "text": "Oslo", "label": "place"}
            ]
            assert task.prediction.model_version == "m0001"
            # scored by the probability of the model's best tag sequence
            assert task.prediction.score == pytest.approx(1 - scores[row[task.item_id], 0])
            assert task.score == pytest.approx(scores[row[task.item_id], 2], abs=1e-5)
