"""The dataset table: one row per labeled item, with its data, label, provenance and split."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
from pydantic import JsonValue

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

    def encode(self) -> str:
        """As one JSON text (a fold row's ``data`` cell)."""
        return json.dumps([self.data, self.metadata])

    @classmethod
    def decode(cls, raw: str) -> ItemData:
        data, metadata = json.loads(raw)
        return cls(data, metadata)


@dataclass(frozen=True, slots=True)
class Table:
    rows: pd.DataFrame
    """Sorted by item id; ``label`` and ``annotators`` hold native values (str, lists, dicts)."""
    data_columns: tuple[str, ...]
    missing_items: tuple[str, ...]
    """Labeled items whose data the exporter has not seen (their data cells are empty)."""


def build_table(
    labels: pa.Table,
    items: Mapping[str, ItemData] | None,
    data_fields: Sequence[str],
    *,
    salt: str,
    fractions: Mapping[str, float],
) -> Table:
    """Join labels with item data and assign every row its (version-stable) split.

    ``labels``: one row per item, sorted by item id, as a label fold keeps them
    (:data:`~labelloop_exporter.domain.fold.FOLD_SCHEMA`); an item's data is ``items``' if
    given, else its row's ``data`` cell."""
    ids: list[str] = labels.column("item_id").to_pylist()
    gold: list[bool] = labels.column("is_gold").to_pylist()
    splits = assign_splits(ids, salt, fractions, gold)
    cell = {name: labels.column(name).to_pylist() for name in _FROM_LABEL}
    kept = labels.column("data").to_pylist() if items is None else None
    columns = tuple(data_column(f) for f in data_fields)
    records: list[dict[str, object]] = []
    missing: list[str] = []
    for k, (item_id, split) in enumerate(zip(ids, splits, strict=True)):
        if items is not None:
            item = items.get(item_id)
        else:
            raw = kept[k] if kept is not None else None
            item = None if raw is None else ItemData.decode(raw)
        if item is None:
            missing.append(item_id)
        row: dict[str, object] = {
            "item_id": item_id,
            "split": split,
            "label": json.loads(cell["label"][k]),
            "confidence": cell["confidence"][k],
            "weight": 1.0,
            "n_annotations": cell["n_annotations"][k],
            "method": cell["method"][k],
            "is_gold": gold[k],
            "reviewed": cell["reviewed"][k],
            "annotators": cell["annotators"][k],
            "batch_id": cell["batch_id"][k],
            "round": cell["round"][k],
        }
        for name, column in zip(data_fields, columns, strict=True):
            row[column] = None if item is None else item.data.get(name)
        records.append(row)
    frame = pd.DataFrame.from_records(records, columns=[*LABEL_COLUMNS, *columns])
    for column in ("label", "annotators", *columns):
        # keep native values (None, lists, dicts): no inference to a string dtype with NaN
        frame[column] = pd.Series([r[column] for r in records], dtype=object, index=frame.index)
    return Table(rows=frame, data_columns=columns, missing_items=tuple(missing))


_FROM_LABEL = (
    "label",
    "confidence",
    "n_annotations",
    "method",
    "reviewed",
    "annotators",
    "batch_id",
    "round",
)
