"""Exporter and trainer on a real nats-server: rounds of labels -> each round's rows (deltas in
the object store, and a full dataset version on disk every ``export.every_n_labels`` labels) ->
one model per round -> pool scores."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from labelloop.catalog import Catalog, Chunk, decode_table
from labelloop.events import (
    ConsensusLabel,
    DatasetExported,
    IngestedItem,
    LabelsReady,
    ModelTrained,
    RoundExported,
)
from labelloop.project import parse_project
from labelloop.testing import EventCollector, apply_project, publish_events, started, writing_as
from labelloop_exporter.app import build_app as build_exporter
from labelloop_exporter.settings import ExporterSettings
from labelloop_trainer.app import build_app as build_trainer
from labelloop_trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

PROJECT = "sentiment"
CONFIG = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg", "neu"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "training": {"min_new_labels": 20},
    # rounds of 20 labels: rounds 1 and 2 are deltas, round 3 writes version v0003
    "export": {"every_n_labels": 60},
}
_POS = ["good", "great", "excellent", "lovely", "superb", "nice"]
_NEG = ["bad", "awful", "terrible", "poor", "horrible", "nasty"]
_FILL = ["the", "film", "was", "really", "quite", "a", "plot", "actor", "scene"]


def _corpus(n: int) -> list[tuple[str, str, str]]:
    rng = random.Random(7)
    out = []
    for k in range(n):
        label = "pos" if k % 2 else "neg"
        words = rng.sample(_FILL, 4) + rng.sample(_POS if label == "pos" else _NEG, 2)
        rng.shuffle(words)
        out.append((f"item{k:04d}", " ".join(words), label))
    return out


async def test_labels_become_a_dataset_a_model_and_pool_scores(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    corpus = _corpus(200)
    exporter = build_exporter(
        ExporterSettings(nats_url=nats_url, namespace=namespace, export_dir=tmp_path)
    )
    trainer = build_trainer(TrainerSettings(nats_url=nats_url, namespace=namespace))
    datasets = EventCollector(nats_url, namespace, DatasetExported)
    rounds = EventCollector(nats_url, namespace, RoundExported)
    models = EventCollector(nats_url, namespace, ModelTrained)
    async with started(exporter), started(trainer), datasets, rounds, models:
        await apply_project(exporter.stores.projects, parse_project(CONFIG))
        items = [IngestedItem(item_id=i, data={"text": t}) for i, t, _ in corpus]
        await Catalog(exporter.state, writing_as(exporter, "catalog")).write(
            PROJECT, "c1", Chunk(items)
        )
        labels = [
            LabelsReady(
                project=PROJECT,
                batch_id=f"b{b}",
                round=b + 1,
                labels=[
                    ConsensusLabel(
                        item_id=i,
                        label=y,
                        confidence=0.95,
                        method="majority",
                        n_annotations=3,
                        annotators=["ann1", "ann2", "ann3"],
                    )
                    for i, _, y in corpus[b * 20 : (b + 1) * 20]
                ],
            )
            for b in range(3)
        ]
        # round 3 first, round 1 twice: rounds still come in round order, once each
        await publish_events(nats_url, namespace, labels[2], labels[0], labels[1], labels[0])
        exported = await rounds.wait_for(3, timeout=60)
        assert [(r.dataset_version, r.round, r.n_rows, len(r.deltas)) for r in exported] == [
            ("r0001", 1, 20, 1),  # no version yet: round 1's delta alone
            ("r0002", 2, 40, 2),
            ("v0003", 3, 60, 0),  # 60 labels since the last version: a full one
        ]
        assert exported[1].deltas[0] == exported[0].deltas[0]
        (dataset,) = await datasets.wait_for(1, timeout=60)
        assert (dataset.version, dataset.round, dataset.n_rows) == ("v0003", 3, 60)
        assert exported[-1].base_ref == f"{dataset.dataset_ref}labels.parquet"
        assert exported[-1].base_sha256 == dataset.labels_sha256
        path = Path(dataset.path)
        manifest = json.loads((path / "manifest.json").read_bytes())
        assert manifest["n_rows"] == 60
        assert manifest["class_counts"] == {"pos": 30, "neg": 30, "neu": 0}
        assert sum(manifest["splits"]["sizes"].values()) == 60
        for name in ("dataset.jsonl", "dataset.csv", "dataset.parquet"):
            assert (path / name).is_file()

        trained = await models.wait_for(3, timeout=120)
        assert [(m.round, m.dataset_version) for m in trained] == [
            (1, "r0001"),
            (2, "r0002"),
            (3, "v0003"),
        ]
        # every round trained on all of its rows, from the deltas as from the version
        assert [(m.skipped, m.n_train) for m in trained] == [(None, 20), (None, 40), (None, 60)]
        model = trained[-1]
        assert model.serving_model_version is not None
        assert model.serving_scores_ref is not None
        raw = await trainer.artifacts.get(model.serving_scores_ref)
        assert raw is not None
        table = decode_table(raw)
        assert table.classes == ["pos", "neg", "neu"]
        if model.promoted:
            assert sorted(table.item_ids) == sorted(i for i, _, _ in corpus[60:])
        proba = table.proba[[k for k, i in enumerate(table.item_ids) if i >= "item0060"]]
        assert proba.shape == (140, 3)
        assert np.all(proba[:, 2] == 0.0)  # "neu" was never labeled: zero, not shifted
        rows = {i: k for k, i in enumerate(table.item_ids)}
        truth = np.array([y for _, _, y in corpus[60:]])
        ordered = table.proba[[rows[i] for i, _, _ in corpus[60:]]]
        predicted = np.array(["pos", "neg", "neu"])[ordered.argmax(axis=1)]
        assert np.mean(predicted == truth) > 0.8
        # the redelivered round made no fourth round and no second version
        assert len(rounds.events) == 3
        assert len(datasets.events) == 1
