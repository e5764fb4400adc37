"""The candidates of one batch: the unlabeled pool as arrays, gold honeypots beside it.

At a million items a pass over the pool's ids in Python costs more than the whole selection, so
the pool is indexed once per state of the catalog (:class:`PoolIndex`: the ids in order, which
are gold, which have a feature row in each space, and where each model's scores stand), and a
batch's candidates are a mask over it, found by rank (:class:`FreePositions`): a random cut
reads the few positions it picks, not a list of the whole pool. Their feature rows are read on
demand (:class:`CandidateFeatures`): the selection asks for the prefiltered rows, or a cold
start's subsample, and no other row is stacked.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import overload

import numpy as np
from numpy.typing import NDArray
from pydantic import JsonValue

__all__ = [
    "CandidateFeatures",
    "Candidates",
    "FreePositions",
    "PoolIndex",
    "candidates",
    "ids_at",
    "proba_rows",
    "strata_of",
]


@dataclass(frozen=True, slots=True)
class Candidates:
    item_ids: Sequence[str]
    """Unlabeled items no batch holds yet, sorted by id (an order independent of ingestion)."""
    gold_ids: Sequence[str]
    """Gold items a batch may use as honeypots, sorted by id (looked up when asked for, as
    ``item_ids``: a cut reads a few of some thousand)."""
    free: FreePositions | None = field(default=None, compare=False)
    """Where ``item_ids`` stand in the :class:`PoolIndex` they were taken from."""

    @property
    def positions(self) -> NDArray[np.intp] | None:
        """Where each of ``item_ids`` stands in the :class:`PoolIndex` it was taken from (all of
        them: a strategy that scores the whole pool asks for this)."""
        return None if self.free is None else self.free.all()

    def ids_at(self, at: NDArray[np.integer]) -> list[str]:
        """``item_ids[k]`` for each ``k`` in ``at``, looked up together."""
        return ids_at(self.item_ids, at)


def ids_at(item_ids: Sequence[str], at: NDArray[np.integer]) -> list[str]:
    """``item_ids[k]`` for each ``k`` in ``at``: one lookup of them all for candidates taken
    from a :class:`PoolIndex`, not one per id."""
    if isinstance(item_ids, _IdsAt):
        return item_ids.take(at)
    return [item_ids[k] for k in np.asarray(at).tolist()]


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


class PoolIndex:
    """Every item of a catalog in id order, which are gold, and what is looked up by position
    (feature coverage per space, each model's score row): built once per state of the catalog and
    shared by every batch cut from it."""

    def __init__(self, item_ids: Iterable[str], gold: Container[str], *, tables: int = 4) -> None:
        self.ids: list[str] = sorted(item_ids)
        self._array = np.asarray(self.ids, dtype=object)
        self.gold = np.fromiter((i in gold for i in self.ids), dtype=bool, count=len(self.ids))
        self._gold_at = np.flatnonzero(self.gold)
        self._free = ~self.gold
        """Neither gold nor taken: the candidates, kept as batches take items. Replaced, never
        changed in place: the candidates of an earlier cut keep the mask they were taken from."""
        self._free_counts = _block_counts(self._free)
        self._coverage: dict[str, NDArray[np.bool_]] = {}
        self._tables: OrderedDict[str, NDArray[np.intp]] = OrderedDict()
        self._max_tables = tables
        self._taken: set[str] = set()

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, item_ids: Iterable[str]) -> NDArray[np.intp]:
        """Where each of ``item_ids`` stands in the index; -1 for an id it does not hold."""
        wanted = np.asarray(list(item_ids), dtype=object)
        if not len(wanted) or not len(self.ids):
            return np.full(len(wanted), -1, dtype=np.intp)
        at = np.searchsorted(self._array, wanted)
        at[at == len(self.ids)] = 0
        found = np.asarray(self._array[at] == wanted, dtype=bool)
        return np.where(found, at, -1).astype(np.intp)

    def candidates(
        self, *, taken: Collection[str], recent_gold: Collection[str] = ()
    ) -> Candidates:
        """:func:`candidates` of the indexed items: the same lists, and their positions."""
        self._untaken(taken)
        free = FreePositions(self._free, self._free_counts)
        recent = self.positions(recent_gold)
        usable = self._gold_at[~np.isin(self._gold_at, recent[recent >= 0])]
        return Candidates(_IdsAt(self._array, free), _IdsAt(self._array, usable), free)

    def _untaken(self, taken: Collection[str]) -> None:
        """Strike the items in ``taken`` off the mask of candidates. Batches only ever add to
        what is taken, so the ids of earlier calls are looked up once and struck off once: a cut
        searches its new ids only (searching all of them took most of a cut after some thousand
        batches), and no mask of the whole pool is built again, only copied."""
        wanted = taken if isinstance(taken, set | frozenset) else set(taken)
        if not self._taken <= wanted:  # something was given back: start again
            self._free = ~self.gold
            self._free_counts = _block_counts(self._free)
            self._taken = set()
        new = wanted - self._taken
        if new:
            at = self.positions(new)
            at = at[at >= 0]
            at = at[self._free[at]]  # gold, or named twice: not counted again
            free = self._free.copy()
            free[at] = False
            self._free = free
            self._free_counts = self._free_counts - np.bincount(
                at // _BLOCK, minlength=len(self._free_counts)
            )
            self._taken |= new

    def best_space(
        self, positions: NDArray[np.intp], spaces: Mapping[str, Container[str]]
    ) -> str | None:
        """The space (name -> the ids it has a row for) covering most of the items at
        ``positions``, as ``ProjectItems.best_space`` chooses it: producer vectors win ties,
        then the name; ``None`` when no space covers any."""
        scored = [
            (int(self._covered(name, rows)[positions].sum()), name.startswith("producer"), name)
            for name, rows in spaces.items()
        ]
        best = max(scored, default=None)
        return best[2] if best is not None and best[0] > 0 else None

    def _covered(self, name: str, rows: Container[str]) -> NDArray[np.bool_]:
        if name not in self._coverage:
            self._coverage[name] = np.fromiter(
                (i in rows for i in self.ids), dtype=bool, count=len(self.ids)
            )
        return self._coverage[name]

    def table_rows(self, key: str, table_ids: Sequence[str]) -> NDArray[np.intp]:
        """The row of a score table (its item ids, in its order) for every indexed item, -1 for
        an item it does not score; the last ``tables`` tables' are kept, by ``key``."""
        found = self._tables.get(key)
        if found is None:
            if table_ids == self.ids:
                found = np.arange(len(self.ids), dtype=np.intp)
            else:
                row = dict(zip(table_ids, range(len(table_ids)), strict=True))
                found = np.fromiter(
                    map(row.get, self.ids, repeat(-1)), dtype=np.intp, count=len(self.ids)
                )
            self._tables[key] = found
            while len(self._tables) > self._max_tables:
                self._tables.popitem(last=False)
        self._tables.move_to_end(key)
        return found


_BLOCK = 1 << 16
"""Items per block of a :class:`FreePositions` count: a lookup scans one block of the mask."""


def _block_counts(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """How many items of each :data:`_BLOCK` of ``mask`` are set."""
    blocks = -(-len(mask) // _BLOCK)
    padded = np.zeros(blocks * _BLOCK, dtype=bool)
    padded[: len(mask)] = mask
    counts: NDArray[np.int64] = padded.reshape(blocks, _BLOCK).sum(axis=1, dtype=np.int64)
    return counts


class FreePositions:
    """The positions where a mask is set, in order, found by rank: the *k*-th from counts per
    block of the mask, scanning one block. A random cut of a 10M-item pool picks 9 of them;
    listing them all (``np.flatnonzero``) took 70 ms and 80 MB a cut. :meth:`all` lists them,
    once, for a strategy that scores the whole pool.

    The mask must not change while this is in use (:class:`PoolIndex` replaces its mask)."""

    def __init__(self, mask: NDArray[np.bool_], counts: NDArray[np.int64]) -> None:
        self._mask = mask
        self._ends = np.cumsum(counts)
        self._all: NDArray[np.intp] | None = None

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, ranks: NDArray[np.integer]) -> NDArray[np.intp]:
        """The positions of the ``ranks``-th set items (negative ranks count from the end)."""
        ranks = np.asarray(ranks, dtype=np.intp)
        n = len(self)
        if ranks.size and (ranks.min() < -n or ranks.max() >= n):
            raise IndexError(f"rank out of range for {n} positions")
        ranks = np.where(ranks < 0, ranks + n, ranks)
        if self._all is not None:
            known: NDArray[np.intp] = self._all[ranks]
            return known
        blocks = np.searchsorted(self._ends, ranks, side="right")
        before = np.concatenate([[0], self._ends])[blocks]
        out = np.empty(ranks.shape, dtype=np.intp)
        for block in np.unique(blocks).tolist():
            here = blocks == block
            start = block * _BLOCK
            inside = np.flatnonzero(self._mask[start : start + _BLOCK])
            out[here] = start + inside[ranks[here] - before[here]]
        return out

    def all(self) -> NDArray[np.intp]:
        """Every position, in order."""
        if self._all is None:
            self._all = np.flatnonzero(self._mask)
        return self._all


class _IdsAt(Sequence[str]):
    """The ids at ``positions`` of an id array, looked up when asked for: a million-item pool's
    candidates are not copied into a list for the few a batch picks."""

    def __init__(
        self, ids: NDArray[np.object_], positions: FreePositions | NDArray[np.intp]
    ) -> None:
        self._ids = ids
        self._positions = positions

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, at: int) -> str: ...
    @overload
    def __getitem__(self, at: slice) -> Sequence[str]: ...
    def __getitem__(self, at: int | slice) -> str | Sequence[str]:
        if isinstance(at, slice):
            return _IdsAt(self._ids, self._every()[at])
        return self.take(np.asarray([at]))[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids[self._every()].tolist())

    def take(self, at: NDArray[np.integer]) -> list[str]:
        """The ids at ranks ``at``."""
        ranks = np.asarray(at, dtype=np.intp)
        ids: list[str] = self._ids[self._positions[ranks]].tolist()
        return ids

    def _every(self) -> NDArray[np.intp]:
        p = self._positions
        return p.all() if isinstance(p, FreePositions) else p


class CandidateFeatures:
    """The candidates' feature rows in one space, read on demand (a ``selection.FeatureRows``):
    at every position, the row ``ProjectItems.matrix(item_ids, space)`` would hold there, without
    stacking the others. An item without a row in the space gets the mean row of the candidates
    that have one, as there; computing it reads them all, once, and only if such an item is read.
    """

    def __init__(
        self, item_ids: Sequence[str], rows: Mapping[str, NDArray[np.floating]], dim: int
    ) -> None:
        self._ids = item_ids
        self._rows = rows
        self._dim = dim
        self._mean: NDArray[np.float32] | None = None

    def __call__(self, positions: NDArray[np.intp]) -> NDArray[np.float32]:
        ids = ids_at(self._ids, positions)
        has = np.fromiter((i in self._rows for i in ids), dtype=bool, count=len(ids))
        out = np.zeros((len(ids), self._dim), dtype=np.float32)
        if has.any():
            present = [self._rows[i] for i, h in zip(ids, has.tolist(), strict=True) if h]
            out[has] = np.asarray(present, dtype=np.float32)
        if not has.all():
            out[~has] = self._fill()
        return out

    def _fill(self) -> NDArray[np.float32]:
        if self._mean is None:
            present = [self._rows[i] for i in self._ids if i in self._rows]
            self._mean = (
                np.asarray(present, dtype=np.float32).mean(axis=0)
                if present
                else np.zeros(self._dim, dtype=np.float32)
            )
        return self._mean
