"""Fixtures of the end-to-end tests: the six services in process, and a real Label Studio.

``nats_url`` and ``namespace`` come from ``tests/conftest.py``. The services as separate processes
are ``labelloop_console.processes.Supervisor``'s job; nothing here duplicates it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from labelloop.runtime import Service
from labelloop.testing import started
from labelloop_bridge.app import build_app as build_bridge
from labelloop_bridge.settings import BridgeSettings
from labelloop_exporter.app import build_app as build_exporter
from labelloop_exporter.settings import ExporterSettings
from labelloop_ingester.app import build_app as build_ingester
from labelloop_ingester.settings import IngesterSettings
from labelloop_qa.app import build_app as build_qa
from labelloop_qa.settings import QASettings
from labelloop_sampler.app import build_app as build_sampler
from labelloop_sampler.settings import SamplerSettings
from labelloop_trainer.app import build_app as build_trainer
from labelloop_trainer.settings import TrainerSettings

_LS_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "labelstudio" / "labelstudio.sh"

ServicesFactory = Callable[..., AbstractAsyncContextManager[dict[str, Service]]]


def build_six(nats_url: str, namespace: str, export_dir: Path, **common: Any) -> dict[str, Service]:
    """The six services as the composition roots build them (the bridge on the simulated crew).

    ``common`` goes to every service's settings (``max_deliver``, ``retry_backoff_seconds``, ...).
    """
    base = {"nats_url": nats_url, "namespace": namespace, **common}
    return {
        "ingester": build_ingester(IngesterSettings(**base)),
        "sampler": build_sampler(SamplerSettings(**base)),
        "annotation-bridge": build_bridge(BridgeSettings(backend="simulated", **base)),
        "qa-scorer": build_qa(QASettings(**base)),
        "exporter": build_exporter(ExporterSettings(export_dir=export_dir, **base)),
        "trainer": build_trainer(TrainerSettings(**base)),
    }


@pytest.fixture
def six_services(nats_url: str, namespace: str, tmp_path: Path) -> ServicesFactory:
    """``async with six_services(**settings) as services:`` runs all six in process on NATS."""

    @asynccontextmanager
    async def run(**common: Any) -> AsyncIterator[dict[str, Service]]:
        services = build_six(nats_url, namespace, tmp_path / "exports", **common)
        async with AsyncExitStack() as stack:
            for service in services.values():
                await stack.enter_async_context(started(service))
            yield services

    return run


# ---------------------------------------------------------------------- Label Studio
