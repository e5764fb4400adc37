"""A seeded simulated annotator crew, for tests and benchmarks of the consensus methods.

Behaviours match ``labelloop.project.SimulatedAnnotator``: ``good`` (right with probability
``accuracy``, else a uniformly random other class), ``confuser`` (errors go to the next class),
``spammer`` (uniformly random labels), ``constant`` (always class 0), ``adversary`` (with
probability ``accuracy`` picks the class after the truth, otherwise the truth: a systematic liar).
Everything is drawn in vectorised numpy; no loop over ratings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labelloop_qa.domain.ratings import IntArray, Ratings

__all__ = ["Crew", "simulate_crew"]


@dataclass(frozen=True)
class Crew:
    ratings: Ratings
    truth: IntArray
    """True class of each item (index into ``ratings.classes``)."""
    behaviours: tuple[str, ...]
    """Behaviour of each annotator (index into ``ratings.annotator_ids``)."""


def simulate_crew(
    *,
    n_items: int,
    n_classes: int,
    behaviours: Sequence[str],
    accuracies: Sequence[float] | None = None,
    labels_per_item: int = 3,
    class_weights: Sequence[float] | None = None,
    random_state: int = 0,
) -> Crew:
    """Each item gets ``labels_per_item`` distinct annotators drawn at random."""
    n_ann = len(behaviours)
    if labels_per_item > n_ann:
        raise ValueError("labels_per_item exceeds the number of annotators")
    rng = np.random.default_rng(random_state)
    acc = np.full(n_ann, 0.8) if accuracies is None else np.asarray(accuracies, dtype=float)
    p = None if class_weights is None else np.asarray(class_weights) / np.sum(class_weights)
    truth = rng.choice(n_classes, size=n_items, p=p)
    # distinct annotators per item: argsort of random keys, first labels_per_item columns
    who = np.argsort(rng.random((n_items, n_ann)), axis=1)[:, :labels_per_item].ravel()
    item = np.repeat(np.arange(n_items), labels_per_item)
    t = truth[item]
    kind = np.asarray(behaviours)[who]
    right = rng.random(len(item)) < acc[who]
    other = (t + rng.integers(1, n_classes, size=len(item))) % n_classes if n_classes > 1 else t
    label = np.where(right, t, other)
    confuser = kind == "confuser"
    label[confuser] = np.where(right[confuser], t[confuser], (t[confuser] + 1) % n_classes)
    spam = kind == "spammer"
    label[spam] = rng.integers(0, n_classes, size=int(spam.sum()))
    label[kind == "constant"] = 0
    adv = kind == "adversary"
    label[adv] = np.where(right[adv], (t[adv] + 1) % n_classes, t[adv])
    ratings = Ratings(
        item.astype(np.int64),
        who.astype(np.int64),
        label.astype(np.int64),
        np.array([f"item-{i:07d}" for i in range(n_items)], dtype=object),
        np.array([f"ann-{a:03d}" for a in range(n_ann)], dtype=object),
        np.array([f"c{k}" for k in range(n_classes)], dtype=object),
    )
    return Crew(ratings, truth.astype(np.int64), tuple(behaviours))
