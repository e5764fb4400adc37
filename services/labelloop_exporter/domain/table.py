"""The dataset table: one row per labeled item, with its data, label, provenance and split."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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
        """As one JSON text, ``[data, metadata]`` (a fold row's ``data`` cell)."""
        return json.dumps([self.data, self.metadata])


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
    given, else its row's ``data`` cell (:meth:`ItemData.encode`). Built column by column: a
    version holds every label of the project, and a dict a row took a second at 100,000."""
    ids: list[str] = labels.column("item_id").to_pylist()
    gold: list[bool] = labels.column("is_gold").to_pylist()
    data: list[dict[str, JsonValue] | None]
    if items is not None:
        data = [None if (item := items.get(i)) is None else item.data for i in ids]
    else:  # [data, metadata] a cell
        data = [None if cell is None else cell[0] for cell in _decoded(labels["data"])]
    columns = tuple(data_column(f) for f in data_fields)
    n = len(ids)
    frame = pd.DataFrame(
        {
            "item_id": _objects(ids),
            "split": _objects(assign_splits(ids, salt, fractions, gold)),
            "label": _objects(_decoded(labels["label"])),
            "confidence": labels.column("confidence").to_numpy(),
            "weight": np.ones(n),
            "n_annotations": labels.column("n_annotations").to_numpy(),
            "method": _objects(labels.column("method").to_pylist()),
            "is_gold": np.asarray(gold, dtype=bool),
            "reviewed": np.asarray(labels.column("reviewed").to_pylist(), dtype=bool),
            "annotators": _objects(labels.column("annotators").to_pylist()),
            "batch_id": _objects(labels.column("batch_id").to_pylist()),
            "round": labels.column("round").to_numpy(),
            **{
                column: _objects([None if d is None else d.get(name) for d in data])
                for name, column in zip(data_fields, columns, strict=True)
            },
        },
        columns=[*LABEL_COLUMNS, *columns],
    )
    missing = tuple(i for i, d in zip(ids, data, strict=True) if d is None)
    return Table(rows=frame, data_columns=columns, missing_items=missing)


def _decoded(texts: pa.ChunkedArray) -> list[Any]:
    """A column of JSON texts (null: ``None``) decoded in one parse: a JSON array of them."""
    filled = pc.fill_null(texts, "null")
    return list(json.loads("[" + ",".join(filled.to_pylist()) + "]")) if len(texts) else []


def _objects(values: Sequence[object]) -> pd.Series:
    """Python values as they are (``None``, lists, dicts, strings): no inference to a string
    dtype, which has NaN for ``None`` and makes every cell read back a Python object again."""
    return pd.Series(values, dtype=object)
