"""The candidates of one batch: the unlabeled pool as arrays, gold honeypots beside it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import JsonValue

__all__ = ["Candidates", "candidates", "proba_rows", "strata_of"]


@dataclass(frozen=True, slots=True)
class Candidates:
    item_ids: list[str]
    """Unlabeled items no batch holds yet, sorted by id (an order independent of ingestion)."""
    gold_ids: list[str]
    """Gold items a batch may use as honeypots, sorted by id."""


def candidates(
    item_ids: Sequence[str],
    is_gold: Sequence[bool],
    *,
    taken: Collection[str],
    recent_gold: Collection[str] = (),
) -> Candidates:
    """Split the pool: items with a known answer are gold (never labeled, reused as honeypots,
    but not the ones the last batches used); the rest are candidates unless a batch took them."""
    pairs = sorted(zip(item_ids, is_gold, strict=True))
    pool = [i for i, gold in pairs if not gold and i not in taken]
    gold = [i for i, g in pairs if g and i not in recent_gold]
    return Candidates(pool, gold)


def proba_rows(
    item_ids: Sequence[str], rows: Mapping[str, int], proba: NDArray[np.floating]
) -> NDArray[np.float64]:
    """The probability rows of ``item_ids``; NaN for items the model did not score."""
    out = np.full((len(item_ids), proba.shape[1]), np.nan)
    index = np.asarray([rows.get(i, -1) for i in item_ids], dtype=np.int64)
    known = index >= 0
    out[known] = proba[index[known]]
    return out


def strata_of(metadata: Sequence[Mapping[str, JsonValue]], field: str) -> NDArray[np.object_]:
    """The metadata value of ``field`` per item (``None`` when missing), for stratified sampling."""
    out = np.empty(len(metadata), dtype=object)
    for j, meta in enumerate(metadata):
        value = meta.get(field)
        out[j] = (
            value if isinstance(value, str | int | float | bool) or value is None else str(value)
        )
    return out
