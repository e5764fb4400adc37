"""The sampler's composition root."""

from __future__ import annotations

from labelloop.runtime import Service
from labelloop.stores import MemoryStores

from .batches import Sampler
from .handlers import register_handlers
from .metrics import SamplerMetrics
from .pools import PoolStore
from .settings import SamplerSettings

__all__ = ["build_app"]


def build_app(
    settings: SamplerSettings | None = None, *, stores: MemoryStores | None = None
) -> Service:
    settings = settings or SamplerSettings()
    service = Service("sampler", settings, stores=stores)
    # the service's stores are valid only once it has started: look them up at call time
    sampler = Sampler(
        state=lambda: service.state,
        pools=PoolStore(lambda: service.artifacts),
        publish=service.publish,
        metrics=SamplerMetrics(service.registry),
        prefilter_factor=settings.prefilter_factor,
        max_cas_attempts=settings.max_cas_attempts,
    )
    register_handlers(service, sampler)
    return service
