"""The photo-patches example: its project loads and names its detector, and the detector's
answer to the trainer's own ``/predict`` request is one the trainer reads whole (no sockets:
``predict`` is the answer the server sends; tests/integration asks it over HTTP)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from labelloop.project import TaskType, load_project
from labelloop.testing import example_module
from labelloop_trainer.domain.boxes import label_config, parse_predict_response, predict_request

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "photo-patches"


def _load(module: str, name: str) -> ModuleType:
    return example_module(EXAMPLE / f"{module}.py", name)


@pytest.fixture(scope="module")
def detector() -> ModuleType:
    return _load("detector", "photo_patches_detector")


@pytest.fixture(scope="module")
def tiles(detector: ModuleType) -> Any:
    return _load("tiles", "photo_patches").load_tiles()


def _request(tiles: Any, positions: list[int]) -> dict[str, Any]:
    """What the trainer sends for these tiles, built by the trainer's own code."""
    items = tiles.items(positions)
    config = load_project(EXAMPLE / "project.yaml")
    return predict_request(
        [(k, item.data) for k, item in enumerate(items)],
        config.name,
        label_config("image", config.labels.classes),
    )


# ----------------------------------------------------------------------------- the project


def test_the_project_loads_and_asks_the_examples_detector(detector: ModuleType) -> None:
    config = load_project(EXAMPLE / "project.yaml")
    assert config.name == "photo-patches"
    assert config.task_type is TaskType.BOUNDING_BOXES
    assert config.labels.classes == list(detector.LABELS)
    assert config.guidelines_text
    assert {"coco", "yolo"} <= set(config.export.formats)
    hook = config.model_hook
    assert hook is not None
    assert hook.url == f"http://127.0.0.1:{detector.PORT}"
    assert hook.auth == "bearer"
    assert hook.credentials_env == detector.CREDENTIALS_ENV


def test_the_tiles_are_items_with_the_detectors_boxes_as_truth(
    detector: ModuleType, tiles: Any
) -> None:
    assert len(tiles.images) == 208  # 8 x 13 tiles of each 427 x 640 photograph
    assert {image.shape for image in tiles.images} == {(48, 48, 3)}
    (item,) = tiles.items([5])
    assert item.external_id == "tile-5"
    assert str(item.data["image"]).startswith("data:image/png;base64,")
    assert np.array_equal(detector.read_image(item.data["image"]), tiles.images[5])
    truth = item.metadata["simulation_truth"]
    assert [b["label"] for b in truth] == ["bright", "dark"]
    assert [{k: b[k] for k in ("x", "y", "width", "height")} for b in truth] == [
        box for _, box, _ in detector.detect(tiles.images[5])
    ]


# ----------------------------------------------------------------------------- the contract


def test_the_answer_to_the_trainers_request_is_read_whole(detector: ModuleType, tiles: Any) -> None:
    positions = [0, 40, 150]
    body = _request(tiles, positions)
    answer = json.loads(json.dumps(detector.predict(body)))  # as it crosses the wire
    predictions = parse_predict_response(answer, len(positions), ["bright", "dark"])
    for k, prediction in zip(positions, predictions, strict=True):
        drawn = detector.detect(tiles.images[k])
        assert prediction.dropped == 0
        assert prediction.model_version == detector.MODEL_VERSION
        assert [b["label"] for b in prediction.boxes] == ["bright", "dark"]
        for box, (_, expected, score) in zip(prediction.boxes, drawn, strict=True):
            assert box["score"] == pytest.approx(score)
            for key in ("x", "y", "width", "height"):
                assert box[key] == pytest.approx(expected[key], abs=1e-3)
        assert prediction.score == pytest.approx(np.mean([s for _, _, s in drawn]))
    region = answer["results"][0]["result"][0]
    # the names come from the request's label config, as LabelStudioMLBase reads them
    assert (region["from_name"], region["to_name"], region["type"]) == (
        "label",
        "image",
        "rectanglelabels",
    )


def test_a_flat_tile_is_where_it_doubts(detector: ModuleType) -> None:
    flat = np.full((48, 48, 3), 120, dtype=np.uint8)
    edge = flat.copy()
    edge[:, 24:] = 250
    assert [s for _, _, s in detector.detect(flat)] == [0.5, 0.5]
    assert min(s for _, _, s in detector.detect(edge)) > 0.7


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b.pop("tasks"), "no 'tasks' list"),
        (lambda b: b["tasks"][1]["data"].clear(), "task 1: no data.image"),
        (
            lambda b: b["tasks"][1]["data"].update(image="http://x/1.png"),
            "task 1: the image is not a PNG data URI",
        ),
        (
            lambda b: b["tasks"][0]["data"].update(image="data:image/png;base64,%%%"),
            "task 0: the image's base64 is broken",
        ),
    ],
)
def test_a_request_it_cannot_answer_says_why(
    detector: ModuleType, tiles: Any, change: Any, reason: str
) -> None:
    body = _request(tiles, [0, 1])
    change(body)
    with pytest.raises(detector.BadRequest, match=reason):
        detector.predict(body)


def test_the_image_field_is_the_one_the_label_config_names(
    detector: ModuleType, tiles: Any
) -> None:
    body = _request(tiles, [3])
    body["tasks"][0]["data"] = {"photo": body["tasks"][0]["data"]["image"]}
    body["label_config"] = label_config("photo", ["bright", "dark"])
    (result,) = detector.predict(body)["results"]
    assert {r["to_name"] for r in result["result"]} == {"photo"}


# ----------------------------------------------------------------------------- the PNG reader


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P"])
def test_a_png_of_any_mode_reads_as_rgb(detector: ModuleType, tiles: Any, mode: str) -> None:
    image = Image.fromarray(tiles.images[7]).convert(mode)
    got = detector.decode_png(_png_bytes(image))
    assert got.shape == (*tiles.images[7].shape[:2], 3)
    assert np.array_equal(got, np.asarray(image.convert("RGB")))


def test_what_it_cannot_read_is_refused_with_the_reason(detector: ModuleType) -> None:
    good = _png_bytes(Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)))
    huge = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
        + _chunk(b"IEND", b"")
    )
    for raw, reason in [
        (b"GIF89a", "not a readable PNG"),
        (good[:30], "not a readable PNG"),
        (huge, "pixels"),
    ]:
        with pytest.raises(detector.BadRequest, match=reason):
            detector.decode_png(raw)
