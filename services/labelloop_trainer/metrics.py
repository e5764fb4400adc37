"""The trainer's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["TrainerMetrics"]

_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.retrains = Counter(
            "labelloop_trainer_retrains_total",
            "Training decisions by outcome (promoted, rejected, skipped, unsupported, ...)",
            ["project", "outcome"],
            registry=registry,
        )
        self.untrusted = Counter(
            "labelloop_trainer_untrusted_models_total",
            "Serving models refused on loading (digest mismatch, not a skops file, untrusted "
            "types): trained over instead",
            ["project"],
            registry=registry,
        )
        self.untrusted_datasets = Counter(
            "labelloop_trainer_untrusted_datasets_total",
            "Dataset versions not trained on: their labels in the object store are not the file "
            "the exporter announced (sha256 mismatch); the round is skipped",
            ["project"],
            registry=registry,
        )
        self.accuracy = Gauge(
            "labelloop_trainer_model_accuracy_ratio",
            "Test accuracy of a project's last trained (candidate) and serving model",
            ["project", "model"],
            registry=registry,
        )
        self.macro_f1 = Gauge(
            "labelloop_trainer_model_macro_f1_ratio",
            "Test macro-F1 of a project's last trained (candidate) and serving model",
            ["project", "model"],
            registry=registry,
        )
        self.training = Histogram(
            "labelloop_trainer_training_duration_seconds",
            "Time to fit, cross-validate and evaluate one model",
            registry=registry,
            buckets=_SECONDS,
        )
        self.scoring = Histogram(
            "labelloop_trainer_pool_scoring_duration_seconds",
            "Time to score the unlabeled pool",
            registry=registry,
            buckets=_SECONDS,
        )
        self.pool = Gauge(
            "labelloop_trainer_pool_scored_items",
            "Unlabeled items scored by a project's last promoted model",
            ["project"],
            registry=registry,
        )
        self.converged = Counter(
            "labelloop_trainer_labeling_converged_total",
            "Projects whose consecutive models stopped changing their predictions",
            ["project"],
            registry=registry,
        )
