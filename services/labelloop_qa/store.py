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
    ConsensusLabel,
    LabelsReady,
    QAReport,
    QualityAlertRaised,
    ReviewItem,
    ReviewRequested,
)
from labelloop.stores import Blobs, KeyValue, kv_update
from labelloop_qa.domain.annotators import Tally

__all__ = ["ROUND_CACHE", "History", "HistoryRecord", "QAStore", "RoundRecord"]

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
