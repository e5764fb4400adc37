"""The exporter's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["ExporterMetrics"]


class ExporterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.labels = Counter(
            "labelloop_exporter_labels_received_total",
            "Consensus labels received, by whether the message was new or a redelivery",
            ["project", "outcome"],
            registry=registry,
        )
        self.exports = Counter(
            "labelloop_exporter_exports_total",
            "Dataset versions by outcome: published (written), announced (again, on request)",
            ["project", "outcome"],
            registry=registry,
        )
        self.versions = Counter(
            "labelloop_exporter_dataset_versions_total",
            "Dataset versions written",
            ["project"],
            registry=registry,
        )
        self.rows = Counter(
            "labelloop_exporter_rows_exported_total",
            "Rows written across all dataset versions",
            ["project"],
            registry=registry,
        )
        self.invalid = Counter(
            "labelloop_exporter_rows_left_out_total",
            "Rows left out of a dataset version because they failed a check, by problem "
            "(each version counts the rows it leaves out)",
            ["project", "reason"],
            registry=registry,
        )
        self.rounds = Counter(
            "labelloop_exporter_rounds_exported_total",
            "Labeling rounds exported for training, by how: version (a full dataset version) or "
            "delta (the round's rows only, between versions)",
            ["project", "kind"],
            registry=registry,
        )
        self.round_duration = Histogram(
            "labelloop_exporter_round_duration_seconds",
            "Time to export one labeling round (its delta, or a full version)",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.duration = Histogram(
            "labelloop_exporter_export_duration_seconds",
            "Time to build, check and write one dataset version",
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
