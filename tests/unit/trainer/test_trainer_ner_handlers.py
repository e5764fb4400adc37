"""A NER project on the in-memory trainer: a CRF per round, its uncertainty and spans per item."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from dataset_support import exported
from ner_support import TYPES, corpus

from labelloop.catalog import SEQUENCE_MEASURES, Catalog, Chunk, decode_table
from labelloop.events import IngestedItem, ModelTrained, RoundExported
from labelloop.project import parse_project
from labelloop.testing import in_memory
from labelloop_trainer.app import build_app
from labelloop_trainer.crf_format import load_crf
from labelloop_trainer.settings import TrainerSettings

PROJECT = "entities"


def _config() -> Any:
    return parse_project(
        {
            "name": PROJECT,
            "task_type": "ner",
            "labels": {"classes": TYPES},
            "data_fields": [{"name": "text", "kind": "text"}],
            "training": {"min_new_labels": 1},
        }
    )


async def _ingest(bus: Any, ids: list[str], texts: list[str]) -> None:
    catalog = Catalog(bus.stores.state, bus.stores.artifacts)
    items = [IngestedItem(item_id=i, data={"text": t}) for i, t in zip(ids, texts, strict=True)]
    await catalog.write(PROJECT, "c-0", Chunk(items))


async def _dataset(
    bus: Any, number: int, ids: list[str], spans: list[list[dict[str, Any]]], n: int
) -> RoundExported:
    """A version as the exporter writes it: a NER row's label is its spans as JSON text."""
    frame = pd.DataFrame(
        {
            "item_id": ids[:n],
            "split": ["train"] * n,
            "label": [json.dumps(s, sort_keys=True, separators=(",", ":")) for s in spans[:n]],
            "weight": 1.0,
        }
    )
    return await exported(bus.stores.artifacts, PROJECT, number, frame)


async def test_a_ner_round_scores_the_pool_with_uncertainty_and_spans() -> None:
    texts, spans = corpus(200)
    ids = [f"t{k:04d}" for k in range(len(texts))]
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config())
        await _ingest(bus, ids, texts)
        await bus.publish(await _dataset(bus, 1, ids, spans, 60))
        (first,) = bus.published(ModelTrained)
        assert first.skipped is None
        assert first.promoted
        assert first.metrics["entity_f1"] > 0.8  # out of sample
        assert first.metrics["entity_f1_partial"] >= first.metrics["entity_f1"]
        assert {"token_accuracy", "macro_f1", "f1.person", "f1.place"} <= set(first.metrics)
        assert first.suspect_labels == []
        assert (first.model_ref or "").endswith(".crf.zip")
        raw = await bus.stores.artifacts.get(first.scores_ref or "")
        assert raw is not None
        table = decode_table(raw)
        assert table.sequences  # the table says it holds a sequence model's scores
        assert table.classes == list(SEQUENCE_MEASURES)
        assert table.item_ids == ids[60:]
        assert table.proba.shape == (140, 3)
        assert table.predictions is not None
        predicted = [json.loads(p) for p in table.predictions]
        found = sum(p == truth for p, truth in zip(predicted, spans[60:], strict=True))
        assert found / len(predicted) > 0.8  # the pool's spans, as the model sees them
        assert ((table.proba[:, 0] >= 0) & (table.proba[:, 0] <= 1)).all()
        model_file = await bus.stores.artifacts.get(first.model_ref or "")
        assert model_file is not None
        model = load_crf(model_file, digest=first.model_digest)
        assert list(model.labels) == TYPES
        report = await bus.stores.artifacts.get(f"trainer/{PROJECT}/models/m0001.json")
        assert report is not None
        described = json.loads(report)
        assert described["task"] == "ner"
        assert described["promotion_metric"] == "entity_f1"
        assert described["evaluation"]["entity_f1"] == first.metrics["entity_f1"]

        # more labels: judged against the serving model on the texts it never saw
        await bus.publish(await _dataset(bus, 2, ids, spans, 120))
        second = next(m for m in bus.published(ModelTrained) if m.round == 2)
        assert "current_entity_f1_on_fresh" in second.metrics
        assert second.serving_model_version in {"m0001", "m0002"}
        assert "agreement_with_previous" in second.metrics  # spans on the stop set


async def test_labels_without_entities_train_nothing() -> None:
    texts, _ = corpus(30)
    ids = [f"t{k:04d}" for k in range(len(texts))]
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config())
        await _ingest(bus, ids, texts)
        await bus.publish(await _dataset(bus, 1, ids, [[] for _ in texts], 30))
        (outcome,) = bus.published(ModelTrained)
        assert outcome.model_ref is None
        assert outcome.skipped is not None
        assert "no entity" in outcome.skipped
