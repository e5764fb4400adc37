"""The sampler's settings (environment prefix ``LABELLOOP_SAMPLER_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from labelloop.runtime import ServiceSettings

__all__ = ["SamplerSettings"]


class SamplerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LABELLOOP_SAMPLER_")

    http_port: int = 8082
    prefilter_factor: int = 10
    """Hybrid clusters the ``prefilter_factor * batch_size`` most uncertain items."""
    max_cas_attempts: int = 20
    """Compare-and-swap retries on the ledger before the message is retried by the runtime."""
