"""The qa-scorer's durable state: one record per labeling round.

Everything lives in the ``artifacts`` object store under ``qa/<project>/``:

* ``rounds/<n>.json``: a :class:`RoundRecord`: what scoring round *n* released, what it holds back
  for an expert (and from which batch each held item came), the round's events, and every
  annotator's cumulative :class:`Tally` after the round (the prior of round *n + 1*'s
  Dawid-Skene); and the round's final ``LabelsReady`` once the review is answered. A redelivered
  message finds the record and republishes the same events instead of scoring again. Round *n*
  reads the history of record *n - 1*, which is why rounds are scored in their order
  (:mod:`labelloop.sequencing`): the labels are then a function of the rounds' annotations, not
  of the order batches happened to finish in. One object per round: the history and the round's
  decision are written together, so neither can exist without the other.

Re-admissions an operator asked for are kept in KV (``qa.<project>.readmit``) until the next
round is scored.

Revisions (an answer updated, deleted or added after its round was scored, see
:mod:`labelloop_qa.service`):

* ``qa.<project>.batch.<h(batch)>`` (KV): the round a scored batch belongs to, written when the
  round is scored, so that a late annotation finds its round;
* ``qa.<project>.pending.<h(batch)>.<h(message)>`` (KV): annotations of a batch whose round has no
  final ``LabelsReady`` yet (not scored, or under review), kept until it has one. Each side
  writes before it reads (the annotation its pending entry, the scorer the round's final), so
  whichever comes second sees the other and nothing is dropped;
* ``qa/<project>/revisions/<round>/<k>-<digest>.json``: a :class:`RevisionRecord`, the round
  re-scored on the latest state of its annotations;
* ``qa.<project>.revised`` (KV, compare-and-swap): round -> its latest revision. It serialises
  revisions across replicas, and is how a later round's history takes a revised round's new
  contribution in place of the old one (``RoundRecord.included``).

A process keeps the last :data:`ROUND_CACHE` records it read or wrote (round *n* reads the
history of *n - 1*, which it usually just wrote); older ones are read again when asked for.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labelloop.events import (
    Annotation,
    BatchCompleted,
    ConsensusLabel,
    LabelsReady,
    QAReport,
    QualityAlertRaised,
    ReviewItem,
    ReviewRequested,
    deterministic_id,
)
from labelloop.stores import Blobs, Entry, KeyValue, kv_update
from labelloop_qa.domain.annotators import Tally

__all__ = [
    "ROUND_CACHE",
    "History",
    "HistoryRecord",
    "QAStore",
    "Revised",
    "RevisionRecord",
    "RoundRecord",
]

ROUND_CACHE = 64
"""Round records a process keeps decoded."""


@dataclass
class History:
    """Every annotator's cumulative tally, and who is flagged (until an operator re-admits)."""

    tallies: dict[str, Tally] = field(default_factory=dict)
    flagged: set[str] = field(default_factory=set)

    def dump(self) -> HistoryRecord:
        return HistoryRecord(
            tallies={a: t.to_json() for a, t in sorted(self.tallies.items())},
            flagged=sorted(self.flagged),
        )

    @classmethod
    def load(cls, record: HistoryRecord) -> History:
        return cls({a: Tally.from_json(t) for a, t in record.tallies.items()}, set(record.flagged))


class HistoryRecord(BaseModel):
    """:class:`History` as a round record keeps it."""

    model_config = ConfigDict(frozen=True)

    tallies: dict[str, dict[str, Any]] = Field(default_factory=dict)
    flagged: list[str] = Field(default_factory=list)


class RoundRecord(BaseModel):
    """Everything QA decided about one labeling round."""

    model_config = ConfigDict(frozen=True)

    round: int
    batch_id: str
    labels: list[ConsensusLabel]
    """Released at scoring; final unless the same item is also under review."""
    review: list[ReviewItem] = Field(default_factory=list)
    """Held for an expert: the round's doubtful items, and earlier items to look at again."""
    origin: dict[str, str] = Field(default_factory=dict)
    """Item under review -> the batch its label belongs to."""
    report: QAReport
    alert: QualityAlertRaised | None = None
    request: ReviewRequested | None = None
    final: LabelsReady | None = None
    """The round's one ``LabelsReady``: at scoring when nothing is held, else once the expert
    review of the round is answered."""
    history: HistoryRecord = Field(default_factory=HistoryRecord)
    """The annotators' history after this round."""
    contribution: HistoryRecord = Field(default_factory=HistoryRecord)
    """This round's own tallies (what its batch added to ``history``)."""
    included: dict[str, str] = Field(default_factory=dict)
    """Revised earlier rounds whose contribution ``history`` holds: round -> revision record
    name. A revision committed since is applied when the next round reads this history."""
    completed: BatchCompleted | None = None
    """The scored batch (tasks and annotations), which a revision re-scores. ``None`` in records
    written before revisions existed: those rounds are not revised."""


class RevisionRecord(BaseModel):
    """A round re-scored after a change of its annotations."""

    model_config = ConfigDict(frozen=True)

    round: int
    revision: int
    digest: str
    """Of ``annotations``: the same state gives the same revision."""
    annotations: list[Annotation]
    """The latest state of every annotation of the round's batch."""
    contribution: HistoryRecord
    report: QAReport
    """The round's report re-computed (kept, not published: the next round's report carries the
    annotators' corrected cumulative scores)."""
    final: LabelsReady


class Revised(BaseModel):
    """A round's latest revision, as ``qa.<project>.revised`` lists it."""

    revision: int
    digest: str
    name: str


class QAStore:
    def __init__(
        self,
        blobs: Callable[[], Blobs],
        kv: Callable[[], KeyValue],
        *,
        round_cache: int = ROUND_CACHE,
    ) -> None:
        self._blobs = blobs
        self._kv = kv
        self._round_cache = round_cache
        self._rounds: OrderedDict[tuple[str, int], RoundRecord] = OrderedDict()

    @staticmethod
    def _round_name(project: str, number: int) -> str:
        return f"qa/{project}/rounds/{number:06d}.json"

    async def round(self, project: str, number: int) -> RoundRecord | None:
        key = (project, number)
        cached = self._rounds.get(key)
        if cached is not None and cached.final is not None:
            self._remember(key, cached)
            return cached  # final records never change
        raw = await self._blobs().get(self._round_name(project, number))
        if raw is None:
            return None
        record = RoundRecord.model_validate_json(raw)
        self._remember(key, record)
        return record

    async def save_round(self, project: str, record: RoundRecord) -> None:
        await self._blobs().put(
            self._round_name(project, record.round), record.model_dump_json().encode()
        )
        self._remember((project, record.round), record)

    def _remember(self, key: tuple[str, int], record: RoundRecord) -> None:
        self._rounds[key] = record
        self._rounds.move_to_end(key)
        while len(self._rounds) > self._round_cache:
            self._rounds.popitem(last=False)

    def cached_rounds(self) -> int:
        return len(self._rounds)

    async def history(self, project: str, number: int) -> History:
        """The annotators' history after round ``number`` (empty before the first)."""
        if number < 1:
            return History()
        # a record's history never changes (only its final labels may come later): any copy
        # this replica wrote or read will do
        record = self._rounds.get((project, number)) or await self.round(project, number)
        if record is None:
            raise LookupError(f"QA record of {project}'s round {number} is missing")
        return History.load(record.history)

    # ------------------------------------------------------------------ revisions

    @staticmethod
    def _batch_key(project: str, batch_id: str) -> str:
        return f"qa.{project}.batch.{deterministic_id(batch_id)}"

    async def index_batch(self, project: str, batch_id: str, number: int) -> None:
        await self._kv().put(self._batch_key(project, batch_id), str(number).encode())

    async def batch_round(self, project: str, batch_id: str) -> int | None:
        entry = await self._kv().get(self._batch_key(project, batch_id))
        return int(entry.value) if entry is not None else None

    @staticmethod
    def _pending_prefix(project: str, batch_id: str) -> str:
        return f"qa.{project}.pending.{deterministic_id(batch_id)}."

    async def put_pending(
        self, project: str, batch_id: str, message_id: str, annotations: list[Annotation]
    ) -> str:
        key = self._pending_prefix(project, batch_id) + deterministic_id(message_id)
        raw = json.dumps([a.model_dump(mode="json") for a in annotations]).encode()
        await self._kv().put(key, raw)
        return key

    async def pending(self, project: str, batch_id: str) -> tuple[list[str], list[Annotation]]:
        """Pending annotations of a batch, and their keys (to drop once applied)."""
        keys = sorted(await self._kv().keys(self._pending_prefix(project, batch_id)))
        out: list[Annotation] = []
        for key in keys:
            entry = await self._kv().get(key)
            if entry is not None:
                out.extend(Annotation.model_validate(a) for a in json.loads(entry.value))
        return keys, out

    async def drop_pending(self, keys: list[str]) -> None:
        for key in keys:
            await self._kv().delete(key)

    def _revised_key(self, project: str) -> str:
        return f"qa.{project}.revised"

    async def revised(self, project: str) -> tuple[Entry | None, dict[int, Revised]]:
        entry = await self._kv().get(self._revised_key(project))
        if entry is None:
            return None, {}
        raw = json.loads(entry.value)
        return entry, {int(r): Revised.model_validate(v) for r, v in raw.items()}

    async def commit_revision(
        self, project: str, seen: Entry | None, revised: dict[int, Revised]
    ) -> bool:
        """Compare-and-swap the revision index; ``False`` if another replica moved it first."""
        value = json.dumps(
            {str(r): v.model_dump() for r, v in sorted(revised.items())}, sort_keys=True
        ).encode()
        key = self._revised_key(project)
        if seen is None:
            return await self._kv().create(key, value) is not None
        return await self._kv().update(key, value, seen.revision) is not None

    @staticmethod
    def revision_name(project: str, number: int, revision: int, digest: str) -> str:
        return f"qa/{project}/revisions/{number:06d}/{revision:04d}-{digest[:16]}.json"

    async def save_revision(self, name: str, record: RevisionRecord) -> None:
        await self._blobs().put(name, record.model_dump_json().encode())

    async def revision(self, name: str) -> RevisionRecord:
        raw = await self._blobs().get(name)
        if raw is None:
            raise LookupError(f"QA revision {name} is missing")
        return RevisionRecord.model_validate_json(raw)

    # ------------------------------------------------------------------ re-admissions

    async def readmit(self, project: str, annotator_id: str) -> None:
        def add(raw: bytes | None) -> bytes:
            pending = set(json.loads(raw)) if raw else set()
            return json.dumps(sorted(pending | {annotator_id})).encode()

        await kv_update(self._kv(), f"qa.{project}.readmit", add)

    async def readmissions(self, project: str) -> list[str]:
        entry = await self._kv().get(f"qa.{project}.readmit")
        return sorted(json.loads(entry.value)) if entry else []

    async def clear_readmissions(self, project: str, done: list[str]) -> None:
        def remove(raw: bytes | None) -> bytes | None:
            if raw is None:
                return None
            return json.dumps(sorted(set(json.loads(raw)) - set(done))).encode()

        await kv_update(self._kv(), f"qa.{project}.readmit", remove)
