"""File formats: round trips, box coordinates, BIO tags."""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from labelloop_exporter.domain.formats import (
    conll_tags,
    render_coco,
    render_conll,
    render_csv,
    render_jsonl,
    render_parquet,
    render_yolo,
)


def _rows(labels: list[object], data: list[object]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(n)],
            "split": ["train"] * n,
            "label": labels,
            "confidence": [0.9] * n,
            "weight": [1.0] * n,
            "n_annotations": [3] * n,
            "method": ["mv"] * n,
            "is_gold": [False] * n,
            "reviewed": [False] * n,
            "annotators": [["u1", "u2"]] * n,
            "batch_id": ["b"] * n,
            "round": [1] * n,
            "image": data,
        }
    )


def test_tabular_formats_round_trip() -> None:
    rows = _rows(["cat", "dog"], ["a.png", None])
    back = pq.read_table(io.BytesIO(render_parquet(rows, ["image"]))).to_pandas()
    assert back["label"].tolist() == ["cat", "dog"]
    assert back["image"][0] == "a.png"
    assert pd.isna(back["image"][1])
    assert json.loads(render_jsonl(rows, ["image"]).splitlines()[1])["image"] is None
    assert json.loads(back["annotators"][0]) == ["u1", "u2"]
    csv = pd.read_csv(io.BytesIO(render_csv(rows, ["image"])))
    assert csv["item_id"].tolist() == ["i0", "i1"]
    lines = render_jsonl(rows, ["image"]).decode().splitlines()
    assert json.loads(lines[0])["annotators"] == ["u1", "u2"]
    assert render_parquet(rows, ["image"]) == render_parquet(rows, ["image"])  # deterministic


def test_json_lines_are_each_row_dumped_with_sorted_keys_and_null_for_a_missing_cell() -> None:
    """What a version's fingerprint hashes, built column by column: the same bytes as one
    ``json.dumps`` a row (keys sorted, non-ASCII as is, NaN and None as null)."""
    labels: list[object] = ["cat", ["a", "b"], [{"x": 1.5, "labels": ["é"]}], "dog"]
    data: list[object] = ["ü.png", None, float("nan"), {"uri": "s3://x", "n": [1, None]}]
    rows = _rows(labels, data)
    rows["confidence"] = [0.9, float("nan"), 0.5, 1.0]
    expected = "".join(
        json.dumps(
            {k: None if isinstance(v, float) and v != v else v for k, v in row.items()},
            sort_keys=True,
            ensure_ascii=False,
        )
        + "\n"
        for row in rows.to_dict(orient="records")
    ).encode()
    assert render_jsonl(rows, ["image"]) == expected
    assert json.loads(expected.splitlines()[1])["confidence"] is None


BOX = {
    "x": 10.0,
    "y": 20.0,
    "width": 30.0,
    "height": 40.0,
    "rectanglelabels": ["dog"],
    "original_width": 200,
    "original_height": 100,
}


def test_yolo_uses_normalised_centres() -> None:
    files = render_yolo(_rows([[BOX]], ["a.png"]), ["cat", "dog"], "image")
    assert files["yolo/classes.txt"] == b"cat\ndog\n"
    cls, cx, cy, w, h = files["yolo/labels/train/i0.txt"].decode().split()
    assert cls == "1"
    assert (float(cx), float(cy), float(w), float(h)) == pytest.approx((0.25, 0.4, 0.3, 0.4))
    assert files["yolo/train.txt"] == b"i0\ta.png\n"


def test_coco_uses_pixels_from_the_top_left() -> None:
    files = render_coco(_rows([[BOX], []], ["a.png", "b.png"]), ["cat", "dog"], "image")
    doc = json.loads(files["coco/train.json"])
    assert [c["name"] for c in doc["categories"]] == ["cat", "dog"]
    assert len(doc["images"]) == 2
    (ann,) = doc["annotations"]
    assert ann["bbox"] == [20.0, 20.0, 60.0, 40.0]
    assert ann["area"] == 2400.0
    assert ann["category_id"] == 1
    assert doc["images"][0]["width"] == 200


def test_conll_bio_tags_follow_character_spans() -> None:
    text = "Ada Lovelace met Charles Babbage in London ."
    spans = [
        {"start": 0, "end": 12, "labels": ["PER"]},
        {"start": 17, "end": 31, "labels": ["PER"]},
        {"start": 35, "end": 41, "labels": ["LOC"]},
    ]
    tags = [t for _, t in conll_tags(text, spans)]
    assert tags == ["B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "O"]
    rows = _rows([spans], [text])
    out = render_conll(rows, "image")["conll/train.conll"].decode()
    assert out.startswith("-DOCSTART- -X- -X- O\n\nAda -X- _ B-PER\n")
    assert out.endswith("\n\n")
