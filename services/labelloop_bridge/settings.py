"""Settings of the annotation bridge (env prefix ``LABELLOOP_BRIDGE_``)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from labelloop.runtime import ServiceSettings

from .media import LocalFiles

__all__ = ["BridgeSettings"]


class BridgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LABELLOOP_BRIDGE_")

    http_port: int = 8083
    backend: Literal["label-studio", "simulated"] = "label-studio"
    """``simulated``: the project's ``simulation:`` crew answers batches, without Label Studio."""

    label_studio_url: str = "http://127.0.0.1:8080"
    label_studio_token: SecretStr | None = None
    """A legacy API token (``Authorization: Token``); see ``infra/labelstudio/labelstudio.sh``.
    A personal access token works too, but label-studio-sdk exchanges it for an access token
    with a blocking call (infra/labelstudio/README.md)."""
    request_timeout_seconds: float = Field(default=15.0, gt=0)
    retry_attempts: int = Field(default=4, ge=1)
    retry_base_delay_seconds: float = Field(default=0.5, ge=0)

    webhook_url: str | None = None
    """The URL Label Studio calls (this service's ``/webhooks/label-studio`` as Label Studio sees
    it). Unset: no webhook is registered and annotations arrive by reconciliation only."""
    webhook_secret: SecretStr | None = None
    """Shared secret Label Studio sends in ``webhook_header``; without it every call is refused."""
    webhook_header: str = "X-Labelloop-Webhook-Secret"
    webhook_answer_within_seconds: float = Field(default=0.5, gt=0)
    """Label Studio waits 1 s; work still running after this is finished in the background."""

    reconcile_interval_seconds: float = Field(default=30.0, gt=0)
    reconcile_margin_seconds: float = Field(default=60.0, ge=0)
    """Re-read tasks updated this long before the watermark: clock skew and in-flight updates."""

    webhook_drain_seconds: float = Field(default=10.0, ge=0)
    """On shutdown, how long webhook payloads still being processed may take to finish."""

    import_chunk_size: int = Field(default=500, ge=1, le=5000)
    import_lease_seconds: float = Field(default=120.0, gt=0)
    """How long one delivery holds a batch's import without renewing it (it renews before each
    chunk). A crashed holder's batch is taken over after this; keep it far above clock skew."""
    count_skips: bool = True
    """A skipped (cancelled) task counts as an answer toward ``annotations_required``."""
    simulation_chunk_size: int = Field(default=1000, ge=1)
    """Annotations per ``AnnotationsSubmitted`` message published by the simulated crew."""

    media_root: str | None = None
    """The directory item paths point into: the ingester's ``LABELLOOP_INGESTER_MEDIA_ROOT``.
    Set: an image, audio or video path (or ``file://`` URL) under it reaches Label Studio as a
    Local Files URL its browser can load (``/data/local-files/?d=...``), and every Label Studio
    project with such a field gets a Local Files storage on ``label_studio_media_dir`` that lets
    Label Studio serve them (it must run with ``LOCAL_FILES_SERVING_ENABLED=true`` and
    ``LOCAL_FILES_DOCUMENT_ROOT=<label_studio_document_root>``). Unset: item data goes to Label
    Studio as it is. The data labelloop keeps and exports never changes."""
    label_studio_media_dir: str | None = None
    """``media_root`` as Label Studio's machine sees it (an absolute path: a mount of the same
    files); default: ``media_root``, as written (the same machine, or the same mount path)."""
    label_studio_document_root: str | None = None
    """Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``, a parent of ``label_studio_media_dir`` (Label
    Studio refuses a storage at the document root itself); default: its parent directory."""

    @model_validator(mode="after")
    def _media_dirs(self) -> Self:
        if not self.media_root:  # unset or empty
            if self.label_studio_media_dir or self.label_studio_document_root:
                raise ValueError(
                    "label_studio_media_dir and label_studio_document_root need media_root"
                )
            return self
        self.local_files()  # Label Studio would refuse the storage: say so at start-up
        return self

    def local_files(self) -> LocalFiles | None:
        """Where the media live for Label Studio's Local Files serving; ``None`` without
        ``media_root``."""
        if not self.media_root:
            return None
        return LocalFiles.of(
            self.media_root, self.label_studio_media_dir, self.label_studio_document_root
        )
