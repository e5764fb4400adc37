"""The sampler's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SamplerMetrics"]


class SamplerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # project names are few and chosen by operators (not ids of items or batches)
        self.pool_size = Gauge(
            "labelloop_sampler_pool_size_items",
            "Unlabeled items in the pool",
            ["project"],
            registry=registry,
        )
        self.open_tasks = Gauge(
            "labelloop_sampler_open_tasks",
            "Labeling tasks handed out and not yet done",
            ["project"],
            registry=registry,
        )
        self.batches = Counter(
            "labelloop_sampler_batches_created_total",
            "Batches created, by strategy and kind",
            ["strategy", "kind"],
            registry=registry,
        )
        self.skipped = Counter(
            "labelloop_sampler_batches_skipped_total",
            "Triggers that created no batch, by reason",
            ["reason"],
            registry=registry,
        )
        self.selection = Histogram(
            "labelloop_sampler_selection_duration_seconds",
            "Time to select and compose one batch",
            ["strategy"],
            registry=registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.budget_used = Gauge(
            "labelloop_sampler_budget_used_ratio",
            "Share of a project's budget limit spent (labels, annotations or cost)",
            ["project", "limit"],
            registry=registry,
        )
        self.cost = Gauge(
            "labelloop_sampler_estimated_cost",
            "Labour cost of the annotations asked for so far, at the project's hourly rate and the "
            "observed mean lead time (in the project's currency)",
            ["project"],
            registry=registry,
        )
        self.waiting = Gauge(
            "labelloop_sampler_next_batch_waiting",
            "1 while the project's next labeling batch waits, by reason (waiting_for_model, "
            "waiting_for_qa: the round it builds on is not finished; full, above_watermark: "
            "backpressure; not_started, paused)",
            ["project", "reason"],
            registry=registry,
        )
        self.conflicts = Counter(
            "labelloop_sampler_ledger_conflicts_total",
            "Compare-and-swap conflicts on a project's ledger (replicas racing)",
            registry=registry,
        )
