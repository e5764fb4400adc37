"""When to stop labeling: stabilising predictions (Bloodgood & Vijay-Shanker, CoNLL 2009).

Each trained model predicts a fixed *stop set* of unlabeled items; consecutive models are compared
on the items both predicted. When the share of identical predictions stays at or above
``training.convergence_agreement`` for ``training.convergence_rounds`` consecutive pairs of models,
the learning curve has flattened: the model no longer changes its mind, so more labels are unlikely
to help. (The paper uses Cohen's kappa over a window of three pairs with threshold 0.99; we compare
plain agreement, which the project config speaks in, and report kappa beside it.)

The stop set is the ``size`` items with the smallest salted hash: a sample that does not depend on
the model, so each pair of models is compared on the same items (new items may enter the stop set
and labeled items leave the pool, so the comparison uses the intersection).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

__all__ = [
    "MIN_COMMON",
    "Agreement",
    "StopSet",
    "compare_predictions",
    "converged",
    "stop_set",
]

MIN_COMMON = 20
"""With fewer common stop-set items, a pair of models says nothing and cannot count to stop."""


def _rank(item_id: str, salt: str) -> bytes:
    return hashlib.sha256(f"{salt}\x1f{item_id}".encode()).digest()


def stop_set(item_ids: Sequence[str], size: int, salt: str) -> list[str]:
    """The ``size`` item ids with the smallest salted hash (deterministic, model-independent),
    smallest first. A heap of ``size``, not a sort of the pool: 1M ids in 0.44 s, not 0.93."""
    return heapq.nsmallest(size, item_ids, key=lambda i: _rank(i, salt))


class StopSet:
    """A project's :func:`stop_set`, drawn at each training from what is kept between them.

    Hashing every id of the pool took 5 s a training at 10M items. The hashes depend only on the
    ids and the salt, so the ``2 * size`` smallest over the whole catalog are kept, and a training
    takes the first ``size`` of them still in its pool. That is exactly :func:`stop_set` of the
    pool: an id of the pool not kept hashes above every kept one. Drawn again over the catalog
    when it changed size (a catalog only grows), and over the pool itself when fewer than
    ``size`` of the kept ids are left in it (most of the catalog labeled)."""

    def __init__(self, size: int, salt: str) -> None:
        self.size = size
        self.salt = salt
        self._catalog_size = -1
        self._kept: list[str] = []

    def positions(self, catalog: Sequence[str], pool: Sequence[str]) -> list[int]:
        """Where the stop set's ids stand in ``pool`` (sorted ids, all of them in ``catalog``),
        in pool order."""
        if len(catalog) != self._catalog_size:
            self._kept = stop_set(catalog, 2 * self.size, self.salt)
            self._catalog_size = len(catalog)
        found = []
        for item_id in self._kept:
            at = bisect.bisect_left(pool, item_id)
            if at < len(pool) and pool[at] == item_id:
                found.append(at)
                if len(found) == self.size:
                    break
        if len(found) < min(self.size, len(pool)):
            chosen = stop_set(pool, self.size, self.salt)
            found = [bisect.bisect_left(pool, item_id) for item_id in chosen]
        return sorted(found)


@dataclass(frozen=True, slots=True)
class Agreement:
    share: float | None
    """Share of common stop-set items both models predict alike (``None``: too few in common)."""
    kappa: float | None
    n_common: int


def _kappa(a: Array, b: Array) -> float:
    labels = np.unique(np.concatenate([a, b]))
    observed = float(np.mean(a == b))
    expected = float(sum(np.mean(a == c) * np.mean(b == c) for c in labels))
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def compare_predictions(
    previous: Mapping[str, str], current: Mapping[str, str], min_common: int = MIN_COMMON
) -> Agreement:
    """Agreement of two models' predicted classes on the items both predicted."""
    common = sorted(set(previous) & set(current))
    if len(common) < min_common:
        return Agreement(None, None, len(common))
    a = np.array([previous[i] for i in common])
    b = np.array([current[i] for i in common])
    return Agreement(float(np.mean(a == b)), _kappa(a, b), len(common))


def converged(history: Sequence[float | None], rounds: int, threshold: float) -> bool:
    """True when the last ``rounds`` consecutive-model agreements all reach ``threshold``."""
    if rounds < 1 or len(history) < rounds:
        return False
    return all(h is not None and h >= threshold for h in history[-rounds:])
