"""Prometheus metrics of the annotation bridge (on the service's injected registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from labelloop.events import AnnotationSource

__all__ = ["BridgeMetrics"]

_LEAD_TIME_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
_API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry, backend: str) -> None:
        self.backend = backend
        self.tasks_imported = Counter(
            "labelloop_bridge_tasks_imported_total",
            "Tasks put before annotators (imported into Label Studio, or given the simulated crew)",
            ["backend", "kind"],
            registry=registry,
        )
        self.annotations_received = Counter(
            "labelloop_bridge_annotations_received_total",
            "Annotations published as AnnotationsSubmitted, per project, by where they came from",
            ["project", "source", "backend"],
            registry=registry,
        )
        self.annotations_ignored = Counter(
            "labelloop_bridge_annotations_ignored_total",
            "Annotation observations not published (already seen, or not a labelloop task)",
            ["reason"],
            registry=registry,
        )
        self.webhook_rejections = Counter(
            "labelloop_bridge_webhook_rejections_total",
            "Webhook calls refused",
            ["reason"],
            registry=registry,
        )
        self.batches_completed = Counter(
            "labelloop_bridge_batches_completed_total",
            "BatchCompleted events emitted",
            ["backend", "kind"],
            registry=registry,
        )
        self.api_latency = Histogram(
            "labelloop_bridge_labelstudio_request_seconds",
            "Label Studio API latency per attempt",
            ["operation", "outcome"],
            buckets=_API_BUCKETS,
            registry=registry,
        )
        self.api_errors = Counter(
            "labelloop_bridge_labelstudio_errors_total",
            "Label Studio API attempts that failed",
            ["operation", "outcome"],
            registry=registry,
        )
        self.lead_time = Histogram(
            "labelloop_bridge_annotation_lead_time_seconds",
            "Time annotators spent per annotation (Label Studio's lead_time)",
            ["backend"],
            buckets=_LEAD_TIME_BUCKETS,
            registry=registry,
        )
        self.reconciliations = Counter(
            "labelloop_bridge_reconciliations_total",
            "Reconciliation passes over Label Studio",
            ["outcome"],
            registry=registry,
        )
        self.reassignments = Counter(
            "labelloop_bridge_reassignments_total",
            "Tasks taken from an annotator who did not answer within the project's "
            "quality.assignment_timeout_seconds and given to another (blind overlap)",
            registry=registry,
        )
        self.simulation_missing_truth = Counter(
            "labelloop_bridge_simulation_missing_truth_total",
            "Simulated answers to tasks whose truth was unknown (answered at random)",
            registry=registry,
        )
        self._projects: set[str] = set()

    def project_seen(self, project: str) -> None:
        """Declare a project's annotation counters at 0 when its first batch comes in: increase()
        sees the first annotation only against an earlier sample, and the per-project
        LabelloopAnnotationsStalled alert reads these series."""
        if project in self._projects:
            return
        self._projects.add(project)
        people = (
            AnnotationSource.WEBHOOK,
            AnnotationSource.RECONCILIATION,
            AnnotationSource.IMPORT,
        )
        simulated = self.backend == "simulated"
        for source in (AnnotationSource.SIMULATION,) if simulated else people:
            self.annotations_received.labels(project, source.value, self.backend)

    def annotations(self, project: str, source: str, backend: str, n: int = 1) -> None:
        self.project_seen(project)
        self.annotations_received.labels(project, source, backend).inc(n)

    def api_call(self, operation: str, outcome: str, seconds: float) -> None:
        """An observation from the Label Studio client (``ApiObserver``)."""
        self.api_latency.labels(operation, outcome).observe(seconds)
        if outcome != "ok":
            self.api_errors.labels(operation, outcome).inc()
