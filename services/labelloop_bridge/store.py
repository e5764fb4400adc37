"""The bridge's state in the shared KV bucket: Label Studio project ids, batch ledgers,
annotations already seen, reconciliation watermarks.

Keys (all under ``bridge.``; ids that may hold any character are hashed). Nothing
lists keys: the KV bucket is shared by every service, and listing scans all of it.

* ``bridge.<project>.lsproject.<kind>`` -> Label Studio project id (``kind``: labeling, review)
* ``bridge.<project>.lsproject.labeling.<hash(annotator)>`` -> an annotator's own labeling project
* ``bridge.lsproject.<Label Studio project id>`` -> ``{"project", "kind", "annotator"?}``: what
  a webhook needs (it names only the Label Studio project), one small value per project
* ``bridge.<project>.lsprojects`` -> ``{id: {"project", "kind", "annotator"?}}``: the Label Studio
  projects of one labelloop project (grows with its annotators, not with other projects)
* ``bridge.projects`` -> the labelloop projects that have Label Studio projects (names)
* ``bridge.lsprojects``: the one index of every project that bridges before the split wrote;
  still read (merged under the keys above), never written
* ``bridge.<project>.batch.<hash(batch_id)>`` -> :class:`BatchLedger` JSON
* ``bridge.<project>.open`` -> ids of batches placed and not yet announced complete
* ``bridge.<project>.import.<hash(batch_id)>`` -> the import lease: ``{"owner", "until"}``,
  deleted once the batch's completion is published
* ``bridge.<project>.ann.<ls annotation id>`` -> the last state of that annotation we published
* ``bridge.<project>.watermark.<kind>[.<hash(annotator)>]`` -> ISO time up to which tasks of
  that Label Studio project were reconciled

What stays per batch and per annotation, and why: a completed batch's ledger, compacted (about
half its size: the answers without the tasks' gold answers and predictions), because it keeps
a redelivered ``BatchCreated`` from importing the batch again and lets reconciliation see an
answer deleted after completion; an annotation's record, because Label Studio keeps the
annotation (an update, a deletion or a replayed webhook can come at any time) and the record is
what makes a replay a no-op and what a deletion is published from. About 2.6 KB per 20-task
batch and 0.3 KB per annotation: 10,000 such batches with 26 answers each keep ~26 MB of
ledgers and ~80 MB of records in the bucket (no value grows: each key is its own small value).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from labelloop.events import Annotation, AnnotationSource, deterministic_id
from labelloop.stores import KeyValue, kv_update

from .domain.ledger import BatchLedger

__all__ = ["AnnotationRecord", "BridgeState", "LedgerChange", "LsProjectRef"]

Kind = Literal["labeling", "review"]


@dataclass(frozen=True, slots=True)
class LsProjectRef:
    ls_project_id: int
    project: str
    kind: Kind
    annotator: str | None = None
    """The annotator whose own project this is (only their answers count); ``None``: shared."""


@dataclass(frozen=True, slots=True)
class AnnotationRecord:
    """What we last published about one Label Studio annotation."""

    item_id: str
    batch_id: str
    annotator_id: str
    updated_at: str
    created_at: str
    deleted: bool = False
    cancelled: bool = False
    is_expert: bool | None = None
    """``None`` in records written before the role was kept: the Label Studio project's kind."""
    value: Any = None
    """The label as published (``BatchCompleted`` carries it)."""
    lead_time_seconds: float | None = None
    source: str = "reconciliation"

    def annotation(self, ls_annotation_id: int) -> Annotation:
        """The annotation as the bus knows it."""
        return Annotation(
            annotation_id=f"ls-{ls_annotation_id}",
            item_id=self.item_id,
            annotator_id=self.annotator_id,
            value=None if self.deleted or self.cancelled else self.value,
            batch_id=self.batch_id,
            lead_time_seconds=self.lead_time_seconds,
            created_at=datetime.fromisoformat(self.created_at),
            updated_at=datetime.fromisoformat(self.updated_at),
            source=AnnotationSource(self.source),
            is_expert=bool(self.is_expert),
            cancelled=self.cancelled,
            deleted=self.deleted,
        )


@dataclass(frozen=True, slots=True)
class LedgerChange:
    ledger: BatchLedger
    completed_now: bool
    """This change flipped the ledger to completed: the caller publishes BatchCompleted."""


_LEGACY_LS_INDEX = "bridge.lsprojects"
"""Every Label Studio project in one value (written before the split): read, never written."""
_PROJECTS = "bridge.projects"


def _ls_ref_key(ls_project_id: int) -> str:
    return f"bridge.lsproject.{ls_project_id}"


def _ls_index_key(project: str) -> str:
    return f"bridge.{project}.lsprojects"


def _ref_json(ref: LsProjectRef) -> dict[str, str]:
    entry = {"project": ref.project, "kind": ref.kind}
    if ref.annotator is not None:
        entry["annotator"] = ref.annotator
    return entry


def _ref(ls_project_id: int | str, entry: dict[str, Any]) -> LsProjectRef:
    return LsProjectRef(int(ls_project_id), entry["project"], entry["kind"], entry.get("annotator"))


def _batch_key(project: str, batch_id: str) -> str:
    return f"bridge.{project}.batch.{deterministic_id(batch_id)}"


def _import_key(project: str, batch_id: str) -> str:
    return f"bridge.{project}.import.{deterministic_id(batch_id)}"


_RELEASED = datetime(1970, 1, 1, tzinfo=UTC)


def _unless_same(raw: bytes | None, entry: dict[str, str]) -> bytes | None:
    """``entry`` as a key's value, unless it is already that (no write)."""
    if raw is not None and json.loads(raw) == entry:
        return None
    return json.dumps(entry, sort_keys=True).encode()


def _ls_project_key(project: str, kind: Kind, annotator: str | None) -> str:
    key = f"bridge.{project}.lsproject.{kind}"
    return key if annotator is None else f"{key}.{deterministic_id(annotator)}"


def _watermark_key(project: str, kind: Kind, annotator: str | None) -> str:
    key = f"bridge.{project}.watermark.{kind}"
    return key if annotator is None else f"{key}.{deterministic_id(annotator)}"


class BridgeState:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    # ------------------------------------------------------------------ Label Studio projects

    async def ls_project(
        self, project: str, kind: Kind, annotator: str | None = None
    ) -> int | None:
        entry = await self._kv.get(_ls_project_key(project, kind, annotator))
        return int(entry.value) if entry else None

    async def claim_ls_project(
        self, project: str, kind: Kind, ls_project_id: int, annotator: str | None = None
    ) -> int:
        """Store the id unless another replica stored one first; the id that won."""
        key = _ls_project_key(project, kind, annotator)
        if await self._kv.create(key, str(ls_project_id).encode()) is None:
            entry = await self._kv.get(key)
            if entry is not None:
                return int(entry.value)
            await self._kv.put(key, str(ls_project_id).encode())
        await self.remember(ls_project_id, project, kind, annotator)
        return ls_project_id

    async def replace_ls_project(
        self, project: str, kind: Kind, ls_project_id: int, annotator: str | None = None
    ) -> None:
        """The stored project is gone from Label Studio: use this one."""
        key = _ls_project_key(project, kind, annotator)
        await self._kv.put(key, str(ls_project_id).encode())
        await self.remember(ls_project_id, project, kind, annotator)

    async def remember(
        self, ls_project_id: int, project: str, kind: Kind, annotator: str | None = None
    ) -> None:
        """Index a Label Studio project (idempotent: what is there already is not written)."""
        # small keys instead of key listing (listing scans the whole shared bucket): one per
        # Label Studio project for webhooks, one index per labelloop project for passes
        ref = LsProjectRef(ls_project_id, project, kind, annotator)
        entry = _ref_json(ref)

        def add(raw: bytes | None) -> bytes | None:
            index = json.loads(raw) if raw else {}
            if index.get(str(ls_project_id)) == entry:
                return None
            index[str(ls_project_id)] = entry
            return json.dumps(index, sort_keys=True).encode()

        def listed(raw: bytes | None) -> bytes | None:
            names = set(json.loads(raw)) if raw else set()
            return None if project in names else json.dumps(sorted(names | {project})).encode()

        await kv_update(self._kv, _ls_ref_key(ls_project_id), lambda raw: _unless_same(raw, entry))
        await kv_update(self._kv, _ls_index_key(project), add)
        await kv_update(self._kv, _PROJECTS, listed)

    async def _legacy(self) -> list[LsProjectRef]:
        entry = await self._kv.get(_LEGACY_LS_INDEX)
        index = json.loads(entry.value) if entry else {}
        return [_ref(i, v) for i, v in index.items()]

    async def ls_projects(self, project: str | None = None) -> list[LsProjectRef]:
        """The Label Studio projects the bridge manages (of ``project``, or of every project),
        by id. Entries only the pre-split index holds are merged in."""
        if project is None:
            entry = await self._kv.get(_PROJECTS)
            names = json.loads(entry.value) if entry else []
        else:
            names = [project]
        refs: dict[int, LsProjectRef] = {}
        for legacy in await self._legacy():
            if project is None or legacy.project == project:
                refs[legacy.ls_project_id] = legacy
        for name in names:
            entry = await self._kv.get(_ls_index_key(name))
            for i, v in (json.loads(entry.value) if entry else {}).items():
                refs[int(i)] = _ref(i, v)
        return [refs[i] for i in sorted(refs)]

    async def lookup_ls_project(self, ls_project_id: int) -> LsProjectRef | None:
        """The labelloop project a Label Studio project belongs to: one small read (the pre-split
        index only when the project has no key of its own)."""
        entry = await self._kv.get(_ls_ref_key(ls_project_id))
        if entry is not None:
            return _ref(ls_project_id, json.loads(entry.value))
        return next((r for r in await self._legacy() if r.ls_project_id == ls_project_id), None)

    # ------------------------------------------------------------------ ledgers

    async def ledger(self, project: str, batch_id: str) -> BatchLedger | None:
        entry = await self._kv.get(_batch_key(project, batch_id))
        return BatchLedger.from_json(entry.value) if entry else None

    async def create_ledger(self, project: str, ledger: BatchLedger) -> BatchLedger:
        """Store a new ledger, or return the one already there (a redelivered batch)."""
        key = _batch_key(project, ledger.batch_id)
        if await self._kv.create(key, ledger.to_json()) is not None:
            return ledger
        existing = await self._kv.get(key)
        assert existing is not None, "a ledger is never deleted"
        return BatchLedger.from_json(existing.value)

    async def change_ledger(
        self,
        project: str,
        batch_id: str,
        change: Callable[[BatchLedger], object],
        *,
        complete_when: Callable[[BatchLedger], bool] | None = None,
    ) -> LedgerChange | None:
        """Apply ``change`` by compare-and-swap; flip ``completed`` when ``complete_when`` holds.

        ``None`` when there is no such ledger. Bounded: ``kv_update`` backs off between
        conflicting attempts and raises ``ConflictError`` after its last one (the handler or
        pass that asked is retried). A change that changes nothing writes nothing.
        """
        outcome: list[LedgerChange | None] = [None]

        def apply(raw: bytes | None) -> bytes | None:
            if raw is None:
                outcome[0] = None
                return None
            ledger = BatchLedger.from_json(raw)
            before = ledger.to_json()
            change(ledger)
            flipped = False
            if complete_when is not None and not ledger.completed and complete_when(ledger):
                ledger.completed = flipped = True
            outcome[0] = LedgerChange(ledger, flipped)
            after = ledger.to_json()
            return after if after != before else None

        await kv_update(self._kv, _batch_key(project, batch_id), apply)
        return outcome[0]

    async def open_batches(self, project: str) -> list[str]:
        """Batches placed but not yet announced complete (bounded by the open-task limit)."""
        entry = await self._kv.get(f"bridge.{project}.open")
        return sorted(json.loads(entry.value)) if entry else []

    async def mark_open(self, project: str, batch_id: str, is_open: bool) -> None:
        def change(raw: bytes | None) -> bytes | None:
            batches = set(json.loads(raw)) if raw else set()
            if (batch_id in batches) == is_open:
                return None
            batches = batches | {batch_id} if is_open else batches - {batch_id}
            return json.dumps(sorted(batches)).encode()

        await kv_update(self._kv, f"bridge.{project}.open", change)

    # ------------------------------------------------------------------ import leases

    async def hold_import(
        self, project: str, batch_id: str, owner: str, lease: timedelta, now: datetime
    ) -> bool:
        """Take or renew the lease on importing a batch; False while another owner holds it.

        The lease is ``{"owner", "until"}`` under one key: taken with ``create``, renewed or taken
        over (once ``until`` has passed) by compare-and-swap, so one owner at a time wins. Owners
        compare wall clocks: keep the lease far longer than the clock skew between replicas.
        """
        key = _import_key(project, batch_id)
        mine = json.dumps({"owner": owner, "until": (now + lease).isoformat()}).encode()
        for _ in range(3):
            entry = await self._kv.get(key)
            if entry is None:
                if await self._kv.create(key, mine) is not None:
                    return True
                continue
            held = json.loads(entry.value)
            if held["owner"] != owner and datetime.fromisoformat(held["until"]) > now:
                return False
            if await self._kv.update(key, mine, entry.revision) is not None:
                return True
        return False

    async def release_import(self, project: str, batch_id: str, owner: str) -> None:
        """Give the lease up (if still ours): a waiting delivery need not wait for it to expire."""
        key = _import_key(project, batch_id)
        entry = await self._kv.get(key)
        if entry is None or json.loads(entry.value)["owner"] != owner:
            return
        released = json.dumps({"owner": "", "until": _RELEASED.isoformat()}).encode()
        await self._kv.update(key, released, entry.revision)

    async def close_batch(self, project: str, batch_id: str) -> None:
        """The batch's ``BatchCompleted`` is out: the ledger compacted (:meth:`BatchLedger.close`)
        and the import lease forgotten (a redelivered ``BatchCreated`` stops at the ledger's
        ``imported``; NATS keeps a small delete marker in its place)."""
        await self.change_ledger(project, batch_id, lambda stored: stored.close())
        if await self._kv.get(_import_key(project, batch_id)) is not None:
            await self._kv.delete(_import_key(project, batch_id))

    async def import_lease_until(self, project: str, batch_id: str) -> datetime | None:
        entry = await self._kv.get(_import_key(project, batch_id))
        return datetime.fromisoformat(json.loads(entry.value)["until"]) if entry else None

    # ------------------------------------------------------------------ annotations

    async def annotation(self, project: str, ls_annotation_id: int) -> AnnotationRecord | None:
        entry = await self._kv.get(f"bridge.{project}.ann.{ls_annotation_id}")
        return AnnotationRecord(**json.loads(entry.value)) if entry else None

    async def put_annotation(
        self, project: str, ls_annotation_id: int, record: AnnotationRecord
    ) -> None:
        """Record what was published; never moves back to an older state (a racing replica)."""

        def newer(raw: bytes | None) -> bytes | None:
            if raw is not None:
                old = AnnotationRecord(**json.loads(raw))
                if old.deleted or (
                    not record.deleted
                    and datetime.fromisoformat(old.updated_at)
                    >= datetime.fromisoformat(record.updated_at)
                ):
                    return None
            return json.dumps(asdict(record)).encode()

        await kv_update(self._kv, f"bridge.{project}.ann.{ls_annotation_id}", newer)

    # ------------------------------------------------------------------ watermarks

    async def watermark(
        self, project: str, kind: Kind, annotator: str | None = None
    ) -> datetime | None:
        entry = await self._kv.get(_watermark_key(project, kind, annotator))
        return datetime.fromisoformat(entry.value.decode()) if entry else None

    async def set_watermark(
        self, project: str, kind: Kind, moment: datetime, annotator: str | None = None
    ) -> None:
        key = _watermark_key(project, kind, annotator)
        await self._kv.put(key, moment.isoformat().encode())
