"""The sampler's ledger of one project: its numbered labeling rounds, what each round taught, the
review batches, budget use and stop flags.

The ledger is one small JSON document in KV, changed only by compare-and-swap, so replicas that
race for the same project serialise on it: batch *n* exists once the ledger names it. Item ids of
batches live in the batch artefacts (the ledger keeps a nonce to find the committed one).

What round *j* taught (:class:`Outcome`) arrives from two services: the serving model after the
round (``ModelTrained``, trainer) and the annotators QA flagged after it (``QAReport``, qa-scorer).
The sampler joins them here; batch *n* needs the outcome of round *n - 1 - max_model_lag*
(:mod:`labelloop_sampler.domain.rounds`).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from labelloop.events import SuspectLabel

__all__ = ["Ledger", "Outcome", "ReviewBatch", "Round"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Round(_Model):
    """One labeling batch."""

    batch_id: str
    nonce: str
    """Names the committed artefact (a replica that lost the race wrote another nonce)."""
    tasks: int
    labels: int
    """Non-gold tasks (the label budget counts these)."""
    annotations: int
    done: int = 0
    """Tasks that already have all their annotations (progress, for backpressure only)."""
    completed: bool = False
    announced: bool = False
    """``BatchCreated`` was published (a crash between commit and publish is repaired)."""
    rechecks: list[str] = Field(default_factory=list)
    """Items whose earlier label this batch sent back to an expert (``BatchCreated.rechecks``)."""


class ReviewBatch(_Model):
    """The expert review of one labeling round's items."""

    batch_id: str
    nonce: str
    tasks: int
    completed: bool = False
    announced: bool = False


class Outcome(_Model):
    """What the sampler knows of a finished labeling round."""

    model_known: bool = False
    """``ModelTrained`` of the round arrived (its serving model may still be ``None``)."""
    model_version: str | None = None
    scores_ref: str | None = None
    converged: str | None = None
    suspects: list[SuspectLabel] = Field(default_factory=list)
    """The round's model's doubts about released labels, until the batch built on it is cut."""
    qa_known: bool = False
    """``QAReport`` of the round arrived."""
    flagged: list[str] = Field(default_factory=list)
    """Annotators QA flagged after the round (cumulative)."""
    lead_seconds: float = 0.0
    lead_count: int = 0
    """Lead times of the round's annotations (for the money budget)."""


class Ledger(_Model):
    started: bool = False
    paused: bool = False
    rounds: dict[int, Round] = Field(default_factory=dict)
    outcomes: dict[int, Outcome] = Field(default_factory=dict)
    reviews: dict[int, ReviewBatch] = Field(default_factory=dict)
    """Labeling round -> its review batch."""
    labels_used: int = 0
    annotations_used: int = 0
    exhausted: str | None = None

    @classmethod
    def decode(cls, raw: bytes | None) -> Ledger:
        return cls() if raw is None else cls.model_validate_json(raw)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    # ------------------------------------------------------------------ reading

    @property
    def next_round(self) -> int:
        return len(self.rounds) + 1

    def round_of(self, batch_id: str) -> int | None:
        for number, r in self.rounds.items():
            if r.batch_id == batch_id:
                return number
        return None

    def review_round_of(self, batch_id: str) -> int | None:
        for number, r in self.reviews.items():
            if r.batch_id == batch_id:
                return number
        return None

    def open_tasks(self) -> int:
        return sum(r.tasks - r.done for r in self.rounds.values() if not r.completed)

    def open_batches(self) -> int:
        return sum(1 for r in self.rounds.values() if not r.completed)

    def converged(self, up_to: int) -> str | None:
        """The convergence verdict of a round up to ``up_to``, if any said so."""
        for number in sorted(self.outcomes):
            if number <= up_to and self.outcomes[number].converged:
                return self.outcomes[number].converged
        return None

    def mean_lead_seconds(self, up_to: int) -> float | None:
        """Mean annotation lead time over the rounds up to ``up_to`` whose QA is known."""
        seconds = count = 0.0
        for number, outcome in self.outcomes.items():
            if number <= up_to and outcome.qa_known:
                seconds += outcome.lead_seconds
                count += outcome.lead_count
        return seconds / count if count else None

    def rechecked(self) -> set[str]:
        """Items some batch already sent back to an expert."""
        return {item for r in self.rounds.values() for item in r.rechecks}

    def unannounced(self) -> list[tuple[Literal["labeling", "review"], int, str, str]]:
        """Committed batches whose ``BatchCreated`` may not have gone out: (kind, round, id,
        nonce)."""
        found: list[tuple[Literal["labeling", "review"], int, str, str]] = [
            ("labeling", n, r.batch_id, r.nonce)
            for n, r in sorted(self.rounds.items())
            if not r.announced
        ]
        found += [
            ("review", n, r.batch_id, r.nonce)
            for n, r in sorted(self.reviews.items())
            if not r.announced
        ]
        return found

    # ------------------------------------------------------------------ changes (new ledgers)

    def with_round(self, number: int, batch: Round) -> Self:
        if number != self.next_round:
            raise ValueError(f"round {number} is not the next one ({self.next_round})")
        return self.model_copy(
            update={
                "rounds": {**self.rounds, number: batch},
                "labels_used": self.labels_used + batch.labels,
                "annotations_used": self.annotations_used + batch.annotations,
            }
        )

    def with_suspects_used(self, basis: int) -> Self:
        """Forget the suspects of round ``basis``: the batch built on it took what it could."""
        old = self.outcomes.get(basis)
        if old is None or not old.suspects:
            return self
        new = old.model_copy(update={"suspects": []})
        return self.model_copy(update={"outcomes": {**self.outcomes, basis: new}})

    def with_review(self, number: int, batch: ReviewBatch) -> Self:
        return self.model_copy(update={"reviews": {**self.reviews, number: batch}})

    def with_announced(self, kind: Literal["labeling", "review"], number: int) -> Self:
        if kind == "labeling" and number in self.rounds:
            changed = self.rounds[number].model_copy(update={"announced": True})
            return self.model_copy(update={"rounds": {**self.rounds, number: changed}})
        if kind == "review" and number in self.reviews:
            review = self.reviews[number].model_copy(update={"announced": True})
            return self.model_copy(update={"reviews": {**self.reviews, number: review}})
        return self

    def with_completed(self, batch_id: str) -> Self:
        number = self.round_of(batch_id)
        if number is not None:
            r = self.rounds[number]
            changed = r.model_copy(update={"completed": True, "done": r.tasks})
            return self.model_copy(update={"rounds": {**self.rounds, number: changed}})
        number = self.review_round_of(batch_id)
        if number is not None:
            review = self.reviews[number].model_copy(update={"completed": True})
            return self.model_copy(update={"reviews": {**self.reviews, number: review}})
        return self

    def with_progress(self, batch_id: str, done: int) -> Self:
        number = self.round_of(batch_id)
        if number is None:
            return self
        r = self.rounds[number]
        if r.completed or done <= r.done:
            return self  # progress only grows: an older snapshot must not roll it back
        changed = r.model_copy(update={"done": min(done, r.tasks)})
        return self.model_copy(update={"rounds": {**self.rounds, number: changed}})

    def with_model(
        self,
        number: int,
        *,
        model_version: str | None,
        scores_ref: str | None,
        converged: str | None,
        suspects: list[SuspectLabel] | None = None,
    ) -> Self:
        old = self.outcomes.get(number, Outcome())
        if old.model_known:
            return self  # the round's first word stands: a retrained copy changes nothing
        new = old.model_copy(
            update={
                "model_known": True,
                "model_version": model_version,
                "scores_ref": scores_ref,
                "converged": converged,
                "suspects": list(suspects or []),
            }
        )
        return self.model_copy(update={"outcomes": {**self.outcomes, number: new}})

    def with_qa(
        self, number: int, *, flagged: list[str], lead_seconds: float, lead_count: int
    ) -> Self:
        old = self.outcomes.get(number, Outcome())
        if old.qa_known:
            return self
        new = old.model_copy(
            update={
                "qa_known": True,
                "flagged": sorted(set(flagged)),
                "lead_seconds": lead_seconds,
                "lead_count": lead_count,
            }
        )
        return self.model_copy(update={"outcomes": {**self.outcomes, number: new}})

    def with_started(self) -> Self:
        return self.model_copy(update={"started": True, "paused": False})

    def with_paused(self) -> Self:
        return self.model_copy(update={"paused": True})

    def with_exhausted(self, reason: str | None) -> Self:
        return self.model_copy(update={"exhausted": reason})
