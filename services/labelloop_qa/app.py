"""Composition root of the qa-scorer: settings, stores, metrics, handlers."""

from __future__ import annotations

from labelloop.runtime import Service
from labelloop.stores import MemoryStores
from labelloop_qa.handlers import register_handlers
from labelloop_qa.ledger import Ledger
from labelloop_qa.metrics import QAMetrics
from labelloop_qa.scorer import QAScorer
from labelloop_qa.settings import QASettings

__all__ = ["build_app"]


def build_app(settings: QASettings | None = None, *, stores: MemoryStores | None = None) -> Service:
    settings = settings or QASettings()
    service = Service("qa-scorer", settings, stores=stores)
    metrics = QAMetrics(service.registry, max_annotator_series=settings.max_annotator_series)
    ledger = Ledger(lambda: service.state, lambda: service.artifacts)
    scorer = QAScorer(
        ledger,
        metrics,
        service.project,
        bootstrap_samples=settings.bootstrap_samples,
        labels_per_message=settings.labels_per_message,
    )
    register_handlers(service, scorer)
    return service
