"""Fixtures of the end-to-end tests: the six services in process, and a real Label Studio.

``nats_url`` and ``namespace`` come from ``tests/conftest.py``. The services as separate processes
are ``labelloop.processes.Supervisor``'s job; nothing here duplicates it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    token: str
    username: str
    password: str

    def __repr__(self) -> str:  # keep the secrets out of pytest's failure output
        return f"LabelStudioServer(url={self.url!r})"


def _read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """A real Label Studio 1.23 (``infra/labelstudio``) on loopback, with a legacy API token."""
    if os.environ.get("LABELLOOP_SKIP_LABELSTUDIO") == "1":
        pytest.skip("LABELLOOP_SKIP_LABELSTUDIO=1: Label Studio tests skipped")
    state = tmp_path_factory.mktemp("labelstudio-e2e")
    subprocess.run([str(_LS_SCRIPT), "install"], check=True, capture_output=True, timeout=900)
    run = subprocess.run(
        [str(_LS_SCRIPT), "start", "--dir", str(state)],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    if run.returncode != 0:
        log = state / "labelstudio.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail(f"Label Studio did not start:\n{run.stderr}\n{tail}")
    env = _read_env(state / "labelstudio.env")
    try:
        yield LabelStudioServer(
            url=env["LABEL_STUDIO_URL"],
            token=env["LABEL_STUDIO_API_KEY"],
            username=env["LABEL_STUDIO_USERNAME"],
            password=env["LABEL_STUDIO_PASSWORD"],
        )
    finally:
        subprocess.run([str(_LS_SCRIPT), "stop", "--dir", str(state)], check=False, timeout=60)
