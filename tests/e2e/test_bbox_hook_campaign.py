"""A bounding-box campaign through the six services with a model the producer serves: a real
HTTP model in Label Studio's ML backend format scores the pool and pre-annotates the tasks.

The example ``examples/photo-patches``, as it is: its project, its tiles (scikit-learn's two
bundled photographs, ``load_sample_images``: a Chinese temple and a flower, 427 x 640, cut into
48-pixel tiles) and its detector, a toy served on a thread here (``detector.py``, a
``ThreadingHTTPServer``) that boxes the largest patch of each tile's brightest and of its darkest
pixels, labeled ``bright`` and ``dark``, each with a confidence that grows with the patch's
contrast: flat tiles are where it doubts. The crew's truth is the same boxes. The services run as
processes, as the demo runs them; the trainer reaches the model with a bearer token from its
environment, the sampler ranks the pool by least confidence.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from campaign_support import (
    Campaign,
    Plan,
    Waits,
    blob,
    example_config,
    example_module,
    run_campaign,
    score_tables,
)

from labelloop.catalog import SEQUENCE_MEASURES, ProbabilityTable
from labelloop.project import ProjectConfig, parse_project
from labelloop_console.campaign import latest_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]
log = logging.getLogger("tests.e2e.bbox_hook")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "photo-patches"
SEED = 20
BUDGET = 64
TOKEN = "hook-token-7f3a9c"  # a test credential: it must reach the model and no log


# ----------------------------------------------------------------------------- the model


@dataclass
class _Seen:
    requests: int = 0
    refused: int = 0
    tasks: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, status: int, body: Mapping[str, Any] | None) -> None:
        """The detector's observer: each ``/predict`` request, as it was answered."""
        if status == 401:
            self.refused += 1
        elif status == 200 and body is not None:
            self.requests += 1
            self.tasks += len(body["tasks"])
            self.bodies.append({k: v for k, v in body.items() if k != "tasks"})


@contextmanager
def model_server(detector: ModuleType) -> Iterator[tuple[str, _Seen]]:
    """The producer's model: the example's detector on a free port, bearer token required."""
    seen = _Seen()
    server = detector.DetectorServer(("127.0.0.1", 0), token=TOKEN, observe=seen)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url, seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ----------------------------------------------------------------------------- the campaign


def _config(url: str) -> ProjectConfig:
    """The example's project with ``BUDGET`` labels, its hook at ``url``."""
    raw = example_config(EXAMPLE, budget=BUDGET, seed=SEED).model_dump(mode="json")
    raw["model_hook"] = {**raw["model_hook"], "url": url}
    return parse_project(raw)


PLAN = Plan(
    source="sklearn-sample-images",
    ingest=Waits(timeout=240, stall=120),
    settle=Waits(timeout=900, stall=300),
    ingested="every tile is ingested",
)


async def _scored(run: Campaign) -> tuple[dict[str, ProbabilityTable], dict[str, Any]]:
    """The pool's scores by model version, and the trainer's report of each."""
    tables = await score_tables(run.bus, run.view)
    reports: dict[str, Any] = {}
    for version in tables:
        report = await blob(run.bus, f"trainer/{run.view.project}/models/{version}.json")
        reports[version] = json.loads(report)
    return tables, reports


def test_a_bounding_box_campaign_is_ranked_and_pre_annotated_by_the_producers_model(
    tmp_path: Path, nats_url: str, namespace: str
) -> None:
    detector = example_module(EXAMPLE / "detector.py", "photo_patches_detector")
    tiles = example_module(EXAMPLE / "tiles.py", "photo_patches").load_tiles()
    items = tiles.items()
    with model_server(detector) as (url, seen):
        config = _config(url)
        assert config.model_hook is not None
        assert config.model_hook.credentials_env is not None
        view, batches, (tables, reports) = run_campaign(
            tmp_path,
            nats_url,
            namespace,
            config,
            items,
            PLAN,
            _scored,
            env={config.model_hook.credentials_env: TOKEN},
        )
    batch_size = config.sampling.batch_size

    assert view.budget_exhausted is not None
    assert view.dead_letters == 0
    # the trainer asked the model, in its format, with the token from its environment
    assert seen.refused == 0
    assert seen.requests > 0
    assert all("<RectangleLabels" in b["label_config"] for b in seen.bodies)
    assert all(b["project"] == config.name for b in seen.bodies)
    rounds = view.round_models()
    assert rounds, "every exported version has its round"
    assert all(m.skipped is None for m in rounds.values()), [m.skipped for m in rounds.values()]
    assert all(m.model_ref is None for m in rounds.values())  # nothing trained here
    assert reports, "the hook's predictions are kept as pool scores"
    for report in reports.values():
        assert report["hook_model_versions"] == [detector.MODEL_VERSION]
        assert report["model"] == "model_hook"

    labeling = sorted((b for b in batches if b.kind == "labeling"), key=lambda b: b.round)
    assert len(labeling) >= 3
    assert labeling[0].strategy == "diversity"  # no predictions yet: spread over the pool
    chosen_by_model = [b for b in labeling[1:] if b.model_version is not None]
    assert len(chosen_by_model) == len(labeling) - 1, [b.strategy for b in labeling]
    assert all(b.strategy == "least_confidence" for b in chosen_by_model)

    for batch in chosen_by_model:
        table = tables[batch.model_version or ""]
        assert table.sequences
        assert table.classes == list(SEQUENCE_MEASURES)
        assert table.predictions is not None
        rows = table.rows()
        least = table.proba[:, 0]
        picked = [t.item_id for t in batch.tasks if not t.is_gold and t.item_id in rows]
        assert 0 < len(picked) <= batch_size
        # ... by the model's doubt: the batch is the least confident tiles still in the pool
        taken = {t.item_id for b in labeling if b.round <= batch.round for t in b.tasks}
        available = least[[r for i, r in rows.items() if i not in taken]]
        picked_least = least[[rows[i] for i in picked]]
        assert len(available) > len(picked)
        assert picked_least.min() >= available.max() - 1e-6, (
            picked_least.min(),
            available.max(),
        )
        assert picked_least.min() > np.quantile(least, 0.75)
        # ... and the tasks carry its boxes as pre-annotations: the project's labels, in the
        # image, the very boxes the detector draws on that tile
        for task in batch.tasks:
            assert task.prediction is not None
            assert task.prediction.model_version == batch.model_version
            boxes = task.prediction.label
            assert isinstance(boxes, list)
            assert boxes == json.loads(table.predictions[rows[task.item_id]])
            drawn = detector.detect(tiles.images[int(str(task.metadata["tile"]))])
            assert [b["label"] for b in boxes if isinstance(b, dict)] == [d[0] for d in drawn]
            for box, (_, expected, score) in zip(boxes, drawn, strict=True):
                assert isinstance(box, dict)
                assert box["score"] == pytest.approx(score)
                for key in ("x", "y", "width", "height"):
                    assert box[key] == pytest.approx(expected[key], abs=1e-3)
                assert 0.0 <= float(str(box["x"])) <= 100.0
                assert float(str(box["x"])) + float(str(box["width"])) <= 100.0 + 1e-6
            assert task.prediction.score == pytest.approx(1.0 - least[rows[task.item_id]], abs=1e-4)

    # the crew's boxes are exported, in COCO (pixel boxes: the consensus keeps the image's size)
    # and as YOLO labels too
    last = latest_dataset(view.datasets)
    root = Path(last.path)
    rows_out = [json.loads(line) for line in (root / "dataset.jsonl").read_text().splitlines()]
    assert len(rows_out) >= BUDGET // 2
    assert all(isinstance(r["label"], list) for r in rows_out)
    assert (root / "yolo" / "classes.txt").read_text().split() == config.labels.classes
    assert list((root / "yolo" / "labels").rglob("*.txt"))
    coco = [json.loads(p.read_text()) for p in (root / "coco").glob("*.json")]
    assert sum(len(doc["images"]) for doc in coco) == len(rows_out)
    assert sum(len(doc["annotations"]) for doc in coco) >= len(rows_out)
    # the token reached the model and nothing the services wrote
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert TOKEN.encode() not in path.read_bytes(), path
    log.info(
        "%d labels, %d batches chosen by the hook's scores, %d /predict requests (%d tasks)",
        view.labels_used,
        len(chosen_by_model),
        seen.requests,
        seen.tasks,
    )
