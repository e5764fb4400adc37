"""The trainer's composition root."""

from __future__ import annotations

from labelloop.events import LabelingConverged, ModelTrained
from labelloop.runtime import Service
from labelloop.services import ServiceSpec
from labelloop.stores import MemoryStores
from labelloop_trainer.handlers import register_handlers
from labelloop_trainer.metrics import TrainerMetrics
from labelloop_trainer.service import Trainer
from labelloop_trainer.settings import TrainerSettings

__all__ = ["SPEC", "build_app"]


def build_app(
    settings: TrainerSettings | None = None, *, stores: MemoryStores | None = None
) -> Service:
    settings = settings or TrainerSettings()
    service = Service(SPEC.name, settings, area=SPEC.artifacts, stores=stores)
    trainer = Trainer(
        # the stores are valid once the service has started: look them up at call time
        state=lambda: service.state,
        artifacts=lambda: service.artifacts,
        publish=service.publish,
        project=service.require_project,
        metrics=TrainerMetrics(service.registry),
        stop_set_size=settings.stop_set_size,
        oos_folds=settings.oos_folds,
    )
    register_handlers(service, trainer)
    return service


SPEC = ServiceSpec(
    name="trainer",
    settings=TrainerSettings,
    build=build_app,
    publishes=(
        ModelTrained,
        LabelingConverged,
    ),
    state_keys=("trainer", "seq.trainer-rounds"),
    artifacts="trainer",
)
