"""The exporter's composition root."""

from __future__ import annotations

from labelloop.events import DatasetExported, RoundExported
from labelloop.runtime import Service
from labelloop.services import ServiceSpec
from labelloop.stores import MemoryStores
from labelloop_exporter.handlers import register_handlers
from labelloop_exporter.metrics import ExporterMetrics
from labelloop_exporter.service import Exporter
from labelloop_exporter.settings import ExporterSettings
from labelloop_exporter.store import DatasetDirectory

__all__ = ["SPEC", "build_app"]


def build_app(
    settings: ExporterSettings | None = None, *, stores: MemoryStores | None = None
) -> Service:
    settings = settings or ExporterSettings()
    service = Service(SPEC.name, settings, area=SPEC.artifacts, stores=stores)
    exporter = Exporter(
        # the stores are valid once the service has started: look them up at call time
        state=lambda: service.state,
        artifacts=lambda: service.artifacts,
        publish=service.publish,
        project=service.require_project,
        datasets=DatasetDirectory(settings.export_dir),
        metrics=ExporterMetrics(service.registry),
        salt=settings.split_salt,
    )
    register_handlers(service, exporter)
    return service


SPEC = ServiceSpec(
    name="exporter",
    settings=ExporterSettings,
    build=build_app,
    publishes=(DatasetExported, RoundExported),
    state_keys=("seq.exporter-rounds", "exporter"),
    artifacts="exporter",
)
