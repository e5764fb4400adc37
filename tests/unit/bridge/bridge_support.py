"""The bridge's Label Studio side wired to the fake Label Studio, for the blind-overlap and
reassignment tests: importer, intake and reconciler over one state, what they publish kept."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from labelloop.events import Event
from labelloop.project import ProjectConfig
from labelloop_bridge.importer import BatchImporter
from labelloop_bridge.intake import AnnotationIntake
from labelloop_bridge.labelstudio import LabelStudioClient, RetryPolicy
from labelloop_bridge.media import LocalFiles
from labelloop_bridge.metrics import BridgeMetrics
from labelloop_bridge.provisioning import ProjectProvisioner
from labelloop_bridge.reassignment import Reassigner
from labelloop_bridge.reconciliation import Reconciler
from labelloop_bridge.registry import AnnotatorRegistry
from labelloop_bridge.store import BridgeState

TOKEN = "fake-token"


def choice(label: str) -> list[dict[str, Any]]:
    """A text classification answer in Label Studio's result format."""
    return [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]


async def _no_sleep(seconds: float) -> None:
    return None


class FakeBridge:
    """The bridge on namespace ``test`` serving ``config``, with ``attempts`` per Label Studio
    call; on ``clock`` if given, reassigning abandoned tasks if ``reassign``, and serving media
    paths through Label Studio's Local Files if ``media``."""

    def __init__(
        self,
        fake: Any,
        kv: Any,
        config: ProjectConfig,
        *,
        attempts: int,
        clock: Callable[[], datetime] | None = None,
        reassign: bool = False,
        media: LocalFiles | None = None,
    ) -> None:
        self.fake = fake
        self.registry = CollectorRegistry()
        metrics = BridgeMetrics(self.registry, "label-studio")
        http = httpx.AsyncClient(base_url="http://ls.test", transport=fake.transport)
        retry = RetryPolicy(attempts=attempts, base_delay=0.0)
        client = LabelStudioClient(http, TOKEN, retry=retry, observer=metrics, sleep=_no_sleep)
        self.state = BridgeState(kv)
        self.published: list[Event] = []

        async def publish(event: Event) -> None:
            self.published.append(event)

        async def projects(name: str) -> ProjectConfig | None:
            return config

        timed: dict[str, Any] = {} if clock is None else {"clock": clock}
        self.intake = AnnotationIntake(
            self.state, publish, projects, AnnotatorRegistry(client), metrics
        )
        self.client = client
        self.provisioner = provisioner = ProjectProvisioner(
            client, self.state, "test", None, media=media
        )
        self.importer = BatchImporter(
            client,
            self.state,
            provisioner,
            self.intake,
            metrics,
            namespace="test",
            retry=retry,
            media=media,
            **timed,
        )
        reassigner = (
            Reassigner(client, self.state, provisioner, projects, metrics, **timed)
            if reassign
            else None
        )
        self.reconciler = Reconciler(
            client, self.state, self.intake, metrics, margin_seconds=0, reassigner=reassigner
        )

    def of(self, cls: type[Event]) -> list[Any]:
        return [e for e in self.published if isinstance(e, cls)]
