"""The trainer's settings (environment prefix ``LABELLOOP_TRAINER_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from labelloop.runtime import ServiceSettings

__all__ = ["TrainerSettings"]


class TrainerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LABELLOOP_TRAINER_")

    http_port: int = 8086
    stop_set_size: int = 2000
    """Unlabeled items on which consecutive models are compared (the paper used 2000)."""
    oos_folds: int = 5
    """Folds of the out-of-sample probabilities given to QA."""
