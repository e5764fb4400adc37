"""qa-scorer settings (environment prefix ``LABELLOOP_QA_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from labelloop.runtime import ServiceSettings

__all__ = ["QASettings"]


class QASettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LABELLOOP_QA_")

    http_port: int = 8084
    bootstrap_samples: int = Field(default=200, ge=0)
    """Bootstrap replicates for the confidence interval of each batch's alpha (0: no interval)."""
    max_annotator_series: int = Field(default=200, ge=0)
    """Cap on per-annotator accuracy gauge series (annotators are a bounded team)."""
