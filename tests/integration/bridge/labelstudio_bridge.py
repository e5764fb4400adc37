"""The bridge's Label Studio side wired to the real Label Studio, for the blind-overlap and
reassignment tests: importer, intake and reconciler over one state, what they publish kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from labelloop.events import Event
from labelloop.project import ProjectConfig
from labelloop.stores import MemoryKeyValue
from labelloop_bridge.importer import BatchImporter
from labelloop_bridge.intake import AnnotationIntake
from labelloop_bridge.labelstudio import LabelStudioClient
from labelloop_bridge.media import LocalFiles
from labelloop_bridge.metrics import BridgeMetrics
from labelloop_bridge.provisioning import ProjectProvisioner
from labelloop_bridge.reassignment import Reassigner
from labelloop_bridge.reconciliation import Reconciler
from labelloop_bridge.registry import AnnotatorRegistry
from labelloop_bridge.store import BridgeState


def answer(label: str) -> list[dict[str, Any]]:
    """A text classification answer in Label Studio's result format."""
    return [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]


@asynccontextmanager
async def label_studio_client(label_studio: Any) -> AsyncIterator[LabelStudioClient]:
    """A client of the session's Label Studio (``conftest.py``'s ``label_studio``)."""
    client = LabelStudioClient(
        httpx.AsyncClient(base_url=label_studio.url, timeout=30.0), label_studio.token
    )
    try:
        yield client
    finally:
        await client.aclose()


class LiveBridge:
    """The bridge in ``namespace`` serving ``config``, reassigning abandoned tasks if
    ``reassign``, serving media paths through Label Studio's Local Files if ``media``; its state
    in memory."""

    def __init__(
        self,
        client: LabelStudioClient,
        namespace: str,
        config: ProjectConfig,
        *,
        reassign: bool = False,
        media: LocalFiles | None = None,
    ) -> None:
        self.client = client
        self.registry = CollectorRegistry()
        metrics = BridgeMetrics(self.registry, "label-studio")
        self.state = BridgeState(MemoryKeyValue())
        self.published: list[Event] = []

        async def publish(event: Event) -> None:
            self.published.append(event)

        async def projects(name: str) -> ProjectConfig | None:
            return config

        intake = AnnotationIntake(self.state, publish, projects, AnnotatorRegistry(client), metrics)
        self.provisioner = provisioner = ProjectProvisioner(
            client, self.state, namespace, None, media=media
        )
        self.importer = BatchImporter(
            client, self.state, provisioner, intake, metrics, namespace=namespace, media=media
        )
        reassigner = (
            Reassigner(client, self.state, provisioner, projects, metrics) if reassign else None
        )
        self.reconciler = Reconciler(
            client, self.state, intake, metrics, margin_seconds=0, reassigner=reassigner
        )
