"""Thin adapters: typed event in, one ``QAScorer`` call, events out."""

from __future__ import annotations

from labelloop.events import AnnotationsSubmitted, BatchCompleted, BatchCreated, ModelTrained
from labelloop.runtime import Service
from labelloop_qa.scorer import QAScorer

__all__ = ["register_handlers"]


def register_handlers(service: Service, scorer: QAScorer) -> None:
    @service.handler(BatchCreated)
    async def on_batch_created(event: BatchCreated) -> None:
        await scorer.batch_created(event)

    @service.handler(AnnotationsSubmitted)
    async def on_annotations(event: AnnotationsSubmitted) -> None:
        released = await scorer.annotations_submitted(event)
        for out in released:
            await service.publish(out)
        await scorer.after_expert_release(event, released)

    # scoring waits for annotations and tasks from other consumers; a replica killed holding them
    # returns them after ack_wait (30 s), so retry for minutes (backoff doubles), not 7.5 s
    @service.handler(BatchCompleted, max_deliver=max(service.settings.max_deliver, 10))
    async def on_batch_completed(event: BatchCompleted) -> None:
        for out in await scorer.batch_completed(event):
            await service.publish(out)

    @service.handler(ModelTrained)
    async def on_model_trained(event: ModelTrained) -> None:
        for out in await scorer.model_trained(event):
            await service.publish(out)
