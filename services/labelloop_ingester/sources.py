"""Reading items from files: JSONL, CSV, a JSON list, Label Studio tasks, a folder of media files.

Two row shapes are understood:

* item-shaped (a ``data`` object): ``{"data": {...}, "metadata": {...}, "features": [...],
  "known_label": ..., "prediction": {...}, "external_id": ...}``; Label Studio tasks are item
  shaped too (``meta`` counts as metadata, the first ``predictions`` entry as the prediction,
  ``id`` as the external id);
* flat (CSV rows, simple JSON records): the reserved keys ``metadata``, ``features``,
  ``known_label`` (or ``label``), ``prediction``, ``external_id`` (or ``id``), and ``meta.<name>``
  columns go where they belong; every other key is a data field.

A row that cannot become an item is not dropped: it is returned as a ``BadRow`` with its reason.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from labelloop.events import ItemIn

__all__ = ["MEDIA_KINDS", "BadRow", "read_items"]

MEDIA_KINDS: dict[str, str] = {
    **dict.fromkeys([".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"], "image"),
    **dict.fromkeys([".wav", ".mp3", ".flac", ".ogg", ".m4a"], "audio"),
    **dict.fromkeys([".mp4", ".webm", ".mov"], "video"),
}

_RESERVED = {
    "metadata",
    "meta",
    "features",
    "known_label",
    "label",
    "prediction",
    "predictions",
    "external_id",
    "id",
    "annotations",
}


@dataclass(frozen=True, slots=True)
class BadRow:
    index: int
    reason: str


def read_items(path: str | Path, *, media_field: str | None = None) -> Iterator[ItemIn | BadRow]:
    """Items from a file or a folder, in file order; unusable rows come back as ``BadRow``."""
    path = Path(path)
    if path.is_dir():
        yield from _read_folder(path, media_field)
        return
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        with path.open(encoding="utf-8") as fh:
            for index, line in enumerate(fh):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield BadRow(index, f"not valid JSON: {exc.msg}")
                    continue
                yield _to_item(index, row)
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            for index, record in enumerate(csv.DictReader(fh)):
                yield _to_item(index, _from_csv(record))
    elif suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(rows, dict):
            rows = rows.get("tasks", rows.get("items", [rows]))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of items or tasks")
        for index, row in enumerate(rows):
            yield _to_item(index, row)
    else:
        raise ValueError(
            f"{path}: unknown file type {suffix!r} (use .jsonl, .csv, .json or a folder)"
        )


def _read_folder(folder: Path, media_field: str | None) -> Iterator[ItemIn | BadRow]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_KINDS)
    for index, file in enumerate(files):
        kind = MEDIA_KINDS[file.suffix.lower()]
        yield _to_item(
            index,
            {
                "data": {media_field or kind: str(file.resolve())},
                "metadata": {"filename": file.name, "folder": str(file.parent.relative_to(folder))},
                "external_id": str(file.relative_to(folder)),
            },
        )


def _from_csv(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key, value in record.items():
        if key is None or value is None or value == "":
            continue
        if key.startswith(("meta.", "metadata.")):
            metadata[key.split(".", 1)[1]] = value
        elif key in {"features", "prediction", "metadata"}:
            try:
                row[key] = json.loads(value)
            except json.JSONDecodeError:
                row[key] = value
        else:
            row[key] = value
    if metadata:
        row["metadata"] = {**row.get("metadata", {}), **metadata}
    return row


def _to_item(index: int, row: Any) -> ItemIn | BadRow:
    if not isinstance(row, dict):
        return BadRow(index, f"expected an object, got {type(row).__name__}")
    if isinstance(row.get("data"), dict):
        fields = {
            "data": row["data"],
            "metadata": {**(row.get("meta") or {}), **(row.get("metadata") or {})},
            "features": row.get("features"),
            "known_label": row.get("known_label", row.get("label")),
            "prediction": row.get("prediction") or _ls_prediction(row.get("predictions")),
            "external_id": row.get("external_id", row.get("id")),
        }
    else:
        fields = {
            "data": {
                k: v for k, v in row.items() if k not in _RESERVED and not k.startswith("meta.")
            },
            "metadata": row.get("metadata") or {},
            "features": row.get("features"),
            "known_label": row.get("known_label", row.get("label")),
            "prediction": row.get("prediction"),
            "external_id": row.get("external_id", row.get("id")),
        }
    if fields["external_id"] is not None:
        fields["external_id"] = str(fields["external_id"])
    try:
        return ItemIn.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "item"
        return BadRow(index, f"wrong_type: {where}: {first['msg']}")


def _ls_prediction(predictions: Any) -> dict[str, Any] | None:
    """The first Label Studio prediction as a labelloop one (choices become class names)."""
    if not isinstance(predictions, list) or not predictions or not isinstance(predictions[0], dict):
        return None
    first = predictions[0]
    result = first.get("result") or []
    choices = [
        c
        for r in result
        if isinstance(r, dict) and r.get("type") == "choices"
        for c in (r.get("value") or {}).get("choices", [])
    ]
    label: Any = choices[0] if len(choices) == 1 else choices or result
    if not label:
        return None
    score = first.get("score")
    return {
        "label": label,
        "score": score if isinstance(score, int | float) and 0 <= score <= 1 else None,
        "model_version": first.get("model_version"),
    }
