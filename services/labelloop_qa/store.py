"""The qa-scorer's durable state: one record per labeling round, and the annotators' history.

Everything lives in the ``artifacts`` object store under ``qa/<project>/``:

* ``rounds/<n>.json``: a :class:`RoundRecord`: what scoring round *n* released, what it holds back
  for an expert (and from which batch each held item came), the round's events, its annotator
  tallies, and the round's final ``LabelsReady`` once the review is answered. A redelivered
  message finds the record and republishes the same events instead of scoring again.
* ``history/<n>.json``: every annotator's cumulative :class:`Tally` after round *n*: the prior
  of round *n + 1*'s Dawid-Skene. Round *n* reads history *n - 1*, which is why rounds are scored
  in their order (:mod:`labelloop.sequencing`): the labels are then a function of the rounds'
  annotations, not of the order batches happened to finish in.

Re-admissions an operator asked for are kept in KV (``qa.<project>.readmit``) until the next
round is scored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

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

__all__ = ["History", "QAStore", "RoundRecord"]


@dataclass
class History:
    """Every annotator's cumulative tally, and who is flagged (until an operator re-admits)."""

    tallies: dict[str, Tally] = field(default_factory=dict)
    flagged: set[str] = field(default_factory=set)


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


class QAStore:
    def __init__(self, blobs: Callable[[], Blobs], kv: Callable[[], KeyValue]) -> None:
        self._blobs = blobs
        self._kv = kv
        self._rounds: dict[tuple[str, int], RoundRecord] = {}
        self._latest_history: dict[str, tuple[int, bytes]] = {}
        """Per project, the last history this replica wrote or read (histories never change)."""

    @staticmethod
    def _round_name(project: str, number: int) -> str:
        return f"qa/{project}/rounds/{number:06d}.json"

    @staticmethod
    def _history_name(project: str, number: int) -> str:
        return f"qa/{project}/history/{number:06d}.json"

    async def round(self, project: str, number: int) -> RoundRecord | None:
        key = (project, number)
        cached = self._rounds.get(key)
        if cached is not None and cached.final is not None:
            return cached  # final records never change
        raw = await self._blobs().get(self._round_name(project, number))
        if raw is None:
            return None
        record = RoundRecord.model_validate_json(raw)
        self._rounds[key] = record
        return record

    async def save_round(self, project: str, record: RoundRecord) -> None:
        await self._blobs().put(
            self._round_name(project, record.round), record.model_dump_json().encode()
        )
        self._rounds[(project, record.round)] = record

    async def history(self, project: str, number: int) -> History:
        """The annotators' history after round ``number`` (empty before the first)."""
        if number < 1:
            return History()
        cached = self._latest_history.get(project)
        if cached is not None and cached[0] == number:
            raw: bytes | None = cached[1]
        else:
            raw = await self._blobs().get(self._history_name(project, number))
        if raw is None:
            raise LookupError(f"QA history of {project} after round {number} is missing")
        self._latest_history[project] = (number, raw)
        data = json.loads(raw)
        return History(
            {a: Tally.from_json(t) for a, t in data["tallies"].items()}, set(data["flagged"])
        )

    async def save_history(self, project: str, number: int, history: History) -> None:
        data = {
            "tallies": {a: t.to_json() for a, t in sorted(history.tallies.items())},
            "flagged": sorted(history.flagged),
        }
        raw = json.dumps(data, sort_keys=True).encode()
        await self._blobs().put(self._history_name(project, number), raw)
        self._latest_history[project] = (number, raw)

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
