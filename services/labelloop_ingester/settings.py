"""The ingester's settings (environment prefix ``LABELLOOP_INGESTER_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from labelloop.runtime import ServiceSettings

__all__ = ["IngesterSettings"]


class IngesterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LABELLOOP_INGESTER_")

    http_port: int = 8081
    max_item_bytes: int = 200_000
    """Largest item (canonical JSON of data, metadata, features, labels) accepted."""
    text_max_length: int = 100_000
    """Characters of a text field whose project data field sets no ``max_length``."""
    max_feature_dim: int = 4_096
    max_message_bytes: int = 900_000
    """``ItemsIngested`` messages are split to stay under this (NATS' default limit is 1 MB)."""
    text_dim: int = 64
    image_side: int = 16
    media_root: str | None = None
    """Media paths (images, audio, video) under this folder are read for features; ``None``:
    paths are not read (data URIs always are)."""
    media_max_bytes: int = 200_000_000
    """A media file larger than this is not read (the item is ingested without features)."""
    audio_sample_rate: int = 16_000
    """Sounds are resampled to this rate before their features are computed."""
    audio_max_seconds: float = 30.0
    """Only the first seconds of a longer sound are decoded."""
    video_frames: int = 8
    """Frames taken evenly over a video, whose image features are pooled."""
    video_max_seconds: float = 60.0
    claim_concurrency: int = 64
    """Concurrent KV reads when loading a project's claims (its claim log's segments)."""
