"""Thin adapters: each event in, one sampler use case called."""

from __future__ import annotations

from labelloop.events import (
    AnnotationsSubmitted,
    BatchCompleted,
    ItemsIngested,
    LabelingConverged,
    ModelTrained,
    ReviewRequested,
)
from labelloop.runtime import Service

from .batches import Sampler

__all__ = ["register_handlers"]


def register_handlers(service: Service, sampler: Sampler) -> None:
    @service.handler(ItemsIngested)
    async def on_items_ingested(event: ItemsIngested) -> None:
        await sampler.items_ingested(event, await service.require_project(event.project))

    @service.handler(BatchCompleted)
    async def on_batch_completed(event: BatchCompleted) -> None:
        project = await service.require_project(event.project)
        await sampler.batch_completed(project, event.batch_id, event.event_id)

    @service.handler(AnnotationsSubmitted)
    async def on_annotations(event: AnnotationsSubmitted) -> None:
        project = await service.require_project(event.project)
        await sampler.annotations(project, event.annotations, event.event_id)

    @service.handler(ModelTrained)
    async def on_model_trained(event: ModelTrained) -> None:
        if event.promoted:
            project = await service.require_project(event.project)
            await sampler.model_trained(
                project, event.model_version, event.scores_ref, event.event_id
            )

    @service.handler(ReviewRequested)
    async def on_review_requested(event: ReviewRequested) -> None:
        await sampler.review(await service.require_project(event.project), event)

    @service.handler(LabelingConverged)
    async def on_converged(event: LabelingConverged) -> None:
        await sampler.converged(event.project, event.reason)
