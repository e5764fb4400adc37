"""Thin adapters: an event in, the training use case run, its events out."""

from __future__ import annotations

from labelloop.events import DatasetExported, ItemsIngested, RequestTraining
from labelloop.runtime import PoisonMessage, Service
from labelloop_trainer.rounds import Trainer

__all__ = ["DatasetNotYetKnown", "register_handlers"]


class DatasetNotYetKnown(RuntimeError):
    """A training request names a dataset version this trainer has not seen announced yet."""


def register_handlers(service: Service, trainer: Trainer) -> None:
    @service.handler(ItemsIngested)
    async def on_items_ingested(event: ItemsIngested) -> None:
        await trainer.on_items(event, await service.require_project(event.project))

    # one dataset at a time per replica, in stream order: versions build on each other
    @service.handler(DatasetExported, batch_size=1)
    async def on_dataset_exported(event: DatasetExported) -> None:
        await trainer.on_dataset(event, await service.require_project(event.project))

    @service.handler(RequestTraining, batch_size=1)
    async def on_request_training(event: RequestTraining) -> None:
        outcome = await trainer.on_request(event, await service.require_project(event.project))
        if outcome.outcome == "no_dataset" and event.dataset_version is not None:
            # the request may overtake its DatasetExported (another consumer): retry, with backoff
            raise DatasetNotYetKnown(outcome.reason)
        if outcome.outcome in {"no_dataset", "unsupported", "too_few_classes"}:
            # a command that cannot be carried out goes to the dead-letter stream with its reason
            raise PoisonMessage(f"training not run: {outcome.reason}")
