"""Batch composition: overlapped tasks for agreement, gold honeypots, a seeded shuffle."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labelloop.project import QualityConfig

__all__ = ["PlannedTask", "compose_batch", "expected_annotations_per_task", "gold_count"]


@dataclass(frozen=True, slots=True)
class PlannedTask:
    item_id: str
    annotations_required: int
    is_gold: bool
    score: float | None


def expected_annotations_per_task(quality: QualityConfig) -> float:
    """Mean annotations a task costs under the project's overlap settings."""
    return 1.0 + quality.overlap_fraction * (quality.annotators_per_overlapped_item - 1)


def gold_count(n_tasks: int, quality: QualityConfig, n_gold_available: int) -> int:
    """Gold tasks in a batch of ``n_tasks``: ``gold_fraction`` of it, rounded, at least one
    when the fraction is positive and the batch has room for a real item beside it."""
    if quality.gold_fraction <= 0 or n_gold_available <= 0 or n_tasks < 2:
        return 0
    wanted = max(1, round(n_tasks * quality.gold_fraction))
    return min(wanted, n_gold_available, n_tasks - 1)


def compose_batch(
    selected: Sequence[str],
    scores: Sequence[float | None],
    gold: Sequence[str],
    quality: QualityConfig,
    *,
    seed: int,
    max_annotations: int | None = None,
) -> list[PlannedTask]:
    """The tasks of one batch, shuffled with ``seed``.

    ``selected`` are the sampled items (with their selection scores), ``gold`` the honeypots
    to mix in (already chosen, see ``gold_count``). ``overlap_fraction`` of all tasks (rounded)
    get ``annotators_per_overlapped_item`` annotators, the rest one. If ``max_annotations`` is
    given, overlap is reduced first, then the tail of ``selected``, so the batch never costs more.
    """
    rng = np.random.default_rng(seed)
    items = list(selected)
    item_scores = list(scores)
    n_gold = len(gold)
    k = quality.annotators_per_overlapped_item
    if max_annotations is not None:
        items = items[: max(0, max_annotations - n_gold)]
        if not items:
            n_gold = min(n_gold, max(0, max_annotations))
    ids = items + list(gold[:n_gold])
    is_gold = np.r_[np.zeros(len(items), bool), np.ones(n_gold, bool)]
    all_scores = item_scores[: len(items)] + [None] * n_gold
    n = len(ids)
    if n == 0:
        return []
    n_overlap = min(n, math.floor(n * quality.overlap_fraction + 0.5))
    if max_annotations is not None:
        n_overlap = min(n_overlap, max(0, (max_annotations - n) // (k - 1)))
    required = np.ones(n, dtype=np.int64)
    required[rng.choice(n, size=n_overlap, replace=False)] = k
    order = rng.permutation(n)
    return [PlannedTask(ids[i], int(required[i]), bool(is_gold[i]), all_scores[i]) for i in order]
