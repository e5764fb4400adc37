"""Exporter and trainer on a real nats-server: labels -> dataset on disk -> model -> pool scores."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest

from labelloop.events import (
    ConsensusLabel,
    DatasetExported,
    IngestedItem,
    ItemsIngested,
    LabelsReady,
    ModelTrained,
)
from labelloop.project import parse_project
from labelloop.testing import EventCollector, apply_project, publish_events, started
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
    "export": {"every_n_labels": 60},
    "training": {"min_new_labels": 20},
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
    models = EventCollector(nats_url, namespace, ModelTrained)
    async with started(exporter), started(trainer), datasets, models:
        await apply_project(exporter.stores.projects, parse_project(CONFIG))
        await publish_events(
            nats_url,
            namespace,
            ItemsIngested(
                project=PROJECT,
                submission_id="s1",
                items=[IngestedItem(item_id=i, data={"text": t}) for i, t, _ in corpus],
            ),
        )
        labels = [
            LabelsReady(
                project=PROJECT,
                batch_id=f"b{b}",
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
        await publish_events(nats_url, namespace, *labels, labels[0])  # one redelivered
        (dataset,) = await datasets.wait_for(1, timeout=60)
        assert (dataset.version, dataset.n_rows) == ("v0001", 60)
        path = Path(dataset.path)
        manifest = json.loads((path / "manifest.json").read_bytes())
        assert manifest["n_rows"] == 60
        assert manifest["class_counts"] == {"pos": 30, "neg": 30, "neu": 0}
        assert sum(manifest["splits"]["sizes"].values()) == 60
        for name in ("dataset.jsonl", "dataset.csv", "dataset.parquet"):
            assert (path / name).is_file()

        (model,) = await models.wait_for(1, timeout=120)
        assert model.dataset_version == "v0001"
        assert model.promoted
        assert model.scores_ref is not None
        raw = await trainer.artifacts.get(model.scores_ref)
        assert raw is not None
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            assert npz["classes"].tolist() == ["pos", "neg", "neu"]
            assert sorted(npz["item_ids"].tolist()) == sorted(i for i, _, _ in corpus[60:])
            proba = npz["proba"]
        assert proba.shape == (140, 3)
        assert np.all(proba[:, 2] == 0.0)  # "neu" was never labeled: zero, not shifted
        truth = np.array([y for _, _, y in corpus[60:]])
        predicted = np.array(["pos", "neg", "neu"])[proba.argmax(axis=1)]
        assert np.mean(predicted == truth) > 0.8
        assert len(datasets.events) == 1  # the redelivered message made no second version
