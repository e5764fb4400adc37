"""Support for the campaign tests: the demo's campaign against the services as processes, and
what it left on the bus (every batch, the serving model, the pool's score tables).

Each test keeps its data, its project and its assertions; only the harness lives here. Nothing
here sleeps: the waits are the demo's ``wait_for``, polling with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from nats.js.api import ConsumerConfig, DeliverPolicy

from labelloop.catalog import ProbabilityTable, decode_table
from labelloop.client import BusClient, connect
from labelloop.events import BatchCreated, ItemIn, ModelTrained, RequestSampling
from labelloop.payloads import resolve
from labelloop.project import ProjectConfig, load_project, parse_project
from labelloop.settings import ServiceSettings
from labelloop.testing import example_module as example_module  # the e2e tests' import
from labelloop_console.campaign import CampaignView, CampaignWatcher
from labelloop_console.demo import submit_items, wait_for
from labelloop_console.processes import Supervisor
from labelloop_ingester.domain.featurize import MediaOptions, media_features
from labelloop_trainer.domain.estimators import aligned_proba

T = TypeVar("T")


def example_config(example: Path, *, budget: int, seed: int) -> ProjectConfig:
    """The example's project with ``budget`` labels, sampling seeded and started on command."""
    raw = load_project(example / "project.yaml").model_dump(mode="json")
    raw["budget"] = {**raw["budget"], "max_labels": budget}
    # the pool is ingested whole before the first batch, as the demo does
    raw["sampling"] = {**raw["sampling"], "seed": seed, "start": "on_command"}
    return parse_project(raw)


@dataclass(frozen=True)
class Waits:
    """How long a phase of the campaign may take in all, and without progress (seconds)."""

    timeout: float
    stall: float


@dataclass(frozen=True)
class Plan:
    """How a test's campaign runs: its items' ``source``, the waits for ingestion and for the
    campaign to settle, the failure's message when items go missing (``ingested``), and
    whether the ingester may reject some (``rejects``)."""

    source: str
    ingest: Waits
    settle: Waits
    ingested: str
    rejects: bool = False


@dataclass(frozen=True)
class Campaign:
    """A settled campaign, its bus still open: the watcher's view, every batch it created, and
    how many items the ingester rejected before sampling started."""

    bus: BusClient
    view: CampaignView
    batches: list[BatchCreated]
    rejected: int


def run_campaign(
    tmp_path: Path,
    nats_url: str,
    namespace: str,
    config: ProjectConfig,
    items: Sequence[ItemIn],
    plan: Plan,
    read: Callable[[Campaign], Awaitable[T]],
    env: Mapping[str, str] | None = None,
) -> tuple[CampaignView, list[BatchCreated], T]:
    """The demo's campaign of ``config`` over ``items`` against the six services as processes
    (the bridge on the simulated crew, exports under ``tmp_path``, ``env`` added), none of which
    may need a restart; its view, its batches, and what ``read`` takes from the settled
    campaign while the bus is open."""
    environment = {
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(tmp_path / "exports"),
        "LABELLOOP_BRIDGE_BACKEND": "simulated",
        "LABELLOOP_BRIDGE_RECONCILE_INTERVAL_SECONDS": "5",
        **(env or {}),
    }
    settings = ServiceSettings(nats_url=nats_url, namespace=namespace)

    async def drive(supervisor: Supervisor) -> tuple[CampaignView, list[BatchCreated], T]:
        async with _campaign(settings, supervisor, config, items, plan) as run:
            found = await read(run)
        return run.view, run.batches, found

    with Supervisor(nats_url, namespace, tmp_path, env=environment) as supervisor:
        supervisor.start_all()
        supervisor.wait_ready(timeout=90)
        result = asyncio.run(drive(supervisor))
        assert supervisor.restarts == {}
    return result


@asynccontextmanager
async def _campaign(
    settings: ServiceSettings,
    supervisor: Supervisor,
    config: ProjectConfig,
    items: Sequence[ItemIn],
    plan: Plan,
) -> AsyncIterator[Campaign]:
    """The project applied, ``items`` submitted and ingested, sampling started, the campaign
    settled; the supervisor revives a service that dies meanwhile."""
    async with connect(settings) as bus:
        watcher = CampaignWatcher(bus.nc, bus.ns, [config.name])
        await watcher.start()
        try:
            view = watcher.view(config.name)
            await bus.apply_project(config)
            await submit_items(bus, config.name, list(items), plan.source)

            def supervise() -> None:
                supervisor.revive()

            accounted = await wait_for(
                watcher,
                lambda: view.items_ingested + view.duplicates + view.items_rejected >= len(items),
                timeout=plan.ingest.timeout,
                stall=plan.ingest.stall,
                supervise=supervise,
            )
            assert accounted, plan.ingested
            rejected = view.items_rejected
            if not plan.rejects:
                assert rejected == 0
            await bus.publish(
                RequestSampling(project=config.name, action="start", reason="pool ingested")
            )
            settled = await wait_for(
                watcher,
                lambda: view.settled,
                timeout=plan.settle.timeout,
                stall=plan.settle.stall,
                supervise=supervise,
            )
            assert settled, f"the campaign ended: {view.next_batch(config)}"
            batches = await read_batches(bus, len(view.batches))
            yield Campaign(bus, view, batches, rejected)
        finally:
            await watcher.stop()


async def read_batches(bus: BusClient, count: int) -> list[BatchCreated]:
    """Every ``BatchCreated`` on the bus, tasks and predictions included."""
    js = bus.nc.jetstream()
    sub = await js.subscribe(
        bus.ns.subject(BatchCreated),
        stream=bus.ns.stream_name(bus.ns.stream_for(BatchCreated)),
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    blobs = await bus.blobs()
    found = []
    try:
        for _ in range(count):
            msg = await sub.next_msg(timeout=30)
            found.append(
                BatchCreated.model_validate_json(await resolve(msg.data, msg.headers, blobs))
            )
    finally:
        await sub.unsubscribe()
    return found


def last_round(view: CampaignView) -> tuple[ModelTrained, ModelTrained]:
    """The last round's model and the one it served (itself, or an earlier one it kept)."""
    models = view.round_models()
    last = models[max(models)]
    serving = next(m for m in view.models if m.model_version == last.serving_model_version)
    return last, serving


async def blob(bus: BusClient, ref: str | None) -> bytes:
    """The blob under ``ref``, which must be there."""
    found = await (await bus.blobs()).get(ref or "")
    assert found is not None, ref
    return found


async def score_tables(bus: BusClient, view: CampaignView) -> dict[str, ProbabilityTable]:
    """The pool's score table of every model that scored it, by model version."""
    return {
        m.model_version: decode_table(await blob(bus, m.scores_ref))
        for m in view.models
        if m.scores_ref
    }


def check_media_campaign(
    view: CampaignView, batches: Sequence[BatchCreated], config: ProjectConfig, *, pool: int
) -> None:
    """What a media campaign (the ingester featurising files, one corrupt file among them) must
    show: the ``pool`` ingested, the campaign finished without dead letters, a first batch
    spread over the pool, then at least two hybrid batches chosen with a model, whose tasks
    carry its predictions."""
    assert view.items_ingested == pool
    assert view.budget_exhausted is not None or view.converged is not None
    assert view.dead_letters == 0
    labeling = sorted((b for b in batches if b.kind == "labeling"), key=lambda b: b.round)
    assert labeling[0].strategy == "diversity"  # no model yet: spread over the pool
    chosen_by_model = [b for b in labeling[1:] if b.model_version is not None]
    assert len(chosen_by_model) >= 2, "later batches are chosen with a trained model"
    assert all(b.strategy == "hybrid" for b in chosen_by_model)
    predicted = [t.prediction for b in chosen_by_model for t in b.tasks if not t.is_gold]
    assert predicted
    assert all(p is not None and p.label in config.labels.classes for p in predicted)


def held_out_accuracy(
    model: Any, config: ProjectConfig, field: str, paths: Sequence[Path], truth: npt.NDArray[Any]
) -> tuple[float, npt.NDArray[np.float32]]:
    """The model's accuracy on files the campaign never saw, featurised by the ingester's own
    code (``field``: the project's media field), and their features."""
    block = media_features(
        [ItemIn(data={field: str(path)}) for path in paths],
        config,
        lambda ref: Path(ref).read_bytes(),
        MediaOptions(),
    ).block
    assert block is not None
    proba = aligned_proba(model, block.X, config.labels.classes)
    guessed = np.asarray(config.labels.classes, dtype=object)[np.argmax(proba, axis=1)]
    return float(np.mean(guessed == truth)), block.X
