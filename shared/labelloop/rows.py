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
    item id, as a full version is.

    One pass over the base whatever the number of deltas: the deltas are read newest first,
    each keeping the rows of items no later delta touched, and the base keeps the rows of
    items no delta touched."""
    touched: set[str] = set()
    newest_first: list[pa.Table] = []
    for raw in reversed(deltas):
        delta = pq.read_table(io.BytesIO(raw))
        ids = delta.column("item_id").to_pylist()
        removed = removed_of(delta)
        if touched:
            delta = delta.filter(pa.array([i not in touched for i in ids], type=pa.bool_()))
        newest_first.append(_plain(delta))
        touched.update(ids)
        touched.update(removed)
    parts = newest_first[::-1]
    if base is not None:
        rows = _plain(pq.read_table(io.BytesIO(base)))
        gone = pa.array(sorted(touched), type=pa.string())
        parts.insert(0, rows.filter(pc.invert(pc.is_in(rows.column("item_id"), value_set=gone))))
    if not parts:
        raise ValueError("no base version and no deltas: there are no rows yet")
    schema = parts[0].schema
    return pa.concat_tables([part.cast(schema) for part in parts]).sort_by("item_id")


def _plain(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None)
