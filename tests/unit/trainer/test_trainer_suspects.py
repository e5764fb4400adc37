"""Suspect labels: what the retrained model contradicts out of sample, and what it may not."""

from __future__ import annotations

import numpy as np

from labelloop_trainer.domain.suspects import suspect_labels

CLASSES = ["a", "b", "c"]


def test_only_confident_contradictions_of_unsettled_labels_are_suspects() -> None:
    oos = np.array(
        [
            [0.02, 0.95, 0.03],  # labeled a, the model says b at 0.95: suspect
            [0.10, 0.85, 0.05],  # labeled a, but 0.85 < 0.9: not confident enough
            [0.01, 0.01, 0.98],  # labeled a, says c at 0.98: suspect, the most confident
            [0.01, 0.97, 0.02],  # labeled b: the model agrees
            [0.01, 0.98, 0.01],  # labeled a but settled (gold or reviewed)
        ]
    )
    found = suspect_labels(
        ["x0", "x1", "x2", "x3", "x4"],
        ["a", "a", "a", "b", "a"],
        oos,
        CLASSES,
        threshold=0.9,
        settled={"x4"},
        batches={"x2": "batch-1"},
    )
    assert [(s.item_id, s.label, s.model_label) for s in found] == [
        ("x2", "a", "c"),
        ("x0", "a", "b"),
    ]
    assert found[0].probability == 0.98
    assert found[0].batch_id == "batch-1"
    assert found[1].batch_id is None
    assert (
        suspect_labels(
            ["x0", "x2"], ["a", "a"], oos[[0, 2]], CLASSES, threshold=0.9, settled=set(), limit=1
        )[0].item_id
        == "x2"
    )
    assert suspect_labels([], [], np.zeros((0, 3)), CLASSES, threshold=0.9, settled=set()) == []
