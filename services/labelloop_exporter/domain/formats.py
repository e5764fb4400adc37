"""Dataset files as bytes: JSONL, CSV, Parquet; COCO/YOLO for boxes, CoNLL for NER.

Rendering is deterministic (rows sorted by item id, keys sorted), so the same rows always give the
same bytes and the same sha256. Writing them to disk is the adapter's job.

Box regions follow Label Studio's ``rectanglelabels`` result: ``x``, ``y``, ``width``, ``height`` in
percent of the image, top-left origin, with ``original_width``/``original_height`` in pixels. Span
regions follow its ``labels`` result: character offsets ``start``/``end`` into the text.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labelloop_exporter.domain.labels import label_json, region_label
from labelloop_exporter.domain.splits import SPLIT_ORDER
from labelloop_exporter.domain.table import LABEL_COLUMNS

__all__ = [
    "flat_rows",
    "labels_only",
    "labels_table",
    "render_coco",
    "render_conll",
    "render_csv",
    "render_jsonl",
    "render_parquet",
    "render_yolo",
    "table_schema",
]

_NESTED = ("label", "annotators")


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _cell(value: Any) -> Any:
    """A data cell as CSV/Parquet can hold it: scalars as they are, structures as JSON text."""
    if value is None or _is_nan(value):
        return None  # pandas turns a missing cell into NaN; JSON has no NaN
    if isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def flat_rows(rows: pd.DataFrame, data_columns: Sequence[str]) -> pd.DataFrame:
    """The table with nested cells as JSON strings (labels: the class name, or JSON for lists)."""
    flat = rows.copy()
    flat["label"] = [label_json(v) for v in rows["label"]]
    flat["annotators"] = [json.dumps(list(v)) for v in rows["annotators"]]
    for column in data_columns:
        values = [_cell(v) for v in rows[column]]
        flat[column] = pd.Series(
            [None if v is None else str(v) for v in values], dtype="object", index=rows.index
        )
    return flat


def _arrow_table(flat: pd.DataFrame, data_columns: Sequence[str]) -> pa.Table:
    fields = [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("confidence", pa.float64(), nullable=False),
        pa.field("weight", pa.float64(), nullable=False),
        pa.field("n_annotations", pa.int64(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("is_gold", pa.bool_(), nullable=False),
        pa.field("reviewed", pa.bool_(), nullable=False),
        pa.field("annotators", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("round", pa.int64(), nullable=False),
        *(pa.field(c, pa.string()) for c in data_columns),
    ]
    schema = pa.schema(fields)
    arrays = [pa.array(flat[f.name].tolist(), type=f.type) for f in fields]
    return pa.Table.from_arrays(arrays, schema=schema)


def table_schema(data_columns: Sequence[str]) -> list[dict[str, str]]:
    """The columns of the CSV/Parquet files with their Arrow types (recorded in the manifest)."""
    empty = pd.DataFrame({c: [] for c in _arrow_columns(data_columns)})
    table = _arrow_table(empty, data_columns)
    return [{"name": f.name, "type": str(f.type)} for f in table.schema]


def _arrow_columns(data_columns: Sequence[str]) -> list[str]:
    return [*LABEL_COLUMNS, *data_columns]


def render_jsonl(rows: pd.DataFrame, data_columns: Sequence[str]) -> bytes:
    """One JSON object per line, labels and data in their native shape (keys sorted, a missing
    cell ``null``)."""
    names = [str(c) for c in rows.columns]
    values = [_natives(rows[c]) for c in rows.columns]
    encode = _JSONL.encode
    lines = [encode(dict(zip(names, row, strict=True))) for row in zip(*values, strict=True)]
    return "".join(line + "\n" for line in lines).encode()


_JSONL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)
"""One encoder for every line: ``json.dumps`` with options builds a new one a call."""


def _natives(column: pd.Series) -> list[Any]:
    """A column's cells as Python values, a missing one (``NaN``) as ``None``."""
    values: list[Any] = column.tolist()
    missing = column.isna().to_numpy()
    if missing.any():
        for k in np.flatnonzero(missing):
            values[k] = None
    return values


def render_csv(rows: pd.DataFrame, data_columns: Sequence[str]) -> bytes:
    return flat_rows(rows, data_columns).to_csv(index=False, lineterminator="\n").encode()


def render_parquet(rows: pd.DataFrame, data_columns: Sequence[str]) -> bytes:
    table = _arrow_table(flat_rows(rows, data_columns), data_columns)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def labels_table(rows: pd.DataFrame) -> pa.Table:
    """The label columns of some rows as the Parquet file of a version holds them (no data)."""
    return _arrow_table(flat_rows(rows, ()), ())


def labels_only(parquet: bytes) -> bytes:
    """A dataset's Parquet file without the items' data: the label columns, for consumers that
    read the item data from the catalog (the trainer). Item data then lives once on the bus."""
    table = pq.read_table(io.BytesIO(parquet), columns=list(LABEL_COLUMNS))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


# --------------------------------------------------------------------------- boxes


def _boxes(value: Any) -> list[dict[str, Any]]:
    return [r for r in value or [] if isinstance(r, dict)]


def render_coco(rows: pd.DataFrame, classes: Sequence[str], image_column: str) -> dict[str, bytes]:
    """One COCO file per split (``coco/<split>.json``); category ids are 0-based class indices.

    ``bbox`` is ``[x, y, width, height]`` in pixels from the top-left corner, as COCO defines it.
    """
    index = {c: i for i, c in enumerate(classes)}
    categories = [{"id": i, "name": c, "supercategory": "none"} for i, c in enumerate(classes)]
    files: dict[str, bytes] = {}
    for split in SPLIT_ORDER:
        part = rows[rows["split"] == split]
        if part.empty:
            continue
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, (item_id, image, value) in enumerate(
            zip(part["item_id"], part[image_column], part["label"], strict=True)
        ):
            regions = _boxes(value)
            width = height = None
            for region in regions:
                width, height = region.get("original_width"), region.get("original_height")
                break
            images.append(
                {
                    "id": image_id,
                    "file_name": image,
                    "width": width,
                    "height": height,
                    "item_id": item_id,
                }
            )
            for region in regions:
                w_px, h_px = float(region["original_width"]), float(region["original_height"])
                x = float(region["x"]) * w_px / 100.0
                y = float(region["y"]) * h_px / 100.0
                bw = float(region["width"]) * w_px / 100.0
                bh = float(region["height"]) * h_px / 100.0
                for name in region_label(region):
                    annotations.append(
                        {
                            "id": len(annotations),
                            "image_id": image_id,
                            "category_id": index[name],
                            "bbox": [round(x, 4), round(y, 4), round(bw, 4), round(bh, 4)],
                            "area": round(bw * bh, 4),
                            "iscrowd": 0,
                            "segmentation": [],
                        }
                    )
        doc = {
            "info": {"description": f"labelloop export, {split} split"},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        files[f"coco/{split}.json"] = json.dumps(doc, sort_keys=True, indent=1).encode()
    return files


def render_yolo(rows: pd.DataFrame, classes: Sequence[str], image_column: str) -> dict[str, bytes]:
    """YOLO labels: ``yolo/labels/<split>/<item_id>.txt`` with one ``class cx cy w h`` per box.

    Coordinates are normalised to ``[0, 1]`` (box centre, width, height). ``yolo/classes.txt`` lists
    the classes in id order and ``yolo/<split>.txt`` the image references in row order, since the
    images themselves stay where they are (URLs or data URIs).
    """
    index = {c: i for i, c in enumerate(classes)}
    files: dict[str, bytes] = {"yolo/classes.txt": ("\n".join(classes) + "\n").encode()}
    for split in SPLIT_ORDER:
        part = rows[rows["split"] == split]
        if part.empty:
            continue
        listing: list[str] = []
        for item_id, image, value in zip(
            part["item_id"], part[image_column], part["label"], strict=True
        ):
            lines: list[str] = []
            for region in _boxes(value):
                x, y = float(region["x"]) / 100.0, float(region["y"]) / 100.0
                w, h = float(region["width"]) / 100.0, float(region["height"]) / 100.0
                for name in region_label(region):
                    lines.append(f"{index[name]} {x + w / 2:.6f} {y + h / 2:.6f} {w:.6f} {h:.6f}")
            files[f"yolo/labels/{split}/{item_id}.txt"] = "".join(
                f"{ln}\n" for ln in lines
            ).encode()
            listing.append(f"{item_id}\t{image}")
        files[f"yolo/{split}.txt"] = "".join(f"{ln}\n" for ln in listing).encode()
    return files


# --------------------------------------------------------------------------- spans

_TOKEN = re.compile(r"\S+")


def conll_tags(text: str, spans: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """Whitespace tokens of a text with BIO tags from character spans.

    A token is inside a span when their character ranges overlap; the first such token of a span is
    ``B-``, the following ones ``I-``. Where spans overlap, the one starting first wins.
    """
    tokens = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    tags = ["O"] * len(tokens)
    ordered = sorted(
        (s for s in spans if region_label(s)), key=lambda s: (int(s["start"]), int(s["end"]))
    )
    for span in ordered:
        start, end, name = int(span["start"]), int(span["end"]), region_label(span)[0]
        inside = [i for i, (_, a, b) in enumerate(tokens) if a < end and b > start]
        if not inside or any(tags[i] != "O" for i in inside):
            continue
        tags[inside[0]] = f"B-{name}"
        for i in inside[1:]:
            tags[i] = f"I-{name}"
    return [(tok, tag) for (tok, _, _), tag in zip(tokens, tags, strict=True)]


def render_conll(rows: pd.DataFrame, text_column: str) -> dict[str, bytes]:
    """CoNLL-2003 style files per split (``conll/<split>.conll``): ``token -X- _ TAG`` lines.

    Each item is one document introduced by ``-DOCSTART- -X- -X- O`` and followed by a blank line.
    """
    files: dict[str, bytes] = {}
    for split in SPLIT_ORDER:
        part = rows[rows["split"] == split]
        if part.empty:
            continue
        out = io.StringIO()
        for text, value in zip(part[text_column], part["label"], strict=True):
            out.write("-DOCSTART- -X- -X- O\n\n")
            for token, tag in conll_tags(str(text or ""), _boxes(value)):
                out.write(f"{token} -X- _ {tag}\n")
            out.write("\n")
        files[f"conll/{split}.conll"] = out.getvalue().encode()
    return files
