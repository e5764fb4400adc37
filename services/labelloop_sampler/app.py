"""The sampler's composition root."""

from __future__ import annotations

from labelloop.catalog import Catalog
from labelloop.events import BatchCreated, BudgetExhausted
from labelloop.runtime import Service
from labelloop.services import ServiceSpec
from labelloop.stores import MemoryStores

from .handlers import register_handlers
from .metrics import SamplerMetrics
from .service import Sampler
from .settings import SamplerSettings
from .store import LedgerStore

__all__ = ["SPEC", "build_app"]


def build_app(
    settings: SamplerSettings | None = None, *, stores: MemoryStores | None = None
) -> Service:
    settings = settings or SamplerSettings()
    service = Service(SPEC.name, settings, area=SPEC.artifacts, stores=stores)
    # the service's stores exist once it has started: adapters look them up at call time
    sampler = Sampler(
        ledgers=LedgerStore(lambda: service.state, lambda: service.artifacts),
        # the items' data (data URIs, long texts) is read for a batch's tasks only
        catalog=Catalog(
            lambda: service.state, lambda: service.artifacts, keep_data=False, chunk_cache=4
        ),
        artifacts=lambda: service.artifacts,
        publish=service.publish,
        metrics=SamplerMetrics(service.registry),
        prefilter_factor=settings.prefilter_factor,
        max_cas_attempts=settings.max_cas_attempts,
    )
    register_handlers(service, sampler)
    return service


SPEC = ServiceSpec(
    name="sampler",
    settings=SamplerSettings,
    build=build_app,
    publishes=(
        BatchCreated,
        BudgetExhausted,
    ),
    state_keys=("sampler",),
    artifacts="sampler",
)
