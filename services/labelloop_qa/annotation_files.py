"""Annotation files the CLI reads: CSV / JSONL long format, or a Label Studio JSON export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["AnnotationFileError", "LongTable", "read_annotations", "read_gold"]

REQUIRED = ("item_id", "annotator_id", "label")


class AnnotationFileError(ValueError):
    """A file that cannot be read as annotations, with the reason."""


@dataclass(frozen=True)
class LongTable:
    frame: pd.DataFrame
    """Columns ``item_id``, ``annotator_id``, ``label`` (strings); optional ``lead_time``."""
    skipped: int
    """Rows or annotations left out (empty label, cancelled, several choices)."""
    duplicates: int = 0
    """Rows repeating an (item, annotator) pair of a later row: the later answer counts, once."""


def _read_frame(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False)
    except (ValueError, OSError) as exc:
        raise AnnotationFileError(f"{path}: cannot read: {exc}") from None
    raise AnnotationFileError(f"{path}: expected .csv, .jsonl or a Label Studio .json export")


def _label_studio(raw: list[dict[str, Any]]) -> tuple[pd.DataFrame, int]:
    rows: list[dict[str, Any]] = []
    skipped = 0
    for task in raw:
        item = task.get("id", task.get("inner_id"))
        for ann in task.get("annotations") or []:
            who = ann.get("completed_by")
            if isinstance(who, dict):
                who = who.get("email") or who.get("id")
            choices = [
                c
                for res in ann.get("result") or []
                if res.get("type") == "choices"
                for c in (res.get("value") or {}).get("choices", [])
            ]
            if ann.get("was_cancelled") or len(choices) != 1:
                skipped += 1
                continue
            rows.append(
                {
                    "item_id": item,
                    "annotator_id": who,
                    "label": choices[0],
                    "lead_time": ann.get("lead_time"),
                }
            )
    return pd.DataFrame(rows, columns=[*REQUIRED, "lead_time"]), skipped


def read_annotations(path: str | Path) -> LongTable:
    """Long-format annotations from CSV, JSONL or a Label Studio JSON export."""
    path = Path(path)
    if not path.exists():
        raise AnnotationFileError(f"{path}: no such file")
    skipped = 0
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise AnnotationFileError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(raw, list):
            raise AnnotationFileError(f"{path}: a Label Studio export is a JSON list of tasks")
        frame, skipped = _label_studio(raw)
    else:
        frame = _read_frame(path)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise AnnotationFileError(f"{path}: missing column(s) {', '.join(missing)}")
    frame = frame.copy()
    for col in REQUIRED:
        frame[col] = frame[col].map(lambda v: "" if v is None or v != v else str(v))
    empty = (frame[list(REQUIRED)] == "").any(axis=1)
    skipped += int(empty.sum())
    frame = frame[~empty]
    # an annotator who answered an item twice changed their mind: one rating, the last one
    repeated = frame.duplicated(subset=["item_id", "annotator_id"], keep="last")
    frame = frame[~repeated].reset_index(drop=True)
    if frame.empty:
        raise AnnotationFileError(f"{path}: no usable annotations")
    return LongTable(frame, skipped, int(repeated.sum()))


def read_gold(path: str | Path) -> dict[str, str]:
    """Known answers: a CSV/JSONL with ``item_id`` and ``label`` columns."""
    path = Path(path)
    if not path.exists():
        raise AnnotationFileError(f"{path}: no such file")
    frame = _read_frame(path)
    if "item_id" not in frame.columns or "label" not in frame.columns:
        raise AnnotationFileError(f"{path}: a gold file needs item_id and label columns")
    return {str(i): str(lab) for i, lab in zip(frame["item_id"], frame["label"], strict=True)}
