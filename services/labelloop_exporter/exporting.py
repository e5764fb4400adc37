"""The export use case: accumulate labels, and on policy or request write and announce a version."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from labelloop.events import DatasetExported, Event, ItemsIngested, LabelsReady, QAReport, utc_now
from labelloop.project import ProjectConfig
from labelloop.stores import Blobs, KeyValue
from labelloop_exporter.agreement_store import AgreementBook
from labelloop_exporter.dataset_dir import DatasetDirectory, VersionExists
from labelloop_exporter.domain.dataset import (
    DATASET_FILE,
    MANIFEST_FILE,
    Prepared,
    dataset_event,
    prepare,
    render,
)
from labelloop_exporter.domain.labels import current_labels
from labelloop_exporter.domain.manifest import sha256
from labelloop_exporter.domain.splits import split_salt
from labelloop_exporter.domain.versions import next_version, parse_version
from labelloop_exporter.items_store import ItemCatalog
from labelloop_exporter.labels_store import LabelLedger
from labelloop_exporter.metrics import ExporterMetrics

__all__ = ["ExportOutcome", "Exporter", "ItemsNotSeenYet", "VersionRace"]

log = logging.getLogger("labelloop.exporter")


class VersionRace(RuntimeError):
    """Other writers kept taking the version number we chose; the message is retried later."""


class ItemsNotSeenYet(RuntimeError):
    """Labeled items whose ItemsIngested this replica has not processed yet (consumers run apart).

    Raised rather than refused: the runtime retries the message with backoff, by which time the
    items have usually arrived; if they never do, the message reaches the dead letters with this
    reason.
    """


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    outcome: Literal["published", "unchanged", "invalid", "empty"]
    version: str | None = None
    reason: str = ""
    event: DatasetExported | None = None


class Exporter:
    def __init__(
        self,
        *,
        state: Callable[[], KeyValue],
        artifacts: Callable[[], Blobs],
        publish: Callable[[Event], Awaitable[object]],
        datasets: DatasetDirectory,
        metrics: ExporterMetrics,
        salt: str | None = None,
        max_version_attempts: int = 5,
    ) -> None:
        self._state = state
        self._artifacts = artifacts
        self._publish = publish
        self.datasets = datasets
        self.labels = LabelLedger(state, artifacts)
        self.items = ItemCatalog(artifacts)
        self.agreement = AgreementBook(state)
        self._metrics = metrics
        self._salt = salt
        self._attempts = max_version_attempts
        self._locks: dict[str, asyncio.Lock] = {}

    def salt(self, project: str) -> str:
        return self._salt or split_salt(project)

    # ------------------------------------------------------------------ inputs

    async def on_items(self, event: ItemsIngested) -> None:
        await self.items.record(event)

    async def on_report(self, report: QAReport) -> None:
        await self.agreement.record(report)

    async def on_labels(self, event: LabelsReady, config: ProjectConfig) -> ExportOutcome | None:
        """Keep the labels; export when ``every_n_labels`` new labels are pending."""
        fresh = await self.labels.record(event)
        self._metrics.labels.labels(outcome="new" if fresh else "redelivered").inc(
            len(event.labels)
        )
        pending = await self.labels.pending(event.project)
        if len(pending) < config.export.every_n_labels:
            return None
        return await self.export(config)

    # ------------------------------------------------------------------ export

    async def export(
        self, config: ProjectConfig, formats: Sequence[str] | None = None
    ) -> ExportOutcome:
        """Write a new version if the labels changed since the last one; announce it."""
        lock = self._locks.setdefault(config.name, asyncio.Lock())
        async with lock:  # replicas race through the atomic rename; handlers in one process queue
            started = time.perf_counter()
            outcome = await self._export(config, formats)
            self._metrics.exports.labels(outcome=outcome.outcome).inc()
            if outcome.outcome == "published":
                self._metrics.duration.observe(time.perf_counter() - started)
            return outcome

    async def _export(self, config: ProjectConfig, formats: Sequence[str] | None) -> ExportOutcome:
        project = config.name
        snapshot = await self.labels.pending(project)  # before reading labels: all are included
        events = await self.labels.events(project)
        if not events:
            return ExportOutcome("empty", reason="no labels yet")
        items = await self.items.load(project)
        salt = self.salt(project)
        prepared = await asyncio.to_thread(
            prepare, current_labels(events), items, config, salt=salt, formats=formats
        )
        if not prepared.ok:
            codes = {p.code for p in prepared.validation.problems}
            if codes == {"missing_item_data"}:
                raise ItemsNotSeenYet(prepared.validation.reason())
            return await self._refuse(project, prepared)
        if await self._state().get(self._failure_key(project)) is not None:
            await self._state().delete(self._failure_key(project))
        for _ in range(self._attempts):
            versions = await asyncio.to_thread(self.datasets.versions, project)
            latest = versions[-1] if versions else None
            if latest is not None:
                manifest = await asyncio.to_thread(self.datasets.manifest, project, latest)
                if manifest.get("content_sha256") == prepared.content_sha256:
                    await self._announce(project, latest)
                    await self.labels.settle(project, snapshot)
                    log.info("labels unchanged since %s/%s: no new version", project, latest)
                    return ExportOutcome("unchanged", version=latest)
            try:
                event = await self._write(config, prepared, versions, salt)
            except VersionExists:
                continue  # another writer took this number: look again
            await self.labels.settle(project, snapshot)
            return ExportOutcome("published", version=event.version, event=event)
        raise VersionRace(f"{project}: {self._attempts} version numbers taken by other writers")

    async def _write(
        self, config: ProjectConfig, prepared: Prepared, versions: list[str], salt: str
    ) -> DatasetExported:
        project = config.name
        latest = versions[-1] if versions else None
        version = next_version(versions)
        parent = (
            await asyncio.to_thread(self.datasets.labels_of, project, latest) if latest else None
        )
        batches = set(prepared.validation.rows["batch_id"])
        agreement = await self.agreement.load(project, batches)
        rendered = await asyncio.to_thread(
            render,
            prepared,
            config,
            version=version,
            parent_version=latest,
            parent_labels=parent,
            created_at=utc_now(),
            salt=salt,
            agreement=agreement,
        )
        path = await asyncio.to_thread(self.datasets.write, project, version, rendered.files)
        base = await self._share(
            project, version, rendered.files[DATASET_FILE], rendered.files[MANIFEST_FILE]
        )
        event = dataset_event(
            rendered.manifest,
            path=str(path.resolve()),
            manifest_sha256=rendered.manifest_sha256,
            dataset_ref=base,
        )
        await self._publish(event)
        await self._state().put(self._announced_key(project), version.encode())
        self._metrics.versions.inc()
        self._metrics.rows.inc(event.n_rows)
        log.info(
            "dataset %s/%s written: %d rows (%d new)",
            project,
            version,
            event.n_rows,
            event.n_new_rows,
        )
        return event

    async def _share(self, project: str, version: str, dataset: bytes, manifest: bytes) -> str:
        """Copy a version to the object store, so a trainer needs no shared volume."""
        base = f"exporter/{project}/datasets/{version}/"
        await self._artifacts().put(base + DATASET_FILE, dataset)
        await self._artifacts().put(base + MANIFEST_FILE, manifest)
        return base

    async def _announce(self, project: str, version: str) -> None:
        """Publish a version a crash left unannounced (written, never published)."""
        entry = await self._state().get(self._announced_key(project))
        announced = parse_version(entry.value.decode()) if entry is not None else None
        if announced is not None and announced >= (parse_version(version) or 0):
            return
        manifest = await asyncio.to_thread(self.datasets.manifest, project, version)
        raw = await asyncio.to_thread(self.datasets.manifest_bytes, project, version)
        path = self.datasets.path(project, version).resolve()
        data = await asyncio.to_thread((path / DATASET_FILE).read_bytes)
        base = await self._share(project, version, data, raw)
        await self._publish(
            dataset_event(manifest, path=str(path), manifest_sha256=sha256(raw), dataset_ref=base)
        )
        await self._state().put(self._announced_key(project), version.encode())

    async def _refuse(self, project: str, prepared: Prepared) -> ExportOutcome:
        reason = prepared.validation.reason()
        for problem in prepared.validation.problems:
            self._metrics.invalid.labels(reason=problem.code).inc()
        failure = {"at": utc_now().isoformat(), "reason": reason}
        await self._state().put(self._failure_key(project), json.dumps(failure).encode())
        log.warning("dataset for %s not published: %s", project, reason)
        return ExportOutcome("invalid", reason=reason)

    @staticmethod
    def _announced_key(project: str) -> str:
        return f"exporter.{project}.announced"

    @staticmethod
    def _failure_key(project: str) -> str:
        return f"exporter.{project}.last_failure"
