"""qa-scorer metrics, registered on an injected ``CollectorRegistry``.

Labels are small fixed sets (coefficient, outcome, reason, method) plus ``project``: projects are
a handful of configured names. The one exception is ``labelloop_qa_annotator_accuracy_ratio``,
labelled by annotator because the issue asks for it: annotators are a bounded team, and the
number of annotator series is capped (``max_annotator_series``, default 200); annotators beyond
the cap are counted in ``labelloop_qa_annotator_series_dropped_total`` instead.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["QAMetrics"]

COEFFICIENTS = (
    "percent_agreement",
    "cohen_kappa_mean",
    "fleiss_kappa",
    "krippendorff_alpha",
    "gwet_ac1",
)


GATE_OUTCOMES = ("passed", "failed", "unmeasured")


class QAMetrics:
    def __init__(self, registry: CollectorRegistry, *, max_annotator_series: int = 200) -> None:
        self.max_annotator_series = max_annotator_series
        self._annotators: set[tuple[str, str]] = set()
        self.agreement = Gauge(
            "labelloop_qa_batch_agreement",
            "Agreement coefficient of the project's latest scored round (by any replica)",
            ["project", "coefficient"],
            registry=registry,
        )
        self.batches = Counter(
            "labelloop_qa_batches_scored_total",
            "Batches scored, by outcome of the alpha gate (passed, failed, unmeasured)",
            ["project", "outcome"],
            registry=registry,
        )
        self.flagged = Counter(
            "labelloop_qa_items_flagged_total",
            "Items sent to expert review, by reason",
            ["project", "reason"],
            registry=registry,
        )
        self.alerts = Counter(
            "labelloop_qa_alerts_total",
            "QualityAlertRaised events, by metric",
            ["project", "metric"],
            registry=registry,
        )
        self.labels = Counter(
            "labelloop_qa_labels_released_total",
            "Consensus labels released (LabelsReady), by method",
            ["project", "method"],
            registry=registry,
        )
        self.annotations = Counter(
            "labelloop_qa_annotations_stored_total",
            "Annotations received, by what happened to them",
            ["outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "labelloop_qa_scoring_duration_seconds",
            "Time to score one batch (load, compute, store)",
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.annotator_accuracy = Gauge(
            "labelloop_qa_annotator_accuracy_ratio",
            "Estimated accuracy of an annotator over all their history (capped series)",
            ["project", "annotator"],
            registry=registry,
        )
        self.annotator_dropped = Counter(
            "labelloop_qa_annotator_series_dropped_total",
            "Annotator accuracy updates not exported because the series cap was reached",
            registry=registry,
        )

    def declare_project(self, project: str) -> None:
        """A configured project's gate counters at 0 before its first batch: Prometheus's
        ``increase()`` sees a first failed batch only against an earlier sample of the series
        (the LabelloopBatchesFailingQA alert)."""
        for outcome in GATE_OUTCOMES:
            self.batches.labels(project, outcome)

    def set_agreement(self, project: str, report: dict[str, object]) -> None:
        """The agreement gauges: the coefficients of the round ``report`` describes."""
        for name in COEFFICIENTS:
            value = report.get(name)
            if isinstance(value, float):
                self.agreement.labels(project, name).set(value)

    def count_report(self, project: str, report: dict[str, object]) -> None:
        """One more scored batch, by its gate outcome."""
        alpha = report.get("krippendorff_alpha")
        outcome = "unmeasured" if alpha is None else ("passed" if report["passed"] else "failed")
        self.batches.labels(project, outcome).inc()

    def set_annotator_accuracy(self, project: str, annotator: str, value: float) -> None:
        key = (project, annotator)
        if key not in self._annotators:
            if len(self._annotators) >= self.max_annotator_series:
                self.annotator_dropped.inc()
                return
            self._annotators.add(key)
        self.annotator_accuracy.labels(project, annotator).set(value)
