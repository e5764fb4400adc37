"""The exporter's settings (environment prefix ``LABELLOOP_EXPORTER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from labelloop.runtime import ServiceSettings

__all__ = ["ExporterSettings"]


class ExporterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LABELLOOP_EXPORTER_")

    http_port: int = 8085
    export_dir: Path = Path("./exports")
    """Dataset versions go to ``<export_dir>/<project>/<version>/``."""
    split_salt: str | None = None
    """Salt of the split hash (default ``labelloop-split:<project>``); changing it moves items."""
