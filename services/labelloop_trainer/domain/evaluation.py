"""Scores of a model on held-out labels: accuracy, macro-F1, per class, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

Array = npt.NDArray[Any]

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True, slots=True)
class Evaluation:
    n: int
    accuracy: float
    macro_f1: float
    """Macro-F1 over the classes present in truth or predictions (scikit-learn's default)."""
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    """Rows: true class, columns: predicted class, both in the project's class order."""

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for ``ModelTrained.metrics``."""
        out = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
        out[f"{prefix}n"] = float(self.n)
        for cls, scores in self.per_class.items():
            out[f"{prefix}f1.{cls}"] = scores["f1"]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": self.per_class,
            "confusion": self.confusion,
        }


def evaluate(y_true: Array, y_pred: Array, classes: Sequence[str]) -> Evaluation:
    if len(y_true) == 0:
        raise ValueError("nothing to evaluate on")
    labels = list(classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = {
        cls: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": float(support[i]),
        }
        for i, cls in enumerate(labels)
    }
    return Evaluation(
        n=len(y_true),
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    )
