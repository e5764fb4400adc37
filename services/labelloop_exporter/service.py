"""The export use case: every labeling round exported for training, in round order, and a full
dataset version every ``export.every_n_labels`` labels.

QA publishes one ``LabelsReady`` per round once the round is settled. Rounds are applied in their
order (:class:`~labelloop.sequencing.RoundSequencer`): a round that arrives early waits, parked,
for the one before. The labels of rounds 1 to *n* are the rounds' labels folded in round order,
so everything written depends on the rounds alone, not on when messages arrived: the same
campaign gives byte-identical files (the manifest's ``created_at`` apart).

**Every round** publishes a ``RoundExported``, which the trainer trains from: the rows as of the
round, as the last full version's labels plus a *delta* per round since (the rows of the items
the round touched, and the touched items that have no row any more: :mod:`labelloop.rows`). A
delta costs what the round labeled, not the whole dataset; its record
(``exporter/<project>/exported/<n>.json``, the event itself) is written before it is announced,
so a redelivered round announces it again (same event id: JetStream drops the copy).

**A full version** ``v<n>`` (rounds 1 to *n*, every format, written to disk atomically by
``DatasetDirectory`` and its labels shared through the object store) is written by round *n*
when ``every_n_labels`` labels came since the last one, when :data:`MAX_DELTAS` rounds came since
(the trainer's chain stays short), when a revision changed an earlier round (a delta only adds a
round to rows that did not change under it), and for the campaign's last round: the one
``BudgetExhausted.last_round`` names (a raised budget's rounds after it are exported as any
others), or, once ``LabelingConverged`` came, the latest round and each one after it (the few
cut before the sampler heard). An operator's ``RequestExport`` writes the latest round's version
if it has none.

A process keeps each project's labels as of the last round it exported, compactly (an Arrow
row a label: :class:`~labelloop_exporter.domain.fold.LabelFold`), and folds the next round into
them, so exporting round *n* reads round *n* alone; only a process that has none (a restart,
another replica's round in between) reads rounds 1 to *n - 1* again, one at a time. An item's
data is read from its catalog chunk by the first version that holds it, and kept in its row.

**Revised rounds.** QA revises a round after it was scored when an answer is updated, deleted or
added (``LabelsReady.revision`` ≥ 1: all of the round's labels again, items with no answer left
withdrawn). The exporter keeps every revision (``exporter/<project>/rounds/<n>-r<k>.json``) and
the latest one per round in KV (``exporter.<project>.revised``, written after the file). A round
folds each earlier round at the revision that KV names, and a manifest lists them
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
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from labelloop import memory
from labelloop.catalog import Catalog
from labelloop.events import (
    DatasetExported,
    Event,
    LabelsReady,
    RoundDelta,
    RoundExported,
    deterministic_id,
    utc_now,
)
from labelloop.project import ProjectConfig
from labelloop.rows import delta_bytes
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
from labelloop_exporter.domain.fold import LabelFold
from labelloop_exporter.domain.formats import labels_only, labels_table
from labelloop_exporter.domain.labels import CurrentLabel
from labelloop_exporter.domain.manifest import BatchAgreement, sha256
from labelloop_exporter.domain.splits import split_salt
from labelloop_exporter.domain.table import LABEL_COLUMNS, ItemData
from labelloop_exporter.domain.versions import format_revision, parse_revision
from labelloop_exporter.metrics import ExporterMetrics
from labelloop_exporter.store import DatasetDirectory, VersionExists

__all__ = ["MAX_DELTAS", "ExportOutcome", "Exporter", "version_name"]

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
    labels: LabelFold = field(default_factory=LabelFold)
    """Compact (about 100 bytes a label), with the data of the items a version read."""
    agreement: dict[str, BatchAgreement] = field(default_factory=dict)
    revisions: dict[int, int] = field(default_factory=dict)
    """Rounds folded at a revision: round -> ``LabelsReady.revision``."""
    record: RoundExported | None = None
    """Round ``through``'s record (its base version and deltas), once exported or read."""

    def then(self, event: LabelsReady) -> _Folded:
        """The state of the next version (a new one: this one stays as it was)."""
        agreement = {
            **self.agreement,
            event.batch_id: BatchAgreement(
                event.percent_agreement, event.krippendorff_alpha, event.n_items
            ),
        }
        revisions = dict(self.revisions)
        if event.revision:
            revisions[event.round] = event.revision
        return _Folded(event.round, self.labels.then(event), agreement, revisions)

    def holds(self, revised: dict[int, int]) -> bool:
        """Whether every revision of its rounds in ``revised`` is folded in."""
        return all(self.revisions.get(r, 0) >= k for r, k in revised.items() if r <= self.through)


MAX_DELTAS = 256
"""Rounds after the last full version at most: the round after writes one, so the deltas a
trainer reads (and the ``RoundExported`` that lists them) stay few."""
FOLDED_PROJECTS = 8
"""Projects whose folded labels a process keeps (the others are folded again when needed)."""
HELD_VERSIONS = 64
"""Versions whose revisions a process remembers (read from their manifests)."""
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
        self._held_revisions: OrderedDict[tuple[str, str], dict[int, int]] = OrderedDict()

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
        return await self._catch_up(event.project, again=True)

    async def requested(
        self, config: ProjectConfig, formats: list[str] | None, request_id: str
    ) -> ExportOutcome:
        """An operator asks for the dataset now: the latest round's version (written now if
        that round exported a delta only), announced again."""
        await self._finish(config.name)
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
                    "the project's export.formats and the next version has them"
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
            folded = _Folded()
            for earlier in range(1, number + 1):
                found = await self._round(project, earlier, revised.get(earlier, 0))
                if found is None:
                    raise LookupError(f"{project}: labels of round {earlier} are missing")
                folded = folded.then(found)
        return folded

    def _keep(self, project: str, folded: _Folded) -> None:
        kept = self._folded.get(project)
        if kept is not None and kept.through > folded.through and kept.holds(folded.revisions):
            return  # a revision rewrote an older version: the newer fold is what rounds need
        self._folded[project] = folded
        self._folded.move_to_end(project)
        while len(self._folded) > FOLDED_PROJECTS:
            self._folded.popitem(last=False)

    @staticmethod
    def _record_name(project: str, number: int) -> str:
        return f"exporter/{project}/exported/{number:06d}.json"

    async def _stored_record(self, project: str, number: int) -> RoundExported | None:
        raw = await self._artifacts().get(self._record_name(project, number))
        return None if raw is None else RoundExported.model_validate_json(raw)

    @staticmethod
    def _closing_key(project: str) -> str:
        return f"exporter.{project}.closing"

    async def _stop(self, project: str) -> _Stop:
        entry = await self._state().get(self._closing_key(project))
        return _Stop.decode(entry.value if entry is not None else None)

    async def _export_round(self, project: str, number: int, payload: bytes) -> None:
        started = time.perf_counter()
        done = await self._stored_record(project, number)
        if done is not None and (
            done.version is None
            or await asyncio.to_thread(self.datasets.has, project, done.version)
        ):  # exported before a crash, or by a replica: announce it again
            if done.version is not None:
                await self._announce(project, done.version)
            await self._publish(done)
            await self._after_round(project, done)
            return
        # (a record whose version is not on disk, an export volume lost: written again)
        event = LabelsReady.model_validate_json(payload)
        revised = await self._revised(project)
        if revised.get(number, 0) > event.revision:  # revised while it waited for its turn
            event = await self._round(project, number, revised[number]) or event
        before = await self._folded_through(project, number - 1, revised)
        previous = before.record
        if previous is None or previous.round != number - 1:
            previous = await self._stored_record(project, number - 1) if number > 1 else None
        folded = before.then(event)
        config = await self._project(project)
        stop = await self._stop(project)
        settings = export_settings(config, self.salt(project))
        if self._version_due(config, number, event, previous, folded, stop.due(number), settings):
            announced = await self._version(project, number, folded)
            record = _base_record(announced, settings)
            kind = "version"
        else:
            record = await self._delta(config, number, event, before, folded, previous, settings)
            kind = "delta"
        await self._artifacts().put(
            self._record_name(project, number), record.model_dump_json().encode()
        )
        folded.record = record
        self._keep(project, folded)
        await self._publish(record)
        self._metrics.rounds.labels(project=project, kind=kind).inc()
        self._metrics.round_duration.observe(time.perf_counter() - started)
        await self._after_round(project, record)

    async def _after_round(self, project: str, record: RoundExported) -> None:
        """What may have come while the round was exported: the campaign's stop (written after
        this round read it, and this is its last round: its version is written here), or a
        revision (in KV now, or it saw this round's version on disk and wrote it again)."""
        if record.version is None and (await self._stop(project)).due(record.round):
            await self._finish(project, record.round)
        await self._catch_up(project)

    @staticmethod
    def _version_due(
        config: ProjectConfig,
        number: int,
        event: LabelsReady,
        previous: RoundExported | None,
        folded: _Folded,
        last: bool,
        settings: str,
    ) -> bool:
        """Whether round ``number`` writes a full version (else a delta); ``settings``: the
        round's :func:`export_settings`."""
        if last:
            return True  # the campaign's last round (or one after it converged)
        since = sum(d.n_labels for d in previous.deltas) if previous else 0
        if since + len(event.labels) >= config.export.every_n_labels:
            return True
        if previous is None:
            return number > 1  # rounds exported before records were kept: start from a version
        if len(previous.deltas) >= MAX_DELTAS:
            return True
        if previous.export_settings != settings:
            return True  # rows under other settings than the deltas' (classes, policy, splits)
        earlier = {str(r): k for r, k in folded.revisions.items() if r < number}
        return earlier != previous.revisions  # a revision changed rows under the deltas

    async def _delta(
        self,
        config: ProjectConfig,
        number: int,
        event: LabelsReady,
        before: _Folded,
        folded: _Folded,
        previous: RoundExported | None,
        settings: str,
    ) -> RoundExported:
        """Round ``number``'s rows: those of the items it touched, as a full version of the
        round would hold them (a row depends on its item alone), in the object store."""
        project = config.name
        touched = {label.item_id for label in event.labels} | set(event.withdrawn)
        items = await self.catalog.load(project)
        # the labels-only rows need no item data; whether the catalog has the item, they do
        present = {i: ItemData({}) for i in touched if i in items.records}
        salt = self.salt(project)

        def rows(labels: dict[str, CurrentLabel]) -> pd.DataFrame:
            if not labels:  # a round that only withdraws, or whose items lost their labels
                return pd.DataFrame({column: [] for column in LABEL_COLUMNS})
            prepared = prepare(labels, present, config, salt=salt, fingerprint=False)
            return prepared.validation.rows

        def encode() -> tuple[bytes, int, int]:
            kept = rows({i: folded.labels[i] for i in touched if i in folded.labels})
            # the rows these items had (most are new: no rows, nothing to build)
            was = rows({i: before.labels[i] for i in touched if i in before.labels})
            removed = touched - set(kept["item_id"])
            return delta_bytes(labels_table(kept), removed), len(was), len(kept)

        raw, rows_before, rows_after = await asyncio.to_thread(encode)
        digest = sha256(raw)
        suffix = f"-r{event.revision}" if event.revision else ""
        # named by its content: a replica that applied the round under other inputs (a stop, a
        # revision in between) writes a file of its own, never over the one an event names
        ref = f"exporter/{project}/deltas/{number:06d}{suffix}-{digest[:12]}.parquet"
        await self._artifacts().put(ref, raw)
        delta = RoundDelta(
            round=number,
            revision=event.revision,
            ref=ref,
            sha256=digest,
            n_labels=len(event.labels),
        )
        return RoundExported(
            event_id=deterministic_id("round-exported", project, number),
            project=project,
            round=number,
            n_rows=(previous.n_rows if previous else 0) - rows_before + rows_after,
            base_version=previous.base_version if previous else None,
            base_ref=previous.base_ref if previous else None,
            base_sha256=previous.base_sha256 if previous else None,
            deltas=[*(previous.deltas if previous else []), delta],
            revisions={str(r): k for r, k in sorted(folded.revisions.items())},
            export_settings=settings,
        )

    async def _version(self, project: str, number: int, folded: _Folded) -> DatasetExported:
        """Version ``v<number>`` of ``folded`` (rounds 1 to ``number``), written and announced
        (or announced again, when a crash or a replica wrote it first)."""
        version = version_name(number)
        if await asyncio.to_thread(self.datasets.has, project, version):
            return await self._announce(project, version)
        parent = await asyncio.to_thread(self.datasets.latest, project, before=number)
        announced, _ = await self._write(project, number, version, folded, parent)
        return announced

    async def _latest_round(self, project: str) -> int:
        """The last round exported (0: none). Its record is written before the sequencer moves
        on, so the records after the sequencer's are looked at too."""
        number = await self.rounds.next_round(project) - 1
        while await self._artifacts().get(self._record_name(project, number + 1)) is not None:
            number += 1
        return number

    async def budget_exhausted(self, project: str, last_round: int | None) -> None:
        """Sampling stopped after round ``last_round``: that round gets a full version, now if
        it was exported already, else when it is. The stop first, then the round: a round
        exported in between reads the stop after its record and writes its own. A raised
        budget's rounds after it are exported as any others (until the next stop)."""
        if last_round is None:  # an older sampler's word: the latest round and every later one
            await self._versions_from(project, None)
            return
        await kv_update(self._state(), self._closing_key(project), _Stop.with_last(last_round))
        await self._finish(project, last_round)

    async def converged(self, project: str, model_version: str) -> None:
        """The learning curve plateaued with model ``m<n>`` and sampling stops: round *n* and
        each round after it (the few cut before the sampler heard) get a full version."""
        match = re.fullmatch(r"m(\d+)", model_version)
        await self._versions_from(project, int(match.group(1)) if match else None)

    async def _versions_from(self, project: str, first: int | None) -> None:
        """Round ``first`` (``None``: the latest exported) and every round after it get a full
        version: the exported ones now, the others when they are."""
        latest = await self._latest_round(project)
        first = max(first if first is not None else latest, 1)
        await kv_update(self._state(), self._closing_key(project), _Stop.with_converged(first))
        for number in range(first, latest + 1):
            await self._finish(project, number)

    async def _finish(self, project: str, number: int | None = None) -> None:
        """Write the full version of round ``number`` (the latest exported round if ``None``),
        if it has none yet; then the latest version again if a revision came meanwhile (write,
        then read: a revision that saw no such version yet is in KV now)."""
        if number is None:
            number = await self._latest_round(project)
        if number < 1 or await asyncio.to_thread(self.datasets.has, project, version_name(number)):
            return
        if await self._stored_record(project, number) is None:
            return  # not exported yet: its own export writes the version
        folded = await self._folded_through(project, number, await self._revised(project))
        await self._version(project, number, folded)
        await self._catch_up(project)

    async def _held(self, project: str, version: str) -> dict[int, int]:
        """The revisions a version holds (its manifest's; a version never changes, so read
        once: a long campaign's manifest lists thousands of batches)."""
        key = (project, version)
        held = self._held_revisions.get(key)
        if held is None:
            manifest = await asyncio.to_thread(self.datasets.manifest, project, version)
            held = {int(r): int(k) for r, k in (manifest.get("revisions") or {}).items()}
            self._held_revisions[key] = held
            while len(self._held_revisions) > HELD_VERSIONS:
                self._held_revisions.popitem(last=False)
        return held

    async def _catch_up(self, project: str, *, again: bool = False) -> str:
        """Write the latest version again (``v<n>-r<j>``) if rounds it holds were revised since
        it was written; ``revised`` if it was, ``unchanged`` if the latest version holds them.
        ``again``: announce a rewrite that is the latest once more (a redelivered revision, the
        one that wrote it, may have crashed before it announced it)."""
        for _ in range(REWRITE_ATTEMPTS):
            latest = await asyncio.to_thread(self.datasets.latest, project)
            if latest is None:
                return "unchanged"  # no version yet: the first holds every revision it needs
            number, rewrites = parse_revision(latest) or (0, 0)
            revised = await self._revised(project)
            held = await self._held(project, latest)
            if all(held.get(r, 0) >= k for r, k in revised.items() if r <= number):
                if rewrites and again:
                    await self._announce(project, latest)  # again, should a crash have come first
                return "unchanged"
            folded = await self._folded_through(project, number, revised)
            _, written = await self._write(
                project, number, format_revision(number, rewrites + 1), folded, latest
            )
            if written:
                return "revised"
        raise RuntimeError(f"{project}: revised versions kept racing: retry later")

    async def _write(
        self, project: str, number: int, version: str, folded: _Folded, parent: str | None
    ) -> tuple[DatasetExported, bool]:
        """Write and announce one version of rounds 1 to ``number``; ``False`` with the
        announcement if another writer (a replica, an earlier delivery) wrote one by that name
        first."""
        config = await self._project(project)
        started = time.perf_counter()
        items = await self.catalog.load(project)
        # an item's data is read once, by the first version that holds it; the fold keeps it.
        # Compacted once here (finding the items without data and keeping theirs each would)
        folded.labels = await asyncio.to_thread(folded.labels.compacted)
        new = [i for i in folded.labels.without_data() if i in items.records]
        found = await self.catalog.data_of(project, items, new)
        read = {i: ItemData(found[i], items.records[i].metadata) for i in new}
        folded.labels = await asyncio.to_thread(folded.labels.with_data, read)
        del found, read
        salt = self.salt(project)
        prepared = await asyncio.to_thread(prepare, folded.labels, None, config, salt=salt)
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
            return await self._announce(project, version), False
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
        # a version's frames and files are in proportion to the dataset: give their pages back
        del prepared, rendered, parent_labels
        await asyncio.to_thread(memory.trim)
        return announced, True

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


@dataclass(frozen=True)
class _Stop:
    """What the exporter heard of the campaign's stop (KV ``exporter.<project>.closing``): the
    last round the sampler cut when its budget ran out, and whether the learning curve
    converged. The stop's rounds get a full version each, so a stopped campaign's dataset holds
    its last word."""

    last_round: int | None = None
    converged_round: int | None = None
    """The round whose model converged: it and every round after it get a version."""

    @classmethod
    def decode(cls, raw: bytes | None) -> _Stop:
        if not raw:
            return cls()
        found = json.loads(raw)
        return cls(found.get("last_round"), found.get("converged_round"))

    def encode(self) -> bytes:
        fields = {"last_round": self.last_round, "converged_round": self.converged_round}
        return json.dumps(fields, sort_keys=True).encode()

    def due(self, number: int) -> bool:
        """Whether round ``number`` is one of the stop's: it writes a full version."""
        converged = self.converged_round is not None and number >= self.converged_round
        return converged or number == self.last_round

    @staticmethod
    def with_last(last_round: int) -> Callable[[bytes | None], bytes | None]:
        def update(raw: bytes | None) -> bytes | None:
            stop = _Stop.decode(raw)
            if stop.last_round == last_round:
                return None
            return _Stop(last_round, stop.converged_round).encode()

        return update

    @staticmethod
    def with_converged(first: int) -> Callable[[bytes | None], bytes | None]:
        def update(raw: bytes | None) -> bytes | None:
            stop = _Stop.decode(raw)
            if stop.converged_round is not None and stop.converged_round <= first:
                return None
            return _Stop(stop.last_round, first).encode()

        return update


def _base_record(announced: DatasetExported, settings: str) -> RoundExported:
    """The record of a round that wrote a full version: its labels are the base, no deltas,
    and the revisions are the version's own (one written before a crash may hold fewer than
    this round's fold: the next round then sees them differ and writes a version)."""
    return RoundExported.of_version(
        announced,
        event_id=deterministic_id("round-exported", announced.project, announced.round),
        export_settings=settings,
    )


def export_settings(config: ProjectConfig, salt: str) -> str:
    """sha256 of what a row depends on besides its item: the task, the classes, the confidence
    policy, the splits and their salt, the formats (a COCO project leaves out boxes without
    image sizes)."""
    export = config.export
    shaping = {
        "task_type": config.task_type.value,
        "classes": list(config.labels.classes),
        "min_confidence": export.min_confidence,
        "low_confidence": export.low_confidence,
        "splits": {str(k): v for k, v in sorted(export.splits.items())},
        "salt": salt,
        "formats": sorted(export.formats),
    }
    return sha256(json.dumps(shaping, sort_keys=True).encode())
