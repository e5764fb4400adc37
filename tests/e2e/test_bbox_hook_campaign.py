"""A bounding-box campaign through the six services with a model the producer serves: a real
HTTP model in Label Studio's ML backend format scores the pool and pre-annotates the tasks.

The data: scikit-learn's two bundled photographs (``load_sample_images``: a Chinese temple and
a flower, 427 x 640) cut into 48-pixel tiles. In each tile the "detector" (the test's model
server, a ``ThreadingHTTPServer`` on a thread) boxes the largest patch of its brightest and of
its darkest pixels, labeled ``bright`` and ``dark``, each with a confidence that grows with the
patch's contrast: flat tiles are where it doubts. The crew's truth is the same boxes. The
services run as processes, as the demo runs them; the trainer reaches the model with a bearer
token from its environment, the sampler ranks the pool by least confidence.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from campaign_support import Campaign, Plan, Waits, blob, run_campaign, score_tables
from PIL import Image
from scipy import ndimage
from sklearn.datasets import load_sample_images

from labelloop.catalog import SEQUENCE_MEASURES, ProbabilityTable
from labelloop.events import ItemIn
from labelloop.project import ProjectConfig, parse_project
from labelloop_console.campaign import latest_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]
log = logging.getLogger("tests.e2e.bbox_hook")

TILE = 48
SEED = 20
BATCH = 16
BUDGET = 64
CLASSES = ["bright", "dark"]
TOKEN = "hook-token-7f3a9c"  # a test credential: it must reach the model and no log
MODEL_VERSION = "tile-detector-1"


# ----------------------------------------------------------------------------- the images


def _tiles() -> list[np.ndarray]:
    tiles = []
    for image in load_sample_images().images:
        rows, cols = image.shape[0] // TILE, image.shape[1] // TILE
        for r in range(rows):
            for c in range(cols):
                tiles.append(image[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE])
    return tiles


def _png(tile: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(tile).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _decode(uri: str) -> np.ndarray:
    raw = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def detect(tile: np.ndarray) -> list[tuple[str, dict[str, float], float]]:
    """The largest patch of the tile's brightest (top 15%) and darkest (bottom 15%) pixels, in
    percent of the tile, each with a confidence from its contrast with the tile (0.5-0.99)."""
    gray = tile.astype(np.float64).mean(axis=2)
    height, width = gray.shape
    found = []
    for label, mask in (
        ("bright", gray >= np.percentile(gray, 85)),
        ("dark", gray <= np.percentile(gray, 15)),
    ):
        parts, n = ndimage.label(mask)
        if n == 0:
            continue
        sizes = ndimage.sum(mask, parts, range(1, n + 1))
        patch = parts == int(np.argmax(sizes)) + 1
        ys, xs = np.nonzero(patch)
        box = {
            "x": 100.0 * xs.min() / width,
            "y": 100.0 * ys.min() / height,
            "width": 100.0 * (xs.max() + 1 - xs.min()) / width,
            "height": 100.0 * (ys.max() + 1 - ys.min()) / height,
        }
        contrast = abs(float(gray[patch].mean()) - float(gray.mean())) / 255.0
        found.append((label, box, round(0.5 + min(2.0 * contrast, 0.49), 4)))
    return found


def _items(tiles: list[np.ndarray]) -> list[ItemIn]:
    """Each tile as an item, with the truth the simulated crew answers from."""
    items = []
    for k, tile in enumerate(tiles):
        truth = [
            {
                **box,
                "rotation": 0.0,
                "label": label,
                "original_width": TILE,
                "original_height": TILE,
            }
            for label, box, _ in detect(tile)
        ]
        items.append(
            ItemIn(
                data={"image": _png(tile)},
                metadata={"simulation_truth": truth, "tile": k},
                external_id=f"tile-{k}",
            )
        )
    return items


# ----------------------------------------------------------------------------- the model


@dataclass
class _Seen:
    requests: int = 0
    refused: int = 0
    tasks: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    """Label Studio's ML backend ``/predict`` answer (``ModelResponse``'s shape)."""
    results = []
    for task in body["tasks"]:
        regions = [
            {
                "from_name": "label",
                "to_name": "image",
                "type": "rectanglelabels",
                "value": {**box, "rotation": 0, "rectanglelabels": [label]},
                "score": score,
            }
            for label, box, score in detect(_decode(task["data"]["image"]))
        ]
        scores = [r["score"] for r in regions]
        results.append(
            {
                "result": regions,
                "score": sum(scores) / max(len(scores), 1),
                "model_version": MODEL_VERSION,
            }
        )
    return {"results": results}


@contextmanager
def model_server() -> Iterator[tuple[str, _Seen]]:
    """The producer's model: ``/predict`` and ``/health``, bearer token required."""
    seen = _Seen()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: object) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"status": "UP", "model_class": "TileDetector"})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/predict":
                self._send(404, {"error": "not found"})
                return
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                seen.refused += 1
                self._send(401, {"error": "unauthorized"})
                return
            seen.requests += 1
            seen.tasks += len(body["tasks"])
            seen.bodies.append({k: v for k, v in body.items() if k != "tasks"})
            self._send(200, _answer(body))

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ----------------------------------------------------------------------------- the campaign


def _config(url: str) -> ProjectConfig:
    return parse_project(
        {
            "name": "photo-tiles",
            "task_type": "bounding_boxes",
            "labels": {"classes": CLASSES},
            "data_fields": [{"name": "image", "kind": "image"}],
            "quality": {
                "overlap_fraction": 0.25,
                "annotators_per_overlapped_item": 2,
                "gold_fraction": 0.0,
                "min_confidence": 0.5,
            },
            "sampling": {
                "strategy": "least_confidence",
                "batch_size": BATCH,
                "seed": SEED,
                "start": "on_command",
                "max_open_tasks": 64,
            },
            "export": {"formats": ["jsonl", "parquet", "coco", "yolo"], "every_n_labels": BATCH},
            "budget": {"max_labels": BUDGET},
            "model_hook": {
                "url": url,
                "timeout_seconds": 60,
                "batch_size": 40,
                "retries": 2,
                "auth": "bearer",
                "credentials_env": "BOX_HOOK_TOKEN",
            },
            "simulation": {
                "seed": 7,
                "annotators": [
                    {"id": "ann-ada", "behaviour": "good", "accuracy": 0.95},
                    {"id": "ann-ben", "behaviour": "good", "accuracy": 0.93},
                    {"id": "ann-cy", "behaviour": "good", "accuracy": 0.9},
                    {"id": "expert-1", "behaviour": "good", "accuracy": 0.99, "role": "expert"},
                ],
            },
        }
    )


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
    tiles = _tiles()
    items = _items(tiles)
    with model_server() as (url, seen):
        config = _config(url)
        view, batches, (tables, reports) = run_campaign(
            tmp_path,
            nats_url,
            namespace,
            config,
            items,
            PLAN,
            _scored,
            env={"BOX_HOOK_TOKEN": TOKEN},
        )

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
        assert report["hook_model_versions"] == [MODEL_VERSION]
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
        assert 0 < len(picked) <= BATCH
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
            drawn = detect(tiles[int(str(task.metadata["tile"]))])
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
    assert (root / "yolo" / "classes.txt").read_text().split() == CLASSES
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
