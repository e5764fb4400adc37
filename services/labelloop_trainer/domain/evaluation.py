"""Scores of a model on held-out labels: accuracy, macro-F1, per class, confusion matrix; for a
multi-label model micro- and macro-F1 over labels, subset accuracy and Hamming loss; for a NER
model entity-level F1 (computed in :mod:`labelloop_trainer.domain.ner`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

Array = npt.NDArray[Any]

__all__ = ["Evaluation", "evaluate", "evaluate_multilabel"]


@dataclass(frozen=True, slots=True)
class Evaluation:
    n: int
    accuracy: float
    macro_f1: float
    """Macro-F1 over the classes present in truth or predictions (scikit-learn's default)."""
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    """Rows: true class, columns: predicted class, both in the project's class order (empty for
    a multi-label model: its per-label counts are in ``per_class``)."""
    micro_f1: float | None = None
    """Multi-label: F1 over every (item, label) decision pooled (``None``: single-label)."""
    hamming_loss: float | None = None
    """Multi-label: the share of (item, label) decisions that are wrong."""
    entity_f1: float | None = None
    """NER: micro F1 over entities, exact match of type and both boundaries (``None``: not a
    sequence model). ``accuracy`` is then the share of tokens tagged right, ``macro_f1`` the
    mean of the entity types' exact F1 (:mod:`labelloop_trainer.domain.ner`)."""
    entity_precision: float | None = None
    entity_recall: float | None = None
    partial_f1: float | None = None
    """NER: SemEval-2013's partial-match F1 (an entity overlapping a true one counts half)."""

    @property
    def multilabel(self) -> bool:
        return self.micro_f1 is not None

    @property
    def promotion_metric(self) -> str:
        """What promotion compares: macro-F1 for single-label models, micro-F1 for multi-label
        ones (``labelloop_trainer.domain.multilabel``), exact entity F1 for NER models."""
        if self.entity_f1 is not None:
            return "entity_f1"
        return "micro_f1" if self.multilabel else "macro_f1"

    @property
    def promotion_score(self) -> float:
        if self.entity_f1 is not None:
            return self.entity_f1
        return self.micro_f1 if self.micro_f1 is not None else self.macro_f1

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for ``ModelTrained.metrics`` (multi-label: ``accuracy`` is the subset
        accuracy, also reported as ``subset_accuracy``)."""
        out = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
        if self.micro_f1 is not None and self.hamming_loss is not None:
            out[f"{prefix}micro_f1"] = self.micro_f1
            out[f"{prefix}subset_accuracy"] = self.accuracy
            out[f"{prefix}hamming_loss"] = self.hamming_loss
        if self.entity_f1 is not None:
            out[f"{prefix}entity_f1"] = self.entity_f1
            out[f"{prefix}entity_precision"] = self.entity_precision or 0.0
            out[f"{prefix}entity_recall"] = self.entity_recall or 0.0
            out[f"{prefix}entity_f1_partial"] = self.partial_f1 or 0.0
            out[f"{prefix}token_accuracy"] = self.accuracy
        out[f"{prefix}n"] = float(self.n)
        for cls, scores in self.per_class.items():
            out[f"{prefix}f1.{cls}"] = scores["f1"]
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": self.per_class,
            "confusion": self.confusion,
        }
        if self.multilabel:
            out.update(
                micro_f1=self.micro_f1,
                subset_accuracy=self.accuracy,
                hamming_loss=self.hamming_loss,
            )
        if self.entity_f1 is not None:
            out.update(
                entity_f1=self.entity_f1,
                entity_precision=self.entity_precision,
                entity_recall=self.entity_recall,
                entity_f1_partial=self.partial_f1,
                token_accuracy=self.accuracy,
            )
        return out


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


def evaluate_multilabel(y_true: Array, y_pred: Array, labels: Sequence[str]) -> Evaluation:
    """Multi-label scores of 0/1 matrices (one column per label, in ``labels`` order).

    ``accuracy`` is the subset accuracy (every label of the item right); ``macro_f1`` averages
    the labels present in truth or predictions, as single-label macro-F1 averages classes (a label
    nobody has and nobody predicted is not a zero); ``micro_f1`` pools every decision;
    ``hamming_loss`` is the share of wrong decisions. Counted here rather than by scikit-learn's
    functions, which take a one-column matrix for a binary problem of two classes."""
    truth = np.asarray(y_true).astype(bool).reshape(len(y_true), -1)
    predicted = np.asarray(y_pred).astype(bool).reshape(len(y_pred), -1)
    if len(truth) == 0:
        raise ValueError("nothing to evaluate on")
    tp = (truth & predicted).sum(axis=0).astype(np.float64)
    fp = (~truth & predicted).sum(axis=0).astype(np.float64)
    fn = (truth & ~predicted).sum(axis=0).astype(np.float64)
    per_class = {
        cls: {
            "precision": _ratio(tp[j], tp[j] + fp[j]),
            "recall": _ratio(tp[j], tp[j] + fn[j]),
            "f1": _ratio(2 * tp[j], 2 * tp[j] + fp[j] + fn[j]),
            "support": float(tp[j] + fn[j]),
        }
        for j, cls in enumerate(labels)
    }
    seen = [cls for j, cls in enumerate(labels) if tp[j] + fp[j] + fn[j] > 0]
    macro = float(np.mean([per_class[c]["f1"] for c in seen])) if seen else 0.0
    return Evaluation(
        n=len(truth),
        accuracy=float(np.mean((truth == predicted).all(axis=1))),
        macro_f1=macro,
        per_class=per_class,
        micro_f1=_ratio(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum()),
        hamming_loss=float(np.mean(truth != predicted)),
    )


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else 0.0
