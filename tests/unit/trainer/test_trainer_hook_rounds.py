"""A bounding-box project's rounds: the model hook's predictions become the pool's scores and
boxes; a hook that is down or answers garbage fails its round only, and says so."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pandas as pd
from dataset_support import exported
from prometheus_client import CollectorRegistry

from labelloop.catalog import SEQUENCE_MEASURES, Catalog, Chunk, decode_table
from labelloop.events import Event, IngestedItem, ModelTrained, RoundExported
from labelloop.project import ModelHookConfig, ProjectConfig, parse_project
from labelloop.stores import MemoryStores
from labelloop_trainer.metrics import TrainerMetrics
from labelloop_trainer.model_hook import ModelHook
from labelloop_trainer.service import Trainer

PROJECT = "boxes"
IDS = [f"img{k:02d}" for k in range(12)]


def _config(hook: bool = True) -> ProjectConfig:
    raw: dict[str, Any] = {
        "name": PROJECT,
        "task_type": "bounding_boxes",
        "labels": {"classes": ["cat", "dog"]},
        "data_fields": [{"name": "image", "kind": "image"}],
    }
    if hook:
        raw["model_hook"] = {"url": "http://detector:9090", "batch_size": 5, "retries": 1}
    return parse_project(raw)


class _Detector:
    """An ML backend on httpx's MockTransport: a box per task, surer for later items; or down."""

    def __init__(self) -> None:
        self.down = False
        self.garbage = False
        self.seen: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(503)
        if self.garbage:
            return httpx.Response(200, json={"predictions": "nope"})
        tasks = json.loads(request.content)["tasks"]
        results = []
        for task in tasks:
            self.seen.append(task["id"])
            k = int(task["data"]["image"].rsplit("/", 1)[1])
            region = {
                "type": "rectanglelabels",
                "value": {"x": 90, "y": 5, "width": 30, "height": 10, "rectanglelabels": ["dog"]},
                "score": 0.5 + k / 30,
            }
            results.append({"result": [region], "score": 0.5 + k / 30, "model_version": "det-2"})
        return httpx.Response(200, json={"results": results})


async def _no_sleep(_: float) -> None:
    return None


async def _setup(
    stores: MemoryStores, detector: _Detector, config: ProjectConfig
) -> tuple[Trainer, list[Event]]:
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    async def project(name: str) -> ProjectConfig:
        return config

    def hook(c: ModelHookConfig) -> ModelHook:
        return ModelHook(c, transport=httpx.MockTransport(detector), env={}, sleep=_no_sleep)

    trainer = Trainer(
        state=lambda: stores.state,
        artifacts=lambda: stores.artifacts,
        publish=publish,
        project=project,
        metrics=TrainerMetrics(CollectorRegistry()),
        model_hook=hook,
    )
    items = [IngestedItem(item_id=i, data={"image": f"https://img/{k}"}) for k, i in enumerate(IDS)]
    await Catalog(stores.state, stores.artifacts).write(PROJECT, "c-0", Chunk(items))
    return trainer, published


async def _version(stores: MemoryStores, number: int, n: int) -> RoundExported:
    box = [{"x": 1, "y": 1, "width": 5, "height": 5, "rotation": 0, "label": "cat"}]
    frame = pd.DataFrame(
        {"item_id": IDS[:n], "split": "train", "label": json.dumps(box), "weight": 1.0}
    )
    return await exported(stores.artifacts, PROJECT, number, frame)


async def test_the_hooks_predictions_score_the_pool_and_carry_its_boxes() -> None:
    stores, detector = MemoryStores(), _Detector()
    trainer, published = await _setup(stores, detector, _config())
    await trainer.round_exported(await _version(stores, 1, 4))
    (outcome,) = published
    assert isinstance(outcome, ModelTrained)
    assert outcome.skipped is None
    assert outcome.promoted
    assert outcome.model_ref is None  # nothing trained here: the producer's model
    assert outcome.serving_model_version == "m0001"
    assert outcome.serving_scores_ref == outcome.scores_ref
    assert outcome.metrics["n_pool"] == 8
    assert outcome.metrics["hook_requests"] == 2  # 8 items, 5 a request
    assert detector.seen == list(range(8))
    raw = await stores.artifacts.get(outcome.scores_ref or "")
    assert raw is not None
    table = decode_table(raw)
    assert table.sequences  # the table kind the sampler ranks a sequence model's by
    assert table.classes == list(SEQUENCE_MEASURES)
    assert table.item_ids == IDS[4:]  # the unlabeled pool
    least = table.proba[:, 0]
    assert all(np.diff(least) < 0)  # surer later
    assert table.predictions is not None
    boxes = json.loads(table.predictions[0])
    # clipped to the image: x 90 + width 30 ends at 100
    assert boxes == [
        {
            "x": 90.0,
            "y": 5.0,
            "width": 10.0,
            "height": 10.0,
            "rotation": 0.0,
            "label": "dog",
            "score": round(0.5 + 4 / 30, 6),
        }
    ]
    report = await stores.artifacts.get("trainer/boxes/models/m0001.json")
    assert report is not None
    assert json.loads(report)["hook_model_versions"] == ["det-2"]
    state = await trainer.store.state(PROJECT)
    assert state.current is not None
    assert state.current.hook_model_versions == ["det-2"]


async def test_a_hook_that_is_down_or_answers_garbage_fails_its_round_only() -> None:
    stores, detector = MemoryStores(), _Detector()
    trainer, published = await _setup(stores, detector, _config())
    await trainer.round_exported(await _version(stores, 1, 4))
    detector.down = True
    await trainer.round_exported(await _version(stores, 2, 6))
    detector.down, detector.garbage = False, True
    await trainer.round_exported(await _version(stores, 3, 8))
    detector.garbage = False
    await trainer.round_exported(await _version(stores, 4, 10))
    first, down, garbage, back = published
    assert isinstance(down, ModelTrained)
    assert isinstance(garbage, ModelTrained)
    assert isinstance(back, ModelTrained)
    assert down.skipped is not None
    assert down.skipped.startswith("model hook: ")
    assert "HTTP 503 after 2 attempts" in down.skipped
    assert garbage.skipped is not None
    assert "no 'results' list" in garbage.skipped
    # the predictions of the last round that had some go on serving
    assert isinstance(first, ModelTrained)
    for failed in (down, garbage):
        assert not failed.promoted
        assert failed.serving_model_version == "m0001"
        assert failed.serving_scores_ref == first.scores_ref
    assert back.skipped is None
    assert back.serving_model_version == "m0004"
    assert back.metrics["n_pool"] == 2


async def test_without_a_hook_the_round_says_what_the_loop_does_not_do() -> None:
    stores, detector = MemoryStores(), _Detector()
    trainer, published = await _setup(stores, detector, _config(hook=False))
    await trainer.round_exported(await _version(stores, 1, 4))
    (outcome,) = published
    assert isinstance(outcome, ModelTrained)
    assert outcome.skipped is not None
    assert "no detector is trained here" in outcome.skipped
    assert "model_hook" in outcome.skipped
    assert outcome.serving_scores_ref is None
    assert detector.seen == []
