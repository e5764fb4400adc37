"""The export use case: one dataset version per labeling round, written in round order.

QA publishes one ``LabelsReady`` per round once the round is settled. Version *n* holds the labels
of rounds 1 to *n*: the rounds' labels folded in round order, joined with the items' data from the
item catalog (written by the ingester before anyone heard of the items). Rounds are applied in
their order (:class:`~labelloop.sequencing.RoundSequencer`): a round that arrives early waits,
parked, for the one before. So a version depends on its rounds alone, not on when messages
arrived: the same campaign gives byte-identical files (the manifest's ``created_at`` apart).

A process keeps each project's labels as of the last version it wrote and folds the next round
into them (:func:`~labelloop_exporter.domain.labels.fold_round`), so writing version *n* reads
round *n* alone; only a process that has none (a restart, another replica's version in between)
reads rounds 1 to *n - 1* again, one at a time. Of the catalog it keeps the data of the labeled
items only (read from their chunks when first labeled), not that of every ingested item.

Every version is written to disk atomically (``DatasetDirectory``) and shared through the object
store for a trainer without the export volume; a redelivered round finds its version on disk and
announces it again (same event id: JetStream drops the copy).

**Revised rounds.** QA revises a round after it was scored when an answer is updated, deleted or
added (``LabelsReady.revision`` ≥ 1: all of the round's labels again, items with no answer left
withdrawn). The exporter keeps every revision (``exporter/<project>/rounds/<n>-r<k>.json``) and
the latest one per round in KV (``exporter.<project>.revised``, written after the file). A
version folds each of its rounds at the revision that KV names, and its manifest lists them
(``revisions``). When a round the latest version holds is revised, that version is written again
as a new, immutable version ``v<n>-r<j>`` (the same rounds, the corrected labels, withdrawn rows
gone): the versions already written never change. Both sides write before they read (a revision:
its KV entry, then the versions on disk; a round: its version, then KV), so a revision racing a
round's version is in one of them, and a redelivered revision finds it there and writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from labelloop.catalog import Catalog
from labelloop.events import DatasetExported, Event, LabelsReady, utc_now
from labelloop.project import ProjectConfig
from labelloop.sequencing import RoundSequencer
from labelloop.stores import Blobs, KeyValue, kv_update
from labelloop_exporter.domain.dataset import (
    DATASET_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    dataset_event,
    prepare,
    render,
)
from labelloop_exporter.domain.formats import labels_only
from labelloop_exporter.domain.labels import CurrentLabel, fold_round
from labelloop_exporter.domain.manifest import BatchAgreement, sha256
from labelloop_exporter.domain.splits import split_salt
from labelloop_exporter.domain.table import ItemData
from labelloop_exporter.domain.versions import format_revision, parse_revision
from labelloop_exporter.metrics import ExporterMetrics
from labelloop_exporter.store import DatasetDirectory, VersionExists

__all__ = ["ExportOutcome", "Exporter", "version_name"]

log = logging.getLogger("labelloop.exporter")

ProjectLookup = Callable[[str], Awaitable[ProjectConfig]]


def version_name(round_number: int) -> str:
    """Version *n* holds rounds 1 to *n*."""
    return f"v{round_number:04d}"


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    outcome: Literal["published", "announced", "invalid", "empty"]
    version: str | None = None
    reason: str = ""
    event: DatasetExported | None = None


@dataclass
class _Folded:
    """A project's labels and batch agreements as of version ``through``."""

    through: int = 0
    labels: dict[str, CurrentLabel] = field(default_factory=dict)
    agreement: dict[str, BatchAgreement] = field(default_factory=dict)
    data: dict[str, ItemData] = field(default_factory=dict)
    """Data of the items labeled so far (an item's data never changes: shared by versions)."""
    revisions: dict[int, int] = field(default_factory=dict)
    """Rounds folded at a revision: round -> ``LabelsReady.revision``."""

    def then(self, event: LabelsReady) -> _Folded:
        """The state of the next version (a new one: this one stays as it was)."""
        labels = dict(self.labels)
        fold_round(labels, event)
        agreement = {
            **self.agreement,
            event.batch_id: BatchAgreement(
                event.percent_agreement, event.krippendorff_alpha, event.n_items
            ),
        }
        revisions = dict(self.revisions)
        if event.revision:
            revisions[event.round] = event.revision
        return _Folded(event.round, labels, agreement, self.data, revisions)

    def holds(self, revised: dict[int, int]) -> bool:
        """Whether every revision of its rounds in ``revised`` is folded in."""
        return all(self.revisions.get(r, 0) >= k for r, k in revised.items() if r <= self.through)


FOLDED_PROJECTS = 8
"""Projects whose folded labels a process keeps (the others are folded again when needed)."""
REWRITE_ATTEMPTS = 20
"""Tries to write a revised version while other replicas write theirs."""


class Exporter:
    def __init__(
        self,
        *,
        state: Callable[[], KeyValue],
        artifacts: Callable[[], Blobs],
        publish: Callable[[Event], Awaitable[object]],
        project: ProjectLookup,
        datasets: DatasetDirectory,
        metrics: ExporterMetrics,
        salt: str | None = None,
    ) -> None:
        self._artifacts = artifacts
        self._state = state
        self._publish = publish
        self._project = project
        self.datasets = datasets
        self.catalog = Catalog(state, artifacts, keep_data=False, chunk_cache=4)
        self._metrics = metrics
        self._salt = salt
        self.rounds = RoundSequencer(
            "exporter-rounds", state, artifacts, self._export_round, area="exporter"
        )
        self._folded: OrderedDict[str, _Folded] = OrderedDict()

    def salt(self, project: str) -> str:
        return self._salt or split_salt(project)

    # ------------------------------------------------------------------ inputs

    async def labels_ready(self, event: LabelsReady) -> str:
        """Keep the round's labels; its version is written in its turn. A revision of a round
        the latest version holds writes that version again, corrected."""
        await self._artifacts().put(
            self._round_name(event.project, event.round, event.revision),
            event.model_dump_json().encode(),
        )
        if event.revision == 0:
            self._metrics.labels.labels(project=event.project, outcome="new").inc(len(event.labels))
            return await self.rounds.offer(
                event.project, event.round, event.model_dump_json().encode()
            )
        self._metrics.labels.labels(project=event.project, outcome="revised").inc(len(event.labels))

        def newer(raw: bytes | None) -> bytes | None:
            revised = json.loads(raw) if raw else {}
            if revised.get(str(event.round), 0) >= event.revision:
                return None
            return json.dumps(
                {**revised, str(event.round): event.revision}, sort_keys=True
            ).encode()

        # the file first, then KV (a reader of KV finds the file), then the versions on disk
        await kv_update(self._state(), self._revised_key(event.project), newer)
        return await self._catch_up(event.project)

    async def requested(
        self, config: ProjectConfig, formats: list[str] | None, request_id: str
    ) -> ExportOutcome:
        """An operator asks for the dataset now: the latest version, announced again."""
        latest = await asyncio.to_thread(self.datasets.latest, config.name)
        if latest is None:
            return ExportOutcome("empty", reason="no labeling round has finished yet")
        manifest = await asyncio.to_thread(self.datasets.manifest, config.name, latest)
        missing = sorted(set(formats or []) - set(manifest.get("formats", [])))
        if missing:
            return ExportOutcome(
                "invalid",
                version=latest,
                reason=(
                    f"{latest} holds {', '.join(manifest.get('formats', []))}; add {missing} to "
                    "the project's export.formats and the next round's version has them"
                ),
            )
        event = await self._announce(config.name, latest, request_id=request_id)
        return ExportOutcome("announced", version=latest, event=event)

    # ------------------------------------------------------------------ one round

    @staticmethod
    def _round_name(project: str, number: int, revision: int = 0) -> str:
        suffix = f"-r{revision}" if revision else ""
        return f"exporter/{project}/rounds/{number:06d}{suffix}.json"

    async def _round(self, project: str, number: int, revision: int = 0) -> LabelsReady | None:
        raw = await self._artifacts().get(self._round_name(project, number, revision))
        return None if raw is None else LabelsReady.model_validate_json(raw)

    @staticmethod
    def _revised_key(project: str) -> str:
        return f"exporter.{project}.revised"

    async def _revised(self, project: str) -> dict[int, int]:
        """Each revised round's latest revision (as far as this exporter has heard)."""
        entry = await self._state().get(self._revised_key(project))
        return {int(r): int(k) for r, k in json.loads(entry.value).items()} if entry else {}

    async def _folded_through(self, project: str, number: int, revised: dict[int, int]) -> _Folded:
        """The project's labels as of round ``number``, each round at its revision in
        ``revised``: this process's own if it has them, else folded again from the rounds'
        stored labels (a revision replaces the round's labels, so it is folded in its place)."""
        folded = self._folded.get(project)
        if folded is None or folded.through != number or not folded.holds(revised):
            data = folded.data if folded is not None else {}
            folded = _Folded(data=data)
            for earlier in range(1, number + 1):
                found = await self._round(project, earlier, revised.get(earlier, 0))
                if found is None:
                    raise LookupError(f"{project}: labels of round {earlier} are missing")
                folded = folded.then(found)
        return folded

    def _keep(self, project: str, folded: _Folded) -> None:
        self._folded[project] = folded
        self._folded.move_to_end(project)
        while len(self._folded) > FOLDED_PROJECTS:
            self._folded.popitem(last=False)

    async def _export_round(self, project: str, number: int, payload: bytes) -> None:
        event = LabelsReady.model_validate_json(payload)
        version = version_name(number)
        if await asyncio.to_thread(self.datasets.has, project, version):
            await self._announce(project, version)  # written before a crash: announce it
            await self._catch_up(project)
            return
        revised = await self._revised(project)
        if revised.get(number, 0) > event.revision:  # revised while it waited for its turn
            event = await self._round(project, number, revised[number]) or event
        folded = (await self._folded_through(project, number - 1, revised)).then(event)
        parent = version_name(number - 1) if number > 1 else None
        await self._write(project, number, version, folded, parent)
        # a revision that came while this version was written: it is in KV now, or saw this
        # version on disk and wrote it again itself
        await self._catch_up(project)

    async def _catch_up(self, project: str) -> str:
        """Write the latest version again (``v<n>-r<j>``) if rounds it holds were revised since
        it was written; ``revised`` if it was, ``unchanged`` if the latest version holds them."""
        for _ in range(REWRITE_ATTEMPTS):
            latest = await asyncio.to_thread(self.datasets.latest, project)
            if latest is None:
                return "unchanged"  # no version yet: the first holds every revision it needs
            number, rewrites = parse_revision(latest) or (0, 0)
            revised = await self._revised(project)
            manifest = await asyncio.to_thread(self.datasets.manifest, project, latest)
            held = {int(r): int(k) for r, k in (manifest.get("revisions") or {}).items()}
            if all(held.get(r, 0) >= k for r, k in revised.items() if r <= number):
                if rewrites:
                    await self._announce(project, latest)  # again, should a crash have come first
                return "unchanged"
            folded = await self._folded_through(project, number, revised)
            if await self._write(
                project, number, format_revision(number, rewrites + 1), folded, latest
            ):
                return "revised"
        raise RuntimeError(f"{project}: revised versions kept racing: retry later")

    async def _write(
        self, project: str, number: int, version: str, folded: _Folded, parent: str | None
    ) -> bool:
        """Write and announce one version of rounds 1 to ``number``; ``False`` if another
        writer (a replica, an earlier delivery) wrote one by that name first."""
        config = await self._project(project)
        started = time.perf_counter()
        labels = folded.labels
        items = await self.catalog.load(project)
        new = [i for i in labels if i not in folded.data and i in items.records]
        found = await self.catalog.data_of(project, items, new)
        for item_id in new:
            folded.data[item_id] = ItemData(found[item_id], items.records[item_id].metadata)
        data = {i: folded.data[i] for i in labels if i in folded.data}
        salt = self.salt(project)
        prepared = await asyncio.to_thread(prepare, labels, data, config, salt=salt)
        if not prepared.ok:
            # the project's own formats cannot be written: a configuration error, said loudly
            raise ValueError(f"{project}: version {version} not written: {prepared.reason()}")
        for problem in prepared.validation.problems:
            left_out = len(problem.item_ids) or 1
            self._metrics.invalid.labels(project=project, reason=problem.code).inc(left_out)
            log.warning("%s %s: rows left out: %s", project, version, problem)
        parent_labels = None
        if parent is not None and await asyncio.to_thread(self.datasets.has, project, parent):
            parent_labels = await asyncio.to_thread(self.datasets.labels_of, project, parent)
        agreement = folded.agreement
        rendered = await asyncio.to_thread(
            render,
            prepared,
            config,
            version=version,
            parent_version=parent,
            parent_labels=parent_labels,
            created_at=utc_now(),
            salt=salt,
            agreement=agreement,
            round_number=number,
            revisions=folded.revisions,
        )
        try:
            path = await asyncio.to_thread(self.datasets.write, project, version, rendered.files)
        except VersionExists:
            # a replica wrote it first (the same rows: versions are a function of their rounds
            # and the revisions they hold, which the manifest lists)
            self._keep(project, folded)
            await self._announce(project, version)
            return False
        base, labels_digest = await self._share(
            project, version, rendered.files[DATASET_FILE], rendered.files[MANIFEST_FILE]
        )
        announced = dataset_event(
            rendered.manifest,
            path=str(path.resolve()),
            manifest_sha256=rendered.manifest_sha256,
            dataset_ref=base,
            labels_sha256=labels_digest,
        )
        self._keep(project, folded)
        await self._publish(announced)
        self._metrics.exports.labels(project=project, outcome="published").inc()
        self._metrics.versions.labels(project=project).inc()
        self._metrics.rows.labels(project=project).inc(announced.n_rows)
        self._metrics.duration.observe(time.perf_counter() - started)
        log.info(
            "dataset %s/%s written: %d rows (%d new)%s",
            project,
            version,
            announced.n_rows,
            announced.n_new_rows,
            f", revised rounds {folded.revisions}" if folded.revisions else "",
        )
        return True

    async def _share(
        self, project: str, version: str, dataset: bytes, manifest: bytes
    ) -> tuple[str, str]:
        """Put a version's labels and manifest in the object store, so a trainer needs no shared
        volume; the items' data stays in the catalog, where the ingester wrote it once. Returns
        the prefix and the labels file's sha256, which the announcement carries."""
        base = f"exporter/{project}/datasets/{version}/"
        labels = await asyncio.to_thread(labels_only, dataset)
        await self._artifacts().put(base + LABELS_FILE, labels)
        await self._artifacts().put(base + MANIFEST_FILE, manifest)
        return base, sha256(labels)

    async def _announce(
        self, project: str, version: str, *, request_id: str | None = None
    ) -> DatasetExported:
        """Publish a version that is on disk (after a crash, or because an operator asked)."""
        manifest = await asyncio.to_thread(self.datasets.manifest, project, version)
        raw = await asyncio.to_thread(self.datasets.manifest_bytes, project, version)
        path = self.datasets.path(project, version).resolve()
        data = await asyncio.to_thread((path / DATASET_FILE).read_bytes)
        base, labels_digest = await self._share(project, version, data, raw)
        event = dataset_event(
            manifest,
            path=str(path),
            manifest_sha256=sha256(raw),
            dataset_ref=base,
            labels_sha256=labels_digest,
            request_id=request_id,
        )
        await self._publish(event)
        return event
