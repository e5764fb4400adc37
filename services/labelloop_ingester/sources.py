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
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from labelloop.events import ItemIn

__all__ = ["MEDIA_KINDS", "BadRow", "read_items", "read_positioned"]

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
    """A row that cannot become an item: where it is (``line`` of a JSONL or CSV file, 1-based;
    the position of an element of a JSON list or a file of a folder, also 1-based) and why."""

    index: int
    reason: str
    where: str = "line"

    def describe(self) -> str:
        return f"{self.where} {self.index}: {self.reason}"


def read_items(path: str | Path, *, media_field: str | None = None) -> Iterator[ItemIn | BadRow]:
    """Items from a file or a folder, in file order; unusable rows come back as ``BadRow``."""
    for _, row in read_positioned(path, media_field=media_field):
        yield row


def read_positioned(
    path: str | Path,
    *,
    media_field: str | None = None,
    data_fields: Collection[str] | None = None,
) -> Iterator[tuple[BadRow, ItemIn | BadRow]]:
    """Each row with where it is (a ``BadRow`` without a reason: ``line 3``, ``item 2``).

    ``data_fields``: the project's data fields. A CSV whose first line names none of them is
    refused as a whole (``ValueError``): its header line is missing, and reading on would take
    the first row for the header and lose it."""
    path = Path(path)
    if path.is_dir():
        yield from _tagged(_read_folder(path, media_field), "file")
        return
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        yield from _tagged(_read_jsonl(path), "line")
    elif suffix == ".csv":
        yield from _tagged(_read_csv(path, data_fields), "line")
    elif suffix == ".json":
        try:
            rows = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a valid UTF-8 JSON document: {exc}") from None
        if isinstance(rows, dict):
            rows = rows.get("tasks", rows.get("items", [rows]))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of items or tasks")
        yield from _tagged(
            ((index, _to_item(index, row)) for index, row in enumerate(rows, start=1)), "item"
        )
    else:
        raise ValueError(
            f"{path}: unknown file type {suffix!r} (use .jsonl, .csv, .json or a folder)"
        )


def _tagged(
    rows: Iterator[tuple[int, ItemIn | BadRow]], where: str
) -> Iterator[tuple[BadRow, ItemIn | BadRow]]:
    for index, row in rows:
        at = BadRow(index, "", where)
        yield at, (BadRow(index, row.reason, where) if isinstance(row, BadRow) else row)


def _read_jsonl(path: Path) -> Iterator[tuple[int, ItemIn | BadRow]]:
    """One item per line, read as bytes: a line that is not UTF-8 or not JSON is a bad row,
    and the lines after it are read as ever (memory stays flat in the file's size)."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, BadRow(number, f"not valid UTF-8 (byte {exc.start + 1} of the line)")
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, BadRow(number, f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            yield number, _to_item(number, row)


def _read_csv(
    path: Path, data_fields: Collection[str] | None
) -> Iterator[tuple[int, ItemIn | BadRow]]:
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        if any(_undecodable(name) for name in header):
            raise ValueError(f"{path}: the header line is not valid UTF-8")
        if data_fields and header and not set(header) & set(data_fields):
            shown = ", ".join(repr(name[:40]) for name in header[:4])
            raise ValueError(
                f"{path}: the first line ({shown}) names none of the project's data fields"
                f" ({', '.join(sorted(data_fields))}): a CSV starts with a header line"
            )
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise ValueError(f"{path}: the header names {', '.join(duplicated)} more than once")
        line = reader.line_num  # the header's last line
        for record in reader:
            start, line = line + 1, reader.line_num  # a quoted field may span lines
            if any(_undecodable(v) for v in record.values()):
                yield start, BadRow(start, "not valid UTF-8")
                continue
            extra = record.get(None)
            if extra:
                yield start, BadRow(start, f"{len(extra)} more fields than the header has")
                continue
            yield start, _to_item(start, _from_csv(record))


def _undecodable(value: Any) -> bool:
    """A CSV field read with ``surrogateescape`` that held bytes which are not UTF-8."""
    if isinstance(value, list):
        return any(_undecodable(v) for v in value)
    return isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value)


def _read_folder(folder: Path, media_field: str | None) -> Iterator[tuple[int, ItemIn | BadRow]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_KINDS)
    for index, file in enumerate(files, start=1):
        kind = MEDIA_KINDS[file.suffix.lower()]
        row = {
            "data": {media_field or kind: str(file.resolve())},
            "metadata": {"filename": file.name, "folder": str(file.parent.relative_to(folder))},
            "external_id": str(file.relative_to(folder)),
        }
        yield index, _to_item(index, row)


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
