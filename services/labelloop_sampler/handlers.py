"""Thin adapters: each event in, one sampler use case called."""

from __future__ import annotations

from labelloop.events import (
    AnnotationsSubmitted,
    BatchCompleted,
    ItemsIngested,
    ModelTrained,
    ProjectConfigured,
    QAReport,
    RequestSampling,
    ReviewRequested,
)
from labelloop.runtime import PoisonMessage, Service

from .service import ReviewRefused, Sampler

__all__ = ["register_handlers"]


GAUGE_INTERVAL_SECONDS = 15.0
"""How often every replica sets the per-project gauges from the shared ledgers (Prometheus'
scrape interval: a scrape sees the state of at most one interval before)."""


def register_handlers(service: Service, sampler: Sampler) -> None:
    @service.handler(ItemsIngested)
    async def on_items_ingested(event: ItemsIngested) -> None:
        await sampler.items_ingested(await service.require_project(event.project))

    @service.handler(RequestSampling)
    async def on_request_sampling(event: RequestSampling) -> None:
        """Start or pause a project's sampling."""
        await sampler.sampling_requested(await service.require_project(event.project), event.action)

    @service.handler(ProjectConfigured)
    async def on_project_configured(event: ProjectConfigured) -> None:
        """A changed configuration (a raised budget, another lag) may allow a batch now."""
        await sampler.advance(await service.require_project(event.project))

    @service.handler(BatchCompleted)
    async def on_batch_completed(event: BatchCompleted) -> None:
        await sampler.batch_completed(await service.require_project(event.project), event)

    @service.handler(AnnotationsSubmitted)
    async def on_annotations(event: AnnotationsSubmitted) -> None:
        await sampler.annotations(await service.require_project(event.project), event.annotations)

    @service.handler(ModelTrained)
    async def on_model_trained(event: ModelTrained) -> None:
        await sampler.model_trained(await service.require_project(event.project), event)

    @service.handler(QAReport)
    async def on_qa_report(event: QAReport) -> None:
        await sampler.qa_reported(await service.require_project(event.project), event)

    @service.handler(ReviewRequested)
    async def on_review_requested(event: ReviewRequested) -> None:
        try:
            await sampler.review(await service.require_project(event.project), event)
        except ReviewRefused as exc:
            raise PoisonMessage(str(exc)) from exc

    async def observe_projects() -> None:
        """Per-project gauges from the shared state, on every replica alike."""
        for project in await service.stores.projects.keys():
            config = await service.project(project)
            if config is not None:
                await sampler.observe(config)

    service.every(GAUGE_INTERVAL_SECONDS, observe_projects)
