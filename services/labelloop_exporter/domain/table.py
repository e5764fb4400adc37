"""The dataset table: one row per labeled item, with its data, label, provenance and split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
from pydantic import JsonValue

from labelloop_exporter.domain.labels import CurrentLabel
from labelloop_exporter.domain.splits import assign_splits

__all__ = ["LABEL_COLUMNS", "ItemData", "Table", "build_table", "data_column"]

LABEL_COLUMNS: tuple[str, ...] = (
    "item_id",
    "split",
    "label",
    "confidence",
    "weight",
    "n_annotations",
    "method",
    "is_gold",
    "reviewed",
    "annotators",
    "batch_id",
    "round",
)
"""Columns every dataset has, in this order; the item's data fields follow."""


def data_column(field_name: str) -> str:
    """The column of a data field: its own name, prefixed ``data_`` if it clashes with ours."""
    return f"data_{field_name}" if field_name in LABEL_COLUMNS else field_name


@dataclass(frozen=True, slots=True)
class ItemData:
    """What the exporter keeps of an ingested item."""

    data: dict[str, JsonValue]
    metadata: dict[str, JsonValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Table:
    rows: pd.DataFrame
    """Sorted by item id; ``label`` and ``annotators`` hold native values (str, lists, dicts)."""
    data_columns: tuple[str, ...]
    missing_items: tuple[str, ...]
    """Labeled items whose data the exporter has not seen (their data cells are empty)."""


def build_table(
    labels: Mapping[str, CurrentLabel],
    items: Mapping[str, ItemData],
    data_fields: Sequence[str],
    *,
    salt: str,
    fractions: Mapping[str, float],
) -> Table:
    """Join labels with item data and assign every row its (version-stable) split."""
    ids = sorted(labels)
    gold = [labels[i].is_gold for i in ids]
    splits = assign_splits(ids, salt, fractions, gold)
    columns = tuple(data_column(f) for f in data_fields)
    records: list[dict[str, object]] = []
    missing: list[str] = []
    for item_id, split in zip(ids, splits, strict=True):
        current = labels[item_id]
        item = items.get(item_id)
        if item is None:
            missing.append(item_id)
        cl = current.label
        row: dict[str, object] = {
            "item_id": item_id,
            "split": split,
            "label": cl.label,
            "confidence": float(cl.confidence),
            "weight": 1.0,
            "n_annotations": int(cl.n_annotations),
            "method": cl.method,
            "is_gold": bool(current.is_gold),
            "reviewed": bool(cl.reviewed),
            "annotators": sorted(cl.annotators),
            "batch_id": current.batch_id,
            "round": int(current.round),
        }
        for name, column in zip(data_fields, columns, strict=True):
            row[column] = None if item is None else item.data.get(name)
        records.append(row)
    frame = pd.DataFrame.from_records(records, columns=[*LABEL_COLUMNS, *columns])
    for column in ("label", "annotators", *columns):
        # keep native values (None, lists, dicts): no inference to a string dtype with NaN
        frame[column] = pd.Series([r[column] for r in records], dtype=object, index=frame.index)
    return Table(rows=frame, data_columns=columns, missing_items=tuple(missing))
