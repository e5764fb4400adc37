"""A project's item pool as arrays: ids, features, gold flags, metadata; taken items masked out."""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import JsonValue

__all__ = ["Pool", "PoolView"]


@dataclass(frozen=True, slots=True)
class PoolView:
    """The candidates of one selection: positions into the pool and their arrays."""

    positions: NDArray[np.int64]
    item_ids: NDArray[np.str_]
    X: NDArray[np.float32] | None
    gold_positions: NDArray[np.int64]


class Pool:
    """Every item the sampler has seen for one project, added chunk by chunk.

    Items with a known label are gold: never in the unlabeled pool, used as honeypots. Feature
    vectors come per chunk; the pool uses the dimension most items have, and an item without a
    vector of that dimension gets the mean vector (neither favoured nor excluded by diversity).
    """

    def __init__(self) -> None:
        self._chunks: dict[str, int] = {}
        self._ids: list[NDArray[np.str_]] = []
        self._gold: list[NDArray[np.bool_]] = []
        self._X: list[NDArray[np.float32] | None] = []
        self._meta: list[Sequence[Mapping[str, JsonValue]]] = []
        self._index: dict[str, int] = {}
        self._taken = np.zeros(0, dtype=bool)
        self._flat: tuple[NDArray[np.str_], NDArray[np.bool_], NDArray[np.float32] | None] | None
        self._flat = None

    def __len__(self) -> int:
        return len(self._index)

    def has_chunk(self, key: str) -> bool:
        return key in self._chunks

    def add_chunk(
        self,
        key: str,
        item_ids: Sequence[str],
        *,
        is_gold: Sequence[bool],
        metadata: Sequence[Mapping[str, JsonValue]],
        features: tuple[Sequence[str], NDArray[np.floating]] | None = None,
    ) -> int:
        """Add one ingest chunk (idempotent by ``key``); returns how many new items it added."""
        if key in self._chunks:
            return 0
        self._chunks[key] = len(self._ids)
        fresh = [i for i, item in enumerate(item_ids) if item not in self._index]
        ids = np.asarray([item_ids[i] for i in fresh], dtype=np.str_)
        X: NDArray[np.float32] | None = None
        if features is not None and len(fresh):
            f_ids, f_X = features
            row = {item: r for r, item in enumerate(f_ids)}
            rows = [row.get(str(item), -1) for item in ids]
            if all(r >= 0 for r in rows):
                X = np.asarray(f_X, dtype=np.float32)[rows]
        start = len(self._index)
        for offset, item in enumerate(ids):
            self._index[str(item)] = start + offset
        self._ids.append(ids)
        self._gold.append(np.asarray([bool(is_gold[i]) for i in fresh], dtype=bool))
        self._X.append(X)
        self._meta.append([metadata[i] for i in fresh])
        self._taken = np.r_[self._taken, np.zeros(len(ids), dtype=bool)]
        self._flat = None
        return len(ids)

    def mark_taken(self, item_ids: Iterable[str]) -> None:
        """Items handed out in a labeling batch leave the unlabeled pool for good."""
        pos = [self._index[i] for i in item_ids if i in self._index]
        self._taken[pos] = True

    def position(self, item_id: str) -> int | None:
        return self._index.get(item_id)

    @property
    def n_unlabeled(self) -> int:
        _ids, gold, _ = self._arrays()
        return int((~gold & ~self._taken).sum())

    def view(self, exclude: Iterable[str] = ()) -> PoolView:
        """Unlabeled candidates (not gold, not taken), and the gold items not in ``exclude``."""
        ids, gold, X = self._arrays()
        excluded = np.zeros(len(ids), dtype=bool)
        pos = [self._index[i] for i in exclude if i in self._index]
        excluded[pos] = True
        cand = np.flatnonzero(~gold & ~self._taken & ~excluded).astype(np.int64)
        gold_pos = np.flatnonzero(gold & ~excluded).astype(np.int64)
        return PoolView(cand, ids[cand], None if X is None else X[cand], gold_pos)

    def item_ids_at(self, positions: NDArray[np.int64]) -> list[str]:
        ids, _, _ = self._arrays()
        return [str(i) for i in ids[positions]]

    def strata(self, positions: NDArray[np.int64], field: str) -> NDArray[np.object_]:
        """The metadata value of ``field`` for each position (``None`` when missing)."""
        flat = [m.get(field) for chunk in self._meta for m in chunk]
        out = np.empty(len(positions), dtype=object)
        for j, p in enumerate(positions.tolist()):
            value = flat[p]
            out[j] = (
                value
                if isinstance(value, str | int | float | bool) or value is None
                else str(value)
            )
        return out

    def _arrays(self) -> tuple[NDArray[np.str_], NDArray[np.bool_], NDArray[np.float32] | None]:
        if self._flat is None:
            ids = np.concatenate(self._ids) if self._ids else np.empty(0, dtype=np.str_)
            gold = np.concatenate(self._gold) if self._gold else np.empty(0, dtype=bool)
            self._flat = (ids, gold, self._features(len(ids)))
        return self._flat

    def _features(self, n: int) -> NDArray[np.float32] | None:
        dims = Counter[int]()
        for ids, X in zip(self._ids, self._X, strict=True):
            if X is not None:
                dims[X.shape[1]] += len(ids)
        if not dims:
            return None
        dim = dims.most_common(1)[0][0]
        blocks = [X for X in self._X if X is not None and X.shape[1] == dim]
        mean = np.concatenate(blocks).mean(axis=0).astype(np.float32)
        out = np.empty((n, dim), dtype=np.float32)
        start = 0
        for ids, X in zip(self._ids, self._X, strict=True):
            stop = start + len(ids)
            out[start:stop] = X if X is not None and X.shape[1] == dim else mean
            start = stop
        return out
