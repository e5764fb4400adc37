"""The trainer on the in-memory bus: datasets in, models, pool scores and convergence out."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

from labelloop.events import (
    DatasetExported,
    IngestedItem,
    ItemsIngested,
    LabelingConverged,
    ModelTrained,
    RequestTraining,
)
from labelloop.project import parse_project
from labelloop.testing import in_memory
from labelloop_trainer.app import build_app
from labelloop_trainer.settings import TrainerSettings

PROJECT = "digits"
CLASSES = [str(c) for c in range(10)]


def _config(**training: Any) -> Any:
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
    """What the ingester does: features in the object store, announced per chunk."""
    for start in range(0, len(ids), 600):
        chunk = ids[start : start + 600]
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            item_ids=np.asarray(chunk, dtype=np.str_),
            X=x[start : start + 600].astype(np.float32),
            space=np.asarray("producer-64"),
        )
        ref = f"features/{PROJECT}/s-{start:04d}.npz"
        await bus.stores.artifacts.put(ref, buf.getvalue())
        await bus.publish(
            ItemsIngested(
                project=PROJECT,
                submission_id="s",
                features_ref=ref,
                items=[IngestedItem(item_id=i, data={"image": f"img/{i}.png"}) for i in chunk],
            )
        )


def _dataset(root: Path, version: str, ids: list[str], y: np.ndarray, n: int) -> DatasetExported:
    """A dataset version as the exporter writes it (only the columns the trainer reads)."""
    frame = pd.DataFrame(
        {
            "item_id": ids[:n],
            "split": [_split(i) for i in ids[:n]],
            "label": y[:n],
            "weight": 1.0,
            "image": [f"img/{i}.png" for i in ids[:n]],
        }
    )
    path = root / version
    path.mkdir(parents=True)
    frame.to_parquet(path / "dataset.parquet", index=False)
    return DatasetExported(
        project=PROJECT,
        event_id=f"exported-{version}",
        version=version,
        path=str(path),
        n_rows=n,
        n_new_rows=n,
        split_sizes={},
        class_counts={},
        formats=["parquet"],
        manifest_sha256="0" * 64,
    )


def _npz(raw: bytes | None) -> dict[str, np.ndarray]:
    assert raw is not None
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


async def test_dataset_to_model_to_pool_scores(tmp_path: Path) -> None:
    ids, x, y = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config(min_new_labels=50, min_growth=0.5))
        await _ingest(bus, ids, x)
        await bus.publish(_dataset(tmp_path, "v0001", ids, y, 400))
        (model,) = bus.published(ModelTrained)
        assert model.model_version == "m0001"
        assert model.dataset_version == "v0001"
        assert model.promoted
        assert model.classes == CLASSES
        assert model.metrics["accuracy"] > 0.85
        assert model.n_train == sum(_split(i) != "test" for i in ids[:400])
        scores = _npz(await bus.stores.artifacts.get(model.scores_ref or ""))
        assert scores["item_ids"].tolist() == ids[400:]  # the unlabeled pool
        assert scores["proba"].shape == (len(ids) - 400, 10)
        assert scores["classes"].tolist() == CLASSES
        assert np.allclose(scores["proba"].sum(axis=1), 1.0, atol=1e-4)
        oos = _npz(await bus.stores.artifacts.get(model.oos_ref or ""))
        assert oos["item_ids"].tolist() == ids[:400]
        assert oos["proba"].shape == (400, 10)

        # 20 more labels: under min_new_labels (50) and min_growth (50 %): no retraining
        await bus.publish(_dataset(tmp_path, "v0002", ids, y, 420))
        assert len(bus.published(ModelTrained)) == 1
        # ... unless someone asks
        await bus.publish(RequestTraining(project=PROJECT))
        second = bus.published(ModelTrained)[-1]
        assert (second.model_version, second.dataset_version) == ("m0002", "v0002")
        assert "agreement_with_previous" in second.metrics
        value = service.registry.get_sample_value(
            "labelloop_trainer_retrains_total", {"outcome": "skipped"}
        )
        assert value == 1


async def test_redelivered_dataset_reuses_the_model_version(tmp_path: Path) -> None:
    ids, x, y = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config())
        await _ingest(bus, ids, x)
        event = _dataset(tmp_path, "v0001", ids, y, 300)
        await bus.publish(event)
        await bus.publish(event)
        versions = {m.model_version for m in bus.published(ModelTrained)}
        assert versions == {"m0001"}


async def test_convergence_is_announced_once(tmp_path: Path) -> None:
    ids, x, y = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(
            _config(min_new_labels=1, convergence_rounds=2, convergence_agreement=0.9)
        )
        await _ingest(bus, ids, x)
        for k, n in enumerate(range(600, 1100, 100), start=1):
            await bus.publish(_dataset(tmp_path, f"v{k:04d}", ids, y, n))
        assert len(bus.published(ModelTrained)) == 5
        (done,) = bus.published(LabelingConverged)
        assert done.metrics["min_agreement"] >= 0.9
        assert "stabilising predictions" in done.reason


async def test_cold_start_with_one_class_trains_nothing(tmp_path: Path) -> None:
    ids, x, _ = _digits()
    service = build_app(TrainerSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(_config())
        await _ingest(bus, ids, x)
        await bus.publish(_dataset(tmp_path, "v0001", ids, np.array(["3"] * len(ids)), 50))
        assert bus.published(ModelTrained) == []
        value = service.registry.get_sample_value(
            "labelloop_trainer_retrains_total", {"outcome": "too_few_classes"}
        )
        assert value == 1
