"""Labels the model doubts: a released label its out-of-sample prediction contradicts.

Confident learning in its simplest form (Northcutt et al., 2021, "Confident Learning: Estimating
Uncertainty in Dataset Labels"): a model that never saw a row in training (K-fold, see
:func:`labelloop_trainer.domain.training.out_of_sample_proba`) gives another class most of its
probability. On crowd labels these rows are mostly the crowd's mistakes (a lone label by a
confuser, a spammer's answer before QA caught them), and an expert looking at a handful of them
per round buys more accuracy than more labels would (``bench/README.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.events import SuspectLabel

__all__ = ["suspect_labels"]

Array = npt.NDArray[Any]


def suspect_labels(
    item_ids: Sequence[str],
    labels: Sequence[str],
    oos_proba: Array,
    classes: Sequence[str],
    *,
    threshold: float,
    settled: set[str],
    batches: Mapping[str, str | None] | None = None,
    limit: int = 200,
) -> list[SuspectLabel]:
    """Rows whose label gets at most ``1 - threshold`` out of sample while another class gets at
    least ``threshold``; rows in ``settled`` (gold, expert-reviewed) are never suspects. Most
    confident contradiction first (ties by item id), at most ``limit``."""
    if len(item_ids) == 0:
        return []
    index = {c: k for k, c in enumerate(classes)}
    given = np.asarray([index.get(str(v), -1) for v in labels])
    known = given >= 0
    p_given = np.where(known, oos_proba[np.arange(len(given)), np.maximum(given, 0)], 0.0)
    best = np.argmax(oos_proba, axis=1)
    p_best = oos_proba[np.arange(len(given)), best]
    found = [
        (float(p_best[k]), item_ids[k], k)
        for k in np.flatnonzero(known & (p_given <= 1.0 - threshold) & (p_best >= threshold))
        if item_ids[k] not in settled and best[k] != given[k]
    ]
    found.sort(key=lambda f: (-f[0], f[1]))
    return [
        SuspectLabel(
            item_id=item,
            label=str(labels[k]),
            model_label=str(classes[int(best[k])]),
            probability=round(p, 6),
            batch_id=(batches or {}).get(item),
        )
        for p, item, k in found[:limit]
    ]
