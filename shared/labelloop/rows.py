"""Training rows as of a labeling round: a full dataset version's labels with the rounds after it
applied (:class:`~labelloop.events.RoundExported`).

The exporter writes every format of a full version only now and then (``export.every_n_labels``);
in between each round adds a *delta*: a labels-only Parquet file with the rows of the items the
round touched, and in its metadata the touched items that have no row any more. A row depends on
its item alone (its label, its split from a hash of its id, the export policy), so applying the
deltas in round order to the base gives, row for row, the labels a full version of that round
would hold. The exporter writes them, the trainer reads them: both use this module.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["REMOVED_KEY", "apply_deltas", "delta_bytes", "removed_of"]

REMOVED_KEY = b"labelloop.removed"
"""Parquet metadata key of a delta: JSON list of the touched item ids that have no row now."""


def delta_bytes(rows: pa.Table, removed: Iterable[str]) -> bytes:
    """A delta file: the round's rows, and the ids of its touched items that have none now."""
    metadata = {**(rows.schema.metadata or {}), REMOVED_KEY: json.dumps(sorted(removed)).encode()}
    sink = io.BytesIO()
    pq.write_table(rows.replace_schema_metadata(metadata), sink, compression="zstd")
    return sink.getvalue()


def removed_of(table: pa.Table) -> list[str]:
    raw = (table.schema.metadata or {}).get(REMOVED_KEY)
    removed: list[str] = json.loads(raw) if raw else []
    return removed


def apply_deltas(base: bytes | None, deltas: Sequence[bytes]) -> pa.Table:
    """The base version's labels (``None``: no version yet) with each delta applied in order: a
    delta's row replaces the item's earlier one, and its removed items lose theirs. Sorted by
    item id, as a full version is."""
    current = _plain(pq.read_table(io.BytesIO(base))) if base is not None else None
    for raw in deltas:
        delta = pq.read_table(io.BytesIO(raw))
        touched = pa.array(
            [*delta.column("item_id").to_pylist(), *removed_of(delta)], type=pa.string()
        )
        rows = _plain(delta)
        if current is None:
            current = rows
            continue
        kept = current.filter(pc.invert(pc.is_in(current.column("item_id"), value_set=touched)))
        current = pa.concat_tables([kept, rows.cast(kept.schema)])
    if current is None:
        raise ValueError("no base version and no deltas: there are no rows yet")
    return current.sort_by("item_id")


def _plain(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None)
