"""The ingester's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from .domain.validation import RejectReason

__all__ = ["MEDIA_OUTCOMES", "IngesterMetrics"]

MEDIA_OUTCOMES = ("featurized", "unreadable", "unread")


class IngesterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ingested = Counter(
            "labelloop_ingester_items_ingested_total",
            "New items ingested",
            registry=registry,
        )
        self.rejected = Counter(
            "labelloop_ingester_items_rejected_total",
            "Items rejected, by reason",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "labelloop_ingester_duplicates_total",
            "Items dropped because an item with the same content was ingested before",
            registry=registry,
        )
        self.claim_appends = Counter(
            "labelloop_ingester_claim_appends_total",
            "Segments appended to the claim logs: one KV create for every message waiting to claim",
            registry=registry,
        )
        self.claim_conflicts = Counter(
            "labelloop_ingester_claim_conflicts_total",
            "Appends lost to another replica's (its segment read, the claims decided again)",
            registry=registry,
        )
        self.media = Counter(
            "labelloop_ingester_media_items_total",
            "Audio and video items without producer features, by what became of their file:"
            " featurized, unreadable (rejected) or unread (no bytes: a URL, a path outside the"
            " media root)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "labelloop_ingester_ingest_duration_seconds",
            "Time to ingest one submitted message",
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        for reason in RejectReason:
            self.rejected.labels(reason=reason.value)
        for kind in ("audio", "video"):
            for outcome in MEDIA_OUTCOMES:
                self.media.labels(kind=kind, outcome=outcome)
