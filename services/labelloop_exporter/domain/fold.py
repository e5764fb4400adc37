"""A project's labels as of a round, kept compact: one Arrow row per labeled item, and the few
rounds folded since as Python objects.

The exporter folds every round into the labels of the rounds before it, and keeps the result
between rounds so that exporting round *n* reads round *n* alone. Kept as
:class:`~labelloop_exporter.domain.labels.CurrentLabel` objects (a pydantic label each) that
cost about 1.4 kB a label: 125 MB at 90,000 labels, growing all campaign. A :class:`LabelFold`
keeps them as Arrow columns (about 100 bytes a label), sorted by item id, plus the labels of
the rounds folded since the last compaction in a dict, which :data:`COMPACT_AT` bounds.

A fold is immutable: :meth:`LabelFold.then` returns the next round's fold and leaves this one as
it was (the exporter reads both: the rows a round's items had, and have). Each row also keeps its
item's data once a version has read it (an item's data never changes), so the next version reads
only the data of items labeled since.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from labelloop.events import ConsensusLabel, LabelsReady
from labelloop_exporter.domain.labels import CurrentLabel, fold_round
from labelloop_exporter.domain.table import ItemData

__all__ = ["COMPACT_AT", "FOLD_SCHEMA", "LabelFold", "fold_table"]

FOLD_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("label", pa.string()),
        ("confidence", pa.float64()),
        ("method", pa.string()),
        ("n_annotations", pa.int64()),
        ("is_gold", pa.bool_()),
        ("reviewed", pa.bool_()),
        ("annotators", pa.list_(pa.string())),
        ("batch_id", pa.string()),
        ("round", pa.int64()),
        ("data", pa.string()),
    ]
)
"""A fold's rows: what a dataset row takes from its label (``label``: the value as JSON text,
``annotators`` sorted, ``is_gold`` sticky), and ``data``: the item's data and metadata as JSON
text (``[data, metadata]``), null until a version read it."""

COMPACT_AT = 4096
"""Labels folded since the last compaction at most: the next round merges them into the rows."""


def fold_table(labels: Mapping[str, CurrentLabel]) -> pa.Table:
    """Labels as a fold's rows (no data yet), sorted by item id."""
    ids = sorted(labels)
    chosen = [labels[i] for i in ids]
    return pa.table(
        {
            "item_id": ids,
            "label": [json.dumps(c.label.label) for c in chosen],
            "confidence": [float(c.label.confidence) for c in chosen],
            "method": [c.label.method for c in chosen],
            "n_annotations": [int(c.label.n_annotations) for c in chosen],
            "is_gold": [bool(c.is_gold) for c in chosen],
            "reviewed": [bool(c.label.reviewed) for c in chosen],
            "annotators": [sorted(c.label.annotators) for c in chosen],
            "batch_id": [c.batch_id for c in chosen],
            "round": [int(c.round) for c in chosen],
            "data": pa.nulls(len(ids), pa.string()),
        },
        schema=FOLD_SCHEMA,
    )


def _row_label(row: Mapping[str, object]) -> CurrentLabel:
    """A fold row as the label it was folded from (what a row depends on, the same)."""
    item_id = str(row["item_id"])
    batch_id = str(row["batch_id"])
    is_gold = bool(row["is_gold"])
    label = ConsensusLabel.model_construct(
        item_id=item_id,
        label=json.loads(str(row["label"])),
        confidence=float(row["confidence"]),  # type: ignore[arg-type]
        method=str(row["method"]),
        n_annotations=int(row["n_annotations"]),  # type: ignore[call-overload]
        is_gold=is_gold,
        reviewed=bool(row["reviewed"]),
        annotators=list(row["annotators"]),  # type: ignore[call-overload]
        batch_id=batch_id,
    )
    return CurrentLabel(label, int(row["round"]), batch_id, is_gold)  # type: ignore[call-overload]


_GONE = None


@dataclass(frozen=True)
class LabelFold(Mapping[str, CurrentLabel]):
    """One label per item: ``rows`` (:data:`FOLD_SCHEMA`, sorted by item id) overlaid by
    ``recent`` (item -> its label now, ``None``: it has none)."""

    rows: pa.Table = field(default_factory=FOLD_SCHEMA.empty_table)
    ids: list[str] = field(default_factory=list)
    """``rows``' item ids, for a binary search (the ids are also the keys of a version)."""
    recent: dict[str, CurrentLabel | None] = field(default_factory=dict)

    # ------------------------------------------------------------------ lookups

    def _row(self, item_id: str) -> int | None:
        k = bisect.bisect_left(self.ids, item_id)
        return k if k < len(self.ids) and self.ids[k] == item_id else None

    def __getitem__(self, item_id: str) -> CurrentLabel:
        if item_id in self.recent:
            found = self.recent[item_id]
            if found is None:
                raise KeyError(item_id)
            return found
        k = self._row(item_id)
        if k is None:
            raise KeyError(item_id)
        return _row_label(self.rows.slice(k, 1).to_pylist()[0])

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        if item_id in self.recent:
            return self.recent[item_id] is not None
        return self._row(item_id) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.compacted().ids)

    def __len__(self) -> int:
        in_rows = sum(1 for i in self.recent if self._row(i) is not None)
        added = sum(1 for v in self.recent.values() if v is not None)
        return len(self.ids) - in_rows + added

    # ------------------------------------------------------------------ folding

    def then(self, event: LabelsReady) -> LabelFold:
        """The labels after one more round (:func:`~labelloop_exporter.domain.labels.fold_round`);
        this fold stays as it was."""
        touched = {label.item_id for label in event.labels} | set(event.withdrawn)
        scratch = {i: found for i in touched if (found := self.get(i)) is not None}
        fold_round(scratch, event)
        recent = {**self.recent, **{i: scratch.get(i, _GONE) for i in touched}}
        folded = LabelFold(self.rows, self.ids, recent)
        return folded.compacted() if len(recent) >= COMPACT_AT else folded

    def compacted(self) -> LabelFold:
        """The same labels with ``recent`` merged into the rows (an item keeps its data)."""
        if not self.recent:
            return self
        touched = pa.array(sorted(self.recent), type=pa.string())
        kept = self.rows.filter(pc.invert(pc.is_in(self.rows.column("item_id"), touched)))
        changed = {i: c for i, c in self.recent.items() if c is not None}
        new = fold_table(changed)
        if len(new):  # a relabeled item's data stays what it was
            known = self._data_of(list(changed))
            new = new.set_column(
                new.schema.get_field_index("data"),
                "data",
                pa.array([known.get(i) for i in new.column("item_id").to_pylist()], pa.string()),
            )
        rows = pa.concat_tables([kept, new]).sort_by("item_id").combine_chunks()
        return LabelFold(rows, rows.column("item_id").to_pylist(), {})

    def _data_of(self, item_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for item_id in item_ids:
            k = self._row(item_id)
            if k is not None:
                raw = self.rows.column("data")[k].as_py()
                if raw is not None:
                    found[item_id] = raw
        return found

    # ------------------------------------------------------------------ item data

    def without_data(self) -> list[str]:
        """Labeled items whose data no version has read yet."""
        rows = self.compacted().rows
        missing: list[str] = (
            rows.filter(pc.is_null(rows.column("data"))).column("item_id").to_pylist()
        )
        return missing

    def with_data(self, found: Mapping[str, ItemData]) -> LabelFold:
        """This fold (compacted) with the data of the items in ``found`` kept in their rows."""
        fold = self.compacted()
        if not found:
            return fold
        column = fold.rows.column("data").to_pylist()
        for k, item_id in enumerate(fold.ids):
            item = found.get(item_id)
            if item is not None and column[k] is None:
                column[k] = item.encode()
        rows = fold.rows.set_column(
            fold.rows.schema.get_field_index("data"), "data", pa.array(column, pa.string())
        )
        return LabelFold(rows, fold.ids, {})

    def table(self) -> pa.Table:
        """Every row (compacted), sorted by item id: what a version is built from."""
        return self.compacted().rows
