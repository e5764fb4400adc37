"""Thin adapters: a batch in, the backend's placement of it; Label Studio's webhooks and the
reconciliation loop beside them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from labelloop.events import BatchCreated
from labelloop.project import ProjectConfig
from labelloop.runtime import PoisonMessage, Service

from .intake import AnnotationIntake
from .labelstudio import LabelStudioClient
from .metrics import BridgeMetrics
from .reconciliation import Reconciler
from .settings import BridgeSettings
from .simulation import NoSimulationConfig
from .webhook import WebhookReceiver

__all__ = ["WEBHOOK_PATH", "Parts", "Placement", "register_handlers"]

WEBHOOK_PATH = "/webhooks/label-studio"


class Placement(Protocol):
    """Where batches go: Label Studio (``BatchImporter``) or the simulated crew."""

    async def place(self, batch: BatchCreated, config: ProjectConfig) -> int: ...


@dataclass(frozen=True)
class Parts:
    """The bridge's adapters, assembled once the service's stores are open."""

    backend: Placement
    client: LabelStudioClient | None = None
    intake: AnnotationIntake | None = None
    reconciler: Reconciler | None = None


def register_handlers(
    service: Service,
    settings: BridgeSettings,
    metrics: BridgeMetrics,
    parts: Callable[[], Parts],
) -> WebhookReceiver | None:
    """The ``BatchCreated`` consumer and, for Label Studio, the webhook route and the periodic
    reconciliation; returns the webhook receiver (drained at shutdown)."""

    # Label Studio restarts and deploys outlast the default 5 deliveries (~25 s of retries):
    # keep retrying for minutes (the backoff doubles up to 60 s) before dead-lettering a batch
    @service.handler(BatchCreated, max_deliver=max(settings.max_deliver, 10))
    async def on_batch_created(event: BatchCreated) -> None:
        """Put a batch before annotators: Label Studio tasks, or the simulated crew."""
        config = await service.require_project(event.project)
        try:
            await parts().backend.place(event, config)
        except NoSimulationConfig as exc:
            raise PoisonMessage(str(exc)) from exc

    if settings.backend != "label-studio":
        return None

    async def on_webhook(payload: dict[str, Any]) -> int:
        intake = parts().intake
        assert intake is not None
        return await intake.apply_webhook(payload)

    async def reconcile() -> None:
        reconciler = parts().reconciler
        assert reconciler is not None
        await reconciler.run_once()

    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    receiver = WebhookReceiver(
        on_webhook,
        secret,
        metrics,
        header=settings.webhook_header,
        answer_within=settings.webhook_answer_within_seconds,
    )
    service.mount(WEBHOOK_PATH, receiver)
    service.every(settings.reconcile_interval_seconds, reconcile)
    return receiver
