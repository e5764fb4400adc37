"""``labelloop.rows``: a base version's rows with round deltas applied, checked against the
plain reading of what a delta means (the item's newest row wins; a removal drops it)."""

from __future__ import annotations

import io
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelloop.rows import apply_deltas, delta_bytes, removed_of

SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("round", pa.int64(), nullable=False),
    ]
)


def _table(rows: dict[str, tuple[str, int]]) -> pa.Table:
    ids = sorted(rows)
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array([rows[i][0] for i in ids], pa.string()),
            pa.array([rows[i][1] for i in ids], pa.int64()),
        ],
        schema=SCHEMA,
    )


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@pytest.mark.parametrize("seed", range(40))
def test_applied_deltas_are_the_newest_row_of_each_item(seed: int) -> None:
    rng = random.Random(seed)
    universe = [f"i{k:03d}" for k in range(60)]
    expected = dict.fromkeys(rng.sample(universe, rng.randint(0, 30)), ("a", 0))
    base = _parquet(_table(expected)) if expected or rng.random() < 0.5 else None
    deltas = []
    for number in range(1, rng.randint(1, 12) + 1):
        touched = rng.sample(universe, rng.randint(0, 8))
        rows = {i: (rng.choice("xyz"), number) for i in touched if rng.random() < 0.7}
        removed = [i for i in touched if i not in rows]
        deltas.append(delta_bytes(_table(rows), removed))
        expected.update(rows)
        for i in removed:
            expected.pop(i, None)
    if base is None and not deltas:
        return
    got = apply_deltas(base, deltas)
    assert got.to_pylist() == _table(expected).to_pylist()


def test_a_delta_says_what_it_removed_and_nothing_more() -> None:
    table = pq.read_table(io.BytesIO(delta_bytes(_table({"b": ("x", 1)}), ["c", "a"])))
    assert removed_of(table) == ["a", "c"]
    assert table.column("item_id").to_pylist() == ["b"]
    assert removed_of(_table({})) == []
    with pytest.raises(ValueError, match="no rows yet"):
        apply_deltas(None, [])
