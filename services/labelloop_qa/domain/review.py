"""Which labels need an expert: low confidence, strong disagreement, confident model contradiction.

* **low_confidence**: the consensus posterior of the chosen label is under ``min_confidence``.
* **disagreement**: two or more ratings and no class holds a strict majority of them (a 1-1 split,
  1-1-1, 2-2-1 ...). Checked first: an item that is both is reported as a disagreement.
* **model_contradiction** (confident learning, Northcutt et al. 2021, in its simplest form): the
  model's *out-of-sample* probability for another class than the released label exceeds the
  project's ``model_contradiction_threshold``. Out-of-sample matters: a model that saw the label in
  training agrees with it by construction. The loop checks each batch against the prediction of
  the model that chose it (``prediction_contradictions``), which never saw these items;
  ``model_contradictions`` does the same for a matrix of out-of-sample probabilities.

Gold items and expert-reviewed items are never flagged: their answer is already authoritative.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from labelloop_qa.domain.ratings import FloatArray, IntArray

__all__ = [
    "Contradiction",
    "Flag",
    "flag_items",
    "model_contradictions",
    "prediction_contradictions",
]


@dataclass(frozen=True)
class Flag:
    index: int
    reason: str


def flag_items(
    counts: IntArray,
    label: IntArray,
    confidence: FloatArray,
    *,
    min_confidence: float,
    exempt: NDArray[np.bool_] | None = None,
) -> list[Flag]:
    """Flags over items (rows of ``counts``); items with no label (-1) are never flagged."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1)
    top = counts.max(axis=1) if counts.shape[1] else np.zeros(len(counts))
    disagreement = (totals >= 2) & (2 * top <= totals)
    low = np.nan_to_num(confidence, nan=1.0) < min_confidence
    ok = label >= 0
    if exempt is not None:
        ok &= ~exempt
    flags = []
    for i in np.nonzero(ok & (disagreement | low))[0].tolist():
        flags.append(Flag(i, "disagreement" if disagreement[i] else "low_confidence"))
    return flags


@dataclass(frozen=True)
class Contradiction:
    item_id: str
    label: str
    model_label: str
    model_probability: float


def model_contradictions(
    item_ids: Sequence[str],
    labels: Sequence[str],
    proba: ArrayLike,
    classes: Sequence[Any],
    *,
    threshold: float,
) -> list[Contradiction]:
    """Labels that the model's out-of-sample probabilities confidently contradict.

    ``proba`` columns follow ``classes`` (the model's ``classes_``; a model trained before every
    class was seen has fewer columns). A label the model has no column for is not judged.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape != (len(item_ids), len(classes)):
        raise ValueError("proba must be items x classes, matching item_ids and classes")
    names = [str(c) for c in classes]
    col = {c: j for j, c in enumerate(names)}
    own = np.array([col.get(str(lab), -1) for lab in labels], dtype=np.int64)
    judged = own >= 0
    other = p.copy()
    rows = np.nonzero(judged)[0]
    other[rows, own[rows]] = -np.inf
    best = np.argmax(other, axis=1) if len(names) else np.zeros(len(p), dtype=np.int64)
    best_p = other[np.arange(len(p)), best] if len(names) else np.zeros(len(p))
    hit = judged & (best_p > threshold)
    return [
        Contradiction(str(item_ids[i]), str(labels[i]), names[best[i]], float(best_p[i]))
        for i in np.nonzero(hit)[0].tolist()
    ]


def prediction_contradictions(
    labels: Mapping[str, Any],
    predictions: Mapping[str, tuple[Any, float]],
    *,
    threshold: float,
) -> dict[str, tuple[str, float]]:
    """Items whose consensus label a confident prediction contradicts: item -> (predicted
    label, its probability). Only single-label values are judged."""
    found: dict[str, tuple[str, float]] = {}
    for item_id, label in labels.items():
        predicted = predictions.get(item_id)
        if predicted is None or not isinstance(label, str) or not isinstance(predicted[0], str):
            continue
        model_label, probability = predicted
        if model_label != label and probability > threshold:
            found[item_id] = (model_label, float(probability))
    return found
