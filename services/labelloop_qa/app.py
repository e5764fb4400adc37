"""Composition root of the qa-scorer: settings, stores, metrics, handlers."""

from __future__ import annotations

from labelloop.events import LabelsReady, QAReport, QualityAlertRaised, ReviewRequested
from labelloop.runtime import Service
from labelloop.services import ServiceSpec
from labelloop.stores import MemoryStores
from labelloop_qa.handlers import register_handlers
from labelloop_qa.metrics import QAMetrics
from labelloop_qa.service import QAScorer
from labelloop_qa.settings import QASettings
from labelloop_qa.store import QAStore

__all__ = ["SPEC", "build_app"]


def build_app(settings: QASettings | None = None, *, stores: MemoryStores | None = None) -> Service:
    settings = settings or QASettings()
    service = Service(SPEC.name, settings, area=SPEC.artifacts, stores=stores)
    metrics = QAMetrics(service.registry, max_annotator_series=settings.max_annotator_series)
    scorer = QAScorer(
        QAStore(lambda: service.artifacts, lambda: service.state),
        kv=lambda: service.state,
        blobs=lambda: service.artifacts,
        publish=service.publish,
        project=service.require_project,
        metrics=metrics,
        bootstrap_samples=settings.bootstrap_samples,
    )
    register_handlers(service, scorer)
    return service


SPEC = ServiceSpec(
    name="qa-scorer",
    settings=QASettings,
    build=build_app,
    publishes=(
        QAReport,
        QualityAlertRaised,
        ReviewRequested,
        LabelsReady,
    ),
    state_keys=("qa", "seq.qa-rounds"),
    artifacts="qa",
)
