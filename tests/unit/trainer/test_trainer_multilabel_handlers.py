"""A multi-label project on the in-memory trainer: a model per round, per-label pool scores."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from dataset_support import exported

from labelloop.catalog import Catalog, Chunk, decode_table
from labelloop.events import IngestedItem, ModelTrained, RoundExported
from labelloop.model_format import load_model
from labelloop.project import parse_project
from labelloop.testing import in_memory
from labelloop_trainer.app import build_app
from labelloop_trainer.settings import TrainerSettings

PROJECT = "tags"
LABELS = ["red", "green", "blue"]
WORDS = {"red": "cherry ruby brick", "green": "leaf moss fern", "blue": "sky sea navy"}


def _config(**training: Any) -> Any:
    return parse_project(
        {
            "name": PROJECT,
            "task_type": "text_multilabel",
            "labels": {"classes": LABELS},
            "data_fields": [{"name": "text", "kind": "text"}],
            "training": {"tune_regularization": False, "min_new_labels": 1, **training},
        }
    )


def _corpus(n: int) -> tuple[list[str], list[str], list[list[str]]]:
    rng = np.random.default_rng(0)
    ids, texts, sets = [], [], []
    for k in range(n):
        chosen = [c for c in LABELS if rng.random() < 0.45] or [LABELS[k % 3]]
        words = [w for c in chosen for w in WORDS[c].split()]
        words += [f"noise{int(j)}" for j in rng.integers(0, 30, size=5)]
        rng.shuffle(words)
        ids.append(f"t{k:04d}")
        texts.append(" ".join(words))
        sets.append(chosen)
    return ids, texts, sets


async def _ingest(bus: Any, ids: list[str], texts: list[str]) -> None:
    catalog = Catalog(bus.stores.state, bus.stores.artifacts)
    items = [IngestedItem(item_id=i, data={"text": t}) for i, t in zip(ids, texts, strict=True)]
    await catalog.write(PROJECT, "c-0", Chunk(items))


async def _dataset(
    bus: Any, number: int, ids: list[str], sets: list[list[str]], n: int
) -> RoundExported:
    """A version as the exporter writes it: a multi-label row's label is JSON text."""
    frame = pd.DataFrame(
        {
            "item_id": ids[:n],
            "split": ["train"] * n,
            "label": [json.dumps(s) for s in sets[:n]],
            "weight": 1.0,
        }
    )
    return await exported(bus.stores.artifacts, PROJECT, number, frame)


async def test_a_multilabel_round_scores_the_pool_label_by_label() -> None:
    ids, texts, sets = _corpus(300)
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config())
        await _ingest(bus, ids, texts)
        await bus.publish(await _dataset(bus, 1, ids, sets, 80))
        (first,) = bus.published(ModelTrained)
        assert first.skipped is None
        assert first.promoted
        assert first.classes == LABELS
        assert first.metrics["micro_f1"] > 0.9  # out of sample
        assert first.metrics["subset_accuracy"] == first.metrics["accuracy"]
        assert {"macro_f1", "hamming_loss", "f1.red", "f1.blue"} <= set(first.metrics)
        assert first.suspect_labels == []
        raw = await bus.stores.artifacts.get(first.scores_ref or "")
        assert raw is not None
        table = decode_table(raw)
        assert table.multilabel  # the table says it holds per-label probabilities
        assert table.classes == LABELS
        assert table.item_ids == ids[80:]
        assert table.proba.shape == (220, 3)
        truth = np.array([[c in s for c in LABELS] for s in sets[80:]])
        assert np.mean((table.proba >= 0.5) == truth) > 0.95
        model_file = await bus.stores.artifacts.get(first.model_ref or "")
        assert model_file is not None
        model = load_model(model_file, digest=first.model_digest)  # trusted types only
        assert list(model.classes_) == LABELS
        report = await bus.stores.artifacts.get(f"trainer/{PROJECT}/models/m0001.json")
        assert report is not None
        described = json.loads(report)
        assert described["task"] == "multi_label"
        assert described["promotion_metric"] == "micro_f1"
        assert described["threshold"] == 0.5
        assert described["evaluation"]["micro_f1"] == first.metrics["micro_f1"]

        # more labels: judged against the serving model on the rows it never saw
        await bus.publish(await _dataset(bus, 2, ids, sets, 160))
        second = next(m for m in bus.published(ModelTrained) if m.round == 2)
        assert "current_micro_f1_on_fresh" in second.metrics
        assert second.serving_model_version in {"m0001", "m0002"}
        assert "agreement_with_previous" in second.metrics  # label sets on the stop set


async def test_labels_that_never_vary_train_nothing() -> None:
    ids, texts, _ = _corpus(40)
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config())
        await _ingest(bus, ids, texts)
        await bus.publish(await _dataset(bus, 1, ids, [["red"]] * 40, 40))
        (outcome,) = bus.published(ModelTrained)
        assert outcome.model_ref is None
        assert outcome.skipped is not None
        assert "no label" in outcome.skipped
